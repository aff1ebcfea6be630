"""W&B webhook calls into the receiver: authenticated like W&B does, one event per change."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prefect_ml_automations.config import parse_config
from prefect_ml_automations.receiver import create_app
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore

from .wandb_fake import FakeVersion, FakeWandb

SECRET = "wb-secret"
ALIAS = {
    "event_type": "ADD_ARTIFACT_ALIAS",
    "artifact_version_string": "acme/wandb-registry-models/churn:v4",
    "alias": "production",
    "event_author": "bob",
}


def sign(body: bytes, encoding: str) -> str:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode() if encoding == "base64" else digest.hex()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    raw = {
        "store": f"sqlite:///{tmp_path}/store.db",
        "receiver": {"token": "t0k", "secret": SECRET},
        "sources": [{"name": "team", "type": "wandb", "entity": "acme", "api_key": "k"}],
        "automations": [
            {
                "name": "deploy",
                "scope": {"registry": "models", "collection": "churn"},
                "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
                "action": {"type": "no_op"},
            }
        ],
    }
    config = parse_config(raw, env={})
    store = StateStore(config.store)
    return {"config": config, "store": store, "http": TestClient(create_app(config, store))}


@pytest.mark.parametrize("encoding", ["base64", "hex"])
def test_a_signed_call_is_an_event(setup: dict[str, Any], encoding: str) -> None:
    body = json.dumps(ALIAS).encode()
    response = setup["http"].post(
        "/wandb", content=body, headers={"X-Wandb-Signature": sign(body, encoding)}
    )
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    with setup["store"].cycle() as cycle:
        [event] = cycle.take_inbox()
    assert (
        event.type,
        event.registry,
        event.collection,
        event.version,
        event.alias,
        event.user,
    ) == ("ADD_ARTIFACT_ALIAS", "models", "churn", 4, "production", "bob")


def test_the_bearer_token_also_authenticates_and_nothing_else_does(setup: dict[str, Any]) -> None:
    body = json.dumps(ALIAS).encode()
    assert (
        setup["http"]
        .post("/wandb", content=body, headers={"Authorization": "Bearer t0k"})
        .status_code
        == 202
    )
    refused = setup["http"].post("/wandb", content=body, headers={"X-Wandb-Signature": "bad"})
    assert refused.status_code == 401
    assert refused.json()["error"].startswith("Missing or wrong bearer token or X-Wandb-Signature")


def test_a_payload_we_can_not_read_is_a_422(setup: dict[str, Any]) -> None:
    body = json.dumps({**ALIAS, "artifact_version_string": "churn"}).encode()
    response = setup["http"].post("/wandb", content=body, headers={"Authorization": "Bearer t0k"})
    assert response.status_code == 422
    assert (
        "artifact_version_string must look like entity/project/collection:v3"
        in response.json()["error"]
    )
    assert setup["store"].inbox_size() == 0


def test_polling_and_pushing_the_same_alias_fires_once(
    setup: dict[str, Any], fake: FakeWandb, prefect_api: str
) -> None:
    fake.collections["acme/wandb-registry-models"] = {
        "churn": ("ArtifactPortfolio", [FakeVersion(3, "2026-01-01T08:00:00", ["production"])])
    }
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()  # starts watching
    versions = fake.collections["acme/wandb-registry-models"]["churn"][1]
    versions[0].aliases = []
    versions.append(FakeVersion(4, datetime.now(UTC).isoformat(), ["production"]))
    fired = sensor.run_once().fired  # the poller sees v4 get production (and the link)
    assert [(f.automation, f.version) for f in fired] == [("deploy", 4)]
    body = json.dumps(ALIAS).encode()  # then W&B's own webhook for the same change arrives
    assert setup["http"].post(
        "/wandb", content=body, headers={"Authorization": "Bearer t0k"}
    ).json() == {"accepted": 0}
    assert sensor.run_once().fired == []


def test_pushing_then_polling_the_same_alias_fires_once(
    setup: dict[str, Any], fake: FakeWandb, prefect_api: str
) -> None:
    fake.collections["acme/wandb-registry-models"] = {
        "churn": ("ArtifactPortfolio", [FakeVersion(4, "2026-01-01T08:00:00")])
    }
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()  # starts watching: v4 exists, without an alias
    fake.collections["acme/wandb-registry-models"]["churn"][1][0].aliases = ["production"]
    body = json.dumps(ALIAS).encode()  # W&B's webhook arrives before the next poll
    assert setup["http"].post(
        "/wandb", content=body, headers={"Authorization": "Bearer t0k"}
    ).json() == {"accepted": 1}
    fired = sensor.run_once().fired  # the pushed event fires; the poll finds nothing new
    assert [(f.automation, f.version) for f in fired] == [("deploy", 4)]
    assert sensor.run_once().fired == []
