"""W&B webhook calls into the receiver: authenticated like W&B does, one event per change."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prefect_ml_automations.config import parse_config
from prefect_ml_automations.receiver import create_app
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore

from .wandb_fake import MODELS, FakeWandb

SECRET = "wb-secret"
#: A W&B webhook call: the payload template of the README's recipe, filled as W&B fills its
#: documented variables (W&B's docs, `models/automations/create-automations/webhook.mdx`,
#: "Payload variables"; `X-Wandb-Signature` as its `static/webhook_test.sh` computes it).
ALIAS = {
    "event_type": "ADD_ARTIFACT_ALIAS",
    "artifact_version_string": "acme-org/wandb-registry-models/churn:v1",
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
    ) == ("ADD_ARTIFACT_ALIAS", "models", "churn", 1, "production", "bob")


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
        "artifact_version_string 'churn' must look like entity/project/collection:v3"
        in response.json()["error"]
    )
    assert setup["store"].inbox_size() == 0


def test_polling_and_pushing_the_same_alias_fires_once(
    setup: dict[str, Any], fake: FakeWandb, prefect_api: str
) -> None:
    v0 = fake.log_artifact("acme/training", "churn")
    fake.link(v0, MODELS, "churn", aliases=["production"])
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()  # starts watching
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    fake.move_alias(MODELS, "churn", "production", 1)
    fired = sensor.run_once().fired  # the poller sees v1 get production (and the link)
    assert [(f.automation, f.version) for f in fired] == [("deploy", 1)]
    body = json.dumps(ALIAS).encode()  # then W&B's own webhook for the same change arrives
    assert setup["http"].post(
        "/wandb", content=body, headers={"Authorization": "Bearer t0k"}
    ).json() == {"accepted": 0}
    assert sensor.run_once().fired == []


def test_pushing_then_polling_the_same_alias_fires_once(
    setup: dict[str, Any], fake: FakeWandb, prefect_api: str
) -> None:
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()  # starts watching: v1 exists, without an alias
    fake.move_alias(MODELS, "churn", "production", 1)
    body = json.dumps(ALIAS).encode()  # W&B's webhook arrives before the next poll
    assert setup["http"].post(
        "/wandb", content=body, headers={"Authorization": "Bearer t0k"}
    ).json() == {"accepted": 1}
    fired = sensor.run_once().fired  # the pushed event fires; the poll finds nothing new
    assert [(f.automation, f.version) for f in fired] == [("deploy", 1)]
    assert sensor.run_once().fired == []


def test_a_version_named_by_its_alias_is_left_to_the_poll_that_finds_its_number(
    setup: dict[str, Any], fake: FakeWandb, prefect_api: str
) -> None:
    """W&B's docs show `${artifact_version_string}` as `entity/project/collection:<alias>`."""
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    sensor = Sensor(setup["config"], setup["store"])
    sensor.run_once()
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn", aliases=["production"])
    body = json.dumps(
        {**ALIAS, "artifact_version_string": "acme-org/wandb-registry-models/churn:production"}
    ).encode()
    answer = setup["http"].post("/wandb", content=body, headers={"Authorization": "Bearer t0k"})
    assert answer.status_code == 202
    assert answer.json() == {
        "accepted": 0,
        "deferred": "'acme-org/wandb-registry-models/churn:production' names no version "
        "number: the next poll of 'team' reports it",
    }
    fired = sensor.run_once().fired
    assert [(f.automation, f.version, f.alias) for f in fired] == [("deploy", 1, "production")]
    again = setup["http"].post("/wandb", content=body, headers={"Authorization": "Bearer t0k"})
    assert again.json() == {"accepted": 0}  # the snapshot already has it: nothing deferred
    assert sensor.run_once().fired == []


@pytest.mark.parametrize(
    ("payload", "event"),
    [
        pytest.param(
            {
                "event_type": "LINK_MODEL",
                "artifact_version_string": "acme-org/wandb-registry-models/churn:v2",
                "artifact_collection_name": "churn",
                "event_author": "bob",
            },
            ("LINK_ARTIFACT", "models", None, 2, None),
            id="link by W&B's wire name",
        ),
        pytest.param(
            {
                "event_type": "ADD_ARTIFACT_TAG",
                "artifact_version_string": "acme/vision/data:v3",
                "tag": "eu",
                "alias": "",
            },
            ("ADD_ARTIFACT_TAG", None, "acme/vision", 3, "eu"),
            id="tag in a project",
        ),
        pytest.param(
            {
                "event_type": "RUN_STATE",
                "run_url": "https://wandb.ai/acme/vision/runs/r9",
                "run_status": "crashed",
                "event_author": "alice",
            },
            ("RUN_STATE", None, "acme/vision", "r9", "failed"),
            id="run state from a run URL",
        ),
    ],
)
def test_what_w_and_b_can_send_is_an_event(
    setup: dict[str, Any], payload: dict[str, Any], event: tuple[Any, ...]
) -> None:
    answer = setup["http"].post("/wandb", json=payload, headers={"Authorization": "Bearer t0k"})
    assert answer.json() == {"accepted": 1}
    with setup["store"].cycle() as cycle:
        [got] = cycle.take_inbox()
    if got.type == "RUN_STATE":
        assert (got.type, None, got.project, got.run_id, got.state) == event
    else:
        assert (got.type, got.registry, got.project, got.version, got.tag) == event


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param(
            {"event_type": "RUN_STATE", "project_name": "vision", "run_status": "failed"},
            "a RUN_STATE call needs ${run_id} (or ${run_url}) in its payload",
            id="run without id",
        ),
        pytest.param(
            {"event_type": "RUN_METRIC", "project_name": "vision"},
            "event_type 'RUN_METRIC' can not be received: W&B's calls carry no metric values",
            id="metric",
        ),
        pytest.param(
            {"event_type": "ADD_ARTIFACT_TAG", "artifact_version_string": "a/b/c:v1"},
            "a ADD_ARTIFACT_TAG call needs the tag: put ${tag} into the payload",
            id="tag without tag",
        ),
    ],
)
def test_what_can_not_be_read_is_a_422_naming_the_missing_variable(
    setup: dict[str, Any], payload: dict[str, Any], error: str
) -> None:
    answer = setup["http"].post("/wandb", json=payload, headers={"Authorization": "Bearer t0k"})
    assert answer.status_code == 422
    assert error in answer.json()["error"]
    assert setup["store"].inbox_size() == 0


def test_an_alias_named_version_without_a_wandb_source_is_a_422(tmp_path: Path) -> None:
    raw = {
        "store": f"sqlite:///{tmp_path}/store.db",
        "receiver": {"token": "t0k"},
        "automations": [],
    }
    config = parse_config(raw, env={})
    http = TestClient(create_app(config, StateStore(config.store)))
    body = {**ALIAS, "artifact_version_string": "acme-org/wandb-registry-models/churn:production"}
    answer = http.post("/wandb", json=body, headers={"Authorization": "Bearer t0k"})
    assert answer.status_code == 422
    assert answer.json()["error"].endswith(
        "no W&B source is configured to look it up; make the webhook send the version's number "
        "(…:v3)."
    )
