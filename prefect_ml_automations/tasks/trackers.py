"""Read a tracker into a metric frame: every point of some metrics of a project's runs.

It reads what a sensor reads when it starts watching a project (the source's first look, which
fills windows and baselines: `sources.read_history`, which the backtest reads through too), so the
frame holds exactly the points the evaluator would see — the same runs, steps, system metrics and
run creation times, in the order they were logged.

    from prefect import flow
    from prefect_ml_automations.blocks import MLflowTrackerBlock
    from prefect_ml_automations.tasks import fetch_metric_history, rolling_aggregate

    @flow
    def loss_report() -> None:
        frame = fetch_metric_history(MLflowTrackerBlock.load("local"), "team/vision", ["loss"])
        print(rolling_aggregate(frame, "loss", window=5).tail())
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_ml_automations.blocks.trackers import MLflowTrackerBlock, WandbTrackerBlock
from prefect_ml_automations.events import MetricEvent

if TYPE_CHECKING:
    import pandas as pd

    from prefect_ml_automations.sources import Source


@task(name="fetch-metric-history", task_run_name="fetch {project}", cache_policy=NO_CACHE)
def fetch_metric_history(
    tracker: MLflowTrackerBlock | WandbTrackerBlock,
    project: str,
    metrics: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
) -> pd.DataFrame:
    """A metric frame of `project`'s runs (every run, every point) for `metrics` (None: all).

    `tracker` is a tracker block (`MLflowTrackerBlock.load("local")`); `project` is an MLflow
    experiment name, or W&B's `entity/project` (its entity must be the block's). Rows are in the
    order the points were logged: the frame's arrival order.
    """
    from prefect_ml_automations.sources import read_history
    from prefect_ml_automations.store import utcnow
    from prefect_ml_automations.tasks.metrics import events_to_frame

    history = read_history(_source(tracker, project), now or utcnow())
    wanted = None if metrics is None else set(metrics)
    points = [
        event
        for event in history.events
        if isinstance(event, MetricEvent) and (wanted is None or event.metric in wanted)
    ]
    return events_to_frame(points)


def _source(tracker: MLflowTrackerBlock | WandbTrackerBlock, project: str) -> Source:
    settings: Any = tracker.source_settings("fetch")
    if isinstance(tracker, MLflowTrackerBlock):
        from prefect_ml_automations.sources.mlflow import MLflowSource

        return MLflowSource(settings, projects={project}, watch_registry=False)
    from prefect_ml_automations.sources.wandb import WandbSource

    return WandbSource(settings, projects={project}, registries=set(), system_metrics=True)
