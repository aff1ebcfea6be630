"""Unbreakable: no poison event, no dying service, no double delivery.

Each scenario is one an adversary reproduced against an earlier version: an event evaluation
could not take stopped all firing for good; a store outage ended the long-running sensor; a
hanging tracker took the SQLite receiver down; a second sensor delivered a firing still being
delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from prefect_ml_automations import cli
from prefect_ml_automations import sensor as sensor_module
from prefect_ml_automations.config import AutomationsConfig, parse_config
from prefect_ml_automations.errors import BadInputError, MLAutomationsError
from prefect_ml_automations.events import Event, MetricEvent, RunStateEvent
from prefect_ml_automations.receiver import create_app
from prefect_ml_automations.runner import sensor_loop, service_status
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.sources import Poll
from prefect_ml_automations.store import StateStore, inbox, store_problem, utcnow

from .conftest import events, metric, piped_into_head, state

TOKEN = {"Authorization": "Bearer t0k"}

#: Events that an earlier version accepted and evaluation then could not take (issue 10 (1)),
#: with the field the refusal must name.
POISON = {
    "step-beyond-int64": (
        metric("r1", 2**63, 1, 0),
        "field 'step': 9223372036854775808 is too large",
    ),
    "step-beyond-json-exact": (metric("r1", 2**53, 1, 0), "field 'step'"),
    "run-created-in-2300": (
        metric("r1", 1, 1, 0, run_created_at="2300-01-01T00:00:00Z"),
        "field 'run_created_at': 2300-01-01T00:00:00+00:00 is outside the times",
    ),
    "state-at-9999": (
        {**state("r1", "failed", 0), "timestamp": "9999-12-31T00:00:00Z"},
        "field 'timestamp': 9999-12-31T00:00:00+00:00 is outside the times",
    ),
    "calendar-start-with-offset": (
        {**state("r1", "failed", 0), "timestamp": "0001-01-01T00:00:00+05:00"},
        "field 'timestamp'",
    ),
    "nul-in-run-id": (metric("r\x001", 1, 1, 0), "field 'run_id' contains a NUL character"),
    "nul-in-metric": (metric("r1", 1, 1, 0, metric="a\x00"), "field 'metric' contains a NUL"),
    "version-beyond-int64": (
        {
            "type": "ADD_ARTIFACT_ALIAS",
            "registry": "models",
            "collection": "c",
            "version": 2**64,
            "alias": "production",
            "timestamp": "2026-01-01T10:00:00Z",
        },
        "field 'version'",
    ),
    "name-of-5000-characters": (metric("r" * 5000, 1, 1, 0), "field 'run_id' is 5000 characters"),
}


def config(store: str, **extra: Any) -> AutomationsConfig:
    return parse_config(
        {
            "store": store,
            "receiver": {"token": "t0k"},
            "automations": [
                {
                    "name": "good-acc",
                    "scope": {"project": "p"},
                    "event": {
                        "type": "RUN_METRIC",
                        "metric": "acc",
                        "window": 1,
                        "operator": ">",
                        "threshold": 0.5,
                    },
                    "cooldown": 0,
                    "action": {"type": "no_op"},
                },
                {
                    "name": "failed-runs",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "no_op"},
                },
            ],
            **extra,
        },
        env={},
    )


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path}/store.db")


def fired_runs(store: StateStore) -> list[str | None]:
    return sorted(row.firing.run_id for row in store.history() if row.firing is not None)


# -- 1. validation at the door ------------------------------------------------------------------


@pytest.mark.parametrize(("event", "message"), POISON.values(), ids=POISON.keys())
def test_the_receiver_refuses_what_evaluation_can_not_take_naming_the_field(
    store: StateStore, event: dict[str, Any], message: str
) -> None:
    client = TestClient(create_app(config(store.url), store))
    body = json.dumps([metric("ok", 1, 0.9, 0), event])
    response = client.post("/events", content=body, headers=TOKEN)
    assert response.status_code == 422
    assert response.json()["problems"][0].startswith(f"item 2: {message}")
    assert store.counts() == {"inbox": 0, "quarantine": 0}  # nothing half-stored


@pytest.mark.parametrize(("event", "message"), POISON.values(), ids=POISON.keys())
def test_ingest_and_evaluate_refuse_them_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], event: dict[str, Any], message: str
) -> None:
    file = tmp_path / "automations.yaml"
    file.write_text(f"store: sqlite:///{tmp_path}/s.db\n")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(metric("ok", 1, 0.9, 0)) + "\n" + json.dumps(event) + "\n")
    for command in ("ingest", "evaluate"):
        assert cli.main([command, str(file), str(events)]) == 2
        err = capsys.readouterr().err
        assert f"{events}:2: {message}" in err
        assert "Traceback" not in err
    assert StateStore(f"sqlite:///{tmp_path}/s.db").counts()["inbox"] == 0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("[" * 5000 + "]" * 5000, 400, "recursion limit exceeded"),
        ('{"type": "METRIC", "value": ' + "9" * 5000 + "}", 400, "number out of range"),
        (json.dumps(metric("r1", 1, 10**400, 0)).replace("1e+400", "1" + "0" * 400), 202, None),
    ],
    ids=["deep-nesting", "5000-digit-number", "400-digit-value"],
)
def test_bodies_that_used_to_crash_the_receiver_get_an_answer(
    store: StateStore, body: str, status: int, error: str | None
) -> None:
    client = TestClient(create_app(config(store.url), store), raise_server_exceptions=False)
    for path in ("/events", "/wandb", "/mlflow"):
        response = client.post(path, content=body, headers=TOKEN)
        if path == "/events":
            assert response.status_code == status, response.text
        else:
            assert 400 <= response.status_code < 500, response.text
        if error is not None:
            assert error in response.json()["error"]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.integers(min_value=1, max_value=400).map(lambda d: nested(d).encode()),
    st.builds(
        lambda digits, key: f'{{"{key}": {"9" * digits}}}'.encode(),
        st.integers(min_value=300, max_value=6000),
        st.sampled_from(["value", "step", "version", "event_type", "entity"]),
    ),
    st.builds(
        lambda d, key: json.dumps({key: json.loads(nested(d))}).encode(),
        st.integers(min_value=1, max_value=150),
        st.sampled_from(["event_type", "entity", "data", "value"]),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=raw_bodies, path=st.sampled_from(["/events", "/wandb", "/mlflow"]))
def test_any_body_at_any_door_gets_a_clear_answer_and_stores_only_what_it_says(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, path: str
) -> None:
    store = StateStore(f"sqlite:///{tmp_path_factory.mktemp('door')}/store.db")
    client = TestClient(create_app(config(store.url), store), raise_server_exceptions=False)
    response = client.post(path, content=body, headers=TOKEN)
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code == 202:
        assert store.counts()["inbox"] == answer["accepted"]
    else:
        assert answer["error"]
        assert store.counts()["inbox"] == 0
    store.close()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/wandb", {"X-Wandb-Signature": "\xe9\xe9"}),
        ("/mlflow", {"X-MLflow-Signature": "v1,abc", "X-MLflow-Timestamp": "\xb2"}),
        ("/mlflow", {"X-MLflow-Signature": "v1,abc", "X-MLflow-Timestamp": "9" * 5000}),
        ("/events", {"Authorization": "Bearer \xe9t0k"}),
        ("/events", {"Content-Length": "9" * 40}),
    ],
    ids=[
        "wandb-latin1-signature",
        "mlflow-superscript-time",
        "mlflow-5000-digit-time",
        "latin1-token",
        "absurd-length",
    ],
)
def test_hostile_headers_get_a_4xx_before_anything_is_read(
    store: StateStore, path: str, headers: dict[str, str]
) -> None:
    receiver = config(store.url, receiver={"token": "t0k", "secret": "s3cr3t"})
    client = TestClient(create_app(receiver, store), raise_server_exceptions=False)
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    response = client.post(path, content=b'{"event_type": "x", "entity": "x"}', headers=encoded)
    assert 400 <= response.status_code < 500, response.text
    assert store.counts()["inbox"] == 0


def test_a_json_line_may_hold_u2028_and_a_state_is_a_short_word(store: StateStore) -> None:
    client = TestClient(create_app(config(store.url), store))
    lines = "\n".join(
        [
            json.dumps(state("r1", "failed", 0), ensure_ascii=False),
            json.dumps(state("r\u2028\u0085", "failed", 1), ensure_ascii=False),
        ]
    )
    answer = client.post("/events", content=lines.encode(), headers=TOKEN)
    assert (answer.status_code, answer.json()) == (202, {"accepted": 2})
    long_state = client.post(
        "/events", content=json.dumps(state("r2", "\u0130" * 1024, 2)), headers=TOKEN
    )
    assert long_state.status_code == 422  # refused at the door, not quarantined later
    assert "field 'state' is 1024 characters long; it may have at most 64" in long_state.text


def test_a_firing_with_a_lone_surrogate_is_delivered_and_read_back(store: StateStore) -> None:
    """json.loads (W&B's answers, old inbox rows) takes lone surrogates; the firing they make
    must be readable afterwards, or it would stop every delivery behind it."""
    alias = {
        "type": "ADD_ARTIFACT_ALIAS",
        "registry": "models",
        "collection": "c",
        "version": 1,
        "alias": "a",
        "timestamp": "2026-01-01T00:00:00Z",
        "metadata": {"k": "\ud800"},
    }
    raw_inbox(store, json.dumps(alias), json.dumps(state("after", "failed", 1)))
    automations = parse_config(
        {
            "store": store.url,
            "automations": [
                {
                    "name": "any-alias",
                    "scope": {"registry": "models"},
                    "event": {"type": "ADD_ARTIFACT_ALIAS"},
                    "action": {"type": "no_op"},
                },
                {
                    "name": "failed",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "no_op"},
                },
            ],
        },
        env={},
    )
    Sensor(automations, store).run_once()
    assert sorted(row.status for row in store.history()) == ["finished", "finished"]


# -- 1. ... and the quarantine behind it --------------------------------------------------------


def raw_inbox(store: StateStore, *bodies: str) -> None:
    """Rows as an older version let them in (bypassing today's door)."""
    with store.engine.begin() as connection:
        connection.execute(
            inbox.insert(),
            [{"received_at": utcnow(), "origin": "push", "body": body} for body in bodies],
        )


def test_events_an_older_version_let_in_are_quarantined_and_the_rest_fires(
    tmp_path: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    raw_inbox(
        store,
        json.dumps(metric("a", 1, 0.9, 0)),
        json.dumps(metric("r1", 2**63, 1, 1)),
        json.dumps(metric("b", 1, 0.9, 2)),
        json.dumps({**state("c", "failed", 3), "timestamp": "9999-12-31T00:00:00Z"}),
        "{not json",
        json.dumps(state("d", "failed", 4)),
    )
    report = Sensor(config(store.url), store).run_once()
    assert fired_runs(store) == ["a", "b", "d"]
    assert report.quarantined == 3
    assert store.counts() == {"inbox": 0, "quarantine": 3}

    file = tmp_path / "automations.yaml"
    file.write_text(f"store: {store.url}\n")
    assert cli.main(["quarantine", str(file)]) == 0
    out = capsys.readouterr().out
    assert "3 event(s) in the quarantine of sqlite:///" in out
    assert "field 'step': 9223372036854775808 is too large" in out
    assert "not a valid event: Expecting property name" in out
    assert cli.main(["quarantine", str(file), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["origin"] for r in records] == ["push"] * 3
    # Re-driven, they are taken again — and, still invalid, come back: kept, never lost.
    assert cli.main(["quarantine", str(file), "--redrive", "--id", str(records[0]["id"])]) == 0
    assert "1 event(s) put back into the inbox" in capsys.readouterr().out
    assert store.counts() == {"inbox": 1, "quarantine": 2}
    Sensor(config(store.url), store).run_once()
    assert store.counts() == {"inbox": 0, "quarantine": 3}


class PoisonSource:
    """A tracker whose answers slip past validation (built without it, as a buggy source
    could): the cycle's evaluation or its store fails on them."""

    name = "poisoned"

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        n = (cursor or {}).get("n", 0)
        return Poll(events=self.events if n == 0 else [], cursor={"n": n + 1})


def unchecked_metric(run: str, step: int, value: float, **fields: Any) -> MetricEvent:
    base = MetricEvent.model_validate(metric("x", 1, value, 0))
    return base.model_copy(update={"run_id": run, "step": step, **fields})


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield StateStore(f"sqlite:///{tmp_path}/store.db")
        return
    store = StateStore(request.getfixturevalue("postgres_url"))
    yield store
    store.close()


def test_an_event_that_still_fails_evaluation_is_quarantined_alone(any_store: StateStore) -> None:
    store = any_store
    poison = unchecked_metric("bad", 2**63, 0.9)
    events = [unchecked_metric(f"r{i}", 1, 0.9) for i in range(5)]
    source = PoisonSource([*events[:2], poison, *events[2:]])
    report = Sensor(config(store.url), store, sources=[source]).run_once()
    assert fired_runs(store) == ["r0", "r1", "r2", "r3", "r4"]
    (kept,) = store.quarantined()
    assert (kept.origin, report.quarantined) == ("poll", 1)
    assert kept.error.startswith("OverflowError")
    assert json.loads(kept.body)["run_id"] == "bad"
    # The next cycle goes on as if nothing happened.
    raw_inbox(store, json.dumps(metric("later", 1, 0.9, 9)))
    Sensor(config(store.url), store, sources=[source]).run_once()
    assert "later" in fired_runs(store)


event_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)
hostile_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["METRIC", "RUN_STATE", "RUN_HEARTBEAT", "ADD_ARTIFACT_ALIAS"]),
        "project": st.sampled_from(["p", "", "p\x00"]),
        "run_id": st.text(max_size=4),
        "metric": st.sampled_from(["acc", "system.gpu", "a\x00"]),
        "state": st.sampled_from(["failed", "FAILED", ""]),
        "step": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), st.floats()),
        "value": event_values,
        "timestamp": st.one_of(
            st.datetimes().map(lambda d: d.isoformat()),
            st.sampled_from(["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00", "x"]),
        ),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile=st.lists(hostile_events, max_size=6), good_runs=st.integers(1, 4))
