"""The backtest: what a config's automations would have fired over what its trackers hold.

    ml-automations backtest automations.yaml --since 30d

Each source the automations watch is read once, as a sensor's first poll reads it
(`sources.read_history`, which `fetch_metric_history` reads through too). Its events are laid out
as they would have arrived — by their own timestamps, stably, so a run's points keep their order —
and dry-run: triggering events from `since` on fire, the history before only fills windows and
baselines (as `ml-automations evaluate --since` does with a file of the same events). Nothing is
started, and no state store is read or written.

Only what a tracker dates can be replayed: metric points, each run's current state at the time the
tracker gives it, and created versions (MLflow's model versions and logged models, W&B's project
artifact versions). Neither tracker keeps a time for an alias or a tag change, nor W&B for a link
into a registry: automations that watch those fire nothing in a backtest (`Backtest.notes` says
so).
"""

from __future__ import annotations

import gc
import itertools
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.config import AutomationsConfig, MLflowSourceSettings
from prefect_ml_automations.errors import SourceError
from prefect_ml_automations.evaluator import Evaluation, Evaluator
from prefect_ml_automations.evaluator.batch import (
    F64,
    I64,
    BatchBuilder,
    EventBatch,
    Points,
    to_ns,
)
from prefect_ml_automations.events import MAX_VALUE, Event, MetricEvent, counted
from prefect_ml_automations.sources import Source, TrackerHistory, read_history

#: Events the trackers keep no time for, so a backtest can not replay them (by source type).
UNDATED = {
    "mlflow": ("ADD_ARTIFACT_ALIAS", "ADD_ARTIFACT_TAG", "REMOVE_ARTIFACT_TAG", "UNLINK_ARTIFACT"),
    "wandb": (
        "ADD_ARTIFACT_ALIAS",
        "ADD_ARTIFACT_TAG",
        "REMOVE_ARTIFACT_TAG",
        "UNLINK_ARTIFACT",
        "LINK_ARTIFACT",
    ),
}


@dataclass(frozen=True)
class Tally:
    """What one automation did in a backtest: its firings, and its matches held back (by its
    cooldown or budget)."""

    automation: str
    firings: int
    held_back: int


@dataclass(frozen=True)
class Read:
    """What was read of one source: how many metric points, run states and created versions."""

    source: str
    points: int
    states: int
    versions: int


@dataclass
class Backtest:
    """A backtest's result: the firings (and `--explain` reasons) of the events dated in
    [`since`, `now`], with the history before them filling windows and baselines."""

    since: datetime
    now: datetime
    #: The automations backtested, in the config's order.
    automations: list[Automation]
    evaluation: Evaluation
    read: list[Read] = field(default_factory=list)
    #: Events the trackers date after `now`: left out, as they had not happened by then.
    after_now: int = 0
    #: What a person should know about the result (what could not be replayed).
    notes: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        """How many events were replayed."""
        return sum(r.points + r.states + r.versions for r in self.read) - self.after_now

    def tallies(self) -> list[Tally]:
        """Per automation backtested (in the config's order): firings and matches held back."""
        fired = dict.fromkeys((a.name for a in self.automations), 0)
        held = dict(fired)
        for firing in self.evaluation.firings:
            fired[firing.automation] += 1
        for skip in self.evaluation.skips:
            if skip.held_back:
                held[skip.automation] += skip.count
        return [Tally(name, fired[name], held[name]) for name in fired]


