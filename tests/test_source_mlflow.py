"""The MLflow source against a real MLflow store (mlflow 3, SQLite backend)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prefect_ml_automations.config import MLflowSourceSettings, parse_config
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.sources.mlflow import MLflowSource

mlflow = pytest.importorskip("mlflow", reason="the MLflow source needs the [mlflow] extra")

T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z, ms


@pytest.fixture
def client(tracking_uri: str) -> Any:
    return mlflow.MlflowClient(tracking_uri)


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"project": f"team/vision-{tag}", "model": f"churn-{tag}"}


def source(tracking_uri: str, names: dict[str, str]) -> MLflowSource:
    settings = MLflowSourceSettings(name="local", type="mlflow", tracking_uri=tracking_uri)
    return MLflowSource(settings, projects={names["project"]}, watch_registry=True)


def kinds(events: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for e in events:
        if e.type == "METRIC":
            out.append(("METRIC", e.run_name, e.metric, e.step, e.value))
        elif e.type == "RUN_STATE":
            out.append(("RUN_STATE", e.run_name, e.state))
        elif e.collection.startswith("churn"):
            out.append((e.type, e.version, e.alias or e.tag))
        else:
            out.append((e.type, e.collection, e.version))
    return out


def now(minutes: int = 0) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_the_first_poll_starts_watching_now(
    client: Any, tracking_uri: str, names: dict[str, str]
) -> None:
    experiment = client.create_experiment(names["project"])
    run = client.create_run(experiment, run_name="old-1")
    for step in range(3):
        client.log_metric(run.info.run_id, "acc", 0.5, step=step, timestamp=T0 + step)
    client.set_terminated(run.info.run_id, "FINISHED")
    client.create_registered_model(names["model"])
    client.create_model_version(names["model"], source="s3://m/1")
    client.set_registered_model_alias(names["model"], "production", "1")

    poll = source(tracking_uri, names).poll(None, now())
    assert poll.events == []  # nothing fires from what was there before
    assert kinds(poll.filling) == [
        ("METRIC", "old-1", "acc", 0, 0.5),
        ("METRIC", "old-1", "acc", 1, 0.5),
        ("METRIC", "old-1", "acc", 2, 0.5),
        ("RUN_STATE", "old-1", "finished"),
    ]
    assert poll.cursor["registry"][names["model"]] == {"1": {"aliases": ["production"], "tags": []}}


def test_a_sweep_and_the_registry_story(
    client: Any, tracking_uri: str, names: dict[str, str]
) -> None:
    experiment = client.create_experiment(names["project"])
    client.create_registered_model(names["model"])
    mlflow_source = source(tracking_uri, names)
    first = mlflow_source.poll(None, now())

    ok = client.create_run(experiment, run_name="sweep-1", tags={"mlflow.user": "alice"})
    bad = client.create_run(experiment, run_name="sweep-2")
    for step in range(2):
        client.log_metric(ok.info.run_id, "acc", 0.6 + step / 10, step=step, timestamp=T0 + step)
    client.log_metric(ok.info.run_id, "system/gpu", 97, timestamp=T0 + 5)
    client.set_terminated(bad.info.run_id, "FAILED")
    for version in (1, 2, 3):
        client.create_model_version(names["model"], source=f"s3://m/{version}")
    client.set_registered_model_alias(names["model"], "production", "3")
    client.set_model_version_tag(names["model"], "3", "validated", "yes")
    second = mlflow_source.poll(first.cursor, now())
    assert sorted(kinds(second.events), key=repr) == sorted(
        [
            ("METRIC", "sweep-1", "acc", 0, 0.6),
            ("METRIC", "sweep-1", "acc", 1, 0.7),
            ("METRIC", "sweep-1", "system/gpu", None, 97.0),
            ("RUN_STATE", "sweep-1", "running"),
            ("RUN_STATE", "sweep-2", "failed"),
            ("LINK_ARTIFACT", 1, None),
            ("LINK_ARTIFACT", 2, None),
            ("LINK_ARTIFACT", 3, None),
            ("ADD_ARTIFACT_TAG", 3, "validated=yes"),
            ("ADD_ARTIFACT_ALIAS", 3, "production"),
        ],
        key=repr,
    )
    user = next(e.user for e in second.events if e.type == "METRIC")
    assert user == "alice"

    # Nothing changed: nothing new, and no metric history is fetched again.
    third = mlflow_source.poll(second.cursor, now())
    assert third.events == []
    # production moves from v3 to v4; the tag is removed; one more point.
    client.create_model_version(names["model"], source="s3://m/4")
    client.set_registered_model_alias(names["model"], "production", "4")
    client.delete_model_version_tag(names["model"], "3", "validated")
    client.log_metric(ok.info.run_id, "acc", 0.9, step=2, timestamp=T0 + 9)
    client.set_terminated(ok.info.run_id, "FINISHED")
    fourth = mlflow_source.poll(third.cursor, now())
    assert sorted(kinds(fourth.events), key=repr) == sorted(
        [
            ("METRIC", "sweep-1", "acc", 2, 0.9),
            ("RUN_STATE", "sweep-1", "finished"),
            ("LINK_ARTIFACT", 4, None),
            ("REMOVE_ARTIFACT_TAG", 3, "validated=yes"),
            ("ADD_ARTIFACT_ALIAS", 4, "production"),
        ],
        key=repr,
    )


def test_logged_models_are_created_artifacts(
    client: Any,
    tracking_uri: str,
    names: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The model's artifacts go to the experiment's artifact location: keep them in tmp.
    experiment = client.create_experiment(names["project"], artifact_location=tmp_path.as_uri())
    mlflow_source = source(tracking_uri, names)
    first = mlflow_source.poll(None, now())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.create_external_model(name="ranker", experiment_id=experiment)
    finally:
        mlflow.set_tracking_uri(previous)
    second = mlflow_source.poll(first.cursor, now())
    assert kinds(second.events) == [("CREATE_ARTIFACT", "ranker", 1)]


def test_the_sensor_polls_mlflow_and_fires_once_across_restarts(
    client: Any, tracking_uri: str, names: dict[str, str], tmp_path: Path, prefect_api: str
) -> None:
    raw = {
        "store": f"sqlite:///{tmp_path}/store.db",
        "sources": [{"name": "local", "type": "mlflow", "tracking_uri": tracking_uri}],
        "automations": [
            {
                "name": "deploy",
                "scope": {"registry": "models", "collection": names["model"]},
                "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
                "action": {"type": "no_op"},
            },
            {
                "name": "page",
                "scope": {"project": names["project"]},
                "event": {"type": "RUN_STATE", "states": ["failed"]},
                "action": {"type": "no_op"},
            },
        ],
    }
    experiment = client.create_experiment(names["project"])
    client.create_registered_model(names["model"])
    config = parse_config(raw, env={})
    assert Sensor(config).run_once().fired == []  # starts watching
    run = client.create_run(experiment, run_name="r")
    client.set_terminated(run.info.run_id, "FAILED")
    client.create_model_version(names["model"], source="s3://m/1")
    client.set_registered_model_alias(names["model"], "production", "1")
    fired = Sensor(config).run_once().fired  # a restarted sensor continues from the cursor
    assert sorted((f.automation, f.version or f.state) for f in fired) == [
        ("deploy", 1),
        ("page", "failed"),
    ]
    assert Sensor(config).run_once().fired == []
    assert [r.status for r in Sensor(config).store.history()] == ["finished", "finished"]