def test_after_any_mix_of_hostile_and_good_events_every_good_event_fires(
    tmp_path_factory: pytest.TempPathFactory, hostile: list[dict[str, Any]], good_runs: int
) -> None:
    store = StateStore(f"sqlite:///{tmp_path_factory.mktemp('mix')}/store.db")
    client = TestClient(create_app(config(store.url), store), raise_server_exceptions=False)
    good = [metric(f"good{i}", 1, 0.9, i) for i in range(good_runs)]
    for event in hostile:
        response = client.post("/events", content=json.dumps(event), headers=TOKEN)
        assert response.status_code in (202, 400, 422), response.text
    for event in good:
        assert client.post("/events", content=json.dumps(event), headers=TOKEN).status_code == 202
    Sensor(config(store.url), store).run_once()
    fired = fired_runs(store)
    assert {f"good{i}" for i in range(good_runs)} <= set(fired)
    assert store.counts()["inbox"] == 0
    store.close()


# -- 2. services that outlive their dependencies ------------------------------------------------


def test_a_sensor_loop_survives_a_postgresql_outage_and_catches_up(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    logging.getLogger("prefect_ml_automations").addHandler(caplog.handler)
    database = postgres_url.rsplit("/", 1)[1]
    store = StateStore(postgres_url)
    sensor = Sensor(config(postgres_url), store, name="outage")

    def admin(sql: str) -> None:
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/test", autocommit=True
        ) as connection:
            connection.execute(sql)

    async def scenario() -> None:
        loop = asyncio.create_task(sensor_loop(sensor, interval=0.2))
        await asyncio.sleep(0.5)
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        await asyncio.sleep(2.5)  # several failed cycles, backing off
        assert not loop.done()
        status = service_status("outage").to_dict()
        assert status["problem"].startswith("the state store is unavailable")
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await asyncio.to_thread(
            store.put_events, [MetricEvent.model_validate(metric("after", 1, 0.9, 0))], origin="t"
        )
        for _ in range(100):
            recovered = service_status("outage").to_dict()["problem"] is None
            if recovered and await asyncio.to_thread(fired_runs, store) == ["after"]:
                break
            await asyncio.sleep(0.1)
        loop.cancel()
        assert service_status("outage").to_dict()["problem"] is None

    try:
        asyncio.run(scenario())
    finally:
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        logging.getLogger("prefect_ml_automations").removeHandler(caplog.handler)
    assert fired_runs(store) == ["after"]
    assert any(
        "the cycle failed (the state store is unavailable" in r.message for r in caplog.records
    )
    store.close()


