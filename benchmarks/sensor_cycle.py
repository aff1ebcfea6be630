"""What one sensor cycle costs when the store already tracks 10k active runs.

    python benchmarks/sensor_cycle.py [--runs 10000] [--store sqlite|postgresql]

Builds a state of `--runs` runs × 200 points (three metric automations, as in
benchmarks/evaluate.py) in a real store, then times whole cycles — take the inbox, load the
state, evaluate, record firings, save the state, commit, deliver (no-op actions) — for a batch of
100 new points and for one new point on every run, and again after 10× more history.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from evaluate import AUTOMATIONS, synthetic

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.evaluator import Evaluator, EvaluatorState
from prefect_ml_automations.events import event_from_dict
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def new_points(runs: int, count: int, step: int) -> list[object]:
    return [
        event_from_dict(
            {
                "type": "METRIC",
                "project": "bench",
                "run_id": f"run-{r:06d}",
                "metric": "acc",
                "step": step,
                "value": 0.8,
                "timestamp": f"2026-01-05T00:00:{r % 60:02d}Z",
            }
        )
        for r in range(count if count < runs else runs)
    ]


def fresh_postgres() -> str:
    import psycopg

    admin = psycopg.connect(POSTGRES, autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS mla_bench WITH (FORCE)")
    admin.execute("CREATE DATABASE mla_bench")
    return "postgresql://postgres@127.0.0.1:5432/mla_bench"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db" if args.store == "sqlite" else fresh_postgres()
        config = AutomationsConfig(store=url, automations=AUTOMATIONS)
        store = StateStore(url)
        sensor = Sensor(config, store)
        step = 200
        for history in (200, 2_000):
            state = EvaluatorState()
            Evaluator(AUTOMATIONS, state).evaluate(synthetic(args.runs, history))
            with store.cycle() as cycle:
                cycle.save(state)
            step = history
            print(
                f"{args.runs:,} runs × {history:,} points of history (saved state "
                f"{len(state.to_bytes()) / 2**20:.1f} MiB), store {args.store}:"
            )
            for batch in (100, args.runs):
                evaluate, deliver, fired = [], [], []
                for _ in range(5):
                    store.put_events(new_points(args.runs, batch, step), origin="ingest")
                    step += 1
                    start = time.perf_counter()
                    report = sensor.evaluate()
                    middle = time.perf_counter()
                    asyncio.run(sensor.deliver())
                    evaluate.append(middle - start)
                    deliver.append(time.perf_counter() - middle)
                    fired.append(len(report.fired))
                print(
                    f"  {batch:>6,} new points: evaluate+record+commit median "
                    f"{statistics.median(evaluate) * 1e3:7.1f} ms; deliver (no-op actions) "
                    f"{statistics.median(deliver) * 1e3:7.1f} ms for a median of "
                    f"{statistics.median(fired):,.0f} firings"
                )
        store.close()


if __name__ == "__main__":
    main()
