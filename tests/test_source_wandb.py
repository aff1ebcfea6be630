"""The W&B source against a W&B-shaped GraphQL API faked at the httpx edge (respx).

The fake (`tests/wandb_fake.py`) answers as W&B's own code says W&B answers; `test_wandb_fake.py`
proves its answers against W&B's generated response types.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_ml_automations.config import WandbSourceSettings, parse_config
from prefect_ml_automations.errors import SourceError
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.sources import Poll, wandb
from prefect_ml_automations.sources.wandb import WandbSource

from .conftest import WANDB_API as API
from .wandb_fake import MODELS, FakeRun, FakeWandb, stamp


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wandb, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def source(**kw: Any) -> WandbSource:
    settings = WandbSourceSettings(
        name="team", type="wandb", entity="acme", api_key="k-123", **kw.pop("settings", {})
    )
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
        elif e.type == "RUN_HEARTBEAT":
            out.append(("RUN_HEARTBEAT", e.run_id))
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
    v0 = fake.log_artifact("acme/training", "churn")
    fake.link(v0, MODELS, "churn", aliases=["production"])
    s = source()
    first = s.poll(None, now())
    assert first.events == []  # starts watching now
    assert summary(first.filling) == [
        ("METRIC", "r0", "acc", 0, 0.5),
        ("RUN_STATE", "r0", "finished"),
    ]

    run = FakeRun(
        "r1",
        "sweep-1",
        "alice",
        "2026-01-01T10:00:00",
        heartbeat_at=stamp(),
        history=[
            {"_step": s, "_timestamp": 1767261600 + s, "acc": 0.6 + s / 10, "_runtime": s}
            for s in range(2)
        ],
        events=[
            {"_wandb": True, "_timestamp": 1767261601.5, "system.gpu.0.gpu": 97, "_runtime": 1}
        ],
    )
    crashed = FakeRun(
        "r2", "sweep-2", "alice", "2026-01-01T10:00:01", state="crashed", heartbeat_at=stamp()
    )
    fake.runs["acme/vision"] += [run, crashed]
    v1 = fake.log_artifact("acme/training", "churn", tags=["validated"])
    fake.link(v1, MODELS, "churn")
    fake.move_alias(MODELS, "churn", "production", 1)
    second = s.poll(first.cursor, now())
    assert sorted(summary(second.events), key=repr) == sorted(
        [
            ("METRIC", "r1", "acc", 0, 0.6),
            ("METRIC", "r1", "acc", 1, 0.7),
            ("METRIC", "r1", "system.gpu.0.gpu", None, 97),
            ("RUN_STATE", "r1", "running"),
            ("RUN_HEARTBEAT", "r1"),  # (a running run's heartbeatAt: a sign of life)
            ("RUN_STATE", "r2", "failed"),
            ("LINK_ARTIFACT", "models", "churn", 1, None),
            ("ADD_ARTIFACT_ALIAS", "models", "churn", 1, "production"),
            ("ADD_ARTIFACT_TAG", "models", "churn", 1, "validated"),
        ],
        key=repr,
    )
    point = next(e for e in second.events if e.type == "METRIC")
    assert (point.user, point.run_name) == ("alice", "sweep-1")

    # New rows only: history is asked from the step after the last one seen.
    run.history.append({"_step": 2, "_timestamp": 1767261700, "acc": 0.9})
    run.state = "finished"
    v1.tags = []
    fake.unlink(MODELS, "churn", 0)
    third = s.poll(second.cursor, now())
    assert sorted(summary(third.events), key=repr) == sorted(
        [
            ("METRIC", "r1", "acc", 2, 0.9),
            ("RUN_STATE", "r1", "finished"),
            ("REMOVE_ARTIFACT_TAG", "models", "churn", 1, "validated"),
            ("UNLINK_ARTIFACT", "models", "churn", 0, None),
        ],
        key=repr,
    )
    assert fake.history_calls[-1] == ("r1", 2, 3)


def test_registries_are_read_in_the_organizations_entity(fake: FakeWandb) -> None:
    fake.organizations = {"acme": ("Acme Corp", "acme-corp-org")}
    fake.projects.add("acme-corp-org/wandb-registry-models")
    s = source(projects=set())
    cursor = s.poll(None, now()).cursor
    assert cursor["org_entity"] == "acme-corp-org"  # found once, then kept
    assert fake.queries == ["FetchOrgInfoFromEntity", "ProjectArtifactCollections"]
    artifact = fake.log_artifact("acme/training", "churn")
    fake.link(artifact, "acme-corp-org/wandb-registry-models", "churn", aliases=["staging"])
    fake.queries.clear()
    assert summary(s.poll(cursor, now()).events) == [
        ("LINK_ARTIFACT", "models", "churn", 0, None),
        ("ADD_ARTIFACT_ALIAS", "models", "churn", 0, "staging"),
    ]
    assert "FetchOrgInfoFromEntity" not in fake.queries


def test_an_organization_that_can_not_be_found_is_named_with_the_fix(fake: FakeWandb) -> None:
    fake.organizations = {}
    with pytest.raises(SourceError) as caught:
        source(projects=set()).poll(None, now())
    assert str(caught.value) == (
        "Source 'team': the W&B organization that holds the registries can not be found from "
        "entity 'acme' (it belongs to none); set org_entity in the source's settings."
    )
    fake.projects.add("named-org/wandb-registry-models")
    fake.queries.clear()
    named = source(projects=set(), settings={"org_entity": "named-org"}).poll(None, now())
    assert named.cursor["watching"] == ["wandb-registry-models"]
    assert "FetchOrgInfoFromEntity" not in fake.queries


def test_registry_versions_are_numbered_as_the_registry_numbers_them(fake: FakeWandb) -> None:
    """The 8th version of a training sequence, linked first, is the registry's v0."""
    for _ in range(7):
        fake.log_artifact("acme/training", "churn")
    fake.projects.add(MODELS)
    s = source(projects=set())
    cursor = s.poll(None, now()).cursor
    eighth = fake.log_artifact("acme/training", "churn", aliases=["candidate"])
    assert eighth.index == 7
    fake.link(eighth, MODELS, "churn-classifier", aliases=["production"])
    events = s.poll(cursor, now()).events
    assert summary(events) == [
        ("LINK_ARTIFACT", "models", "churn-classifier", 0, None),
        ("ADD_ARTIFACT_ALIAS", "models", "churn-classifier", 0, "production"),
    ]  # not "candidate" (the sequence's alias), not "v0", "v7" or "latest"


