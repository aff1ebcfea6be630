"""Prefect tasks: read a tracker into a metric frame, compute over it with pandas, evaluate
automations, start deployments — for your own flows, and the steps of the sensor's flow.
"""

from prefect_ml_automations.tasks.deployments import start_deployment
from prefect_ml_automations.tasks.evaluation import evaluate_automations
from prefect_ml_automations.tasks.metrics import (
    METRIC_FRAME_COLUMNS,
    cross_run_zscore,
    events_to_frame,
    rolling_aggregate,
    validate_metric_frame,
    window_change,
)
from prefect_ml_automations.tasks.sensor import (
    commit_cycle,
    deliver_firing,
    poll_source,
    publish_cycle,
)
from prefect_ml_automations.tasks.trackers import fetch_metric_history

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
    # trackers and deployments
    "fetch_metric_history",
    "start_deployment",
    # the sensor's steps
    "poll_source",
    "commit_cycle",
    "deliver_firing",
    "publish_cycle",
]
