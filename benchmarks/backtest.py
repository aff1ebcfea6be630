"""What a backtest costs against fetching alone, on an MLflow store of R runs × P points.

    python benchmarks/backtest.py                    # 50 runs × 10k points, by log_batch
    python benchmarks/backtest.py --runs 100 --write-tables                   # 1M points
    python benchmarks/backtest.py --runs 1000 --write-tables --rounds 1       # the issue's 10M

Builds a SQLite MLflow store of one experiment whose R runs start one after another over the
last 60 days and log P points of `loss` 10 s apart (so runs overlap and their points interleave
in time, as a sweep's do), every tenth run ending FAILED. The runs are made with MLflow's own
client (`create_run`, `set_terminated`); their points by `log_batch` (1,000 a call) — or, with
--write-tables, by writing the rows `log_batch` writes (`metrics`, and `latest_metrics` with each
run's newest point) straight into the store in one SQLite transaction: `log_batch` takes ~0.1 ms a
point here, 10M points ~20 minutes. A few runs are first built both ways, and read back alike
through the source, to show the two stores are the same to a reader.

Then measures, in the same process, `--rounds` times each (alternating, the best counted):
(a) fetching alone: the MLflow source's first poll (`sources.read_history`), which turns every
    point into a normalized event — what a backtest reads through;
(b) the whole backtest: `backtest(config, since=now - 30d, now=now)` — fetching again, laying the
    events out by their times, and evaluating four automations (threshold, change and z-score
    on `loss`, and a run state) at every point;
and prints both, the ratio b / a (the issue's bar: at most 1.10) and what b spends after
fetching, split into laying out and evaluating. Peak memory is printed too (ru_maxrss).
"""

from __future__ import annotations

import argparse
import functools
import gc
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent.parent))

from prefect_ml_automations.backtest import Backtest, backtest
from prefect_ml_automations.config import (
    AutomationsConfig,
    MLflowSourceSettings,
    parse_config,
)
from prefect_ml_automations.sources import read_history
from prefect_ml_automations.sources.mlflow import MLflowSource

PROJECT = "team/bench"
NOW = datetime(2026, 3, 1, tzinfo=UTC)
SPAN = timedelta(days=60)
EVERY_MS = 10_000