def test_a_project_collection_fires_its_own_aliases_only(fake: FakeWandb) -> None:
    fake.runs["acme/vision"] = []
    s = source(registries=set())
    cursor = s.poll(None, now()).cursor
    artifact = fake.log_artifact("acme/vision", "dataset", aliases=["fresh"], type="dataset")
    fake.link(artifact, MODELS, "datasets", aliases=["production"])
    assert summary(s.poll(cursor, now()).events) == [
        ("CREATE_ARTIFACT", "acme/vision", "dataset", 0, None),
        ("ADD_ARTIFACT_ALIAS", "acme/vision", "dataset", 0, "fresh"),
    ]


def test_more_than_a_hundred_versions_are_paged_and_none_is_unlinked_falsely(
    fake: FakeWandb,
) -> None:
    fake.page_size = 50
    for _ in range(130):
        fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    s = source(projects=set())
    cursor = s.poll(None, now()).cursor
    assert len(cursor["collections"]["wandb-registry-models/churn"]) == 130
    fake.move_alias(MODELS, "churn", "production", 129)
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    assert summary(s.poll(cursor, now()).events) == [
        ("ADD_ARTIFACT_ALIAS", "models", "churn", 129, "production"),
        ("LINK_ARTIFACT", "models", "churn", 130, None),
    ]


