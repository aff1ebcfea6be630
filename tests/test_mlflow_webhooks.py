"""MLflow 3 registry webhooks into the receiver: signed, and one event per change whether it
arrives by webhook, by polling, or both."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prefect_ml_automations.config import parse_config
from prefect_ml_automations.receiver import create_app
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore

mlflow = pytest.importorskip("mlflow", reason="the MLflow source needs the [mlflow] extra")

SECRET = "whsec-123"


def signed(
    body: dict[str, Any], *, secret: str = SECRET, age: int = 0
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()) - age)
    digest = hmac.new(
        secret.encode(), f"{delivery}.{stamp}.".encode() + raw, hashlib.sha256
    ).digest()
    return raw, {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def alias_created(model: str, version: int, alias: str = "production") -> dict[str, Any]:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"name": model, "alias": alias, "version": str(version)},
    }


@pytest.fixture
def setup(tmp_path: Path, tracking_uri: str) -> dict[str, Any]:
    model = f"churn-{uuid.uuid4().hex[:8]}"
    raw = {
        "store": f"sqlite:///{tmp_path}/store.db",
        "receiver": {"secret": SECRET},
        "sources": [{"name": "local", "type": "mlflow", "tracking_uri": tracking_uri}],
        "automations": [
            {
                "name": "deploy",
                "scope": {"registry": "models", "collection": model},
                "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
                "action": {"type": "no_op"},
            }
        ],
    }
    config = parse_config(raw, env={})
    store = StateStore(config.store)
    client = mlflow.MlflowClient(tracking_uri)
    client.create_registered_model(model)
    for _ in range(2):
        client.create_model_version(model, source="s3://m")
    return {
        "config": config,
        "store": store,
        "model": model,
        "mlflow": client,
        "http": TestClient(create_app(config, store)),
    }


def test_a_signed_webhook_is_an_event(setup: dict[str, Any]) -> None:
    body, headers = signed(alias_created(setup["model"], 2))
    response = setup["http"].post("/mlflow", content=body, headers=headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    with setup["store"].cycle() as cycle:
        [event] = cycle.take_inbox()
    assert (event.type, event.registry, event.collection, event.version, event.alias) == (
        "ADD_ARTIFACT_ALIAS",
        "models",
        setup["model"],
        2,
        "production",
    )


@pytest.mark.parametrize(
    ("secret", "age"),
    [("wrong", 0), (SECRET, 3600)],
    ids=["wrong-secret", "replayed-an-hour-later"],
)
def test_unsigned_or_stale_webhooks_are_refused(
    setup: dict[str, Any], secret: str, age: int
) -> None:
    body, headers = signed(alias_created(setup["model"], 2), secret=secret, age=age)
    response = setup["http"].post("/mlflow", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"].startswith(
        "The MLflow signature is missing, wrong or older than 5 minutes"
    )
    assert setup["store"].inbox_size() == 0


def test_webhook_then_poll_fires_once(setup: dict[str, Any], prefect_api: str) -> None:
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()  # the poller starts watching
    setup["mlflow"].set_registered_model_alias(setup["model"], "production", "2")
    body, headers = signed(alias_created(setup["model"], 2))
    assert setup["http"].post("/mlflow", content=body, headers=headers).json() == {"accepted": 1}
    fired = sensor.run_once().fired  # takes the pushed event; the poll finds nothing new
    assert [(f.automation, f.version) for f in fired] == [("deploy", 2)]
    assert sensor.run_once().fired == []


def test_poll_then_webhook_fires_once(setup: dict[str, Any], prefect_api: str) -> None:
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()
    setup["mlflow"].set_registered_model_alias(setup["model"], "production", "1")
    assert [f.version for f in sensor.run_once().fired] == [1]
    body, headers = signed(alias_created(setup["model"], 1))  # the late webhook of the same change
    assert setup["http"].post("/mlflow", content=body, headers=headers).json() == {"accepted": 0}
    assert sensor.run_once().fired == []
