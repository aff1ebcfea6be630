"""The evaluator state in the store: a row per run, per run's series of a metric, per metric and
per seen event, read and written only where a batch touches them.

A cycle loads the rows its batch reads (`load`, from `Evaluator.reads`), the evaluator works on
the small state they make, and the cycle writes back the rows that changed (`save`). The cost of
a cycle follows its batch, not the number of runs the store tracks, and the store grows with the
runs and events it has seen, not with the cycles. Rows belong to a sensor (its name), as the lock
row `ml_sensor_state` does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from prefect_ml_automations.evaluator.rows import (
    MetricRow,
    RunKey,
    RunRow,
    SeriesRow,
    StateKeys,
    StateRows,
    members_json,
    members_of,
)

metadata = sa.MetaData()
state_runs = sa.Table(
    "ml_state_runs",
    metadata,
    sa.Column("sensor", sa.String(255), primary_key=True),
    sa.Column("project", sa.Text(), primary_key=True),
    sa.Column("run_id", sa.Text(), primary_key=True),
    sa.Column("created", sa.BigInteger(), nullable=False),
    sa.Column("name", sa.Text()),
    sa.Column("user", sa.Text()),
    sa.Column("state", sa.String(32)),
    sa.Column("fired", sa.Text(), nullable=False),
    sa.Column("active", sa.BigInteger()),
    sa.Column("quiet", sa.BigInteger()),
    sa.Column("finished", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index("ix_ml_state_runs_quiet", "sensor", "quiet"),
)
state_series = sa.Table(
    "ml_state_series",
    metadata,
    sa.Column("sensor", sa.String(255), primary_key=True),
    sa.Column("project", sa.Text(), primary_key=True),
    sa.Column("metric", sa.Text(), primary_key=True),
    sa.Column("run_id", sa.Text(), primary_key=True),
    #: How many values the tail holds (0: the run has logged nothing that counts).
    sa.Column("length", sa.Integer(), nullable=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.Column("tail", sa.LargeBinary(), nullable=False),
)
state_metrics = sa.Table(
    "ml_state_metrics",
    metadata,
    sa.Column("sensor", sa.String(255), primary_key=True),
    sa.Column("project", sa.Text(), primary_key=True),
    sa.Column("metric", sa.Text(), primary_key=True),
    sa.Column("capacity", sa.Integer(), nullable=False),
    sa.Column("shift", sa.Float()),
    sa.Column("members", sa.Text(), nullable=False),
)
state_seen = sa.Table(
    "ml_state_seen",
    metadata,
    sa.Column("sensor", sa.String(255), primary_key=True),
    sa.Column("identity", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
)

stall_watch = sa.Table(
    "ml_stall_watch",
    metadata,
    sa.Column("sensor", sa.String(255), primary_key=True),
    sa.Column("automation", sa.String(255), primary_key=True),
    sa.Column("project", sa.Text(), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)

#: Rows written at once after which PostgreSQL's planner statistics are refreshed.
ANALYZE_AFTER = 10_000
#: Keys per `IN (...)` list: well inside SQLite's and PostgreSQL's limits on parameters.
CHUNK = 500


def load(
    connection: Connection, sensor: str, keys: StateKeys, projects: Sequence[str] = ()
) -> StateRows:
    """The rows of `sensor`'s state that evaluating a batch with these `keys` reads; with
    `keys.quiet_before`, also the runs of `projects` quiet since then (they may have stalled).

    A z-score member list no cycle kept yet (an automation with a new window) is found here, once,
    from the runs that have logged the metric: the k most recently created (ties by run id).
    """
    rows = StateRows()
    metric_keys = list(keys.metrics)
    for project, metric in metric_keys:
        found = connection.execute(
            sa.select(state_metrics).where(
                state_metrics.c.sensor == sensor,
                state_metrics.c.project == project,
                state_metrics.c.metric == metric,
            )
        ).one_or_none()
        if found is not None:
            rows.metrics[(project, metric)] = MetricRow(
                capacity=found.capacity, shift=found.shift, members=found.members
            )
    runs: set[RunKey] = set(keys.runs)
    if keys.quiet_before is not None:
        runs.update(quiet_runs(connection, sensor, keys.quiet_before, projects))
    for key, windows in keys.metrics.items():
        # (and the runs of lists no automation keeps now: the evaluator drops those lists)
        info = rows.metrics.get(key)
        members = members_of(info) if info is not None else {}
        missing = sorted(windows - members.keys())
        for k, finished in missing:
            members[(k, finished)] = _most_recent_logged(connection, sensor, *key, k, finished)
        if windows and (info is None or missing):
            rows.metrics[key] = MetricRow(
                capacity=info.capacity if info is not None else 1,
                shift=info.shift if info is not None else None,
                members=members_json(members),
            )
        project = key[0]
        runs.update((project, run_id) for ids in members.values() for run_id in ids)

    wanted: dict[str, list[str]] = defaultdict(list)
    for project, run_id in sorted(runs):
        wanted[project].append(run_id)
    for project, run_ids in wanted.items():
        # One project at a time: `project = ? AND run_id IN (...)` walks the primary key (a
        # row-value IN list does not, on SQLite).
        for chunk in _chunks(run_ids):
            statement = sa.select(state_runs).where(
                state_runs.c.sensor == sensor,
                state_runs.c.project == project,
                one_of(connection, state_runs.c.run_id, chunk),
            )
            for row in connection.execute(statement):
                rows.runs[(row.project, row.run_id)] = RunRow(
                    created=row.created,
                    name=row.name,
                    user=row.user,
                    state=row.state,
                    fired=row.fired,
                    active=row.active,
                    quiet=row.quiet,
                    finished=row.finished,
                )
    by_project: dict[str, list[str]] = defaultdict(list)
    for project, run_id in rows.runs:
        by_project[project].append(run_id)
    for project, metric in metric_keys:
        for chunk in _chunks(sorted(by_project.get(project, []))):
            statement = sa.select(
                state_series.c.run_id, state_series.c.count, state_series.c.tail
            ).where(
                state_series.c.sensor == sensor,
                state_series.c.project == project,
                state_series.c.metric == metric,
                one_of(connection, state_series.c.run_id, chunk),
            )
            for run_id, count, tail in connection.execute(statement):
                rows.series[(project, metric, run_id)] = SeriesRow(count=count, tail=bytes(tail))
    for chunk in _chunks(sorted(keys.identities)):
        statement = sa.select(state_seen.c.identity, state_seen.c.kind).where(
            state_seen.c.sensor == sensor, one_of(connection, state_seen.c.identity, chunk)
        )
        rows.seen.update((row.identity, row.kind) for row in connection.execute(statement))
    return rows


def save(connection: Connection, sensor: str, rows: StateRows) -> None:
    """Write these rows of `sensor`'s state (new ones inserted, the others replaced)."""
    _upsert(
        connection,
        state_runs,
        ["sensor", "project", "run_id"],
        (
            {
                "sensor": sensor,
                "project": project,
                "run_id": run_id,
                "created": row.created,
                "name": row.name,
                "user": row.user,
                "state": row.state,
                "fired": row.fired,
                "active": row.active,
                "quiet": row.quiet,
                "finished": row.finished,
            }
            for (project, run_id), row in rows.runs.items()
        ),
    )
    _upsert(
        connection,
        state_series,
        ["sensor", "project", "metric", "run_id"],
        (
            {
                "sensor": sensor,
                "project": project,
                "metric": metric,
                "run_id": run_id,
                "length": row.length,
                "count": row.count,
                "tail": row.tail,
            }
            for (project, metric, run_id), row in rows.series.items()
        ),
    )
    _upsert(
        connection,
        state_metrics,
        ["sensor", "project", "metric"],
        (
            {
                "sensor": sensor,
                "project": project,
                "metric": metric,
                "capacity": row.capacity,
                "shift": row.shift,
                "members": row.members,
            }
            for (project, metric), row in rows.metrics.items()
        ),
    )
    _upsert(
        connection,
        state_seen,
        ["sensor", "identity"],
        ({"sensor": sensor, "identity": i, "kind": kind} for i, kind in rows.seen.items()),
    )
    if connection.dialect.name == "postgresql" and len(rows) >= ANALYZE_AFTER:
        # PostgreSQL plans the next cycle's look-ups from its statistics: on tables that just
        # grew by this much, stale ones make it filter whole projects instead of walking the
        # primary key (42 ms instead of 3 at 100k runs) until autovacuum comes round.
        for table in metadata.sorted_tables:
            connection.exec_driver_sql(f"ANALYZE {table.name}")