def test_a_version_still_uploading_fires_once_it_is_committed(fake: FakeWandb) -> None:
    fake.runs["acme/vision"] = []
    s = source(registries=set())
    cursor = s.poll(None, now()).cursor
    artifact = fake.log_artifact("acme/vision", "model", state="PENDING", aliases=["best"])
    second = s.poll(cursor, now())
    assert second.events == []
    artifact.state = "COMMITTED"
    assert summary(s.poll(second.cursor, now()).events) == [
        ("CREATE_ARTIFACT", "acme/vision", "model", 0, None),
        ("ADD_ARTIFACT_ALIAS", "acme/vision", "model", 0, "best"),
    ]


def test_history_is_read_in_pages_of_a_thousand_steps(fake: FakeWandb) -> None:
    fake.runs["acme/vision"] = []
    s = source(registries=set())
    cursor = s.poll(None, now()).cursor
    fake.runs["acme/vision"].append(
        FakeRun(
            "long",
            "long",
            "alice",
            stamp(),
            heartbeat_at=stamp(),
            history=[
                {"_step": i, "_timestamp": 1767261600 + i, "loss": 1 / (i + 1)} for i in range(2500)
            ],
        )
    )
    points = [e for e in s.poll(cursor, now()).events if e.type == "METRIC"]
    assert [p.step for p in points] == list(range(2500))  # none lost to down-sampling
    assert fake.history_calls == [("long", 0, 1000), ("long", 1000, 2000), ("long", 2000, 2500)]


def test_a_run_declared_crashed_without_a_new_heartbeat_is_seen(fake: FakeWandb) -> None:
    """W&B marks a run crashed minutes after its last heartbeat: the run is not among the
    recently active ones any more, so it is asked for by name."""
    fake.runs["acme/vision"] = []
    s = source(registries=set())
    start = now()
    cursor = s.poll(None, start).cursor
    beat = stamp(start)
    fake.runs["acme/vision"].append(FakeRun("r1", "sweep", "alice", beat, heartbeat_at=beat))
    cursor = s.poll(cursor, start + timedelta(minutes=1)).cursor
    fake.run("acme/vision", "r1").state = "crashed"  # heartbeat_at stays where it was
    later = s.poll(cursor, start + timedelta(minutes=30))
    assert summary(later.events) == [("RUN_STATE", "r1", "failed")]
    quiet = s.poll(later.cursor, start + timedelta(minutes=60))
    assert quiet.events == []
    assert quiet.calls == 2  # the active runs and the collections: the dead run is not asked for


def test_a_run_pushed_as_running_is_looked_for_when_it_goes_quiet(fake: FakeWandb) -> None:
    """A W&B webhook said the run is running; the poller never saw it active. When W&B later
    declares it crashed, the poll still asks for it."""
    fake.runs["acme/vision"] = []
    s = source(registries=set())
    start = now()
    cursor = s.poll(None, start).cursor
    beat = stamp(start - timedelta(hours=1))  # older than any poll looks back
    fake.runs["acme/vision"].append(FakeRun("r1", "sweep", "alice", beat, heartbeat_at=beat))
    call = {
        "event_type": "RUN_STATE",
        "run_id": "r1",
        "project_name": "vision",
        "run_status": "running",
    }
    pushed, cursor = wandb.webhook_changes(cursor, call, "acme", start, "team")
    assert summary(pushed) == [("RUN_STATE", "r1", "running")]
    assert cursor is not None
    fake.run("acme/vision", "r1").state = "crashed"
    later = s.poll(cursor, start + timedelta(minutes=30))
    assert summary(later.events) == [("RUN_STATE", "r1", "failed")]


