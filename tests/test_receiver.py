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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_receive_says_what_it_does_and_stops_cleanly_on_a_signal(
    tmp_path: Path, prefect_api: str, signal_name: str
) -> None:
    """A person runs `receive`, pushes a failed run, then stops it with SIGTERM or Ctrl-C: its
    log names the address, the firing and the refusal; it exits 0 with no traceback."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    file = tmp_path / "automations.yaml"
    file.write_text(
        'receiver: {token: "t0ken-t0ken"}\nautomations:\n  - {name: page-on-failure, '
        "scope: {project: p}, event: {type: RUN_STATE, states: [failed]}, action: {type: no_op}}\n"
    )
    port = _free_port()
    service = subprocess.Popen(
        [
            *(sys.executable, "-m", "prefect_ml_automations.cli", "receive", str(file)),
            *("--port", str(port), "--interval", "600"),
        ],
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert service.stdout is not None
    seen: list[str] = []
    try:
        for line in service.stdout:  # the sensor beside it has started: push
            seen.append(line)
            if "sensor default: started" in line:
                break
        base = f"http://127.0.0.1:{port}/events"
        assert httpx.post(base, json={}).status_code == 401
        pushed = httpx.post(
            base,
            headers={"Authorization": "Bearer t0ken-t0ken"},
            json=state("r7", "failed", 0),
        )
        assert pushed.json() == {"accepted": 1}
        for line in service.stdout:
            seen.append(line)
            if "Firing " in line:
                break
        service.send_signal(getattr(signal, signal_name))
        rest = service.stdout.read()
        service.wait(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
    log = "".join(seen) + rest
    assert service.returncode == 0, log
    assert f"receiver: listening on http://127.0.0.1:{port} " in log
    assert "auth: bearer token" in log
    assert "receiver: 401 for POST /events from 127.0.0.1: Missing or wrong bearer token" in log
    assert "of 'page-on-failure' (run 'r7'): done (ok)." in log
    assert f"sensor default: stopped ({signal_name})." in rest
    assert f"receiver: stopped ({signal_name})." in rest
    assert rest.rstrip().splitlines()[-1].endswith("stopped.") or "\nstopped.\n" in rest
    assert "Traceback" not in log
    assert "Crash detected" not in log
    assert "t0ken-t0ken" not in log
    # The sensor's lines are also the flow run's, in the Prefect UI; the receiver's are not.
    [firing_line] = [line for line in log.splitlines() if "of 'page-on-failure'" in line]
    said = firing_line.split(" - ", 1)[1]
    logs = httpx.post(
        f"{prefect_api}/logs/filter", json={"sort": "TIMESTAMP_DESC", "limit": 200}
    ).json()
    in_ui = [entry for entry in logs if entry["message"] == said]  # (both signals' runs)
    assert in_ui
    assert all(entry["flow_run_id"] is not None for entry in in_ui)
    assert not [entry for entry in logs if entry["message"].startswith("receiver: ")]


def test_receive_on_a_port_in_use_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from prefect_ml_automations.cli import main

    file = tmp_path / "automations.yaml"
    file.write_text('receiver: {token: "t0ken-t0ken"}\nautomations: []\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["receive", str(file), "--port", str(port), "--no-sensor"])
    assert code == 1
    assert capsys.readouterr().err.endswith(
        f"error: The receiver could not listen on 127.0.0.1:{port}, or stopped by itself; "
        "the lines above say why.\n"
    )
