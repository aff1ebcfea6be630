"""Partitions (SPEC §4, "Beyond one machine"): sensors sharing a store split the work by project
or registry; each partition is held by one cycle at a time, a held one is passed over (never
waited for), and whatever the split, every firing is the one a single evaluator finds, once."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from prefect_ml_automations import partitions
from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.evaluator import Evaluator
from prefect_ml_automations.events import event_from_dict
from prefect_ml_automations.partitions import partition_of, share
from prefect_ml_automations.runner import sensor_loop
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.sources import Poll
from prefect_ml_automations.store import StateStore, firings, inbox, utcnow

from .conftest import automation, events, metric, migrations, state

ARTIFACT = {
    "type": "ADD_ARTIFACT_ALIAS",
    "collection": "churn",
    "version": 3,
    "alias": "production",
    "timestamp": "2026-01-01T10:00:00Z",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        return StateStore(f"sqlite:///{tmp_path}/store.db")
    return StateStore(request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (metric("r1", 1, 0.5, 0, project="team/vision"), "team/vision"),
        (state("r1", "failed", 0, project="team/nlp"), "team/nlp"),
        ({**ARTIFACT, "registry": "models"}, "registry:models"),
        ({**ARTIFACT, "project": "team/vision"}, "team/vision"),
    ],
    ids=["metric", "run-state", "registry-artifact", "project-artifact"],
)
def test_an_event_belongs_to_its_project_or_registry(event: dict[str, Any], expected: str) -> None:
    assert partition_of(event_from_dict(event)) == expected


@pytest.mark.parametrize(
    ("waiting", "working", "taken"),
    [(8, 1, 8), (8, 2, 4), (7, 2, 4), (1, 2, 1), (3, 8, 1), (5, 0, 5)],
)
def test_a_sensor_takes_its_share_of_the_waiting_partitions(
    waiting: int, working: int, taken: int
) -> None:
    assert share(waiting, working) == taken


def put(store: StateStore, *projects: str) -> None:
    """One metric point per project, in this order."""
    store.put_events(
        events(*(metric("r1", i, 0.5, i, project=p) for i, p in enumerate(projects))),
        origin="push",
    )


def test_a_cycle_takes_the_partitions_with_the_oldest_events_first(store: StateStore) -> None:
    put(store, "c", "a", "b", "a", "d", "c")
    with store.cycle() as cycle:
        taken = cycle.take_inbox(workers=2)
    assert cycle.partitions == ["c", "a"]
    assert [(e.project, e.step) for e in taken] == [("c", 0), ("a", 1), ("a", 3), ("c", 5)]
    with store.cycle() as cycle:
        taken = cycle.take_inbox(workers=2)
    assert [(e.project, e.step) for e in taken] == [("b", 2)]  # half of the two waiting
    with store.cycle() as cycle:
        taken = cycle.take_inbox(workers=1)
    assert [(e.project, e.step) for e in taken] == [("d", 4)]
    assert store.inbox_size() == 0


def test_inbox_events_without_their_lock_row_are_taken_all_the_same(store: StateStore) -> None:
    """(Stored by a writer that did not make the partition's row: they must not wait for ever.)"""
    body = event_from_dict(metric("r1", 1, 0.5, 0, project="lost")).model_dump_json()
    with store.engine.begin() as connection:
        connection.execute(
            inbox.insert().values(received_at=utcnow(), origin="push", body=body, partition="lost")
        )
    with store.cycle() as cycle:
        [event] = cycle.take_inbox()
    assert (event.project, cycle.partitions) == ("lost", ["lost"])


def test_events_waiting_in_an_earlier_versions_inbox_get_their_partition(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    StateStore(url).inbox_size()  # (opened: migrated to the newest version)
    with migrations(url) as (config, connection):
        command.downgrade(config, "0003")
        connection.execute(
            sa.text("INSERT INTO ml_inbox (received_at, origin, body) VALUES (:t, 'push', :b)"),
            [
                {
                    "t": utcnow(),
                    "b": event_from_dict(e).model_dump_json(exclude_none=True, by_alias=True),
                }
                for e in (metric("r1", 1, 0.5, 0, project="p"), {**ARTIFACT, "registry": "models"})
            ]
            + [{"t": utcnow(), "b": "not json"}],
        )
    store = StateStore(url)
    with store.engine.connect() as connection:
        stored = connection.execute(sa.select(inbox.c.partition).order_by(inbox.c.id)).scalars()
        assert list(stored) == ["p", "registry:models", ""]
        locks = connection.execute(sa.select(partitions.partitions.c.partition)).scalars()
        assert sorted(locks) == ["", "p", "registry:models"]
    with store.cycle() as cycle:
        assert len(cycle.take_inbox()) == 2
    assert cycle.quarantined == 1


def test_workers_count_while_they_work_and_leave(store: StateStore) -> None:
    now = utcnow()
    with store.engine.begin() as connection:
        connection.execute(
            partitions.workers.insert(),
            [
                {"worker": "other:1", "sensor": "default", "seen_at": now},
                {"worker": "gone:2", "sensor": "default", "seen_at": now - timedelta(minutes=1)},
            ],
        )
    assert store.working("default", now) == 2  # itself and other:1
    store.leave()
    with store.engine.connect() as connection:
        left = connection.execute(sa.select(partitions.workers.c.worker)).scalars()
        assert sorted(left) == ["gone:2", "other:1"]


def in_thread(work: Any) -> Any:
    """Run `work` in a thread; its result, or a failure if it waited (60 s: a hang, not a
    measurement)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "it waited for the other cycle's partitions"
    return result[0]


def test_a_partition_held_by_one_cycle_is_passed_over_by_another_not_waited_for(
    postgres_url: str,
) -> None:
    store = StateStore(postgres_url)
    put(store, "a", "b")

    def other_cycle() -> list[tuple[str, list[str]]]:
        with store.cycle() as other:
            return [(e.project, other.partitions) for e in other.take_inbox(workers=2)]

    with store.cycle() as first:
        [taken] = first.take_inbox(workers=2)
        assert taken.project == "a"
        assert in_thread(other_cycle) == [("b", ["b"])]
        assert in_thread(other_cycle) == []  # "a" is held, "b" is done
        in_thread(lambda: put(store, "a"))  # a push into a held partition is stored at once
    with store.cycle() as later:
        assert [e.step for e in later.take_inbox()] == [0]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_sensors_splitting_the_partitions_fire_what_one_evaluator_fires_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/store.db"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    projects = [f"team/p{i}" for i in range(6)]
    automations = [
        a
        for p in projects
        for a in (
            automation(
                f"high-{p}",
                project=p,
                type="RUN_METRIC",
                metric="acc",
                window=2,
                operator=">",
                threshold=0.5,
            ),
            automation(
                f"z-{p}", project=p, type="RUN_METRIC_ZSCORE", metric="acc", window=3, threshold=1
            ),
            automation(f"failed-{p}", project=p, type="RUN_STATE", states=["failed"]),
        )
    ]
    stream = events(
        *(
            metric(f"r{r}", s, ((s * 7 + r * 3 + i) % 10) / 10, s * 60 + r, project=p)
            for s in range(12)
            for r in range(4)
            for i, p in enumerate(projects)
        ),
        *(state(f"r{r}", "failed", 900 + r, project=p) for r in range(2) for p in projects),
    )
    expected = {f.firing_id for f in Evaluator(automations).evaluate(stream).firings}
    assert expected  # (a stream that fires nothing would prove nothing)

    store = StateStore(url)
    config = AutomationsConfig(store=url, automations=automations)
    for start in range(0, len(stream), 50):  # pushed in pieces, as a stream
        store.put_events(stream[start : start + 50], origin="push")
    sensors = [Sensor(config, StateStore(url)) for _ in range(2)]
    taken = [0, 0]

    def drain(which: int) -> None:
        while True:
            report = sensors[which].commit([], limit=40)
            taken[which] += report.events
            if not report.events and not store.has_inbox():
                return

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sum(taken) == len(stream)
    with store.engine.connect() as connection:
        recorded = list(
            connection.execute(
                sa.select(firings.c.firing_id).where(firings.c.status != "skipped")
            ).scalars()
        )
    assert sorted(recorded) == sorted(expected)


def test_a_source_is_polled_by_one_worker_at_a_time(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now, lease = utcnow(), timedelta(minutes=6)
    me = partitions.WORKER
    monkeypatch.setattr(partitions, "WORKER", "other-host:1:0")
    assert store.claim_sources(["team", "local"], now, lease) == {"team", "local"}
    with store.intake() as intake:  # the other worker's polls of "local" are in
        intake.release_sources(["local"], now)
    monkeypatch.setattr(partitions, "WORKER", me)
    assert store.claim_sources(["team", "local"], now, lease) == {"local"}
    assert store.claim_sources(["team"], now + lease, lease) == {"team"}  # its lease ran out


def test_a_sensor_skips_a_source_another_worker_is_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    config = AutomationsConfig.model_validate(
        {
            "store": url,
            "sources": [{"name": "local", "type": "mlflow", "tracking_uri": "sqlite:///x.db"}],
            "automations": [automation("failed", type="RUN_STATE", states=["failed"])],
        }
    )
    sensor = Sensor(config)
    me = partitions.WORKER
    monkeypatch.setattr(partitions, "WORKER", "other-host:1:0")
    sensor.store.claim_sources(["local"], utcnow(), timedelta(minutes=6))
    monkeypatch.setattr(partitions, "WORKER", me)
    assert sensor.to_poll(utcnow()) == []
    assert sensor.poll_all(utcnow()) == []
    report = sensor.commit([])
    assert (report.source_errors, report.events) == ([], 0)


def test_a_registry_named_empty_has_one_partition_however_it_is_read() -> None:
    event = event_from_dict({**ARTIFACT, "registry": ""})
    body = event.model_dump_json(exclude_none=True, by_alias=True)
    assert partition_of(event) == partitions.partition_of_body(body) == "registry:"


def test_a_cycle_takes_at_most_its_cap_of_partitions() -> None:
    assert share(10 * partitions.MOST_A_CYCLE, 1) == partitions.MOST_A_CYCLE


def test_an_event_at_hand_is_used_only_if_its_inbox_row_is_still_the_same(tmp_path: Path) -> None:
    """SQLite gives the id of a deleted last row again: an event this sensor put in, then
    taken by another sensor, must not stand for the one pushed under that id later."""
    store = StateStore(f"sqlite:///{tmp_path}/store.db")
    with store.intake() as intake:
        intake.put(events(metric("r1", 1, 0.5, 0)), origin="poll")
    [(inbox_id, (_, first))] = intake.put_events.items()
    with store.cycle() as other:  # another sensor takes it
        assert other.take_inbox() == [first]
    put(store, "later")
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(inbox.c.id)).scalar_one() == inbox_id  # (reused)
    with store.cycle() as cycle:
        [taken] = cycle.take_inbox(known=intake.put_events)
    assert taken.project == "later"


def test_events_stored_without_a_partition_are_sorted_into_theirs(store: StateStore) -> None:
    """(A receiver still running the version before partitions, during an upgrade.)"""
    with store.engine.begin() as connection:
        connection.execute(
            inbox.insert(),
            [
                {
                    "received_at": utcnow(),
                    "origin": "push",
                    "body": event_from_dict(metric("r1", i, 0.5, i, project=p)).model_dump_json(
                        exclude_none=True
                    ),
                    "partition": "",
                }
                for i, p in enumerate(["a", "b", "a"])
            ],
        )
    with store.cycle() as cycle:
        taken = cycle.take_inbox(workers=2)
    assert (cycle.partitions, [e.step for e in taken]) == (["a"], [0, 2])
    with store.cycle() as cycle:
        assert [e.project for e in cycle.take_inbox()] == ["b"]


def test_a_push_does_not_wait_for_an_intake_making_new_partitions(postgres_url: str) -> None:
    store = StateStore(postgres_url)
    with store.intake() as intake:
        intake.put(events(metric("r1", 1, 0.5, 0, project="y")), origin="poll")
        intake.put(events(metric("r1", 1, 0.5, 0, project="x")), origin="fill")
        in_thread(lambda: put(store, "x", "y"))
    assert store.inbox_size() == 4


def test_a_sensor_whose_partitions_are_held_polls_once_an_interval(
    postgres_url: str,
) -> None:
    """Its cycles take nothing while another sensor holds the partitions with events: it
    waits between them, and does not ask the trackers again before the interval is up."""

    class Quiet:
        """A tracker where nothing happens."""

        name = "quiet"
        polls = 0

        def poll(self, cursor: Any, now: Any) -> Poll:
            self.polls += 1
            return Poll(events=[], cursor={"polls": self.polls})

    config = AutomationsConfig(
        store=postgres_url,
        automations=[automation("failed", type="RUN_STATE", states=["failed"])],
    )
    source = Quiet()
    sensor = Sensor(config, StateStore(postgres_url), sources=[source])  # type: ignore[list-item]
    store = StateStore(postgres_url)
    put(store, "held")
    with store.cycle() as holder:
        assert [e.project for e in holder.take_inbox()] == ["held"]
        in_thread(lambda: asyncio.run(sensor_loop(sensor, interval=60, cycles=4)))
    assert source.polls == 1