@pytest.mark.parametrize(
    ("registries", "projects", "message"),
    [
        pytest.param(
            set(),
            {"acme/gone"},
            "W&B project acme/gone was not found, or the API key of source 'team' can not see "
            "it: check the project's name and the key's access.",
            id="project",
        ),
        pytest.param(
            {"gone"},
            set(),
            "W&B registry 'gone' (project wandb-registry-gone of organization entity 'acme-org') "
            "was not found, or the API key of source 'team' can not see it: check the registry's "
            "name and the key's access (or set org_entity).",
            id="registry",
        ),
    ],
)
def test_what_does_not_exist_or_can_not_be_seen_is_a_source_error(
    fake: FakeWandb, registries: set[str], projects: set[str], message: str
) -> None:
    with pytest.raises(SourceError) as caught:
        source(registries=registries, projects=projects).poll(None, now())
    assert str(caught.value) == message


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


def test_a_cursor_from_an_older_version_starts_watching_now(
    fake: FakeWandb, caplog: pytest.LogCaptureFixture
) -> None:
    fake.runs["acme/vision"] = [
        FakeRun(
            "r1", "sweep", "alice", stamp(), heartbeat_at=stamp(), history=[{"_step": 0, "acc": 1}]
        )
    ]
    older = {"runs": {}, "collections": {}, "polled_at": "2026-01-01T00:00:00+00:00"}
    with caplog.at_level(logging.WARNING, logger="prefect_ml_automations"):
        poll = source(registries=set()).poll(older, now())
    assert poll.events == []  # nothing backfilled
    assert summary(poll.filling) == [
        ("METRIC", "r1", "acc", 0, 1),
        ("RUN_STATE", "r1", "running"),
        ("RUN_HEARTBEAT", "r1"),
    ]
    assert "starts watching from now" in caplog.text
    assert poll.cursor["version"] == 2


