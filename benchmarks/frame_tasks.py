"""What the metric-frame tasks cost beside the evaluator they reuse (SPEC §9).

    python benchmarks/frame_tasks.py            # 10M points (100k runs × 100 steps)
    python benchmarks/frame_tasks.py --quick    # 1M points (10k runs × 100 steps)

Synthetic data as in benchmarks/evaluate.py: runs logging `acc` step by step, interleaved (every
run logs step s before any logs step s+1), one point per second per run. The same points twice:
- as a metric frame, the way a user holds them — string ids (pandas' default string dtype),
  datetime columns in UTC, float values — handed to `rolling_aggregate`, `window_change` and
  `cross_run_zscore` (called with `.fn`, as a flow's task would run them, minus Prefect's
  bookkeeping);
- as the evaluator's own columns (`EventBatch.from_columns`, how benchmarks/evaluate.py feeds
  it), judged by `Evaluator.evaluate` with the one automation that measures the same thing and
  no cooldown. Its condition never holds, so what is timed is the windows, not the making of
  millions of firing records.

Each frame task converts the frame (factorizing the ids, reading the times) and returns a new
frame with its columns; the evaluator gets its input ready-made. Printed: the best of three
runs of each (taken in turns) and their ratio, frame ÷ evaluator. Then, on every point of the
first 2,000 runs, where each task's column meets a condition that does fire, against where the
evaluator fires (no cooldown): they must be the same points.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.evaluator import Evaluator, EventBatch
from prefect_ml_automations.tasks.metrics import (
    cross_run_zscore,
    rolling_aggregate,
    window_change,
)

T0 = 1_767_261_600 * 10**9  # 2026-01-01T10:00:00Z in ns
SECOND = 10**9
CHECKED_RUNS = 2_000


def synthetic(runs: int, steps: int, seed: int = 0) -> tuple[pd.DataFrame, EventBatch]:
    """`runs` × `steps` points, step-major: as a metric frame and as the evaluator's columns."""
    rng = np.random.default_rng(seed)
    run = np.tile(np.arange(runs, dtype=np.int32), steps)
    step = np.repeat(np.arange(steps, dtype=np.int64), runs)
    skill = rng.normal(0.0, 0.05, runs)
    value = 0.5 + skill[run] + 0.3 * (1 - np.exp(-step / 30)) + rng.normal(0, 0.02, len(run))
    ts = T0 + step * SECOND + run
    created = T0 - (runs - np.arange(runs, dtype=np.int64)) * SECOND
    ids = np.array([f"run-{i:06d}" for i in range(runs)], dtype=object)
    frame = pd.DataFrame(
        {
            "project": pd.Series(["bench"], dtype="str").repeat(len(run)).to_numpy(),
            "run_id": pd.array(ids[run], dtype="str"),
            "run_name": pd.array(ids[run], dtype="str"),
            "user": pd.Series(["alice"], dtype="str").repeat(len(run)).to_numpy(),
            "run_created_at": pd.to_datetime(created[run], utc=True),
            "metric": pd.Series(["acc"], dtype="str").repeat(len(run)).to_numpy(),
            "step": step,
            "value": value,
            "timestamp": pd.to_datetime(ts, utc=True),
        }
    )
    batch = EventBatch.from_columns(
        runs=[("bench", str(i)) for i in ids],
        metrics=["acc"],
        run=run,
        metric=np.zeros(len(run), np.int32),
        step=step,
        value=value,
        ts=ts,
        created=created,
    )
    return frame, batch


def automation(event: dict[str, Any]) -> Automation:
    return Automation.model_validate(
        {
            "name": event["type"].lower(),
            "scope": {"project": "bench"},
            "event": {"metric": "acc", **event},
            "cooldown": 0,
            "action": {"type": "no_op"},
        }
    )


# (task, its arguments, the column read, the automation measuring the same thing — once with a
# condition that never holds, for timing, and once with one that does, for the check)
CASES: list[tuple[Any, dict[str, Any], str, dict[str, Any], dict[str, Any]]] = [
    (
        rolling_aggregate,
        {"window": 5},
        "aggregate",
        {"type": "RUN_METRIC", "window": 5, "operator": ">", "threshold": 10},
        {"type": "RUN_METRIC", "window": 5, "operator": ">", "threshold": 0.75},
    ),
    (
        window_change,
        {"current_window": 10, "prior_window": 50},
        "change",
        {
            "type": "RUN_METRIC_CHANGE",
            "current_window": 10,
            "prior_window": 50,
            "direction": "increase",
            "amount": 1e9,
        },
        {
            "type": "RUN_METRIC_CHANGE",
            "current_window": 10,
            "prior_window": 50,
            "direction": "increase",
            "amount": 0.05,
        },
    ),
    (
        cross_run_zscore,
        {"window": 30},
        "z",
        {"type": "RUN_METRIC_ZSCORE", "window": 30, "threshold": 1e9},
        {"type": "RUN_METRIC_ZSCORE", "window": 30, "threshold": 2.5, "direction": "above"},
    ),
]

