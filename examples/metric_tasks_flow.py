"""The metric tasks in a flow of your own: smooth, compare and judge training runs with pandas.

    python examples/metric_tasks_flow.py

Builds a small metric frame (three runs logging `accuracy`, interleaved as a tracker delivers
them; in your flow it would come from your tracker), adds the windows the automations judge —
a rolling average, the change against earlier values, a z-score against the other runs — and
dry-runs two automations on it. Nothing is started: `evaluate_automations` only says what would
fire. Without PREFECT_API_URL set, Prefect runs the flow against a temporary local server.
"""

from __future__ import annotations

import pandas as pd
from prefect import flow

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.tasks import (
    cross_run_zscore,
    evaluate_automations,
    rolling_aggregate,
    window_change,
)

ACCURACY = {
    "r1": [0.50, 0.55, 0.58, 0.60, 0.61, 0.61],  # levels off
    "r2": [0.48, 0.52, 0.57, 0.61, 0.64, 0.67],
    "r3": [0.52, 0.61, 0.69, 0.75, 0.81, 0.86],  # runs away from the others
}

AUTOMATIONS = [
    Automation.model_validate(
        {
            "name": "good-accuracy",
            "scope": {"project": "my-team/vision"},
            "event": {"type": "RUN_METRIC", "metric": "accuracy", "window": 3, "operator": ">",
                      "threshold": 0.6},
            "action": {"type": "run_deployment", "deployment": "evaluate-model/default"},
        }
    ),
    Automation.model_validate(
        {
            "name": "accuracy-outlier",
            "scope": {"project": "my-team/vision"},
            "event": {"type": "RUN_METRIC_ZSCORE", "metric": "accuracy", "window": 30,
                      "threshold": 3, "direction": "above"},
            "action": {"type": "no_op"},
        }
    ),
]  # fmt: skip


def training_runs() -> pd.DataFrame:
    """A metric frame: one row per point, in the order the points arrived (step by step)."""
    created = pd.Timestamp("2026-01-01T09:00:00Z")
    rows = [
        {
            "project": "my-team/vision",
            "run_id": run,
            "run_name": f"sweep-{run[1:]}",
            "user": "alice",
            "run_created_at": created + pd.Timedelta(minutes=i),
            "metric": "accuracy",
            "step": step,
            "value": values[step],
            "timestamp": created + pd.Timedelta(hours=1, seconds=10 * step + i),
        }
        for step in range(6)
        for i, (run, values) in enumerate(ACCURACY.items())
    ]
    return pd.DataFrame(rows)


@flow(name="review-training-runs")
def review_training_runs() -> pd.DataFrame:
    frame = training_runs()
    smoothed = rolling_aggregate(frame, "accuracy", window=3)
    trend = window_change(frame, "accuracy", current_window=2, prior_window=3)
    outlier = cross_run_zscore(frame, "accuracy", window=30)

    last = frame.groupby("run_id").tail(1).index  # each run's latest point
    summary = frame.loc[last, ["run_id", "step", "value"]].assign(
        average_3=smoothed.loc[last, "aggregate"],
        change=trend.loc[last, "change"],
        z=outlier.loc[last, "z"],
    )
    print(summary.round(3).to_string(index=False))

    firings = evaluate_automations(frame, AUTOMATIONS)
    print(firings[["automation", "run_id", "step", "value"]].round(3).to_string(index=False))
    return firings


if __name__ == "__main__":
    review_training_runs()
