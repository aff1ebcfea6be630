"""Partitions: how sensors sharing one store split the work.

Everything the evaluator keeps is per project: a run's rows, its series, a metric's z-score
members, the artifact events seen (of a registry or a project). So the work splits by the
project an event belongs to — or, for an artifact event, its registry — and two partitions never
touch the same state rows. Each inbox row carries its partition.

Sources are polled by one worker at a time: a worker leases the sources it polls
(`claim_sources`) and lets go of them once what it found is in the inbox, so a tracker is not
asked twice as often with two sensors.

A sensor cycle takes its share of the partitions that have events waiting: it locks their rows in
`ml_partitions` for the length of its transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL: a
partition another sensor holds is passed over, never waited for), takes their inbox slice, and
loads and saves only their state rows. A sensor that dies lets go of its partitions with its
connection; nothing it took is lost, as its transaction rolls back. On SQLite, one writer at a
time holds the whole store (`BEGIN IMMEDIATE`): partitions change nothing there.

Its share: with `n` sensors at work (each says so in `ml_workers` when it cycles), a cycle takes
the first `ceil(waiting / n)` partitions, oldest event first, that nobody holds — so two sensors
on a backlog each take about half, and a sensor alone takes everything, as before.

    >>> from prefect_ml_automations.events import event_from_dict
    >>> alias = {"type": "ADD_ARTIFACT_ALIAS", "registry": "models", "collection": "churn",
    ...          "version": 4, "alias": "production", "timestamp": "2026-01-02T08:00:00Z"}
    >>> partition_of(event_from_dict(alias)), share(waiting=8, working=2)
    ('registry:models', 4)
"""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from prefect_ml_automations.events import Event
from prefect_ml_automations.stored_state import dialect_insert, one_of

