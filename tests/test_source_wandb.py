"""The W&B source against W&B's GraphQL API faked at the httpx edge (respx)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_ml_automations.config import WandbSourceSettings, parse_config
from prefect_ml_automations.errors import SourceError
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.sources import wandb
from prefect_ml_automations.sources.wandb import WandbSource

from .conftest import WANDB_API as API
from .wandb_fake import FakeRun, FakeVersion, FakeWandb


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wandb, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def source(**kw: Any) -> WandbSource:
    settings = WandbSourceSettings(name="team", type="wandb", entity="acme", api_key="k-123")
    return WandbSource(
        settings,
        projects=kw.get("projects", {"acme/vision"}),
        registries=kw.get("registries", {"models"}),
    )


def summary(events: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for e in events:
        if e.type == "METRIC":
            out.append(("METRIC", e.run_id, e.metric, e.step, e.value))
        elif e.type == "RUN_STATE":
            out.append(("RUN_STATE", e.run_id, e.state))
        else:
            out.append((e.type, e.registry or e.project, e.collection, e.version, e.alias or e.tag))
    return out


def now() -> datetime:
    return datetime.now(UTC)


def test_runs_history_states_and_registry_story(fake: FakeWandb) -> None:
    old = FakeRun(
        "r0",
        "old",
        "bob",
        "2026-01-01T09:00:00",
        state="finished",
        history=[{"_step": 0, "_timestamp": 1767258000, "acc": 0.5}],
    )
    fake.runs["acme/vision"] = [old]
    fake.collections["acme/wandb-registry-models"] = {
        "churn": ("ArtifactPortfolio", [FakeVersion(3, "2026-01-01T08:00:00", ["production"])])
    }
    s = source()
    first = s.poll(None, now())
    assert first.events == []  # starts watching now
    assert summary(first.filling) == [
        ("METRIC", "r0", "acc", 0, 0.5),
        ("RUN_STATE", "r0", "finished"),
    ]

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    run = FakeRun(
        "r1",
        "sweep-1",
        "alice",
        "2026-01-01T10:00:00",
        heartbeat_at=stamp,
        history=[
            {"_step": s, "_timestamp": 1767261600 + s, "acc": 0.6 + s / 10, "_runtime": s}
            for s in range(2)
        ],
        events=[{"_timestamp": 1767261601.5, "system.gpu": 97, "_runtime": 1}],
    )
    crashed = FakeRun(
        "r2", "sweep-2", "alice", "2026-01-01T10:00:01", state="crashed", heartbeat_at=stamp
    )
    fake.runs["acme/vision"] += [run, crashed]
    versions = fake.collections["acme/wandb-registry-models"]["churn"][1]
    versions[0].aliases = []
    versions.append(FakeVersion(4, "2026-01-02T08:00:00", ["production"], ["validated"]))
    second = s.poll(first.cursor, now())
    assert sorted(summary(second.events), key=repr) == sorted(
        [
            ("METRIC", "r1", "acc", 0, 0.6),
            ("METRIC", "r1", "acc", 1, 0.7),
            ("METRIC", "r1", "system.gpu", None, 97),
            ("RUN_STATE", "r1", "running"),
            ("RUN_STATE", "r2", "failed"),
            ("LINK_ARTIFACT", "models", "churn", 4, None),
            ("ADD_ARTIFACT_ALIAS", "models", "churn", 4, "production"),
            ("ADD_ARTIFACT_TAG", "models", "churn", 4, "validated"),
        ],
        key=repr,
    )
    point = next(e for e in second.events if e.type == "METRIC")
    assert (point.user, point.run_name) == ("alice", "sweep-1")

    # New rows only: history is asked from the step after the last one seen.
    run.history.append({"_step": 2, "_timestamp": 1767261700, "acc": 0.9})
    run.state = "finished"
    versions[1].tags = []
    del versions[0]  # unlinked from the registry
    third = s.poll(second.cursor, now())
    assert sorted(summary(third.events), key=repr) == sorted(
        [
            ("METRIC", "r1", "acc", 2, 0.9),
            ("RUN_STATE", "r1", "finished"),
            ("REMOVE_ARTIFACT_TAG", "models", "churn", 4, "validated"),
            ("UNLINK_ARTIFACT", "models", "churn", 3, None),
        ],
        key=repr,
    )
    assert fake.history_calls[-1] == ("r1", 2, 3)


def test_requests_authenticate_and_back_off_on_429_and_5xx(fake: FakeWandb) -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(502)]
    route = fake.mock.post(API)
    route.side_effect = lambda request: answers.pop(0) if answers else fake.handle(request)
    fake.runs["acme/vision"] = []
    source(registries=set()).poll(None, now())
    statuses = [call.response.status_code for call in route.calls]
    assert statuses[:3] == [429, 502, 200]  # retried after each, then read
    first = route.calls[0].request
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"api:k-123").decode()


def test_errors_name_the_source_and_the_fix(fake: FakeWandb) -> None:
    fake.mock.post(API).mock(return_value=httpx.Response(401))
    with pytest.raises(SourceError, match="answered HTTP 401: check the API key of source 'team'"):
        source().poll(None, now())


def page_on_failure(tmp_path: Path) -> Any:
    """A config: the W&B source, and an automation for failed runs of acme/vision."""
    return parse_config(
        {
            "store": f"sqlite:///{tmp_path}/store.db",
            "sources": [{"name": "team", "type": "wandb", "entity": "acme", "api_key": "k"}],
            "automations": [
                {
                    "name": "page",
                    "scope": {"project": "acme/vision"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "no_op"},
                }
            ],
        },
        env={},
    )


def test_the_sensor_polls_wandb_and_fires_once_across_restarts(
    fake: FakeWandb, tmp_path: Path, prefect_api: str
) -> None:
    fake.runs["acme/vision"] = []
    config = page_on_failure(tmp_path)
    assert Sensor(config).run_once().fired == []
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fake.runs["acme/vision"].append(
        FakeRun("r9", "sweep-9", "alice", stamp, state="crashed", heartbeat_at=stamp)
    )
    assert [(f.run_id, f.state) for f in Sensor(config).run_once().fired] == [("r9", "failed")]
    assert Sensor(config).run_once().fired == []


def test_a_tracker_that_is_down_holds_back_only_itself(
    fake: FakeWandb, tmp_path: Path, prefect_api: str
) -> None:
    from .conftest import events, state

    fake.runs["acme/vision"] = []
    config = page_on_failure(tmp_path)
    sensor = Sensor(config)
    sensor.run_once()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fake.runs["acme/vision"].append(
        FakeRun("r1", "sweep-1", "alice", stamp, state="crashed", heartbeat_at=stamp)
    )
    handle = fake.handle
    fake.mock.post(API).mock(return_value=httpx.Response(503))  # W&B goes down
    sensor.store.put_events(
        events(state("pushed", "failed", 0, project="acme/vision")), origin="push"
    )
    report = sensor.run_once()
    assert [f.run_id for f in report.fired] == ["pushed"]  # pushed events still fire
    assert report.source_errors == [
        "team: W&B at https://api.wandb.ai answered HTTP 503, after retries."
    ]
    fake.mock.post(API).mock(side_effect=handle)  # back up: the poll resumes where it was
    assert [f.run_id for f in sensor.run_once().fired] == ["r1"]
