"""A batch of events in arrival order, with run events held as columns for vectorized work.

Metric points and run states become columns (codes into small string tables, int64 times in
nanoseconds, float64 values); artifact events stay objects, since they are few and each is
judged on its own. `EventBatch.from_events` builds a batch from normalized events;
`EventBatch.from_columns` takes columns directly (sources and benchmarks that already have them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from prefect_ml_automations.events import (
    MAX_VALUE,
    ArtifactEvent,
    Event,
    MetricEvent,
    RunHeartbeatEvent,
    RunStateEvent,
)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]

NO_TIME = np.iinfo(np.int64).min
"""The int64 nanosecond time that stands for "none"."""
#: The `metric` code of a run state's row, and of a heartbeat's.
STATE_ROW = -1
HEARTBEAT_ROW = -2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = timedelta(microseconds=1)


def to_ns(moment: datetime) -> int:
    """An aware datetime as integer nanoseconds since the epoch (microsecond precision)."""
    return (moment - _EPOCH) // _NS * 1000


def from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


@dataclass
class RunColumns:
    """One row per run event (metric point, run state or heartbeat), in arrival order.

    `metric` is `STATE_ROW` for run states and `HEARTBEAT_ROW` for heartbeats; `value` is NaN
    where the point does not count (not a finite number); `order` is the step, or the time for
    system metrics that have none.
    """

    arrival: I64
    run: I32
    name: I32
    user: I32
    ts: I64
    metric: I32
    order: I64
    value: F64

    def __len__(self) -> int:
        return len(self.arrival)


@dataclass
class EventBatch:
    """Events in arrival order: run events as `columns`, the rest as objects."""

    #: (project, run_id) per batch-local run code.
    runs: list[tuple[str, str]]
    #: Per batch-local run code: `run_created_at` of its first event here, else NO_TIME.
    created: I64
    metrics: list[str]
    names: list[str]
    users: list[str]
    columns: RunColumns
    #: Run states and artifact events, with their arrival index.
    states: list[tuple[int, RunStateEvent]] = field(default_factory=list)
    artifacts: list[tuple[int, ArtifactEvent]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.columns) + len(self.artifacts)

    @property
    def latest(self) -> datetime | None:
        """The time of the batch's latest event (None for an empty batch)."""
        times = [int(self.columns.ts.max())] if len(self.columns) else []
        times += [to_ns(event.timestamp) for _, event in self.artifacts]
        return from_ns(max(times)) if times else None

    def chunks(self, size: int) -> Iterator[EventBatch]:
        """The batch as consecutive batches of about `size` events each (itself if smaller)."""
        if self.size <= size:
            yield self
            return
        end = int(self.columns.arrival[-1]) + 1 if len(self.columns) else 0
        if self.artifacts:
            end = max(end, self.artifacts[-1][0] + 1)
        for lo in range(0, end, size):
            hi = lo + size
            yield dataclasses.replace(
                self.between(lo, hi),
                states=[(i, e) for i, e in self.states if lo <= i < hi],
                artifacts=[(i, e) for i, e in self.artifacts if lo <= i < hi],
            )

    def between(self, lo: int, hi: int) -> EventBatch:
        """The run events whose arrival index is in [lo, hi), sharing this batch's tables
        (artifact events and run states left out: for metric work on part of a stream)."""
        rows = slice(*np.searchsorted(self.columns.arrival, [lo, hi]).tolist())
        c = self.columns
        return EventBatch(
            runs=self.runs,
            created=self.created,
            metrics=self.metrics,
            names=self.names,
            users=self.users,
            columns=RunColumns(
                c.arrival[rows],
                c.run[rows],
                c.name[rows],
                c.user[rows],
                c.ts[rows],
                c.metric[rows],
                c.order[rows],
                c.value[rows],
            ),
        )

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventBatch:
        builder = BatchBuilder()
        for event in events:
            builder.add(event)
        return builder.build()

    @classmethod
    def from_columns(
        cls,
        *,
        runs: list[tuple[str, str]],
        metrics: list[str],
        run: npt.ArrayLike,
        metric: npt.ArrayLike,
        step: npt.ArrayLike,
        value: npt.ArrayLike,
        ts: npt.ArrayLike,
        created: npt.ArrayLike | None = None,
        names: list[str] | None = None,
        name: npt.ArrayLike | None = None,
        users: list[str] | None = None,
        user: npt.ArrayLike | None = None,
    ) -> EventBatch:
        """Metric points only, already as columns (codes into `runs` and `metrics`; `ts` and
        `created` in nanoseconds; a negative `step` marks a system metric, ordered by `ts`)."""
        run_a = np.asarray(run, np.int32)
        n = len(run_a)
        ts_a = np.asarray(ts, np.int64)
        step_a = np.asarray(step, np.int64)
        value_a = np.asarray(value, np.float64)
        value_a = np.where(np.abs(value_a) <= MAX_VALUE, value_a, np.nan)  # NaN, ±inf: out too
        missing = np.full(n, -1, np.int32)
        columns = RunColumns(
            arrival=np.arange(n, dtype=np.int64),
            run=run_a,
            name=missing if name is None else np.asarray(name, np.int32),
            user=missing if user is None else np.asarray(user, np.int32),
            ts=ts_a,
            metric=np.asarray(metric, np.int32),
            order=np.where(step_a < 0, ts_a, step_a),
            value=value_a,
        )
        created_a = (
            np.full(len(runs), NO_TIME, np.int64)
            if created is None
            else np.asarray(created, np.int64)
        )
        return cls(
            runs=list(runs),
            created=created_a,
            metrics=list(metrics),
            names=list(names or []),
            users=list(users or []),
            columns=columns,
        )