#: The automation name of the row migration 0008 leaves for each sensor that existed before
#: `ml_stall_watch`: the stall automations it has then were watched all along.
WATCHED_BEFORE = ""
_ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)


def watch_stalls(
    connection: Connection, sensor: str, automations: Mapping[str, str], now: datetime
) -> dict[str, datetime]:
    """Since when `sensor` watches for the stalls of each of `automations` (its RUN_STALLED
    ones, name → the project they watch): from `now` for one it did not watch before (new,
    renamed, enabled again or moved to another project) — the running runs of its project
    that went quiet are then marked quiet again, so that a cycle finds them. One no longer
    given is no longer watched (every worker of a sensor has the same automations)."""
    rows = connection.execute(
        sa.select(stall_watch.c.automation, stall_watch.c.project).where(
            stall_watch.c.sensor == sensor
        )
    )
    watched = {row.automation: row.project for row in rows}
    # (WATCHED_BEFORE's row too: no automation has an empty name)
    gone = sorted(a for a, project in watched.items() if automations.get(a) != project)
    if gone:
        connection.execute(
            stall_watch.delete().where(
                stall_watch.c.sensor == sensor, one_of(connection, stall_watch.c.automation, gone)
            )
        )
    new = sorted(a for a in automations if watched.get(a) != automations[a])
    if new:
        upgraded = WATCHED_BEFORE in watched  # (their runs' quiet times were kept all along)
        since = _ALWAYS if upgraded else now.astimezone(UTC)
        # (two workers of one sensor may both find it new: the first one's time stays)
        insert = dialect_insert(connection)(stall_watch).on_conflict_do_nothing()
        connection.execute(
            insert,
            [
                {"sensor": sensor, "automation": a, "project": automations[a], "since": since}
                for a in new
            ],
        )
        if not upgraded:
            _mark_quiet_again(connection, sensor, sorted({automations[a] for a in new}))
    stored = connection.execute(
        sa.select(stall_watch.c.automation, stall_watch.c.since).where(
            stall_watch.c.sensor == sensor
        )
    )
    return {
        row.automation: row.since if row.since.tzinfo else row.since.replace(tzinfo=UTC)
        for row in stored
        if row.automation in automations
    }


