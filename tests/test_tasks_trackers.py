"""Tasks that talk to the outside: `fetch_metric_history` reads a real MLflow store and the
W&B-shaped fake into metric frames; `start_deployment` starts a flow run once per key."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from prefect_ml_automations.blocks import MLflowTrackerBlock, WandbTrackerBlock
from prefect_ml_automations.errors import ActionError
from prefect_ml_automations.tasks import fetch_metric_history, start_deployment
from prefect_ml_automations.tasks.metrics import METRIC_FRAME_COLUMNS

from .conftest import flow_runs
from .wandb_fake import FakeRun, FakeWandb


def test_fetch_metric_history_reads_every_point_of_an_mlflow_project(tracking_uri: str) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    project = f"team/fetch-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(project)
    first = client.create_run(experiment, run_name="sweep-1")
    second = client.create_run(experiment, run_name="sweep-2")
    for step, (loss, acc) in enumerate([(0.9, 0.5), (0.7, 0.6), (0.5, 0.7)]):
        client.log_metric(first.info.run_id, "loss", loss, step=step, timestamp=1_000 + step)
        client.log_metric(first.info.run_id, "acc", acc, step=step, timestamp=1_000 + step)
    client.log_metric(second.info.run_id, "loss", 0.8, step=0, timestamp=1_500)

    frame = fetch_metric_history.fn(
        MLflowTrackerBlock(tracking_uri=tracking_uri), project, ["loss"]
    )

    assert list(frame.columns[: len(METRIC_FRAME_COLUMNS)]) == list(METRIC_FRAME_COLUMNS)
    rows = frame[["run_name", "metric", "step", "value"]].to_records(index=False).tolist()
    assert rows == [
        ("sweep-1", "loss", 0, 0.9),
        ("sweep-1", "loss", 1, 0.7),
        ("sweep-1", "loss", 2, 0.5),
        ("sweep-2", "loss", 0, 0.8),
    ]  # in the order they were logged
    assert set(frame["project"]) == {project}


def test_fetch_metric_history_reads_a_wandb_project(fake: FakeWandb) -> None:
    fake.runs["acme/vision"] = [
        FakeRun(
            "r1",
            "sweep-1",
            "alice",
            "2026-01-01T10:00:00",
            state="finished",
            history=[
                {"_step": s, "_timestamp": 1767261600 + s, "acc": 0.6 + s / 10, "loss": 1 - s / 10}
                for s in range(3)
            ],
        )
    ]
    tracker = WandbTrackerBlock(entity="acme", api_key="k")  # type: ignore[arg-type]

    frame = fetch_metric_history.fn(tracker, "acme/vision", ["acc"])

    assert frame[["run_id", "run_name", "user", "metric", "step"]].to_records(
        index=False
    ).tolist() == [
        ("r1", "sweep-1", "alice", "acc", 0),
        ("r1", "sweep-1", "alice", "acc", 1),
        ("r1", "sweep-1", "alice", "acc", 2),
    ]
    assert frame["value"].round(6).tolist() == [0.6, 0.7, 0.8]


def test_start_deployment_starts_one_flow_run_per_key(
    prefect_api: str, deployments: dict[str, Any]
) -> None:
    from prefect import flow

    @flow
    def promote(key: str) -> str:
        run = start_deployment("train-model/nightly", {"reason": "promotion"}, idempotency_key=key)
        return str(run.id)

    key = uuid.uuid4().hex
    first, again = promote(key), promote(key)
    other = promote(uuid.uuid4().hex)
    assert first == again != other
    runs = {str(r.id): r for r in flow_runs(deployments["train-model/nightly"])}
    assert {first, other} <= set(runs)
    assert runs[first].parameters == {"reason": "promotion"}


def test_start_deployment_names_a_deployment_that_does_not_exist(prefect_api: str) -> None:
    with pytest.raises(ActionError, match="Deployment 'no-such/deployment' does not exist"):
        start_deployment.fn("no-such/deployment", idempotency_key="k")


def test_a_deployment_re_created_under_its_name_gets_the_next_flow_run(prefect_api: str) -> None:
    """Deployment ids are remembered for a minute; a deleted one is looked up again at once."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="evaluate-model")
    def evaluate_model() -> None: ...

    name = f"candidate-{uuid.uuid4().hex[:6]}"

    async def create() -> Any:
        async with get_client() as client:
            return await client.create_deployment(
                flow_id=await client.create_flow(evaluate_model), name=name
            )

    async def delete(deployment_id: Any) -> None:
        async with get_client() as client:
            await client.delete_deployment(deployment_id)

    first_id = asyncio.run(create())
    first = start_deployment.fn(f"evaluate-model/{name}", idempotency_key="one")
    asyncio.run(delete(first_id))
    second_id = asyncio.run(create())
    second = start_deployment.fn(f"evaluate-model/{name}", idempotency_key="two")
    assert (first.deployment_id, second.deployment_id) == (first_id, second_id)


def test_the_readme_s_promote_outliers_flow_runs_as_written(
    tracking_uri: str, prefect_api: str
) -> None:
    """The README's example, taken from the README: a saved tracker block, a project of runs of
    which the last stands out, and the deployment it starts."""
    import re

    import mlflow
    from prefect import flow
    from prefect.client.orchestration import get_client

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Use the tasks in your own flow") :]
    [code] = [
        c for c in re.findall(r"```python\n(.*?)```", section, re.S) if "promote_outliers" in c
    ]

    @flow(name="evaluate-model")
    def evaluate_model(run_id: str = "") -> None: ...

    async def deployment() -> Any:
        async with get_client() as client:
            flow_id = await client.create_flow(evaluate_model)
            return await client.create_deployment(flow_id=flow_id, name="default")

    deployment_id = asyncio.run(deployment())
    MLflowTrackerBlock(tracking_uri=tracking_uri).save("local", overwrite=True)
    client = mlflow.MlflowClient(tracking_uri)
    project = f"team/outliers-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(project)
    outlier = ""
    for n, accuracy in enumerate([0.50, 0.51, 0.49, 0.50, 0.90]):
        run = client.create_run(experiment, run_name=f"sweep-{n}")
        client.log_metric(run.info.run_id, "accuracy", accuracy, step=0, timestamp=1_000 + n)
        outlier = run.info.run_id

    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    namespace["promote_outliers"](project)

    [started] = flow_runs(deployment_id)
    assert started.parameters == {"run_id": outlier}
