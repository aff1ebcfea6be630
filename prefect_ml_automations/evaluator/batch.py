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

import numpy as np
import numpy.typing as npt

from prefect_ml_automations.events import (
    MAX_VALUE,
    ArtifactEvent,
    Event,
    MetricEvent,
    RunStateEvent,
)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]

NO_TIME = np.iinfo(np.int64).min
"""The int64 nanosecond time that stands for "none"."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = timedelta(microseconds=1)


def to_ns(moment: datetime) -> int:
    """An aware datetime as integer nanoseconds since the epoch (microsecond precision)."""
    return (moment - _EPOCH) // _NS * 1000


def from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


class Interner:
    """Strings to dense codes, in first-seen order."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.codes: dict[str, int] = {}
        self.values: list[str] = []
        for value in values:
            self.code(value)

    def code(self, value: str) -> int:
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.values)
            self.values.append(value)
        return code

    def optional(self, value: str | None) -> int:
        return -1 if value is None else self.code(value)


@dataclass
class RunColumns:
    """One row per run event (metric point or run state), in arrival order.

    `metric` is -1 for run states; `value` is NaN where the point does not count (not a finite
    number); `order` is the step, or the time for system metrics that have none.
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


class BatchBuilder:
    """Builds an `EventBatch` one event at a time, keeping only columns for run events."""

    def __init__(self) -> None:
        self._runs = Interner()
        self._metrics, self._names, self._users = Interner(), Interner(), Interner()
        self._run_keys: list[tuple[str, str]] = []
        self._created: list[int] = []
        self._cols: tuple[list[int], ...] = ([], [], [], [], [], [], [])
        self._value: list[float] = []
        self._states: list[tuple[int, RunStateEvent]] = []
        self._artifacts: list[tuple[int, ArtifactEvent]] = []
        self._index = 0

    def add(self, event: Event) -> None:
        index = self._index
        self._index += 1
        if not isinstance(event, MetricEvent | RunStateEvent):
            self._artifacts.append((index, event))
            return
        code = self._runs.code(f"{event.project}\x00{event.run_id}")
        if code == len(self._run_keys):
            self._run_keys.append((event.project, event.run_id))
            self._created.append(
                NO_TIME if event.run_created_at is None else to_ns(event.run_created_at)
            )
        arrival, run, name, user, ts, metric, order = self._cols
        arrival.append(index)
        run.append(code)
        name.append(self._names.optional(event.run_name))
        user.append(self._users.optional(event.user))
        time = to_ns(event.timestamp)
        ts.append(time)
        if isinstance(event, MetricEvent):
            metric.append(self._metrics.code(event.metric))
            order.append(time if event.step is None else event.step)
            number = event.number
            self._value.append(math.nan if number is None else number)
        else:
            metric.append(-1)
            order.append(0)
            self._value.append(math.nan)
            self._states.append((index, event))

    def build(self) -> EventBatch:
        arrival, run, name, user, ts, metric, order = self._cols
        columns = RunColumns(
            arrival=np.array(arrival, np.int64),
            run=np.array(run, np.int32),
            name=np.array(name, np.int32),
            user=np.array(user, np.int32),
            ts=np.array(ts, np.int64),
            metric=np.array(metric, np.int32),
            order=np.array(order, np.int64),
            value=np.array(self._value, np.float64),
        )
        return EventBatch(
            runs=self._run_keys,
            created=np.array(self._created, np.int64),
            metrics=self._metrics.values,
            names=self._names.values,
            users=self._users.values,
            columns=columns,
            states=self._states,
            artifacts=self._artifacts,
        )
