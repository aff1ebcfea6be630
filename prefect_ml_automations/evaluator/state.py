"""The evaluator's memory between batches: explicit, bounded, serializable.

Per run: its key, creation time, last state, name and user. Per (project, metric) watched: the
tail of each run's series the windows need (`SeriesTable`) and, for z-scores, which runs are
the most recently created ones that have logged. Per automation: when each run last fired (the
cooldown) and, for `for_points` and `rearm`, how long its condition has held. And the
identities of artifact events already seen. Nothing here grows with the length of a run's
history.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from prefect_ml_automations.errors import StateError
from prefect_ml_automations.evaluator.batch import NO_TIME, EventBatch
from prefect_ml_automations.evaluator.series import NO_ORDER, SeriesTable, _grown
from prefect_ml_automations.events import ArtifactEvent, RunStateEvent

I64 = npt.NDArray[np.int64]

FORMAT_VERSION = 1


@dataclass
class RunTable:
    """Every run seen, by dense code."""

    index: dict[tuple[str, str], int] = field(default_factory=dict)
    keys: list[tuple[str, str]] = field(default_factory=list)
    created: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    #: The last known name and user per run (object arrays of str or None).
    name: npt.NDArray[np.object_] = field(default_factory=lambda: np.full(0, None, object))
    user: npt.NDArray[np.object_] = field(default_factory=lambda: np.full(0, None, object))
    state: list[str | None] = field(default_factory=list)
    #: Whether each run was ever seen `finished` (a baseline of finished runs takes it).
    finished: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    #: The time (ns) of each run's last sign of life: its newest metric point, heartbeat or
    #: state (NO_TIME: none seen).
    active: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    #: `active` while a stall automation may still fire for the run (it is running and that
    #: quiet time was not judged yet), else NO_TIME: a store finds stalls due by it.
    quiet: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.keys)

    def register(self, batch: EventBatch) -> I64:
        """Global run code per batch run (-1 for runs with no event in the batch), adding runs
        not seen before.

        A new run's creation time is the `run_created_at` of its first event, else that event's
        time; it is fixed then, so that rankings never depend on how events were batched.
        """
        columns = batch.columns
        first_row = np.full(len(batch.runs), -1, np.int64)
        # Written newest first, so that each run keeps the row of its first event.
        first_row[columns.run[::-1]] = np.arange(len(columns) - 1, -1, -1)
        codes = np.full(len(batch.runs), -1, np.int64)
        new: list[int] = []
        for local in np.flatnonzero(first_row >= 0).tolist():
            key = batch.runs[local]
            code = self.index.get(key)
            if code is None:
                code = self.index[key] = len(self.keys)
                self.keys.append(key)
                self.state.append(None)
                new.append(local)
            codes[local] = code
        if new:
            self.created = _grown(self.created, len(self.keys), NO_TIME)
            self.name = _grown(self.name, len(self.keys), None)
            self.user = _grown(self.user, len(self.keys), None)
            self.active = _grown(self.active, len(self.keys), NO_TIME)
            self.quiet = _grown(self.quiet, len(self.keys), NO_TIME)
            self.finished = _grown(self.finished, len(self.keys), False)
            new_a = np.array(new, np.int64)
            created = batch.created[new_a]
            first_ts = columns.ts[first_row[new_a]]
            self.created[codes[new_a]] = np.where(created != NO_TIME, created, first_ts)
        return codes

    def rank(self, code: int) -> tuple[int, str]:
        """Orders runs by creation: a larger key is more recently created (ties by run id)."""
        return int(self.created[code]), self.keys[code][1]


@dataclass
class EvaluatorState:
    """Everything the evaluator remembers; `to_bytes`/`from_bytes` persist it."""

    runs: RunTable = field(default_factory=RunTable)
    series: dict[tuple[str, str], SeriesTable] = field(default_factory=dict)
    #: Per (project, metric): the value z-score sums are taken around.
    shifts: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Per (project, metric, k, finished only): the k most recently created runs that have
    #: logged (and, finished only, were seen finished), newest first.
    members: dict[tuple[str, str, int, bool], list[int]] = field(default_factory=dict)
    #: Per automation: time (ns) of each run's last firing, by run code (NO_TIME: never).
    last_fired: dict[str, I64] = field(default_factory=dict)
    #: Per automation that counts streaks (`for_points`, `rearm`): at how many trigger points
    #: in a row each run's condition has held (capped at `for_points`), and whether the run
    #: fired during that streak — by run code.
    streaks: dict[str, I64] = field(default_factory=dict)
    spent: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    #: … and the step (order) of the trigger point the streak was counted to: a streak whose
    #: run has logged since without being counted (the automation did not count streaks then)
    #: is not carried on.
    streak_at: dict[str, I64] = field(default_factory=dict)
    #: Per `RUN_STALLED` automation: the sign of life (time, ns) after which each run's last
    #: stall was judged — fired or held back —, by run code (NO_TIME: none). A stall is the
    #: quiet time after one sign of life, so it is judged once.
    stall_judged: dict[str, I64] = field(default_factory=dict)
    #: Identities (digests) of the artifact events and run state events seen.
    seen_artifact_events: set[str] = field(default_factory=set)
    seen_state_events: set[str] = field(default_factory=set)

    def series_table(self, project: str, metric: str, capacity: int) -> SeriesTable:
        table = self.series.get((project, metric))
        if table is None:
            table = self.series[(project, metric)] = SeriesTable(capacity)
        elif table.capacity < capacity:
            table = self.series[(project, metric)] = _widened(table, capacity)
        return table

    def last_fired_for(self, automation: str) -> I64:
        fired = self.last_fired.get(automation, np.zeros(0, np.int64))
        fired = _grown(fired, len(self.runs), NO_TIME)
        self.last_fired[automation] = fired
        return fired

    def stall_judged_for(self, automation: str) -> I64:
        judged = self.stall_judged.get(automation, np.zeros(0, np.int64))
        judged = _grown(judged, len(self.runs), NO_TIME)
        self.stall_judged[automation] = judged
        return judged

    def streaks_for(self, automation: str) -> tuple[I64, npt.NDArray[np.bool_], I64]:
        """The streak, whether it fired and where it was counted to, per run code, for
        `automation` (for writing)."""
        n = len(self.runs)
        streak = _grown(self.streaks.get(automation, np.zeros(0, np.int64)), n, 0)
        spent = _grown(self.spent.get(automation, np.zeros(0, bool)), n, False)
        at = _grown(self.streak_at.get(automation, np.zeros(0, np.int64)), n, NO_ORDER)
        self.streaks[automation], self.spent[automation] = streak, spent
        self.streak_at[automation] = at
        return streak, spent, at

    # -- persistence ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        n = len(self.runs)
        arrays: dict[str, npt.NDArray[Any]] = {
            "runs.created": self.runs.created[:n],
            "runs.active": self.runs.active[:n],
            "runs.quiet": self.runs.quiet[:n],
            "runs.finished": self.runs.finished[:n],
        }
        series_meta = []
        for i, ((project, metric), table) in enumerate(self.series.items()):
            rows = table.rows
            series_meta.append({"project": project, "metric": metric, "capacity": table.capacity})
            for name in ("run", "start", "length", "count", "values", "orders"):
                arrays[f"series{i}.{name}"] = getattr(table, name)[:rows]
            arrays[f"series{i}.row_of_run"] = table.row_of_run
        fired_names = list(self.last_fired)
        for i, name in enumerate(fired_names):
            arrays[f"fired{i}"] = self.last_fired[name]
        streak_names = list(self.streaks)
        for i, name in enumerate(streak_names):
            arrays[f"streak{i}"] = self.streaks[name]
            arrays[f"spent{i}"] = self.spent[name]
            arrays[f"streakat{i}"] = self.streak_at[name]
        stall_names = list(self.stall_judged)
        for i, name in enumerate(stall_names):
            arrays[f"stall{i}"] = self.stall_judged[name]
        meta = {
            "version": FORMAT_VERSION,
            "runs": [list(k) for k in self.runs.keys],
            "names": self.runs.name[: len(self.runs)].tolist(),
            "users": self.runs.user[: len(self.runs)].tolist(),
            "states": self.runs.state,
            "series": series_meta,
            "shifts": [[p, m, v] for (p, m), v in self.shifts.items()],
            "members": [[p, m, k, runs, f] for (p, m, k, f), runs in self.members.items()],
            "fired": fired_names,
            "streaks": streak_names,
            "stalls": stall_names,
            "seen": sorted(self.seen_artifact_events),
            "seen_states": sorted(self.seen_state_events),
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EvaluatorState:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes())
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise StateError(f"The saved evaluator state can not be read ({exc}).") from exc
        if meta.get("version") != FORMAT_VERSION:
            raise StateError(
                f"The saved evaluator state has format {meta.get('version')!r}, this version "
                f"reads {FORMAT_VERSION}; upgrade prefect-ml-automations."
            )
        runs = RunTable(
            keys=[(project, run_id) for project, run_id in meta["runs"]],
            created=arrays["runs.created"],
            name=np.array(meta["names"] + [None], object)[:-1],
            user=np.array(meta["users"] + [None], object)[:-1],
            state=meta["states"],
        )
        none = np.full(len(runs.keys), NO_TIME, np.int64)  # (absent before RUN_STALLED)
        runs.active = arrays.get("runs.active", none).copy()
        runs.quiet = arrays.get("runs.quiet", none).copy()
        finished = [state == "finished" for state in runs.state]  # (absent before `baseline`)
        runs.finished = arrays.get("runs.finished", np.array(finished, bool)).copy()
        runs.index = {key: i for i, key in enumerate(runs.keys)}
        state = cls(runs=runs)
        for i, info in enumerate(meta["series"]):
            table = SeriesTable(info["capacity"])
            for name in ("run", "start", "length", "count", "values", "orders", "row_of_run"):
                setattr(table, name, arrays[f"series{i}.{name}"].copy())
            table.rows = len(table.run)
            state.series[(info["project"], info["metric"])] = table
        state.shifts = {(p, m): v for p, m, v in meta["shifts"]}
        state.members = {
            (p, m, k, bool(rest and rest[0])): runs for p, m, k, runs, *rest in meta["members"]
        }
        state.last_fired = {
            name: arrays[f"fired{i}"].copy() for i, name in enumerate(meta["fired"])
        }
        for i, name in enumerate(meta.get("streaks", [])):  # (absent before for_points)
            state.streaks[name] = arrays[f"streak{i}"].copy()
            state.spent[name] = arrays[f"spent{i}"].copy()
            state.streak_at[name] = arrays[f"streakat{i}"].copy()
        for i, name in enumerate(meta.get("stalls", [])):
            state.stall_judged[name] = arrays[f"stall{i}"].copy()
        state.seen_artifact_events = set(meta["seen"])
        state.seen_state_events = set(meta["seen_states"])
        return state


def _widened(table: SeriesTable, capacity: int) -> SeriesTable:
    """The same series with room for more values (an automation with a longer window)."""
    wider = SeriesTable(capacity)
    new_rows = wider.rows_for(table.run[: table.rows])
    for old, new in enumerate(new_rows.tolist()):
        wider._set_tail(new, table.tail_list(old), int(table.count[old]))
    return wider


def event_identity(*parts: Any) -> str:
    """A short digest of an event's identity, to remember that it was seen cheaply."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def state_event_identity(event: RunStateEvent) -> str:
    return event_identity(event.project, event.run_id, event.state, event.timestamp)


def artifact_event_identity(event: ArtifactEvent) -> str:
    return event_identity(*event.identity)
