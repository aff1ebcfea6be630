"""What one sensor cycle costs when the store already tracks many runs.

    python benchmarks/sensor_cycle.py [--runs 10000] [--store sqlite|postgresql]

Builds a state of `--runs` runs × 200 points (three metric automations, as in
benchmarks/evaluate.py) in a real store, then times whole cycles — take the inbox, load the
state rows the batch reads, evaluate, record firings, save the rows that changed, commit, deliver
(no-op actions) — for a batch of 100 new points and for one new point on every run, and again
after 10× more history. Then the same 100-point cycle with 1k and with 100k runs tracked (60
points each), side by side: the cost should follow the batch, not the runs tracked.
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
from prefect_ml_automations.evaluator.rows import rows_of
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


def store_url(kind: str, tmp: str, name: str) -> str:
    return f"sqlite:///{tmp}/{name}.db" if kind == "sqlite" else fresh_postgres()


def timed_cycles(sensor: Sensor, store: StateStore, runs: int, batch: int, step: int) -> tuple:
    """Five cycles of `batch` new points from `step` on: the medians of (evaluate+record+commit,
    deliver) in seconds, and of the firings."""
    evaluate, deliver, fired = [], [], []
    for i in range(5):
        store.put_events(new_points(runs, batch, step + i), origin="ingest")
        start = time.perf_counter()
        report = sensor.evaluate()
        middle = time.perf_counter()
        asyncio.run(sensor.deliver())
        evaluate.append(middle - start)
        deliver.append(time.perf_counter() - middle)
        fired.append(len(report.fired))
    return statistics.median(evaluate), statistics.median(deliver), statistics.median(fired)


def tracked_side_by_side(kind: str, tmp: str) -> None:
    """The same 100-point cycles with 1k and with 100k runs tracked."""
    medians = {}
    for tracked in (1_000, 100_000):
        url = store_url(kind, tmp, f"tracked{tracked}")
        config = AutomationsConfig(store=url, automations=AUTOMATIONS)
        store = StateStore(url)
        state = EvaluatorState()
        Evaluator(AUTOMATIONS, state).evaluate(synthetic(tracked, 60))
        with store.cycle() as cycle:
            cycle.save(state)
        sensor = Sensor(config, store)
        timed_cycles(sensor, store, tracked, 100, 60)  # warm up
        evaluate, deliver, fired = timed_cycles(sensor, store, tracked, 100, 65)
        medians[tracked] = evaluate + deliver
        print(
            f"  100 new points, {tracked:>7,} runs tracked: {evaluate * 1e3:6.1f} ms + "
            f"{deliver * 1e3:5.1f} ms delivering {fired:,.0f} no-op firings (medians)"
        )
        store.close()
    print(f"  100k against 1k runs tracked: {medians[100_000] / medians[1_000]:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url(args.store, tmp, "store")
        config = AutomationsConfig(store=url, automations=AUTOMATIONS)
        store = StateStore(url)
        sensor = Sensor(config, store)
        for history in (200, 2_000):
            state = EvaluatorState()
            Evaluator(AUTOMATIONS, state).evaluate(synthetic(args.runs, history))
            with store.cycle() as cycle:
                cycle.save(state)
            print(
                f"{args.runs:,} runs × {history:,} points of history (state rows "
                f"{len(rows_of(state)):,}), store {args.store}:"
            )
            for step, batch in ((history, 100), (history + 5, args.runs)):
                evaluate, deliver, fired = timed_cycles(sensor, store, args.runs, batch, step)
                print(
                    f"  {batch:>6,} new points: evaluate+record+commit median "
                    f"{evaluate * 1e3:7.1f} ms; deliver (no-op actions) "
                    f"{deliver * 1e3:7.1f} ms for a median of {fired:,.0f} firings"
                )
        store.close()
        print(f"runs tracked, store {args.store}:")
        tracked_side_by_side(args.store, tmp)


if __name__ == "__main__":
    main()
