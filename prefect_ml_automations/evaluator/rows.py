"""The evaluator's state as rows, so that a store reads and writes only what a batch touches.

A batch reads a few things of the state: its own runs, the series of the metrics it logs, the
z-score members of those metrics (and their runs) and whether its run-state and artifact events
were seen before (`StateKeys`, from `Evaluator.reads`). A store loads just those rows, the
evaluator works on the small `EvaluatorState` they make (`state_from_rows`), and the store saves
the rows that changed (`rows_of(state).changed_since(loaded)`). So a cycle of 100 new points costs
about the same with 100k tracked runs as with 1k, and the store does not grow per cycle.

The rows, keyed the way a store keys them:

- `RunRow` per (project, run_id): creation time, last name, user, state and sign of life, and
  per automation when it last fired for the run (the cooldown), how long its condition has held
  and which of its stalls was judged;
- `SeriesRow` per (project, metric, run_id): the tail of the run's series the windows need;
- `MetricRow` per (project, metric): the tails' capacity, the z-score shift and the member lists
  (the k most recently created runs that have logged, newest first);
- seen identities: one per run-state or artifact event already judged.

>>> from prefect_ml_automations.evaluator import EvaluatorState
>>> rows_of(EvaluatorState()).changed_since(StateRows())
StateRows(runs={}, series={}, metrics={}, seen={})
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from prefect_ml_automations.evaluator.batch import NO_TIME
from prefect_ml_automations.evaluator.series import SeriesTable
from prefect_ml_automations.evaluator.state import EvaluatorState, RunTable

RunKey = tuple[str, str]
"""(project, run_id)"""
MetricKey = tuple[str, str]
"""(project, metric)"""
SeriesKey = tuple[str, str, str]
"""(project, metric, run_id)"""
MembersKey = tuple[int, bool]
"""(k, finished only): a z-score member list of a metric — its k most recently created runs
that have logged it (and, finished only, were seen finished)."""

ARTIFACT = "artifact"
STATE = "state"


@dataclass(frozen=True)
class StateKeys:
    """What evaluating a batch reads of the state."""

    runs: frozenset[RunKey] = frozenset()
    #: Per (project, metric) the batch logs (or finishes runs of) and an automation watches:
    #: the z-score member lists it reads (empty without a z-score automation).
    metrics: dict[MetricKey, frozenset[MembersKey]] = field(default_factory=dict)
    identities: frozenset[str] = frozenset()
    #: With a clock and a `RUN_STALLED` automation: the runs quiet since this time (ns) or
    #: before, in the partitions a cycle holds, may have stalled (see `RunRow.quiet`).
    quiet_before: int | None = None


@dataclass(frozen=True)
class RunRow:
    created: int
    name: str | None
    user: str | None
    state: str | None
    #: JSON, keys sorted: {automation: time (ns) of the run's last firing} — or, with more to
    #: remember, {automation: {"fired": that time, "streak": [points in a row where the
    #: condition held (`for_points`, `rearm`), fired during them, the step they were counted
    #: to], "stall": the sign of life after which a stall was judged (`RUN_STALLED`)}}, each
    #: key only when it applies. (Versions before RUN_STALLED wrote a streak as the list
    #: [time or null, points, fired, step]; it is read as such.)
    fired: str
    #: The run's last sign of life (ns), and the same while a stall may still fire for it.
    active: int | None = None
    quiet: int | None = None
    #: Whether the run was ever seen finished.
    finished: bool = False


@dataclass(frozen=True)
class SeriesRow:
    #: Values ever accepted (more than the tail holds once the series is long).
    count: int
    #: The tail oldest first: its steps as int64, then its values as float64.
    tail: bytes

    @property
    def length(self) -> int:
        return len(self.tail) // 16


@dataclass(frozen=True)
class MetricRow:
    capacity: int
    shift: float | None
    #: JSON {k: [run_id, ...] newest first}, keys sorted; a list of finished runs only is
    #: keyed "finished:k".
    members: str


@dataclass
class StateRows:
    runs: dict[RunKey, RunRow] = field(default_factory=dict)
    series: dict[SeriesKey, SeriesRow] = field(default_factory=dict)
    metrics: dict[MetricKey, MetricRow] = field(default_factory=dict)
    #: identity → ARTIFACT or STATE
    seen: dict[str, str] = field(default_factory=dict)

    def changed_since(self, loaded: StateRows) -> StateRows:
        """The rows that are new or differ from `loaded` (seen identities are never unseen)."""
        return StateRows(
            runs={k: v for k, v in self.runs.items() if loaded.runs.get(k) != v},
            series={k: v for k, v in self.series.items() if loaded.series.get(k) != v},
            metrics={k: v for k, v in self.metrics.items() if loaded.metrics.get(k) != v},
            seen={k: v for k, v in self.seen.items() if k not in loaded.seen},
        )

    def __len__(self) -> int:
        return len(self.runs) + len(self.series) + len(self.metrics) + len(self.seen)


_FINISHED = "finished:"


def members_of(row: MetricRow) -> dict[MembersKey, list[str]]:
    return {
        (int(key.removeprefix(_FINISHED)), key.startswith(_FINISHED)): ids
        for key, ids in json.loads(row.members).items()
    }


def members_json(members: dict[MembersKey, list[str]]) -> str:
    return json.dumps(
        {f"{_FINISHED if finished else ''}{k}": ids for (k, finished), ids in members.items()},
        sort_keys=True,
    )


def _memory(memory: Any) -> tuple[int | None, tuple[int, bool, int] | None, int | None]:
    """(last firing, streak, stall judged) of one automation's memory of a run; what does not
    read as such (a row written for an automation of another kind with the same name, say) is
    forgotten rather than failing every cycle of the run's project."""
    if isinstance(memory, bool):
        return None, None, None
    if isinstance(memory, int):
        return memory, None, None
    if isinstance(memory, list) and len(memory) == 4:  # (as versions before RUN_STALLED wrote)
        memory = {"fired": memory[0], "streak": memory[1:]}
    if not isinstance(memory, dict):
        return None, None, None
    ns, streak, judged = memory.get("fired"), memory.get("streak"), memory.get("stall")
    ok_streak = (
        isinstance(streak, list) and len(streak) == 3 and all(isinstance(v, int) for v in streak)
    )
    return (
        ns if isinstance(ns, int) and not isinstance(ns, bool) else None,
        (int(streak[0]), bool(streak[1]), int(streak[2])) if ok_streak else None,  # type: ignore[index]
        judged if isinstance(judged, int) and not isinstance(judged, bool) else None,
    )