AUTOMATIONS = """
  - name: low-loss
    scope: {project: team/bench}
    event: {type: RUN_METRIC, metric: loss, window: 20, operator: "<", threshold: 0.1}
    action: {type: no_op}
  - name: loss-jump
    scope: {project: team/bench}
    event: {type: RUN_METRIC_CHANGE, metric: loss, current_window: 10, prior_window: 50,
            direction: increase, amount: 0.5}
    action: {type: no_op}
  - name: loss-outlier
    scope: {project: team/bench}
    event: {type: RUN_METRIC_ZSCORE, metric: loss, window: 30, threshold: 3}
    action: {type: no_op}
  - name: page-on-failure
    scope: {project: team/bench}
    event: {type: RUN_STATE, states: [failed]}
    action: {type: no_op}
"""


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def losses(run: int, points: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A run's loss curve: decaying to its own floor, with noise, and a spike now and then."""
    rng = np.random.default_rng(run)
    steps = np.arange(points)
    curve = 0.05 + rng.uniform(0, 0.1) + np.exp(-steps / (points / 5)) + rng.normal(0, 0.02, points)
    curve[rng.integers(0, points, 3)] += 2.0
    return np.round(curve, 6)


def build_store(path: Path, runs: int, points: int, *, write_tables: bool) -> float:
    """The store, as described above; returns the seconds it took."""
    import mlflow
    from mlflow.entities import Metric

    start = time.perf_counter()
    uri = f"sqlite:///{path}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment(PROJECT)
    first = NOW - SPAN
    rows: list[tuple[Any, ...]] = []
    latest: list[tuple[Any, ...]] = []
    for run in range(runs):
        began = first + SPAN * run / runs
        run_id = client.create_run(experiment, run_name=f"sweep-{run}", start_time=ms(began))
        run_id = run_id.info.run_id
        times = ms(began) + EVERY_MS * np.arange(points)
        values = losses(run, points)
        if write_tables:
            rows += [
                ("loss", float(v), int(t), run_id, step, 0)
                for step, (v, t) in enumerate(zip(values.tolist(), times.tolist(), strict=True))
            ]
            latest.append(("loss", float(values[-1]), int(times[-1]), points - 1, 0, run_id))
            if len(rows) >= 1_000_000:
                _write(path, rows, [])
                rows = []
        else:
            for lo in range(0, points, 1000):
                batch = [
                    Metric("loss", float(values[s]), int(times[s]), s)
                    for s in range(lo, min(points, lo + 1000))
                ]
                client.log_batch(run_id, metrics=batch)
        ended = int(times[-1]) + EVERY_MS
        if ended <= ms(NOW):
            client.set_terminated(run_id, "FAILED" if run % 10 == 9 else "FINISHED", ended)
    if write_tables:
        _write(path, rows, latest)
    return time.perf_counter() - start


def _write(path: Path, rows: list[tuple[Any, ...]], latest: list[tuple[Any, ...]]) -> None:
    """Rows into `metrics` and `latest_metrics`, as MLflow's `log_batch` writes them (a value
    that is NaN would be stored as 0 with is_nan 1; there are none here)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA synchronous = OFF")
        db.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            latest,
        )


def source(uri: str) -> MLflowSource:
    settings = MLflowSourceSettings(name="local", type="mlflow", tracking_uri=uri)
    return MLflowSource(settings, projects={PROJECT}, watch_registry=False)


def read_back(path: Path) -> list[tuple[Any, ...]]:
    """What a reader sees of a store: every event but for run ids (each store has its own)."""
    history = read_history(source(f"sqlite:///{path}"), NOW)
    fields = ("run_name", "type", "step", "value", "state", "timestamp", "run_created_at")
    return [tuple(getattr(e, name, None) for name in fields) for e in history.events]


def same_either_way(folder: Path) -> None:
    both = [folder / "by-log-batch.db", folder / "by-tables.db"]
    build_store(both[0], 3, 1500, write_tables=False)
    build_store(both[1], 3, 1500, write_tables=True)
    seen = [read_back(path) for path in both]
    assert len(seen[0]) == 3 * 1500 + 3
    assert seen[0] == seen[1], "the two stores differ"
    print("The two ways of building a store read back alike (3 runs × 1,500 points).")


def timed(what: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = what()
    return time.perf_counter() - start, result


def whole_backtest(config: AutomationsConfig, marks: dict[str, float]) -> Backtest:
    def mark(step: str) -> None:
        marks[step.split()[0]] = time.perf_counter()

    result = backtest(config, since=NOW - timedelta(days=30), now=NOW, progress=mark)
    mark("Ended")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write-tables", action="store_true")
    parser.add_argument("--store", type=Path, help="keep (or reuse) the store at this path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.write_tables:
            same_either_way(folder)
        path = args.store or folder / "mlflow.db"
        if path.exists():
            print(f"Reusing the store {path}.")
        else:
            took = build_store(path, args.runs, args.points, write_tables=args.write_tables)
            how = "writing its tables" if args.write_tables else "MLflow's log_batch"
            print(
                f"Built an MLflow store of {args.runs:,} runs × {args.points:,} points "
                f"({args.runs * args.points:,}) by {how} in {took:.0f} s "
                f"({path.stat().st_size / 2**20:,.0f} MiB)."
            )
        uri = f"sqlite:///{path}"
        config = parse_config(
            {
                "store": "sqlite://",
                "sources": [{"name": "local", "type": "mlflow", "tracking_uri": uri}],
                "automations": yaml.safe_load(AUTOMATIONS),
            },
            env={},
        )
        source(uri).client.search_experiments()  # (MLflow's own start-up, not measured)
        fetching, whole, laying_out, evaluating = [], [], [], []
        firings = events = 0
        for _ in range(args.rounds):
            seconds, history = timed(lambda: read_history(source(uri), NOW))
            events = len(history.events)
            del history
            fetching.append(seconds)
            print(f"  (a) fetching alone: {seconds:.2f} s ({events:,} events)")

            marks: dict[str, float] = {}  # when each step began, as `progress` tells them
            seconds, result = timed(functools.partial(whole_backtest, config, marks))
            whole.append(seconds)
            steps = (marks["Ordering"] - marks["Reading"], marks["Evaluating"] - marks["Ordering"])
            laying_out.append(steps[1])
            evaluating.append(marks["Ended"] - marks["Evaluating"])
            firings = len(result.evaluation.firings)
            print(
                f"  (b) the whole backtest: {seconds:.2f} s: reading {steps[0]:.2f} s, laying out "
                f"{steps[1]:.2f} s, evaluating {evaluating[-1]:.2f} s ({firings:,} firings)"
            )
            del result
        a, b = min(fetching), min(whole)
        lay, e = min(laying_out), min(evaluating)
        print(
            f"{args.runs:,} runs × {args.points:,} points ({events:,} events), best of "
            f"{args.rounds}: fetching alone {a:.2f} s; the whole backtest {b:.2f} s = "
            f"{b / a:.3f}× fetching. Beyond its reading: laying out {lay:.2f} s + evaluating "
            f"{e:.2f} s = {(lay + e) / a:.1%} of fetching. {firings:,} firings; peak memory "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB."
        )


if __name__ == "__main__":
    main()