metadata = sa.MetaData()
partitions = sa.Table(
    "ml_partitions",
    metadata,
    sa.Column("partition", sa.Text(), primary_key=True),
)
workers = sa.Table(
    "ml_workers",
    metadata,
    sa.Column("worker", sa.String(255), primary_key=True),
    sa.Column("sensor", sa.String(255), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
)

source_leases = sa.Table(
    "ml_source_leases",
    metadata,
    sa.Column("source", sa.String(255), primary_key=True),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
)

#: This process, as a worker (a host may run several; a container's pid is often 1).
WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
#: A worker that has not cycled for this long is no longer counted when shares are cut (it
#: only makes the others' shares smaller meanwhile: what it leaves is taken next cycle).
WORKER_ALIVE = timedelta(seconds=10)
#: Partitions one cycle takes at most (a cycle's statements name each one it holds).
MOST_A_CYCLE = 2_000
#: Partitions locked per statement.
_LOCK_CHUNK = 500


def partition_of(event: Event) -> str:
    """The partition an event belongs to: its project, or its registry (`registry:NAME`)."""
    registry = getattr(event, "registry", None)
    if registry is not None:
        return f"registry:{registry}"
    return getattr(event, "project", None) or ""


def partition_of_body(body: str) -> str:
    """The partition of an event stored as JSON (one that does not read as an event: "")."""
    try:
        fields = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(fields, dict):
        return ""
    if fields.get("registry") is not None:
        return f"registry:{fields['registry']}"
    return str(fields.get("project") or "")


def share(waiting: int, working: int) -> int:
    """How many of `waiting` partitions one of `working` sensors takes in a cycle (at least 1,
    at most `MOST_A_CYCLE`)."""
    return min(MOST_A_CYCLE, max(1, math.ceil(waiting / max(1, working))))


def ensure(connection: Connection, names: Sequence[str]) -> None:
    """Make the lock rows of these partitions (as inbox rows are stored). On PostgreSQL this
    never waits for a cycle that holds one: an insert that finds the row does nothing."""
    unique = sorted(set(names))
    for start in range(0, len(unique), _LOCK_CHUNK):
        rows = [{"partition": name} for name in unique[start : start + _LOCK_CHUNK]]
        connection.execute(
            dialect_insert(connection)(partitions).on_conflict_do_nothing(
                index_elements=["partition"]
            ),
            rows,
        )


def ensure_outside(connection: Connection, names: Sequence[str]) -> None:
    """`ensure`, from inside a cycle: on PostgreSQL in a transaction of its own, committed at
    once, so that no push into those partitions waits for the cycle; on SQLite in the cycle's
    own (it holds the only write lock there is)."""
    if connection.dialect.name == "postgresql":
        with connection.engine.begin() as other:
            ensure(other, names)
    else:
        ensure(connection, names)


def lock(
    connection: Connection, waiting: Sequence[tuple[str, int]], *, want: int, limit: int
) -> list[str]:
    """Lock up to `want` of the `waiting` partitions (name, events waiting; oldest first) that no
    other transaction holds, stopping once they hold `limit` events; returns those locked."""
    locked: list[str] = []
    events = 0
    at = 0
    while at < len(waiting) and len(locked) < want and events < limit:
        chunk = waiting[at : at + min(want - len(locked), _LOCK_CHUNK)]
        at += len(chunk)
        names = [name for name, _ in chunk]
        got = set(
            connection.execute(
                sa.select(partitions.c.partition)
                .where(one_of(connection, partitions.c.partition, names))
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        missing = set(names) - got
        if missing:
            missing -= _existing(connection, list(missing))  # (held by others: passed over)
        if missing:
            # Inbox rows stored without their lock row (by an older version, say): make it
            # now — on PostgreSQL in a transaction of its own, committed at once, so that no
            # push into that partition waits for this cycle — and try to lock it.
            ensure_outside(connection, sorted(missing))
            got |= set(
                connection.execute(
                    sa.select(partitions.c.partition)
                    .where(one_of(connection, partitions.c.partition, sorted(missing)))
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
        for name, count in chunk:
            if name in got:
                locked.append(name)
                events += count
    return locked


def _existing(connection: Connection, names: Sequence[str]) -> set[str]:
    return set(
        connection.execute(
            sa.select(partitions.c.partition).where(
                one_of(connection, partitions.c.partition, names)
            )
        ).scalars()
    )


def working(connection: Connection, sensor: str, now: datetime) -> int:
    """Say that this worker is at work now; how many workers are (itself included)."""
    insert = dialect_insert(connection)(workers).values(worker=WORKER, sensor=sensor, seen_at=now)
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=["worker"], set_={"seen_at": now, "sensor": sensor}
        )
    )
    return int(
        connection.execute(
            sa.select(sa.func.count())
            .select_from(workers)
            .where(workers.c.seen_at >= now - WORKER_ALIVE)
        ).scalar_one()
    )


def leave(connection: Connection) -> None:
    """This worker stops: the others' shares grow at once."""
    connection.execute(workers.delete().where(workers.c.worker == WORKER))


def claim_sources(
    connection: Connection, names: Sequence[str], now: datetime, lease: timedelta
) -> set[str]:
    """The sources (of `names`) this worker may poll now: those no other worker is polling. A
    tracker is asked once per cycle however many sensors share the store; a worker that dies
    mid-poll lets go of its sources when `lease` runs out."""
    if not names:
        return set()
    connection.execute(
        dialect_insert(connection)(source_leases).on_conflict_do_nothing(index_elements=["source"]),
        [{"source": name, "worker": WORKER, "until": now} for name in names],
    )
    claimed = connection.execute(
        source_leases.update()
        .where(
            source_leases.c.source.in_(list(names)),
            sa.or_(source_leases.c.until <= now, source_leases.c.worker == WORKER),
        )
        .values(worker=WORKER, until=now + lease)
        .returning(source_leases.c.source)
    )
    return set(claimed.scalars())


def release_sources(connection: Connection, names: Sequence[str], now: datetime) -> None:
    """This worker's polls of these sources are in: any worker may poll them next."""
    if names:
        connection.execute(
            source_leases.update()
            .where(source_leases.c.source.in_(list(names)), source_leases.c.worker == WORKER)
            .values(until=now)
        )