def _times(values: list[int | None]) -> npt.NDArray[np.int64]:
    return np.array([NO_TIME if v is None else v for v in values], np.int64)


def state_from_rows(rows: StateRows) -> EvaluatorState:
    """An evaluator state holding exactly these rows (run codes in the order of `rows.runs`).

    Every run a member list names must be among `rows.runs`.
    """
    keys = list(rows.runs)
    runs = RunTable(
        index={key: code for code, key in enumerate(keys)},
        keys=keys,
        created=np.array([r.created for r in rows.runs.values()], np.int64),
        name=np.array([*(r.name for r in rows.runs.values()), None], object)[:-1],
        user=np.array([*(r.user for r in rows.runs.values()), None], object)[:-1],
        state=[r.state for r in rows.runs.values()],
        active=_times([r.active for r in rows.runs.values()]),
        quiet=_times([r.quiet for r in rows.runs.values()]),
        finished=np.array([r.finished for r in rows.runs.values()], bool),
    )
    state = EvaluatorState(runs=runs)
    fired: dict[str, list[tuple[int, int]]] = defaultdict(list)
    streaks: dict[str, list[tuple[int, int, bool, int]]] = defaultdict(list)
    stalls: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for code, run in enumerate(rows.runs.values()):
        for automation, memory in json.loads(run.fired).items():
            ns, held_for, stall = _memory(memory)
            if ns is not None:
                fired[automation].append((code, ns))
            if held_for is not None:
                streaks[automation].append((code, *held_for))
            if stall is not None:
                stalls[automation].append((code, stall))
    for automation, pairs in fired.items():
        last = np.full(len(keys), NO_TIME, np.int64)
        codes, times = zip(*pairs, strict=True)
        last[list(codes)] = times
        state.last_fired[automation] = last
    for automation, judged_after in stalls.items():
        judged = state.stall_judged_for(automation)
        for code, after in judged_after:
            judged[code] = after
    for automation, held in streaks.items():
        streak, spent, counted_to = state.streaks_for(automation)
        for code, count, fired_then, at in held:
            streak[code], spent[code], counted_to[code] = count, fired_then, at

    by_metric: dict[MetricKey, list[tuple[int, SeriesRow]]] = defaultdict(list)
    for (project, metric, run_id), series in rows.series.items():
        by_metric[(project, metric)].append((runs.index[(project, run_id)], series))
    for key in rows.metrics.keys() | by_metric.keys():
        project, metric = key
        info = rows.metrics.get(key)
        entries = by_metric.get(key, [])
        longest = max((s.length for _, s in entries), default=1)
        table = SeriesTable(max(info.capacity if info else 1, longest))
        table_rows = table.rows_for(np.array([code for code, _ in entries], np.int64))
        for row, (_, series) in zip(table_rows.tolist(), entries, strict=True):
            n = series.length
            steps = np.frombuffer(series.tail, np.int64, n)
            values = np.frombuffer(series.tail, np.float64, n, offset=8 * n)
            table.start[row], table.length[row], table.count[row] = 0, n, series.count
            table.orders[row, :n] = steps
            table.values[row, :n] = values
        state.series[key] = table
        if info is not None:
            if info.shift is not None:
                state.shifts[key] = info.shift
            for (k, finished), ids in members_of(info).items():
                members = [runs.index[(project, r)] for r in ids]
                state.members[(project, metric, k, finished)] = members
    state.seen_artifact_events = {i for i, kind in rows.seen.items() if kind == ARTIFACT}
    state.seen_state_events = {i for i, kind in rows.seen.items() if kind == STATE}
    return state