def test_a_receiver_and_sensor_started_while_the_store_is_down_wait_for_it(
    postgres_url: str,
) -> None:
    import psycopg

    database = postgres_url.rsplit("/", 1)[1]

    def admin(sql: str) -> None:
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/test", autocommit=True
        ) as connection:
            connection.execute(sql)

    admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        store = StateStore(postgres_url, wait=True)  # as `receive` and `run --interval` do
        sensor = Sensor(config(postgres_url), store, name="late-store")
        app = create_app(
            config(postgres_url), store, status=lambda: service_status("late-store").to_dict()
        )

        async def scenario() -> None:
            loop = asyncio.create_task(sensor_loop(sensor, interval=0.2))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
                await asyncio.sleep(1.0)
                assert (await client.get("/health")).status_code == 503
                body = json.dumps(state("late", "failed", 0))
                pushed = await client.post("/events", content=body, headers=TOKEN)
                assert pushed.status_code == 503
                assert not loop.done()
                admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                for _ in range(100):  # the sender tries again, as 503 + Retry-After asks
                    pushed = await client.post("/events", content=body, headers=TOKEN)
                    if pushed.status_code == 202:
                        break
                    await asyncio.sleep(0.1)
                assert pushed.status_code == 202
                for _ in range(100):
                    if await asyncio.to_thread(fired_runs, store) == ["late"]:
                        break
                    await asyncio.sleep(0.1)
            loop.cancel()

        asyncio.run(scenario())
        assert fired_runs(store) == ["late"]
        store.close()
    finally:
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