@dataclass
class Points:
    """Metric points already read into columns (the file reader's fast path), each with its
    arrival index; `created` and `ts` in nanoseconds (`created` NO_TIME where not given),
    `order` the step (or the time, for a system metric), `value` NaN where it does not count."""

    arrival: I64
    project: list[str]
    run_id: list[str]
    run_name: list[str | None]
    user: list[str | None]
    created: I64
    metric: list[str]
    order: I64
    ts: I64
    value: F64


class BatchBuilder:
    """Builds an `EventBatch` from events one at a time (`add`) and from blocks of metric points
    already in columns (`add_points`), each at its arrival index.

    Strings become codes at `build`, in order of first appearance by arrival — so however the
    events came in, the batch is the one `EventBatch.from_events` makes of them in arrival order.
    """

    def __init__(self) -> None:
        self._index = 0
        self._arrival: list[int] = []
        self._project: list[str] = []
        self._run_id: list[str] = []
        self._name: list[str | None] = []
        self._user: list[str | None] = []
        self._created: list[int] = []
        self._metric: list[str | None] = []
        self._order: list[int] = []
        self._ts: list[int] = []
        self._value: list[float] = []
        self._blocks: list[Points] = []
        self._states: list[tuple[int, RunStateEvent]] = []
        self._beats: list[int] = []
        self._artifacts: list[tuple[int, ArtifactEvent]] = []

    def add(self, event: Event, *, at: int | None = None) -> None:
        """One event, arriving next (or at index `at`)."""
        index = self._index if at is None else at
        self._index = max(self._index, index + 1)
        if not isinstance(event, MetricEvent | RunStateEvent | RunHeartbeatEvent):
            self._artifacts.append((index, event))
            return
        self._arrival.append(index)
        self._project.append(event.project)
        self._run_id.append(event.run_id)
        self._name.append(event.run_name)
        self._user.append(event.user)
        self._created.append(
            NO_TIME if event.run_created_at is None else to_ns(event.run_created_at)
        )
        time = to_ns(event.timestamp)
        self._ts.append(time)
        if isinstance(event, MetricEvent):
            self._metric.append(event.metric)
            self._order.append(time if event.step is None else event.step)
            number = event.number
            self._value.append(math.nan if number is None else number)
        else:
            self._metric.append(None)
            self._order.append(0)
            self._value.append(math.nan)
            if isinstance(event, RunStateEvent):
                self._states.append((index, event))
            else:
                self._beats.append(index)

    def add_points(self, points: Points) -> None:
        """Metric points in columns, at their own arrival indices."""
        if len(points.arrival):
            self._blocks.append(points)
            self._index = max(self._index, int(points.arrival.max()) + 1)

    def build(self) -> EventBatch:
        blocks = [
            Points(
                np.array(self._arrival, np.int64),
                self._project,
                self._run_id,
                self._name,
                self._user,
                np.array(self._created, np.int64),
                self._metric,  # type: ignore[arg-type]  # (None for run states)
                np.array(self._order, np.int64),
                np.array(self._ts, np.int64),
                np.array(self._value, np.float64),
            ),
            *self._blocks,
        ]
        arrival = np.concatenate([b.arrival for b in blocks])
        by_arrival = np.argsort(arrival, kind="stable")
        in_order = not len(arrival) or bool(np.all(by_arrival == np.arange(len(arrival))))

        def column(values: list[list[Any]]) -> npt.NDArray[np.object_]:
            joined: npt.NDArray[np.object_] = np.empty(len(arrival), object)
            joined[:] = [v for part in values for v in part]
            return joined if in_order else joined[by_arrival]

        def numbers(name: str, dtype: type) -> Any:
            joined: Any = np.concatenate([getattr(b, name) for b in blocks])
            joined = joined.astype(dtype, copy=False)
            return joined if in_order else joined[by_arrival]

        keys = column(
            [[f"{p}\x00{r}" for p, r in zip(b.project, b.run_id, strict=True)] for b in blocks]
        )
        run, run_keys = _codes(keys)
        created_rows = numbers("created", np.int64)
        first = np.full(len(run_keys), -1, np.int64)
        first[run[::-1]] = np.arange(len(run) - 1, -1, -1)  # (each run's first row wins)
        name, names = _codes(column([b.run_name for b in blocks]))
        user, users = _codes(column([b.user for b in blocks]))
        metric, metrics = _codes(column([b.metric for b in blocks]))
        if self._beats:
            metric[np.isin(arrival if in_order else arrival[by_arrival], self._beats)] = (
                HEARTBEAT_ROW
            )
        columns = RunColumns(
            arrival=arrival if in_order else arrival[by_arrival],
            run=run,
            name=name,
            user=user,
            ts=numbers("ts", np.int64),
            metric=metric,
            order=numbers("order", np.int64),
            value=numbers("value", np.float64),
        )
        return EventBatch(
            runs=[(k.split("\x00", 1)[0], k.split("\x00", 1)[1]) for k in run_keys],
            created=created_rows[first] if len(first) else np.zeros(0, np.int64),
            metrics=metrics,
            names=names,
            users=users,
            columns=columns,
            states=sorted(self._states, key=lambda s: s[0]),
            artifacts=sorted(self._artifacts, key=lambda a: a[0]),
        )


def _codes(values: npt.NDArray[np.object_]) -> tuple[I32, list[str]]:
    """Dense codes in order of first appearance (-1 for None), and the strings coded."""
    if not len(values):
        return np.zeros(0, np.int32), []
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int32, copy=False), list(uniques)