def rows_of(state: EvaluatorState) -> StateRows:
    """Every row of `state`."""
    runs = state.runs
    fired: list[dict[str, Any]] = [{} for _ in range(len(runs))]
    for automation in sorted(state.last_fired):
        last = state.last_fired[automation][: len(runs)]
        for code in np.flatnonzero(last != NO_TIME).tolist():
            fired[code][automation] = int(last[code])

    def more(code: int, automation: str) -> dict[str, Any]:
        """The run's memory of `automation` as a dict (its last firing's time kept)."""
        memory = fired[code].get(automation)
        if not isinstance(memory, dict):
            memory = fired[code][automation] = {} if memory is None else {"fired": memory}
        return memory

    for automation in sorted(state.streaks):
        streak = state.streaks[automation][: len(runs)]
        spent = state.spent[automation][: len(runs)]
        at = state.streak_at[automation][: len(runs)]
        for code in np.flatnonzero(streak > 0).tolist():
            more(code, automation)["streak"] = [int(streak[code]), bool(spent[code]), int(at[code])]
    for automation in sorted(state.stall_judged):
        judged = state.stall_judged[automation][: len(runs)]
        for code in np.flatnonzero(judged != NO_TIME).tolist():
            more(code, automation)["stall"] = int(judged[code])
    out = StateRows()
    active = runs.active[: len(runs)].tolist()
    quiet = runs.quiet[: len(runs)].tolist()
    finished = runs.finished[: len(runs)]
    for code, key in enumerate(runs.keys):
        out.runs[key] = RunRow(
            created=int(runs.created[code]),
            name=runs.name[code],
            user=runs.user[code],
            state=runs.state[code],
            fired=json.dumps(fired[code], sort_keys=True),
            active=None if active[code] == NO_TIME else active[code],
            quiet=None if quiet[code] == NO_TIME else quiet[code],
            finished=bool(finished[code]),
        )
    members: dict[MetricKey, dict[MembersKey, list[str]]] = defaultdict(dict)
    for (project, metric, k, only_finished), codes in state.members.items():
        members[(project, metric)][(k, only_finished)] = [runs.keys[c][1] for c in codes]
    for key in state.series.keys() | state.shifts.keys() | members.keys():
        project, metric = key
        table = state.series.get(key)
        out.metrics[key] = MetricRow(
            capacity=table.capacity if table is not None else 1,
            shift=state.shifts.get(key),
            members=members_json(members.get(key, {})),
        )
        if table is None or not table.rows:
            continue
        n = table.rows
        slot = (table.start[:n, None] + np.arange(table.capacity)) % table.capacity
        steps = np.take_along_axis(table.orders[:n], slot, axis=1)
        values = np.take_along_axis(table.values[:n], slot, axis=1)
        for row, (code, length, count) in enumerate(
            zip(
                table.run[:n].tolist(),
                table.length[:n].tolist(),
                table.count[:n].tolist(),
                strict=True,
            )
        ):
            out.series[(project, metric, runs.keys[code][1])] = SeriesRow(
                count=count, tail=steps[row, :length].tobytes() + values[row, :length].tobytes()
            )
    for identity in state.seen_artifact_events:
        out.seen[identity] = ARTIFACT
    for identity in state.seen_state_events:
        out.seen[identity] = STATE
    return out