def backtest(
    config: AutomationsConfig,
    *,
    since: datetime,
    now: datetime,
    automations: Sequence[str] | None = None,
    explain: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Backtest:
    """Backtest `automations` (names in the config; None: every enabled one — a disabled one
    named here is backtested as if enabled) over what the config's sources hold up to `now`,
    firing from `since` on.

    Each source is read once (`read_history`); `progress` is told what is being done. Raises
    `SourceError` when a source can not be read (nothing is evaluated then), `KeyError` for a
    name the config does not have.
    """
    chosen = chosen_automations(config, automations)
    histories = []
    for source in watched_sources(config, chosen):
        if progress is not None:
            progress(f"Reading source {source.name!r}")
        try:
            histories.append(read_history(source, now))
        except SourceError as exc:
            named = f"Source {source.name!r}"
            if str(exc).startswith(named):  # (it says which source already)
                raise SourceError(f"{exc} Nothing was backtested.") from exc
            raise SourceError(
                f"{named} could not be read, so nothing was backtested: {exc}"
            ) from exc
    result = replay(histories, chosen, since=since, now=now, explain=explain, progress=progress)
    result.notes = notes(config, chosen)
    return result


def chosen_automations(
    config: AutomationsConfig, names: Sequence[str] | None = None
) -> list[Automation]:
    """The automations a backtest judges, in the config's order: those `names` (a disabled one
    as if enabled), else every enabled one."""
    if names is None:
        return [a for a in config.automations if a.enabled]
    wanted = {config.automation(name).name for name in names}
    return [
        a if a.enabled else a.model_copy(update={"enabled": True})
        for a in config.automations
        if a.name in wanted
    ]


def watched_sources(config: AutomationsConfig, automations: Sequence[Automation]) -> list[Source]:
    """The config's sources that `automations` watch, each watching only what they look at."""
    from prefect_ml_automations.sources import mlflow, wandb

    sources: list[Source] = []
    for settings in config.sources:
        mine = [a for a in automations if a.source in (None, settings.name)]
        if not mine:
            continue
        if isinstance(settings, MLflowSourceSettings):
            sources.append(mlflow.source_for(settings, mine))
        else:
            sources.append(wandb.source_for(settings, mine))
    return sources


def notes(config: AutomationsConfig, automations: Sequence[Automation]) -> list[str]:
    """What a person should know about a backtest of `automations`: those it can not replay
    (the trackers do not date their events), and budgets counted as the dry run counts them."""
    out = []
    kinds = {settings.name: settings.type for settings in config.sources}
    only = next(iter(kinds.values())) if len(kinds) == 1 else None  # (watched when none named)
    undated = [
        a.name
        for a in automations
        if a.event.type in UNDATED.get(kinds.get(a.source or "", only) or "", ())
    ]
    if undated:
        out.append(
            "MLflow and W&B keep no time for alias and tag changes (nor W&B for links into a "
            f"registry), so a backtest can not replay them: {_listed(undated)} "
            f"{'fires' if len(undated) == 1 else 'fire'} nothing here. Only metric points, run "
            "states and created versions are replayed."
        )
    budgeted = [a.name for a in automations if a.budget is not None]
    if budgeted:
        out.append(
            f"The budget of {_listed(budgeted)} is counted as `evaluate` counts it: over the "
            "whole backtest at once, not per period."
        )
    return out


def replay(
    histories: Sequence[TrackerHistory],
    automations: Sequence[Automation],
    *,
    since: datetime,
    now: datetime,
    explain: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Backtest:
    """Evaluate what the trackers hold in the order it would have arrived (`arrivals`), firing
    from `since` on. A pure function of its inputs: `now` is the backtest's end, not the wall
    clock, and the clock stalled runs are judged by."""
    if progress is not None:
        count = sum(len(h.events) + len(h.versions) for h in histories)
        progress(f"Ordering {count:,} events by their times")
    laid_out = arrivals(histories, now)
    if progress is not None:
        progress(f"Evaluating {laid_out.batch.size:,} events")
    evaluation = Evaluator(automations).evaluate(
        laid_out.batch, since=since, explain=explain, now=now
    )
    return Backtest(since, now, list(automations), evaluation, laid_out.read, laid_out.after_now)


@dataclass
class Arrivals:
    """The events of some tracker histories as one batch in arrival order."""

    batch: EventBatch
    #: What each history held.
    read: list[Read]
    #: How many events were dated after `now`, and left out.
    after_now: int


#: A metric point's fields, all taken in one pass over the points: at millions of points, a pass
#: per field would wait on memory for each.
_POINT = operator.attrgetter(
    "timestamp",
    "project",
    "run_id",
    "run_name",
    "user",
    "run_created_at",
    "metric",
    "step",
    "value",
)
#: Points are turned into columns this many at a time: a block's rows of fields stay in the
#: processor's cache while they are turned into columns (a transposition of a million rows at
#: once took four times as long).
BLOCK = 10_000


def arrivals(histories: Sequence[TrackerHistory], now: datetime) -> Arrivals:
    """The histories' events as one batch, in the order they would have arrived: by timestamp,
    stably — the sources in order, each as it read its events, versions last — leaving out
    those dated after `now`.

    The batch is `EventBatch.from_events([e for e in sorted(events, key=timestamp) if
    e.timestamp <= now])`, built column-wise: each metric point is read once, its fields all at
    once, and the order is one stable argsort of int64 times (pandas: `sort_values("timestamp",
    kind="stable")`).
    """
    with _no_collection():
        return _arrivals(histories, now)


def _arrivals(histories: Sequence[TrackerHistory], now: datetime) -> Arrivals:
    events: list[Event] = [e for h in histories for e in itertools.chain(h.events, h.versions)]
    n = len(events)
    is_point = np.fromiter(
        map(operator.is_, map(type, events), itertools.repeat(MetricEvent)), bool, n
    )
    read = []
    offset = 0
    for history in histories:
        size = len(history.events)
        points = int(is_point[offset : offset + size].sum())
        read.append(Read(history.source, points, size - points, len(history.versions)))
        offset += size + len(history.versions)
    others_at = np.flatnonzero(~is_point)
    others = [events[i] for i in others_at.tolist()]
    columns = _point_columns(itertools.compress(events, is_point))  # type: ignore[arg-type]
    del events
    ts = np.empty(n, np.int64)
    ts[is_point] = columns.ts
    ts[others_at] = _ns([e.timestamp for e in others])
    kept = np.flatnonzero(ts <= to_ns(now))
    arrival = np.full(n, -1, np.int64)
    arrival[kept[np.argsort(ts[kept], kind="stable")]] = np.arange(len(kept))

    builder = BatchBuilder()
    for at, event in zip(arrival[others_at].tolist(), others, strict=True):
        if at >= 0:
            builder.add(event, at=at)
    columns.arrival = arrival[is_point]
    builder.add_points(_kept(columns))
    return Arrivals(builder.build(), read, n - len(kept))


@contextmanager
def _no_collection() -> Iterator[None]:
    """Python's cyclic garbage collector held off: laying out millions of points makes millions
    of (acyclic) tuples, and each collection they set off walks every event held — a third of
    the time, measured."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _point_columns(points: Iterator[MetricEvent]) -> Points:
    """Metric points as columns (their `arrival` left to the caller), a block at a time."""
    names: list[list[Any]] = [[], [], [], [], []]  # project, run id, run name, user, metric
    numbers: list[list[Any]] = [[], [], [], []]  # ts, created, order, value
    while rows := list(map(_POINT, itertools.islice(points, BLOCK))):
        fields = list(zip(*rows, strict=True))
        del rows
        ts = _ns(fields[0])
        for column, index in zip(names, (1, 2, 3, 4, 6), strict=True):
            column.extend(fields[index])
        arrays = (ts, _ns(fields[5]), _orders(fields[7], ts), _values(fields[8]))
        for column, array in zip(numbers, arrays, strict=True):
            column.append(array)
    empty = (np.int64, np.int64, np.int64, np.float64)
    ts, created, order, value = (
        np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        for arrays, dtype in zip(numbers, empty, strict=True)
    )
    project, run_id, run_name, user, metric = names
    return Points(
        np.zeros(0, np.int64), project, run_id, run_name, user, created, metric, order, ts, value
    )


def _kept(points: Points) -> Points:
    """The points with an arrival index: those not left out."""
    keep = points.arrival >= 0
    if keep.all():
        return points
    mask = keep.tolist()

    def only(column: list[Any]) -> list[Any]:
        return list(itertools.compress(column, mask))

    return Points(
        arrival=points.arrival[keep],
        project=only(points.project),
        run_id=only(points.run_id),
        run_name=only(points.run_name),
        user=only(points.user),
        created=points.created[keep],
        metric=only(points.metric),
        order=points.order[keep],
        ts=points.ts[keep],
        value=points.value[keep],
    )


def _ns(moments: list[datetime | None] | tuple[datetime | None, ...]) -> I64:
    """Aware times as int64 nanoseconds (`to_ns` of each), None as NO_TIME (pandas' NaT)."""
    return np.asarray(pd.DatetimeIndex(moments).as_unit("ns").asi8, np.int64)


def _orders(steps: Sequence[int | None], ts: I64) -> I64:
    """Each point's order: its step, or its time for a system metric (which has none)."""
    try:
        return np.array(steps, np.int64)
    except TypeError:  # (a None among them)
        missing = np.fromiter(map(operator.is_, steps, itertools.repeat(None)), bool, len(steps))
        return np.where(missing, ts, np.array([s or 0 for s in steps], np.int64))


def _values(values: Sequence[Any]) -> F64:
    """The values as the evaluator counts them (`counted`): NaN for what does not count."""
    if set(map(type, values)) <= {float}:  # (what MLflow logs: no work per value)
        out = np.array(values, np.float64)
        with np.errstate(invalid="ignore"):
            out[~(np.abs(out) <= MAX_VALUE)] = np.nan  # NaN, ±inf and beyond ±MAX_VALUE
        return out
    return np.array([math.nan if (c := counted(v)) is None else c for v in values], np.float64)


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