def _mark_quiet_again(connection: Connection, sensor: str, projects: Sequence[str]) -> None:
    """The running runs of `projects` that went quiet are quiet again: a stall automation that
    came may fire for them."""
    connection.execute(
        state_runs.update()
        .where(
            state_runs.c.sensor == sensor,
            one_of(connection, state_runs.c.project, projects),
            state_runs.c.state == "running",
            state_runs.c.active.is_not(None),
            state_runs.c.quiet.is_(None),
        )
        .values(quiet=state_runs.c.active)
    )


def quiet_projects(connection: Connection, sensor: str, before: int) -> set[str]:
    """The projects with runs quiet since `before` (ns) or earlier that a stall may still fire
    for (through the index on (sensor, quiet))."""
    statement = sa.select(state_runs.c.project).distinct()
    quiet = statement.where(state_runs.c.sensor == sensor, state_runs.c.quiet <= before)
    return set(connection.execute(quiet).scalars())


def quiet_runs(
    connection: Connection, sensor: str, before: int, projects: Sequence[str]
) -> list[RunKey]:
    """The runs of `projects` quiet since `before` (ns) or earlier that a stall may still fire
    for."""
    statement = sa.select(state_runs.c.project, state_runs.c.run_id).where(
        state_runs.c.sensor == sensor, state_runs.c.quiet <= before
    )
    found: list[RunKey] = []
    for chunk in _chunks(sorted(set(projects))):
        within = statement.where(one_of(connection, state_runs.c.project, chunk))
        found += [(p, r) for p, r in connection.execute(within)]
    return found


def _most_recent_logged(
    connection: Connection, sensor: str, project: str, metric: str, k: int, finished: bool
) -> list[str]:
    """The k most recently created runs that have logged `metric` in `project` (and, with
    `finished`, were seen finished), newest first."""
    logged = (
        sa.select(state_runs.c.created, state_runs.c.run_id)
        .join(
            state_series,
            sa.and_(
                state_series.c.sensor == state_runs.c.sensor,
                state_series.c.project == state_runs.c.project,
                state_series.c.run_id == state_runs.c.run_id,
            ),
        )
        .where(
            state_runs.c.sensor == sensor,
            state_runs.c.project == project,
            state_series.c.metric == metric,
            state_series.c.length > 0,
        )
    )
    if finished:
        logged = logged.where(state_runs.c.finished)
    newest = connection.execute(
        sa.select(logged.subquery().c.created).order_by(sa.desc("created")).limit(k)
    ).all()
    if not newest:
        return []
    # Every run created at the k-th time or later, ordered here: ties go by run id as Python
    # orders strings (a database collation might not).
    candidates = connection.execute(logged.where(state_runs.c.created >= newest[-1].created))
    ranked = sorted(((created, run_id) for created, run_id in candidates), reverse=True)
    return [run_id for _, run_id in ranked[:k]]


def _upsert(
    connection: Connection, table: sa.Table, keys: list[str], rows: Iterable[dict[str, Any]]
) -> None:
    values = list(rows)
    if not values:
        return
    statement = dialect_insert(connection)(table)
    others = [c.name for c in table.columns if c.name not in keys]
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={name: statement.excluded[name] for name in others}
    )
    for chunk in _chunks(values):
        connection.execute(statement, chunk)


def one_of(connection: Connection, column: sa.ColumnElement[Any], values: Sequence[Any]) -> Any:
    """`column IN values`; on PostgreSQL as `column = ANY(array)`, one parameter however many
    values (psycopg parses a statement with thousands of placeholders anew each time: with 10k
    events a cycle that cost more than the look-ups themselves)."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def dialect_insert(bind: Connection | Engine) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING / DO UPDATE."""
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