def test_a_project_added_later_starts_watching_from_then_on(fake: FakeWandb) -> None:
    fake.runs["acme/vision"] = []
    fake.runs["acme/audio"] = [
        FakeRun("a1", "old", "bob", stamp(), heartbeat_at=stamp(), history=[{"_step": 0, "acc": 1}])
    ]
    cursor = source(registries=set()).poll(None, now()).cursor
    widened = source(registries=set(), projects={"acme/vision", "acme/audio"}).poll(cursor, now())
    assert widened.events == []
    assert summary(widened.filling) == [
        ("METRIC", "a1", "acc", 0, 1),
        ("RUN_STATE", "a1", "running"),
        ("RUN_HEARTBEAT", "a1"),
    ]


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
    fake.runs["acme/vision"].append(
        FakeRun("r9", "sweep-9", "alice", stamp(), state="crashed", heartbeat_at=stamp())
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
    fake.runs["acme/vision"].append(
        FakeRun("r1", "sweep-1", "alice", stamp(), state="crashed", heartbeat_at=stamp())
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


class Surprised:
    """A source that trips over something: any exception, not a SourceError."""

    name = "odd"

    def __init__(self) -> None:
        self.cursors: list[dict[str, Any] | None] = []

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        self.cursors.append(cursor)
        if len(self.cursors) == 2:
            raise KeyError("historyKeys")
        return Poll(cursor={"polls": len(self.cursors)})


def test_a_source_that_raises_anything_holds_back_only_itself(
    fake: FakeWandb, tmp_path: Path, prefect_api: str
) -> None:
    from .conftest import events, state

    fake.runs["acme/vision"] = []
    config = page_on_failure(tmp_path)
    odd = Surprised()
    sensor = Sensor(config, sources=[odd, *Sensor(config).sources])
    sensor.run_once()
    fake.runs["acme/vision"].append(
        FakeRun("r1", "sweep-1", "alice", stamp(), state="crashed", heartbeat_at=stamp())
    )
    sensor.store.put_events(
        events(state("pushed", "failed", 0, project="acme/vision")), origin="push"
    )
    report = sensor.run_once()
    assert sorted(f.run_id for f in report.fired) == ["pushed", "r1"]  # the others go on
    assert report.source_errors == [
        "odd: the poll failed (KeyError: 'historyKeys'); its cursor stays where it was and the "
        "poll is tried again next cycle."
    ]
    sensor.run_once()
    assert odd.cursors == [None, {"polls": 1}, {"polls": 1}]  # its cursor did not move


def test_run_once_on_the_command_line_reads_a_wandb_shaped_server(
    fake: FakeWandb, tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs, history, system metrics, project collections, an org registry, aliases across
    collections, > 100 versions and one still uploading: every expected firing, none for `vN`,
    `latest` or the uploading version, nothing backfilled, no source error."""
    from prefect_ml_automations.cli import main

    fake.page_size = 40
    fake.runs["acme/vision"] = [
        FakeRun("old", "old", "bob", "2026-01-01T08:00:00", state="failed",
                history=[{"_step": 0, "_timestamp": 1767254400, "acc": 0.99}]),
    ]  # fmt: skip
    for _ in range(120):
        fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn")
    config = tmp_path / "automations.yaml"
    rule = {"action": {"type": "no_op"}}
    config.write_text(
        json.dumps(
            {
                "store": f"sqlite:///{tmp_path}/store.db",
                "sources": [{"name": "team", "type": "wandb", "entity": "acme", "api_key": "k"}],
                "automations": [
                    {"name": "any-alias", "scope": {"registry": "models"},
                     "event": {"type": "ADD_ARTIFACT_ALIAS"}, **rule},
                    {"name": "linked", "scope": {"registry": "models"},
                     "event": {"type": "LINK_ARTIFACT"}, **rule},
                    {"name": "new-data", "scope": {"project": "acme/vision"},
                     "event": {"type": "CREATE_ARTIFACT"}, **rule},
                    {"name": "good", "scope": {"project": "acme/vision"},
                     "event": {"type": "RUN_METRIC", "metric": "acc", "window": 2,
                               "operator": ">", "threshold": 0.5}, **rule},
                    {"name": "hot", "scope": {"project": "acme/vision"},
                     "event": {"type": "RUN_METRIC", "metric": "system.gpu.0.temp", "window": 1,
                               "operator": ">", "threshold": 80}, **rule},
                    {"name": "failed", "scope": {"project": "acme/vision"},
                     "event": {"type": "RUN_STATE", "states": ["failed"]}, **rule},
                ],
            }
        )
    )  # fmt: skip

    def run_once() -> list[tuple[str, str, str]]:
        assert main(["run", str(config), "--once"]) == 0
        from prefect_ml_automations.config import load_config
        from prefect_ml_automations.store import StateStore

        rows = StateStore(load_config(config).store).history()
        return sorted((r.automation, r.subject, r.status) for r in rows)

    assert run_once() == []  # what W&B held before: nothing backfilled
    beat = stamp()
    fake.runs["acme/vision"].append(
        FakeRun("r1", "sweep-1", "alice", beat, heartbeat_at=beat,
                history=[{"_step": i, "_timestamp": 1767261600 + i, "acc": 0.6 + i / 100}
                         for i in range(3)],
                events=[{"_timestamp": 1767261601.0, "system.gpu.0.temp": 85.0, "_runtime": 1}])
    )  # fmt: skip
    fake.link(fake.log_artifact("acme/training", "churn"), MODELS, "churn", aliases=["production"])
    fake.log_artifact("acme/vision", "data", type="dataset", state="PENDING")
    capsys.readouterr()
    assert run_once() == [
        ("any-alias", "models/churn:v120 (production)", "finished"),
        ("good", "run 'r1' (sweep-1)", "finished"),
        ("good", "run 'r1' (sweep-1)", "skipped"),  # the cooldown holds the second point back
        ("hot", "run 'r1' (sweep-1)", "finished"),
        ("linked", "models/churn:v120", "finished"),
    ]
    # Every event W&B holds, read without a source error: 3 points and 1 system point of r1, its
    # state and heartbeat, the link and the alias.
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"events": 8, "fired": 4, "finished": 4, "failed": 0}
