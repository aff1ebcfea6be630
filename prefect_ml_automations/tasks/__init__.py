"""Prefect tasks: metric frames and what pandas computes over them, and the dry run as a task —
for your own flows.
"""

from prefect_ml_automations.tasks.evaluation import evaluate_automations
from prefect_ml_automations.tasks.metrics import (
    METRIC_FRAME_COLUMNS,
    cross_run_zscore,
    events_to_frame,
    rolling_aggregate,
    validate_metric_frame,
    window_change,
)

__all__ = [  # noqa: RUF022 -- grouped by concept
    # metric frames and what pandas computes over them
    "METRIC_FRAME_COLUMNS",
    "events_to_frame",
    "validate_metric_frame",
    "rolling_aggregate",
    "window_change",
    "cross_run_zscore",
    # automations over a frame: the dry run as a task
    "evaluate_automations",
]