class HangingSource:
    """A tracker that accepts the connection and never answers (until released)."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        self.calls += 1
        self.release.wait(30)
        return Poll(cursor={"n": 1})


def test_a_hanging_tracker_holds_up_neither_the_receiver_nor_pushed_events(
    store: StateStore,
) -> None:
    tracker = HangingSource()
    sensor = Sensor(config(store.url), store, name="hang", sources=[tracker])
    sensor.poll_timeout = sensor_module.timedelta(seconds=0.5)
    app = create_app(config(store.url), store, status=lambda: service_status("hang").to_dict())

    async def scenario() -> None:
        loop = asyncio.create_task(sensor_loop(sensor, interval=0.2))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
            await asyncio.sleep(0.3)
            started = time.monotonic()
            pushed = await client.post(
                "/events", content=json.dumps(state("pushed", "failed", 0)), headers=TOKEN
            )
            health = await client.get("/health")
            assert time.monotonic() - started < 5  # not the 60 s of a held write lock
            assert pushed.status_code == 202
            assert health.status_code == 200
            for _ in range(50):
                health = (await client.get("/health")).json()
                if fired_runs(store) == ["pushed"] and health["status"] != "ok":
                    break
                await asyncio.sleep(0.1)
            assert health["status"] == "degraded"
            assert "hanging" in health["sensor"]["problem"]
        loop.cancel()

    try:
        asyncio.run(scenario())
    finally:
        tracker.release.set()
    assert fired_runs(store) == ["pushed"]
    assert tracker.calls == 1  # not asked again while its first poll hung


def test_health_says_unavailable_and_pushes_get_503_while_the_store_is_down(
    tmp_path: Path,
) -> None:
    store = StateStore(f"sqlite:///{tmp_path}/store.db")
    client = TestClient(create_app(config(store.url), store), raise_server_exceptions=False)
    store.engine.dispose()
    (tmp_path / "store.db").unlink()
    (tmp_path / "store.db").mkdir()  # the file is gone and can not be made again
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    pushed = client.post("/events", content=json.dumps(state("r", "failed", 0)), headers=TOKEN)
    assert pushed.status_code == 503
    assert pushed.headers["retry-after"] == "5"
    assert "nothing was stored" in pushed.json()["error"]


def test_store_errors_say_what_is_wrong(tmp_path: Path) -> None:
    StateStore(f"sqlite:///{tmp_path}/store.db").close()
    read_only = StateStore(f"sqlite:///file:{tmp_path}/store.db?mode=ro&uri=true")
    with pytest.raises(OperationalError) as caught:
        read_only.put_events([RunStateEvent.model_validate(state("r", "failed", 0))], origin="t")
    assert store_problem(caught.value).startswith("the store is read-only")
    with pytest.raises(MLAutomationsError, match="can not be opened: the file can not be opened"):
        StateStore(f"sqlite:///{tmp_path}/no/such/folder/store.db")


def test_a_command_on_a_read_only_store_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    StateStore(f"sqlite:///{tmp_path}/store.db").close()
    file = tmp_path / "automations.yaml"
    file.write_text(f'store: "sqlite:///file:{tmp_path}/store.db?mode=ro&uri=true"\n')
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(state("r", "failed", 0)) + "\n")
    assert cli.main(["ingest", str(file), str(events)]) == 1
    assert capsys.readouterr().err == (
        "error: The state store failed: the store is read-only (attempt to write a readonly "
        "database); make the file and its folder writable by this user.\n"
    )


# -- 3. at most one delivery at a time, per firing ----------------------------------------------


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensor_module, "LEASE", sensor_module.timedelta(seconds=0.4))


def webhook_config(store: str) -> AutomationsConfig:
    return parse_config(
        {
            "store": store,
            "automations": [
                {
                    "name": "hook",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "webhook", "url": "https://hooks.example.invalid/x"},
                }
            ],
        },
        env={},
    )


@pytest.mark.usefixtures("short_lease")
def test_a_slow_action_is_never_taken_over_by_a_second_sensor(store: StateStore) -> None:
    store.put_events(
        [RunStateEvent.model_validate(state(f"r{i}", "failed", i)) for i in range(3)],
        origin="t",
    )
    calls: list[str] = []

    async def slow_target(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Idempotency-Key"])
        await asyncio.sleep(1.5)  # well past the 0.4 s lease: only its renewal keeps it
        return httpx.Response(200)

    first = Sensor(webhook_config(store.url), store, name="one")
    second = Sensor(webhook_config(store.url), store, name="two")

    async def both() -> None:
        with respx.mock:
            respx.post("https://hooks.example.invalid/x").mock(side_effect=slow_target)
            await asyncio.to_thread(first.evaluate)
            delivering = asyncio.create_task(first.deliver())
            await asyncio.sleep(0.8)
            assert await second.deliver() == []  # all three are held, though past 0.4 s
            assert len(await delivering) == 3

    asyncio.run(both())
    assert len(calls) == len(set(calls)) == 3  # one call per firing (its id the key), none twice
    assert [row.status for row in store.history()] == ["finished"] * 3


@pytest.mark.usefixtures("short_lease")
def test_a_crashed_sensors_firing_is_due_again_when_its_lease_runs_out(store: StateStore) -> None:
    store.put_events([RunStateEvent.model_validate(state("r", "failed", 0))], origin="t")
    crashed = Sensor(webhook_config(store.url), store)
    crashed.evaluate()
    (firing,) = store.due(utcnow())
    assert store.claim(firing.firing_id, utcnow(), sensor_module.LEASE) == 1  # then it died
    assert store.due(utcnow()) == []
    time.sleep(0.5)
    assert [f.firing_id for f in store.due(utcnow())] == [firing.firing_id]


def test_retry_is_refused_while_a_sensor_holds_the_lease_and_for_finished_firings(
    tmp_path: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.put_events([RunStateEvent.model_validate(state("r", "failed", 0))], origin="t")
    Sensor(config(store.url), store).evaluate()
    (firing,) = store.due(utcnow())
    store.claim(firing.firing_id, utcnow(), sensor_module.LEASE)
    with pytest.raises(MLAutomationsError, match="is being delivered by a sensor right now"):
        store.reset(firing.firing_id)
    store.finish(firing.firing_id, None)
    file = tmp_path / "automations.yaml"
    file.write_text(f"store: {store.url}\n")
    assert cli.main(["retry", str(file), firing.firing_id]) == 2
    assert "is finished, not failed: there is nothing to retry" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="No firing has the id 'nope'"):
        store.reset("nope")


def test_interval_nan_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "automations.yaml"
    file.write_text(f"store: sqlite:///{tmp_path}/s.db\n")
    for command in ("run", "serve", "receive"):
        assert cli.main([command, str(file), "--interval", "nan"]) == 2
        assert "--interval must be a positive, finite number of seconds, not nan." in (
            capsys.readouterr().err
        )


def test_a_killed_sensor_flow_run_is_marked_crashed_by_the_next_one(
    prefect_api: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from prefect_ml_automations.flows import sensor_cycle

    file = tmp_path / "automations.yaml"
    file.write_text(f"store: sqlite:///{tmp_path}/store.db\n")
    store = StateStore(f"sqlite:///{tmp_path}/store.db")

    async def killed_run() -> str:
        async with get_client() as client:
            run = await client.create_flow_run(sensor_cycle, state=Running())
        return str(run.id)

    async def state_of(flow_run_id: str) -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(UUID(flow_run_id))).state

    killed = asyncio.run(killed_run())
    store.beat(killed, "default", utcnow() - timedelta(minutes=5))  # then `kill -9`
    asyncio.run(sensor_cycle(str(file)))  # type: ignore[arg-type]
    crashed = asyncio.run(state_of(killed))
    assert crashed.type.value == "CRASHED"
    assert "no heartbeat since" in crashed.message
    assert store.silent_runs(utcnow()) == []  # the new run ended cleanly: not left behind


def test_a_regex_that_backtracks_for_ever_quarantines_the_name_not_the_sensor(
    store: StateStore,
) -> None:
    slow = parse_config(
        {
            "store": store.url,
            "automations": [
                {
                    "name": "sweeps-fail",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "filters": {"run_name": "^(a|aa)+$"},  # overlapping repeats: exponential
                    "action": {"type": "no_op"},
                }
            ],
        },
        env={},
    )
    store.put_events(
        events(
            state("r1", "failed", 0, run_name="a" * 60 + "!"),  # ~1.6^60 steps
            state("r2", "failed", 1, run_name="aaaa"),
        ),
        origin="push",
    )
    started = time.monotonic()
    Sensor(slow, store).run_once()
    assert time.monotonic() - started < 30  # not the hours `re` would take
    assert fired_runs(store) == ["r2"]
    (kept,) = store.quarantined()
    assert "RegexTimeout: the regular expression '^(a|aa)+$' took more than 0.1 s" in kept.error


def test_values_whose_squares_overflow_do_not_count_and_warn_nothing() -> None:
    import warnings

    from prefect_ml_automations.automations import Automation
    from prefect_ml_automations.evaluator import Evaluator

    def automation(event: dict[str, Any]) -> Automation:
        return Automation.model_validate(
            {
                "name": event["type"],
                "scope": {"project": "p"},
                "event": event,
                "cooldown": 0,
                "action": {"type": "no_op"},
            }
        )

    zscore = automation({"type": "RUN_METRIC_ZSCORE", "metric": "acc", "threshold": 1})
    change = automation(
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "acc",
            "current_window": 1,
            "prior_window": 1,
            "amount": 0.1,
            "direction": "any",
        }
    )

    def runs(scale: float) -> list[Event]:
        return events(*(metric(f"r{r}", 0, (100 if r == 4 else r) * scale, r) for r in range(5)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings included
        assert len(Evaluator([zscore]).evaluate(runs(1e140)).firings) == 3
        assert Evaluator([zscore]).evaluate(runs(1e160)).firings == []  # not counted
        tiny_then_huge = events(metric("r", 0, 1e-300, 0), metric("r", 1, 1e150, 1))
        assert Evaluator([change]).evaluate(tiny_then_huge).firings == []  # change = inf


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    file = tmp_path / "automations.yaml"
    file.write_text(
        "automations:\n  - {name: f, scope: {project: p}, event: {type: RUN_STATE, states: [failed]},"
        " action: {type: no_op}}\n"
    )
    events_file = tmp_path / "events.jsonl"
    events_file.write_text(
        "".join(json.dumps(state(f"r{i}", "failed", i % 50)) + "\n" for i in range(5000))
    )
    done = piped_into_head("evaluate", str(file), str(events_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('{"firing_id":')
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr


def test_help_into_a_pipe_closed_early_ends_quietly() -> None:
    done = piped_into_head("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Usage: ml-automations COMMAND\n"
    assert done.stderr == ""
