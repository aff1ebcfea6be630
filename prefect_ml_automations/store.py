"""The state store: inbox, evaluator state, firing ledger and history, on any SQLAlchemy URL.

A SQLite file by default; PostgreSQL when several sensors share the work. The schema is kept
by alembic migrations that run when a store is opened, so a newer version upgrades an old store.

Exactly once rests on two things here: a sensor cycle holds the rows of the partitions it takes
for update (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED`, see
`partitions`), so two sensors never evaluate the same inbox events or the same state; and
`firing_id` is the firings table's primary key, so recording a firing twice is a no-op. Actions
are claimed with a lease before they run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from prefect_ml_automations import partitions, stored_state
from prefect_ml_automations.automations import Automation, RunStalled
from prefect_ml_automations.decisions import Firing, FiringStatus, Skip, firing_id
from prefect_ml_automations.errors import BadInputError, MLAutomationsError, StateError
from prefect_ml_automations.evaluator import EvaluatorState
from prefect_ml_automations.evaluator.rows import StateKeys, StateRows, rows_of, state_from_rows
from prefect_ml_automations.events import Event, describe_problem, event_from_dict, parse_event
from prefect_ml_automations.partitions import partition_of, partition_of_body
from prefect_ml_automations.redact import safe_url
from prefect_ml_automations.stored_state import dialect_insert, one_of

metadata = sa.MetaData()
inbox = sa.Table(
    "ml_inbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    #: The project or registry the event belongs to (`partitions.partition_of`).
    sa.Column("partition", sa.Text(), nullable=False),
)
sensor_state = sa.Table(
    "ml_sensor_state",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("data", sa.LargeBinary()),
    sa.Column("cycles", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
firings = sa.Table(
    "ml_firings",
    metadata,
    sa.Column("firing_id", sa.String(64), primary_key=True),
    sa.Column("automation", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("subject", sa.Text(), nullable=False),
    sa.Column("event_time", sa.DateTime(timezone=True)),
    sa.Column("record", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text()),
    sa.Column("result", sa.Text()),
    sa.Column("count", sa.Integer(), nullable=False),
    #: While a sensor delivers the firing: until when it holds it (renewed as the action runs).
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    #: A failed attempt's back-off: not tried again before then.
    sa.Column("retry_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sensor_runs = sa.Table(
    "ml_sensor_runs",
    metadata,
    sa.Column("flow_run_id", sa.String(36), primary_key=True),
    sa.Column("sensor", sa.String(255), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
)
quarantine = sa.Table(
    "ml_quarantine",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
)
source_cursors = sa.Table(
    "ml_source_cursors",
    metadata,
    sa.Column("source", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

paused = sa.Table(
    "ml_paused",
    metadata,
    sa.Column("automation", sa.String(255), primary_key=True),
    sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
)

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive: they were stored as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Quarantined:
    """An accepted event that evaluation could not take, kept aside with its error."""

    id: int
    received_at: datetime
    quarantined_at: datetime
    origin: str
    body: str
    error: str

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "quarantined_at": self.quarantined_at.isoformat(),
            "origin": self.origin,
            "error": self.error,
            "event": self.body,
        }


@dataclass(frozen=True)
class HistoryRow:
    """One entry of the history: a firing and what became of it, or a held-back match."""

    firing_id: str
    automation: str
    subject: str
    firing: Firing | None  # None for a `skipped` entry
    status: FiringStatus
    attempts: int
    error: str | None
    result: str | None
    count: int
    created_at: datetime
    updated_at: datetime
    #: A pending firing whose last attempt failed: not tried again before then.
    retry_at: datetime | None = None

    def to_record(self) -> dict[str, Any]:
        """The SPEC §4 record with `status`, `attempts`, `error`, `flow_run_id` (and
        `retry_at` while a failed attempt waits to be tried again)."""
        if self.firing is None:
            return {
                "firing_id": self.firing_id,
                "automation": self.automation,
                "subject": self.subject,
                "status": self.status,
                "reason": self.error,
                "count": self.count,
            }
        record: dict[str, Any] = json.loads(self.firing.to_json())
        record.update(status=self.status, attempts=self.attempts)
        if self.error:
            record["error"] = self.error
        if self.result:
            record.update(json.loads(self.result))
        if self.retry_at is not None:
            record["retry_at"] = self.retry_at.astimezone(UTC).isoformat()
        return record


class StateStore:
    """The store at `url` (a SQLAlchemy URL), migrated to the current schema on open.

    >>> store = StateStore("sqlite://")  # in memory
    >>> store.put_events([], origin="push")
    0
    """

    def __init__(self, url: str, *, wait: bool = False) -> None:
        """Open (and migrate) the store now — or, with `wait`, at its first use, so that a
        service can start while the database is down and open it once it is back (each use
        until then raises `StateError`)."""
        self.url = url
        try:
            self._engine = _engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise BadInputError(
                f"The state store {safe_url(url)!r} can not be used ({exc.__class__.__name__}: "
                f"{exc}); use sqlite:///PATH or postgresql://USER@HOST/DB."
            ) from None
        self._opened = False
        if not wait:
            self._open()

    @property
    def engine(self) -> Engine:
        if not self._opened:
            self._open()
        return self._engine

    def _open(self) -> None:
        try:
            self._migrate()
        except SQLAlchemyError as exc:
            raise StateError(
                f"The state store {safe_url(self.url)!r} can not be opened: {store_problem(exc)}"
            ) from exc
        self._opened = True

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two sensors starting at once must not both create the tables.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(742031)")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self._engine.dispose()

    # -- inbox ----------------------------------------------------------------------------------

    def put_events(self, events: Sequence[Event], *, origin: str) -> int:
        """Store events durably (one transaction); returns how many."""
        if not events:
            return 0
        with self.engine.begin() as connection:
            put_inbox(connection, events, origin=origin)
        return len(events)

    def push_source_change(
        self,
        source: str,
        change: Callable[[dict[str, Any] | None], tuple[list[Event], dict[str, Any] | None]],
        *,
        origin: str,
    ) -> int:
        """A pushed change to a polled source: `change` turns the source's cursor into the events
        not seen yet and the updated cursor; both are stored in one transaction, serialized with
        the sensor's cycles (which poll with that cursor). Returns how many events were stored."""
        now = utcnow()
        with self.engine.begin() as connection:
            # The sensor state row is the lock a cycle holds while it polls.
            connection.execute(
                dialect_insert(connection)(sensor_state)
                .values(name="default", data=None, cycles=0, updated_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            connection.execute(
                sa.select(sensor_state.c.name)
                .where(sensor_state.c.name == "default")
                .with_for_update()
            )
            events, cursor = change(read_cursor(connection, source))
            if cursor is not None:
                write_cursor(connection, source, cursor)
            put_inbox(connection, events, origin=origin, now=now)
        return len(events)

    def inbox_size(self) -> int:
        return self.counts()["inbox"]

    def counts(self) -> dict[str, int]:
        """Events waiting in the inbox, and events in quarantine."""
        with self.engine.connect() as connection:
            return {
                table.name.removeprefix("ml_"): int(
                    connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                )
                for table in (inbox, quarantine)
            }

    # -- quarantine -----------------------------------------------------------------------------

    def quarantined(self, limit: int | None = None) -> list[Quarantined]:
        """The quarantined events, oldest first."""
        query = sa.select(quarantine).order_by(quarantine.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [
                Quarantined(
                    id=row.id,
                    received_at=_aware(row.received_at),  # type: ignore[arg-type]
                    quarantined_at=_aware(row.quarantined_at),  # type: ignore[arg-type]
                    origin=row.origin,
                    body=row.body,
                    error=row.error,
                )
                for row in connection.execute(query)
            ]

    def pause(self, automation: str, reason: str) -> datetime | None:
        """Pause `automation` from the next cycle on; returns when it was paused already, if
        it was (then nothing changes)."""
        with self.engine.begin() as connection:
            before = connection.execute(
                sa.select(paused.c.paused_at).where(paused.c.automation == automation)
            ).scalar()
            if before is not None:
                return _aware(before)
            write_pause(connection, automation, reason)
        return None

    def resume(self, automation: str) -> bool:
        """Let `automation` fire again from the next cycle on; False if it was not paused."""
        with self.engine.begin() as connection:
            gone = connection.execute(paused.delete().where(paused.c.automation == automation))
        return bool(gone.rowcount)

    def paused(self) -> dict[str, tuple[datetime, str]]:
        """The paused automations: when, and why."""
        with self.engine.connect() as connection:
            return read_paused(connection)

    def redrive(self, ids: Sequence[int] | None = None) -> int:
        """Put quarantined events (these ids, or all) back into the inbox, for a sensor that
        can now take them; returns how many. One that still fails is quarantined again."""
        with self.engine.begin() as connection:
            query = sa.select(quarantine).order_by(quarantine.c.id)
            if ids is not None:
                query = query.where(quarantine.c.id.in_(list(ids)))
            rows = connection.execute(query).all()
            if rows:
                back = [
                    {
                        "received_at": r.received_at,
                        "origin": r.origin,
                        "body": r.body,
                        "partition": partition_of_body(r.body),
                    }
                    for r in rows
                ]
                partitions.ensure(connection, [r["partition"] for r in back])
                connection.execute(inbox.insert(), back)
                connection.execute(
                    quarantine.delete().where(quarantine.c.id.in_([r.id for r in rows]))
                )
        return len(rows)

    def has_inbox(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(inbox.c.id).limit(1)).first() is not None

    def cursors(self, sources: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """The stored cursor of each source (None before its first poll), read without a lock:
        a poll starts from these, and its result is kept only if they are unchanged when it is
        committed (`Cycle.cursor`)."""
        with self.engine.connect() as connection:
            return {source: read_cursor(connection, source) for source in sources}

    # -- sensor flow runs -------------------------------------------------------------------------

    def beat(self, flow_run_id: str, sensor: str, now: datetime) -> None:
        """A sensor flow run is alive (first call: it started)."""
        statement = dialect_insert(self.engine)(sensor_runs).values(
            flow_run_id=flow_run_id, sensor=sensor, started_at=now, heartbeat_at=now
        )
        with self.engine.begin() as connection:
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["flow_run_id"], set_={"heartbeat_at": now}
                )
            )

    def stopped(self, flow_run_id: str) -> None:
        """A sensor flow run ended (however it ended, it is not left for dead)."""
        with self.engine.begin() as connection:
            connection.execute(sensor_runs.delete().where(sensor_runs.c.flow_run_id == flow_run_id))

    def silent_runs(self, since: datetime) -> list[tuple[str, datetime]]:
        """Sensor flow runs with no heartbeat since then: their process died. Each is returned
        once (and forgotten), with its last heartbeat."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                sa.select(sensor_runs.c.flow_run_id, sensor_runs.c.heartbeat_at)
                .where(sensor_runs.c.heartbeat_at < since)
                .with_for_update(skip_locked=True)
            ).all()
            if rows:
                connection.execute(
                    sensor_runs.delete().where(
                        sensor_runs.c.flow_run_id.in_([r.flow_run_id for r in rows])
                    )
                )
        return [(r.flow_run_id, _aware(r.heartbeat_at)) for r in rows]  # type: ignore[misc]

    # -- a sensor cycle -------------------------------------------------------------------------

    @contextmanager
    def intake(self, name: str = "default") -> Iterator[Intake]:
        """What a sensor's polls found, into the inbox, in one short transaction that holds the
        sensor's row: the compare and swap of each source's cursor, with the events it found."""
        with self.engine.begin() as connection:
            intake = Intake(connection, name)
            yield intake
            intake.flush()

    @contextmanager
    def cycle(self, name: str = "default") -> Iterator[Cycle]:
        """One sensor cycle, in one transaction that holds the partitions it takes.

        Everything done through the `Cycle` — taking inbox events, recording firings, saving
        the evaluator state — commits together or not at all.
        """
        with self.engine.begin() as connection:
            yield Cycle(connection, name)

    def claim_sources(self, names: Sequence[str], now: datetime, lease: timedelta) -> set[str]:
        """The sources this process may poll now: none that another sensor is polling."""
        with self.engine.begin() as connection:
            return partitions.claim_sources(connection, names, now, lease)

    def working(self, sensor: str, now: datetime) -> int:
        """Say that this process is at work for `sensor`; how many workers share the store now."""
        with self.engine.begin() as connection:
            return partitions.working(connection, sensor, now)

    def leave(self) -> None:
        """This process stops working: the others' shares grow at once."""
        with self.engine.begin() as connection:
            partitions.leave(connection)

    # -- firings --------------------------------------------------------------------------------

    def due(self, now: datetime, limit: int = 100) -> list[Firing]:
        """Pending firings whose action may run now: not leased (or the lease ran out), and
        past their back-off."""
        query = (
            sa.select(firings.c.record)
            .where(_due(now))
            .order_by(firings.c.created_at, firings.c.firing_id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [Firing.from_stored(row.record) for row in connection.execute(query)]

    def claim(self, firing_id: str, now: datetime, lease: timedelta) -> int | None:
        """Take a pending firing for its action: the attempt number, or None if it is taken."""
        return self.claim_many([firing_id], now, lease).get(firing_id)

    def claim_many(self, ids: Sequence[str], now: datetime, lease: timedelta) -> dict[str, int]:
        """Take pending firings for their actions (a lease each): attempt number by id, for
        those not taken by someone else."""
        claimed: dict[str, int] = {}
        with self.engine.begin() as connection:
            for chunk in _chunks(list(ids), 500):
                rows = connection.execute(
                    firings.update()
                    .where(firings.c.firing_id.in_(chunk))
                    .where(_due(now))
                    .values(
                        lease_until=now + lease,
                        retry_at=None,
                        attempts=firings.c.attempts + 1,
                        updated_at=now,
                    )
                    .returning(firings.c.firing_id, firings.c.attempts)
                )
                claimed.update({row.firing_id: row.attempts for row in rows})
        return claimed

    def renew(self, held: Sequence[tuple[str, int]], until: datetime) -> set[str]:
        """Extend the leases of firings whose actions are running or waiting their turn, each
        named with the attempt it was claimed for; returns those still held by that attempt."""
        kept: set[str] = set()
        with self.engine.begin() as connection:
            for chunk in _chunks(list(held), 500):
                rows = connection.execute(
                    firings.update()
                    .where(sa.tuple_(firings.c.firing_id, firings.c.attempts).in_(chunk))
                    .where(firings.c.status == "pending")
                    .where(firings.c.retry_at.is_(None))
                    .values(lease_until=until)
                    .returning(firings.c.firing_id)
                )
                kept.update(row.firing_id for row in rows)
        return kept

    def finish(self, firing_id: str, result: dict[str, Any] | None) -> None:
        """The action succeeded; `result` (flow_run_id, http_status, …) joins the record."""
        stored = json.dumps(result) if result else None
        self._settle(
            firing_id, status="finished", result=stored, error=None, lease_until=None, retry_at=None
        )

    def fail(self, firing_id: str, error: str, *, retry_at: datetime | None) -> None:
        """The action failed: try again at `retry_at`, or for good when it is None."""
        self._settle(
            firing_id,
            status="pending" if retry_at is not None else "failed",
            error=error,
            lease_until=None,
            retry_at=retry_at,
        )

    def _settle(self, firing_id: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                firings.update()
                .where(firings.c.firing_id == firing_id)
                .values(updated_at=utcnow(), **values)
            )

    def reset(self, firing_id: str) -> Firing:
        """Make a failed (or back-off-waiting) firing pending and due now (for `retry`).

        Refused while a sensor holds the firing's lease: its action is running right now, and a
        second delivery beside it is what the lease is there to prevent."""
        now = utcnow()
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(firings.c.record, firings.c.status, firings.c.lease_until)
                .where(firings.c.firing_id == firing_id)
                .with_for_update()
            ).first()
            if row is None:
                raise BadInputError(
                    f"No firing has the id {firing_id!r}; "
                    "`ml-automations history FILE --json` lists them."
                )
            if row.status not in ("failed", "pending"):
                raise BadInputError(
                    f"Firing {firing_id!r} is {row.status}, not failed: there is nothing to retry."
                )
            lease = _aware(row.lease_until)
            if row.status == "pending" and lease is not None and lease > now:
                raise MLAutomationsError(
                    f"Firing {firing_id!r} is being delivered by a sensor right now (its lease "
                    f"runs until {lease:%H:%M:%S} UTC); see `ml-automations history` afterwards."
                )
            connection.execute(
                firings.update()
                .where(firings.c.firing_id == firing_id)
                .values(
                    status="pending", lease_until=None, retry_at=None, attempts=0, updated_at=now
                )
            )
        return Firing.from_stored(row.record)

    def history(
        self, *, automation: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[HistoryRow]:
        skipped_last = sa.case((firings.c.status == "skipped", 1), else_=0)
        query = sa.select(firings).order_by(
            firings.c.created_at, skipped_last, firings.c.event_time, firings.c.firing_id
        )
        if automation is not None:
            query = query.where(firings.c.automation == automation)
        if status is not None:
            query = query.where(firings.c.status == status)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [_history_row(row) for row in connection.execute(query)]

    def history_of(self, firing_id: str) -> HistoryRow | None:
        """The history entry of one firing (by its whole id), or None."""
        query = sa.select(firings).where(firings.c.firing_id == firing_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _history_row(row)

    def firing_ids_starting(self, prefix: str, limit: int | None = None) -> list[str]:
        """The ids of the firings (held-back entries included) that start with `prefix`,
        sorted: what a person who typed the first characters of an id may have meant."""
        query = (
            sa.select(firings.c.firing_id)
            .where(firings.c.firing_id.startswith(prefix, autoescape=True))
            .order_by(firings.c.firing_id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())


def _history_row(row: Any) -> HistoryRow:
    return HistoryRow(
        firing_id=row.firing_id,
        automation=row.automation,
        subject=row.subject,
        firing=None if row.status == "skipped" else Firing.from_stored(row.record),
        status=row.status,
        attempts=row.attempts,
        error=row.error,
        result=row.result,
        count=row._mapping["count"],
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
        retry_at=_aware(row.retry_at),
    )


class Intake:
    """A sensor's polls going into the inbox (see `StateStore.intake`)."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        now = utcnow()
        insert = dialect_insert(connection)(sensor_state).values(
            name=name, data=None, cycles=0, updated_at=now
        )
        connection.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        row = connection.execute(
            sa.select(sensor_state).where(sensor_state.c.name == name).with_for_update()
        ).one()
        if row.data is not None:
            # The whole state as one blob, as versions before 0003 kept it: into rows, once.
            state = EvaluatorState.from_bytes(bytes(row.data))
            stored_state.save(connection, name, rows_of(state))
        connection.execute(
            sensor_state.update()
            .where(sensor_state.c.name == name)
            .values(data=None, cycles=sensor_state.c.cycles + 1, updated_at=now)
        )
        #: The events put in, by inbox id, with the body stored (a cycle of this sensor takes
        #: them without parsing; the body tells a row SQLite gave the same id later).
        self.put_events: dict[int, tuple[str, Event]] = {}
        self._pending: list[tuple[Event, str]] = []
        #: How many workers share the store now, this one included (it says so here).
        self.workers = partitions.working(connection, name, now)

    def cursor(self, source: str) -> dict[str, Any] | None:
        """What a source left last time (None before its first poll)."""
        return read_cursor(self.connection, source)

    def save_cursor(
        self, source: str, cursor: dict[str, Any], *, polled_at: datetime | None = None
    ) -> None:
        """Keep a source's cursor, and when the tracker was read for it (`polled_at`)."""
        write_cursor(self.connection, source, cursor, at=polled_at)

    def release_sources(self, names: Sequence[str], now: datetime) -> None:
        """These sources' polls are in: any sensor may poll them next."""
        partitions.release_sources(self.connection, names, now)

    def put(self, events: Sequence[Event], *, origin: str) -> None:
        """Events for the inbox (stored together by `flush`, as the intake ends)."""
        self._pending += [(event, origin) for event in events]

    def flush(self) -> None:
        # All at once: the partitions' lock rows are made in one sorted pass, so two writers
        # making new partitions never wait for each other in a circle.
        events = [event for event, _ in self._pending]
        stored = put_inbox(self.connection, events, origin=[o for _, o in self._pending])
        for (inbox_id, body), event in zip(stored, events, strict=True):
            self.put_events[inbox_id] = (body, event)
        self._pending = []


def put_inbox(
    connection: Connection,
    events: Sequence[Event],
    *,
    origin: str | Sequence[str],
    now: datetime | None = None,
) -> list[tuple[int, str]]:
    """Store events in the inbox (each with its origin, or all with one), each with its
    partition and that partition's lock row; returns their inbox ids and bodies, in order."""
    if not events:
        return []
    now = now or utcnow()
    origins = [origin] * len(events) if isinstance(origin, str) else list(origin)
    names = [partition_of(e) for e in events]
    partitions.ensure(connection, names)
    bodies = [e.model_dump_json(exclude_none=True, by_alias=True) for e in events]
    rows = [
        {"received_at": now, "origin": o, "body": body, "partition": name}
        for body, o, name in zip(bodies, origins, names, strict=True)
    ]
    ids: list[int] = []
    for chunk in _chunks(rows, 1000):
        ids += connection.execute(
            inbox.insert().returning(inbox.c.id, sort_by_parameter_order=True), chunk
        ).scalars()
    return list(zip(ids, bodies, strict=True))


class Cycle:
    """What one sensor cycle does inside its transaction."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        #: Where each event taken from the inbox came from (for the quarantine).
        self.origins: dict[int, tuple[str, datetime]] = {}
        #: The partitions this cycle holds.
        self.partitions: list[str] = []
        self.quarantined = 0
        self._loaded = StateRows()
        self._paused: frozenset[str] | None = None
        #: Since when the sensor watches for each stall automation's stalls (`watch_stalls`).
        self.watching_since: dict[str, datetime] = {}

    def budget_left(self, automations: Sequence[Automation], now: datetime) -> dict[str, int]:
        """What is left of each budgeted automation's firings: its budget less the firings
        recorded for it within its period before `now`."""
        left = {}
        for automation in automations:
            if automation.budget is None:
                continue
            since = now - automation.budget.per
            used = self.connection.execute(
                sa.select(sa.func.count())
                .select_from(firings)
                .where(firings.c.automation == automation.name)
                .where(firings.c.status != "skipped")
                .where(firings.c.created_at >= since)
            ).scalar_one()
            left[automation.name] = max(0, automation.budget.firings - int(used))
        return left

    def pause(self, automation: str, reason: str) -> None:
        """Pause `automation` with the cycle (a budget spent); one paused already stays so."""
        write_pause(self.connection, automation, reason)
        self._paused = None

    def paused(self) -> frozenset[str]:
        """The automations paused now (`ml-automations pause`), read once a cycle."""
        if self._paused is None:
            self._paused = frozenset(read_paused(self.connection))
        return self._paused

    def watch_stalls(self, automations: Sequence[Automation], now: datetime) -> None:
        """Keep since when this sensor watches for each enabled RUN_STALLED automation's stalls
        (`watching_since`; see `stored_state.watch_stalls`)."""
        stalled = {
            a.name: str(a.project)
            for a in automations
            if a.enabled and isinstance(a.event, RunStalled)
        }
        self.watching_since = stored_state.watch_stalls(self.connection, self.name, stalled, now)

    def read_at(self, sources: Sequence[str]) -> datetime | None:
        """When every one of `sources` was last read (the oldest of their cursors' times; None
        if one was never read): what the store knows of their runs is as of then."""
        if not sources:
            return None
        rows = self.connection.execute(
            sa.select(source_cursors.c.source, source_cursors.c.updated_at).where(
                source_cursors.c.key == "cursor",
                one_of(self.connection, source_cursors.c.source, sorted(sources)),
            )
        )
        times = {row.source: row.updated_at for row in rows}
        if set(times) != set(sources):
            return None
        return min(_aware(t) or t for t in times.values())

    def backlogged(self) -> bool:
        """Whether the partitions this cycle holds have inbox events it did not take (a take
        cut at its limit): their runs' signs of life are not all in yet."""
        if not self.partitions:
            return False
        waiting = sa.select(inbox.c.id).where(
            one_of(self.connection, inbox.c.partition, self.partitions)
        )
        return self.connection.execute(waiting.limit(1)).first() is not None

    def state(self, keys: StateKeys) -> EvaluatorState:
        """The part of the evaluator state that evaluating a batch with `keys` reads (from
        `Evaluator.reads`); `save` writes back what changed of it."""
        self._loaded = stored_state.load(self.connection, self.name, keys, self.partitions)
        return state_from_rows(self._loaded)

    def take_inbox(
        self,
        limit: int = 100_000,
        *,
        workers: int = 1,
        known: Mapping[int, tuple[str, Event]] | None = None,
        quiet_before: int | None = None,
    ) -> list[Event]:
        """The oldest inbox events of this cycle's share of the partitions (at most `limit`;
        see `partitions`), removed from the inbox with this cycle. `workers`: how many sensors
        share the store now; `known`: events already at hand, with their bodies, by inbox id (not
        parsed again); `quiet_before`: the partitions with runs quiet since then (ns), which may
        have stalled, are waiting too, even without events.

        A stored event that no longer reads as one (stored by an older version that let it in)
        goes to the quarantine with the reason, instead of failing every cycle."""
        waiting = self._waiting()
        if any(name == "" for name, _ in waiting) and self._sort_unplaced():
            waiting = self._waiting()
        if quiet_before is not None:
            # (after those with events, oldest first; a run's partition is its project)
            quiet = stored_state.quiet_projects(self.connection, self.name, quiet_before)
            waiting += [(name, 0) for name in sorted(quiet - {n for n, _ in waiting})]
        if not waiting:
            return []
        self.partitions = partitions.lock(
            self.connection,
            waiting,
            want=partitions.share(len(waiting), workers),
            limit=limit,
        )
        if not self.partitions:
            return []
        oldest = (
            sa.select(inbox.c.id)
            .where(one_of(self.connection, inbox.c.partition, self.partitions))
            .order_by(inbox.c.id)
            .limit(limit)
        )
        taken = self.connection.execute(
            inbox.delete()
            .where(inbox.c.id.in_(oldest.scalar_subquery()))
            .returning(inbox.c.id, inbox.c.received_at, inbox.c.origin, inbox.c.body)
        ).all()
        known = known or {}
        events: list[Event] = []
        for row in sorted(taken, key=lambda row: row.id):
            hit = known.get(row.id)
            event = hit[1] if hit is not None and hit[0] == row.body else None
            if event is None:
                try:
                    event = parse_event(row.body)
                except ValidationError:
                    try:  # (again, for the message: json's own, naming line and column)
                        event = event_from_dict(json.loads(row.body))
                    except (ValueError, ValidationError) as exc:  # (a ValidationError is one)
                        reason = (
                            describe_problem(exc) if isinstance(exc, ValidationError) else str(exc)
                        )
                        self._quarantine(
                            row.origin, row.body, f"not a valid event: {reason}", row.received_at
                        )
                        continue
            self.origins[id(event)] = (row.origin, row.received_at)
            events.append(event)
        return events

    def _waiting(self) -> list[tuple[str, int]]:
        """The partitions with inbox events, and how many, oldest event first."""
        return [
            (name, int(count))
            for name, count in self.connection.execute(
                sa.select(inbox.c.partition, sa.func.count().label("count"))
                .group_by(inbox.c.partition)
                .order_by(sa.func.min(inbox.c.id))
            )
        ]

    def _sort_unplaced(self) -> bool:
        """Events stored without their partition (by a process still running an earlier
        version, during an upgrade) into the partitions they belong to, so that no two sensors
        judge one project's events at once; True if it held them (another sensor may be on it).
        What does not read as an event stays, to be quarantined by whoever takes it."""
        if partitions.lock(self.connection, [("", 0)], want=1, limit=1) != [""]:
            return False
        rows = self.connection.execute(
            sa.select(inbox.c.id, inbox.c.body).where(inbox.c.partition == "")
        ).all()
        placed: dict[str, list[int]] = {}
        for row in rows:
            name = partition_of_body(row.body)
            if name:
                placed.setdefault(name, []).append(row.id)
        if placed:
            partitions.ensure_outside(self.connection, list(placed))
        for name, ids in placed.items():
            for chunk in _chunks(ids, 1000):
                self.connection.execute(
                    inbox.update().where(inbox.c.id.in_(chunk)).values(partition=name)
                )
        return True

    def quarantine(self, event: Event, error: str) -> None:
        """Move an event this cycle could not evaluate aside, with its error."""
        origin, received_at = self.origins.get(id(event), ("poll", utcnow()))
        body = event.model_dump_json(exclude_none=True, by_alias=True)
        self._quarantine(origin, body, error, received_at)

    def _quarantine(self, origin: str, body: str, error: str, received_at: datetime) -> None:
        self.connection.execute(
            quarantine.insert().values(
                received_at=received_at,
                quarantined_at=utcnow(),
                origin=origin,
                body=body,
                error=error[:2000],
            )
        )
        self.quarantined += 1

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """A part of the cycle that is undone alone if it raises (a savepoint)."""
        with self.connection.begin_nested():
            yield

    def record(self, new: Sequence[Firing], skips: Sequence[Skip] = ()) -> list[Firing]:
        """Record firings as pending (a firing already recorded stays as it is) and held-back
        matches as skipped; returns the firings that were new."""
        now = utcnow()
        inserted: set[str] = set()
        for chunk in _chunks(list(new), 1000):
            rows = [
                {
                    "firing_id": f.firing_id,
                    "automation": f.automation,
                    "event_type": f.event_type,
                    "subject": f.subject,
                    "event_time": f.timestamp,
                    "record": f.to_stored(),
                    "status": "pending",
                    "attempts": 0,
                    "count": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for f in chunk
            ]
            statement = (
                dialect_insert(self.connection)(firings)
                .on_conflict_do_nothing(index_elements=["firing_id"])
                .returning(firings.c.firing_id)  # (rowcount is not reliable on every driver)
            )
            inserted.update(row.firing_id for row in self.connection.execute(statement, rows))
        self._record_skips(skips, now)
        return [f for f in new if f.firing_id in inserted]

    def _record_skips(self, skips: Sequence[Skip], now: datetime) -> None:
        """One `skipped` entry per automation, subject and reason, counting its matches."""
        for chunk in _chunks(list(skips), 1000):
            rows = [
                {
                    "firing_id": firing_id("skipped", s.automation, s.subject, s.reason),
                    "automation": s.automation,
                    "event_type": "",
                    "subject": s.subject,
                    "event_time": None,
                    "record": "{}",
                    "status": "skipped",
                    "attempts": 0,
                    "error": s.reason,
                    "count": s.count,
                    "created_at": now,
                    "updated_at": now,
                }
                for s in chunk
            ]
            statement = dialect_insert(self.connection)(firings)
            upsert = statement.on_conflict_do_update(
                index_elements=["firing_id"],
                set_={
                    "count": firings.c.count + statement.excluded.count,
                    "updated_at": statement.excluded.updated_at,
                },
            )
            self.connection.execute(upsert, rows)

    def save(self, state: EvaluatorState) -> None:
        """Write the rows of `state` (as loaded by `state`) that the cycle changed."""
        changed = rows_of(state).changed_since(self._loaded)
        stored_state.save(self.connection, self.name, changed)
        self._loaded = StateRows()


def _due(now: datetime) -> Any:
    """Pending, not leased (or the lease ran out), past its back-off."""
    return sa.and_(
        firings.c.status == "pending",
        sa.or_(firings.c.lease_until.is_(None), firings.c.lease_until <= now),
        sa.or_(firings.c.retry_at.is_(None), firings.c.retry_at <= now),
    )


def is_outage(exc: BaseException) -> bool:
    """An error of the store itself (unreachable, locked, full, read-only), or of the machine —
    not of the data a cycle handled: nothing to quarantine, the cycle is tried again later."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa.exc.OperationalError
        | sa.exc.InterfaceError
        | sa.exc.DisconnectionError
        | sa.exc.TimeoutError
        | sa.exc.ResourceClosedError
        | StateError
        | MemoryError
        | OSError,
    )


def store_problem(exc: BaseException) -> str:
    """What is wrong with the store, in words a person can act on (never its password)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else exc.__class__.__name__
    lowered = first.lower()
    if "locked" in lowered or "lock timeout" in lowered:
        return (
            f"the database is locked by another process ({first}); wait for it, or stop the "
            "process that holds it"
        )
    if ("disk" in lowered and "full" in lowered) or "no space" in lowered:
        return f"the disk is full ({first}); free space where the store lives"
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return (
            f"the store is read-only ({first}); make the file and its folder writable by this user"
        )
    if "connection refused" in lowered or "could not connect" in lowered:
        return (
            f"nothing answers at that address ({first}); check that the database server is "
            "running and the host and port are right"
        )
    if "unable to open" in lowered or "no such file" in lowered:
        return f"the file can not be opened ({first}); check that its folder exists"
    return f"{exc.__class__.__name__}: {first}; check the URL and that the database is reachable"


def write_pause(connection: Connection, automation: str, reason: str) -> None:
    """Pause `automation` now (one paused already keeps its time and reason)."""
    statement = dialect_insert(connection)(paused).on_conflict_do_nothing()
    connection.execute(
        statement, {"automation": automation, "paused_at": utcnow(), "reason": reason}
    )


def read_paused(connection: Connection) -> dict[str, tuple[datetime, str]]:
    rows = connection.execute(sa.select(paused)).all()
    return {row.automation: (_aware(row.paused_at) or row.paused_at, row.reason) for row in rows}


def read_cursor(connection: Connection, source: str) -> dict[str, Any] | None:
    value = connection.execute(
        sa.select(source_cursors.c.value)
        .where(source_cursors.c.source == source)
        .where(source_cursors.c.key == "cursor")
    ).scalar()
    return None if value is None else dict(json.loads(value))


def write_cursor(
    connection: Connection, source: str, cursor: dict[str, Any], *, at: datetime | None = None
) -> None:
    """Keep a source's cursor; `updated_at` says when the tracker was read (default: now)."""
    statement = dialect_insert(connection)(source_cursors).values(
        source=source, key="cursor", value=json.dumps(cursor), updated_at=at or utcnow()
    )
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["source", "key"],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
    )


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None  # transactions are begun below, not by pysqlite
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=60000")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            # Take the write lock at once: two writers never interleave a cycle.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True)
