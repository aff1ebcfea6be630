"""The push receiver (SPEC §6): authenticated, durable before 2xx, clear 4xx storing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prefect_ml_automations.config import parse_config
from prefect_ml_automations.errors import BadInputError
from prefect_ml_automations.receiver import MAX_BODY, create_app
from prefect_ml_automations.store import StateStore

from .conftest import state

TOKEN = {"Authorization": "Bearer t0ken"}


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path}/store.db")


@pytest.fixture
def woken() -> list[int]:
    return []


@pytest.fixture
def client(store: StateStore, woken: list[int]) -> TestClient:
    config = parse_config({"receiver": {"token": "t0ken"}, "store": store.url}, env={})
    return TestClient(create_app(config, store, wake=lambda: woken.append(1)))


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (json.dumps(state("r1", "failed", 0)), 1),
        (json.dumps([state("r1", "running", 0), state("r1", "failed", 1)]), 2),
        (
            json.dumps(state("r1", "running", 0))
            + "\n\n"
            + json.dumps(state("r2", "failed", 1))
            + "\n",
            2,
        ),
    ],
    ids=["object", "array", "json-lines"],
)
def test_events_are_stored_before_the_answer_and_the_sensor_is_woken(
    client: TestClient, store: StateStore, woken: list[int], body: str, count: int
) -> None:
    response = client.post("/events", content=body, headers=TOKEN)
    assert (response.status_code, response.json()) == (202, {"accepted": count})
    assert store.inbox_size() == count
    assert woken == [1]


@pytest.mark.parametrize(
    ("headers", "body", "status", "answer"),
    [
        (
            {},
            "{}",
            401,
            {
                "error": "Missing or wrong bearer token; send 'Authorization: Bearer <receiver.token>'."
            },
        ),
        ({"Authorization": "Bearer nope"}, "{}", 401, None),
        (
            TOKEN,
            "",
            400,
            {"error": "The request has no body; send one event, an array or JSON lines."},
        ),
        (
            TOKEN,
            '{"type": "RUN_STATE"}\nnot json',
            400,
            {"error": "Line 2 of the body is not valid JSON (expected ident at line 1 column 2)."},
        ),
        (
            TOKEN,
            json.dumps(
                [
                    state("r1", "failed", 0),
                    {
                        "type": "RUN_STATE",
                        "project": "p",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "state": "x",
                    },
                ]
            ),
            422,
            {
                "error": "1 malformed event(s); nothing was stored.",
                "problems": ["item 2: field 'run_id' is required"],
            },
        ),
        (
            TOKEN,
            "x" * (MAX_BODY + 1),
            413,
            {"error": f"The body is larger than {MAX_BODY} bytes; send smaller batches."},
        ),
    ],
    ids=["no-token", "wrong-token", "empty", "bad-line", "one-bad-event", "too-large"],
)
def test_bad_requests_get_a_clear_4xx_and_store_nothing(
    client: TestClient,
    store: StateStore,
    woken: list[int],
    headers: dict[str, str],
    body: str,
    status: int,
    answer: Any,
) -> None:
    response = client.post("/events", content=body, headers=headers)
    assert response.status_code == status
    if answer is not None:
        assert response.json() == answer
    assert store.inbox_size() == 0
    assert woken == []


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "inbox": 0, "quarantine": 0}


def test_without_a_token_the_receiver_refuses_to_start_unless_insecure(store: StateStore) -> None:
    config = parse_config({"store": store.url}, env={})
    with pytest.raises(BadInputError, match="The receiver has neither a token nor a secret"):
        create_app(config, store)
    open_client = TestClient(create_app(config, store, insecure=True))
    assert (
        open_client.post("/events", content=json.dumps(state("r1", "failed", 0))).status_code == 202
    )