CONDITIONS: dict[str, Callable[[pd.Series, dict[str, Any]], pd.Series]] = {
    "RUN_METRIC": lambda column, event: column > event["threshold"],
    "RUN_METRIC_CHANGE": lambda column, event: column >= event["amount"],
    "RUN_METRIC_ZSCORE": lambda column, event: column >= event["threshold"],
}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def compare(
    frame: pd.DataFrame,
    batch: EventBatch,
    task: Any,
    arguments: dict[str, Any],
    event: dict[str, Any],
    repeat: int,
) -> tuple[float, float, pd.DataFrame]:
    """Best of `repeat` for the frame task and for the evaluator, taken in turns (so that a
    busy moment of the machine does not fall on one side only)."""
    frame_best = evaluator_best = math.inf
    out = pd.DataFrame()
    for _ in range(repeat):
        seconds, result = timed(partial(task.fn, frame, "acc", **arguments))
        frame_best, out = min(frame_best, seconds), result  # type: ignore[assignment]
        seconds, evaluation = timed(partial(Evaluator([automation(event)]).evaluate, batch))
        assert not evaluation.firings  # type: ignore[attr-defined]
        evaluator_best = min(evaluator_best, seconds)
    return frame_best, evaluator_best, out


def check(frame: pd.DataFrame, batch: EventBatch) -> None:
    """Where each task's column meets a condition, against where the evaluator fires, on every
    point of the first `CHECKED_RUNS` runs."""
    cols = batch.columns
    keep = cols.run < CHECKED_RUNS
    sub = EventBatch.from_columns(
        runs=batch.runs[:CHECKED_RUNS],
        metrics=batch.metrics,
        run=cols.run[keep],
        metric=cols.metric[keep],
        step=cols.order[keep],
        value=cols.value[keep],
        ts=cols.ts[keep],
        created=batch.created[:CHECKED_RUNS],
    )
    head = frame[keep].reset_index(drop=True)
    for task, arguments, column, _, firing in CASES:
        out = task.fn(head, "acc", **arguments)
        held = np.flatnonzero(CONDITIONS[firing["type"]](out[column], firing).to_numpy())
        fired = Evaluator([automation(firing)]).evaluate(sub).firings
        same = held.tolist() == [f.arrival for f in fired] and out[column].to_numpy()[
            held
        ].tolist() == [f.value for f in fired]
        verdict = "the same points and values" if same else "DIFFERENT"
        print(
            f"  {task.name:<18} {column} meets the condition at {len(held):>7,} points, "
            f"the evaluator fires at {len(fired):>7,}: {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1M points instead of 10M")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args()
    runs, steps = (10_000, 100) if args.quick else (100_000, 100)
    frame, batch = synthetic(runs, steps)
    n = len(frame)
    print(
        f"{n / 1e6:.0f}M points ({runs:,} runs × {steps} steps, interleaved); "
        f"frame {frame.memory_usage(deep=True).sum() / 2**20:,.0f} MiB"
    )
    print(f"  {'task':<18} {'frame task':>10} {'evaluator':>10} {'ratio':>6}")
    worst = 0.0
    for task, arguments, column, never, _ in CASES:
        frame_seconds, evaluator_seconds, out = compare(
            frame, batch, task, arguments, never, args.repeat
        )
        ratio = frame_seconds / evaluator_seconds
        worst = max(worst, ratio)
        print(
            f"  {task.name:<18} {frame_seconds:8.2f} s {evaluator_seconds:8.2f} s "
            f"{ratio:5.2f}×  ({column} at {int(out[column].notna().sum()):,} points)"
        )
    print(f"  worst ratio {worst:.2f}× (bar: 1.5×)")
    print(f"Every point of the first {CHECKED_RUNS:,} runs ({CHECKED_RUNS * steps:,} points):")
    check(frame, batch)


if __name__ == "__main__":
    main()
