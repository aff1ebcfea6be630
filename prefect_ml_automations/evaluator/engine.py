"""The evaluator: a batch of events and the remembered state in, firings and reasons out.

A pure function of its inputs (no clock, no I/O): `Evaluator(automations, state).evaluate(batch)`
judges every event as SPEC §3 says and advances the state, so that evaluating the same events in
one batch or in many gives the same firings with the same ids.

Metric triggers are judged for all trigger points of a (project, metric) at once, over the flat
segment layout of `series`; run states and artifact events, which are few, one by one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import numpy as np
import numpy.typing as npt

from prefect_ml_automations.automations import (
    ArtifactTrigger,
    Automation,
    MetricTrigger,
    MetricWindows,
    RunMetricZScore,
    RunStalled,
    RunState,
)
from prefect_ml_automations.automations._types import duration_text
from prefect_ml_automations.automations.triggers import MAX_FOR_POINTS, STATE_ALIASES
from prefect_ml_automations.decisions import Firing, Skip, firing_id, merged_skips, run_subject
from prefect_ml_automations.evaluator.batch import (
    NO_TIME,
    STATE_ROW,
    EventBatch,
    from_ns,
    to_ns,
)
from prefect_ml_automations.evaluator.cooldown import apply_cooldown
from prefect_ml_automations.evaluator.rows import MembersKey, StateKeys
from prefect_ml_automations.evaluator.series import NO_ORDER, SeriesTable, stable_argsort
from prefect_ml_automations.evaluator.stalls import QuietSpells, due
from prefect_ml_automations.evaluator.state import (
    EvaluatorState,
    artifact_event_identity,
    state_event_identity,
)
from prefect_ml_automations.evaluator.streaks import StreakWalk
from prefect_ml_automations.evaluator.zscore import Membership, ZScoreBatch
from prefect_ml_automations.events import (
    ArtifactEvent,
    Event,
    MetricEvent,
    RunStateEvent,
    is_system_metric,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: Why a paused automation's matches did not fire (they are in the history as `skipped`).
PAUSED = "paused (`ml-automations resume` lets it fire again)"

#: The arrival of what the clock decides (stalls due by `now`): after every event of a batch.
AFTER_EVERY_EVENT = 2**62

#: Larger batches are judged in slices of this many events (bounded memory, same result).
CHUNK_EVENTS = 1_000_000


@dataclass
class Evaluation:
    """What one batch gave: firings in arrival order, and (when asked) the reasons for no."""

    firings: list[Firing] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    #: Automations that went over their budget (in that order): a sensor pauses them.
    exhausted: list[str] = field(default_factory=list)


@dataclass
class _Budgets:
    """What is left of each budgeted automation's firings in one evaluation."""

    left: dict[str, int]
    reasons: dict[str, str]
    exhausted: list[str] = field(default_factory=list)

    def spend(self, automation: str, wanted: int) -> int:
        """How many of `wanted` firings (in arrival order) the budget allows."""
        left = self.left.get(automation)
        if left is None:
            return wanted
        allowed = min(left, wanted)
        self.left[automation] = left - allowed
        if allowed < wanted and automation not in self.exhausted:
            self.exhausted.append(automation)
        return allowed


@dataclass
class _HeldBack:
    """Matches held back by the cooldown, counted per automation and run over a whole
    evaluation, and named once at its end (a slice of a big batch adds arrays, not `Skip`s)."""

    counted: dict[tuple[str, str], list[tuple[I64, I64]]] = field(default_factory=dict)

    def add(self, automation: str, reason: str, runs: I64) -> None:
        """Count `runs` (run codes, each run's points side by side) under `automation`."""
        if not len(runs):
            return
        starts = np.flatnonzero(np.concatenate([[True], runs[1:] != runs[:-1]]))
        counts = np.diff(np.append(starts, len(runs)))
        self.counted.setdefault((automation, reason), []).append((runs[starts], counts))

    def skips(self, state: EvaluatorState) -> list[Skip]:
        """One skip per automation and run, the run named as the state knows it now."""
        out = []
        for (automation, reason), parts in self.counted.items():
            runs, inverse = np.unique(np.concatenate([r for r, _ in parts]), return_inverse=True)
            counts = np.bincount(inverse, np.concatenate([c for _, c in parts])).astype(np.int64)
            names, keys = state.runs.name[runs].tolist(), state.runs.keys
            for run, name, count in zip(runs.tolist(), names, counts.tolist(), strict=True):
                subject = run_subject(keys[run][1], name)
                out.append(Skip(automation, subject, reason, count, held_back=True))
        return out


class Evaluator:
    """Judges batches of events for a set of automations, remembering what it needs in `state`.

    >>> from prefect_ml_automations.automations import Automation
    >>> evaluator = Evaluator([Automation.model_validate({
    ...     "name": "failed", "scope": {"project": "p"},
    ...     "event": {"type": "RUN_STATE", "states": ["failed"]}, "action": {"type": "no_op"}})])
    >>> from prefect_ml_automations.events import event_from_dict
    >>> event = event_from_dict({"type": "RUN_STATE", "project": "p", "run_id": "r1",
    ...                          "state": "crashed", "timestamp": "2026-01-01T00:00:00Z"})
    >>> [f.state for f in evaluator.evaluate([event]).firings]
    ['failed']
    """

    def __init__(
        self,
        automations: Sequence[Automation],
        state: EvaluatorState | None = None,
        *,
        paused: frozenset[str] = frozenset(),
        budgets: Mapping[str, int] | None = None,
        watching_since: Mapping[str, datetime] | None = None,
    ) -> None:
        self.automations = [a for a in automations if a.enabled]
        self.state = state or EvaluatorState()
        #: Since when a sensor watches for each stall automation's stalls: a stall that was
        #: over before (its run quiet for `after` by then) is judged without firing. None or
        #: absent: since always (a dry run).
        self.watching_since = {
            name: to_ns(t if t.tzinfo else t.replace(tzinfo=UTC))
            for name, t in (watching_since or {}).items()
        }
        #: Automations judged as usual (their windows and streaks advance) that fire nothing:
        #: their matches are held back as skipped.
        self.paused = paused
        #: Firings each budgeted automation may still make (`budgets`, from the firings a
        #: sensor recorded lately; else its whole budget, as for a dry run).
        self._budget_left = {
            a.name: a.budget.firings if budgets is None else budgets.get(a.name, a.budget.firings)
            for a in self.automations
            if a.budget is not None
        }
        self._budget_reasons = {
            a.name: f"over its budget of {a.budget.describe()}: {PAUSED}"
            for a in self.automations
            if a.budget is not None
        }
        self._rank = {a.name: i for i, a in enumerate(self.automations)}
        self._metric: dict[tuple[str, str], list[Automation]] = defaultdict(list)
        self._run_state: list[Automation] = []
        self._stalled: list[Automation] = []
        self._artifact: list[Automation] = []
        for automation in self.automations:
            trigger = automation.event
            if isinstance(trigger, MetricTrigger):
                self._metric[(str(automation.project), trigger.metric)].append(automation)
            elif isinstance(trigger, RunState):
                self._run_state.append(automation)
            elif isinstance(trigger, RunStalled):
                self._stalled.append(automation)
            elif isinstance(trigger, ArtifactTrigger):
                self._artifact.append(automation)

    def reads(
        self, events: EventBatch | Sequence[Event], *, now: datetime | None = None
    ) -> StateKeys:
        """What evaluating `events` (with the clock at `now`) reads of the state: the rows a
        store loads for them."""
        if isinstance(events, EventBatch):
            runs = set(events.runs)
            # (every project of the batch with every metric: a superset, which is enough)
            logged = {(project, metric) for project, _ in runs for metric in events.metrics}
            states = [event for _, event in events.states]
            artifacts = [event for _, event in events.artifacts]
        else:
            runs, logged, states, artifacts = set(), set(), [], []
            for event in events:
                if isinstance(event, ArtifactEvent):
                    artifacts.append(event)
                    continue
                runs.add((event.project, event.run_id))
                if isinstance(event, RunStateEvent):
                    states.append(event)
                elif isinstance(event, MetricEvent):
                    logged.add((event.project, event.metric))
        # A run finished in a project may enter its baselines of finished runs.
        finishing = {e.project for e in states if STATE_ALIASES.get(e.state, e.state) == "finished"}
        metrics: dict[tuple[str, str], frozenset[MembersKey]] = {}
        for key, automations in self._metric.items():
            zscores = [a.event for a in automations if isinstance(a.event, RunMetricZScore)]
            if key in logged or (
                key[0] in finishing and any(z.baseline == "finished" for z in zscores)
            ):
                metrics[key] = frozenset(
                    (k, z.baseline == "finished") for z in zscores for k in (z.window, z.window + 1)
                )
        identities = {state_event_identity(event) for event in states}
        identities.update(artifact_event_identity(event) for event in artifacts)
        quiet_before = None
        if now is not None and self._stalled:
            # (the runs quiet since then may be due for the automation with the shortest wait)
            quiet_before = to_ns(now) - min(_stall(a).after_ns for a in self._stalled)
        return StateKeys(frozenset(runs), metrics, frozenset(identities), quiet_before)

    def evaluate(
        self,
        events: EventBatch | Sequence[Event],
        *,
        since: datetime | None = None,
        explain: bool = False,
        now: datetime | None = None,
        clock_runs: Collection[tuple[str, str]] | None = None,
    ) -> Evaluation:
        """Judge a batch (arrival order). Triggering events before `since` fire nothing but
        still fill windows and baselines. `now`: the clock, which tells the runs that stalled
        since their last sign of life (`RUN_STALLED`); without it, a stall is seen only when
        the run's next event arrives late. `clock_runs`: the clock judges only the stalls of
        these (project, run_id) runs (None: of every run)."""
        batch = events if isinstance(events, EventBatch) else EventBatch.from_events(events)
        since, now = _utc(since), _utc(now)  # (naive: UTC, as in events)
        since_ns = NO_TIME if since is None else to_ns(since)
        out = Evaluation()
        held = _HeldBack()
        self.budgets = _Budgets(dict(self._budget_left), self._budget_reasons)
        self._forget_unkept_members()
        # A huge batch is judged in slices: the result is the same (firings do not depend on
        # batching), and memory stays bounded and warm.
        for chunk in batch.chunks(CHUNK_EVENTS):
            run = _Batch(self.state, chunk)
            for (project, metric), automations in self._metric.items():
                metric_pass = _MetricPass(
                    self.state,
                    run,
                    project,
                    metric,
                    automations,
                    since_ns,
                    explain,
                    held=held,
                    paused=self.paused,
                    budgets=self.budgets,
                )
                metric_pass.evaluate(out)
            running = self._running() if self._stalled else None
            self._run_states(run, since_ns, explain, out)
            self._signs_of_life(run, running, since_ns, explain, out)
            self._artifact_events(chunk, since_ns, explain, out)
            run.remember()
        if self._stalled:
            self._stalls_by(now, clock_runs, since_ns, explain, out)
        self._note_quiet()
        out.firings.sort(key=lambda f: (f.arrival, self._rank[f.automation]))
        out.skips = merged_skips(held.skips(self.state) + out.skips)
        out.exhausted = self.budgets.exhausted
        return out

    def _forget_unkept_members(self) -> None:
        """Drop the z-score member lists no automation keeps up to date now (one removed,
        disabled or set to another window or baseline): kept, a list would miss the runs that
        entered meanwhile when it is used again. A list used again starts anew from the
        runs that have logged."""
        kept = {
            (str(a.project), a.event.metric, k, a.event.baseline == "finished")
            for a in self.automations
            if isinstance(a.event, RunMetricZScore)
            for k in (a.event.window, a.event.window + 1)
        }
        members = self.state.members
        for key in [key for key in members if key not in kept]:
            del members[key]

    # -- run states -----------------------------------------------------------------------------

    def _run_states(self, run: _Batch, since_ns: int, explain: bool, out: Evaluation) -> None:
        runs = self.state.runs
        rows = np.flatnonzero(run.columns.metric == STATE_ROW)
        seen = self.state.seen_state_events
        for (arrival, event), row in zip(run.batch.states, rows.tolist(), strict=True):
            code = int(run.row_run[row])
            state = STATE_ALIASES.get(event.state, event.state)
            if state == "finished":  # (for good: see ZScoreBatch.finishes)
                runs.finished[code] = True
            identity = state_event_identity(event)
            if identity in seen:
                continue  # the very same state event, delivered again: changes nothing
            seen.add(identity)
            entered = state != runs.state[code]
            runs.state[code] = state
            run.sets[row] = state == "running"
            ts = int(run.columns.ts[row])
            name, user = run.name_at(row), run.user_at(row)
            subject = run_subject(event.run_id, name)
            for automation in self._run_state:
                trigger: RunState = automation.event  # type: ignore[assignment]
                reason: str | None
                if (reason := automation.scope.mismatch_run(event.project)) is not None:
                    pass
                elif not entered:
                    reason = f"the run was already {state!r}"
                elif state == "killed":
                    reason = "a killed run never triggers (as in W&B)"
                elif not trigger.enters(state):
                    reason = f"state {event.state!r} is not one of {trigger.states}"
                elif ts < since_ns:
                    reason = "before --since"
                elif (
                    reason := automation.run_filters.admits(user=user, run_name=name)
                ) is not None:
                    pass
                else:
                    if self._admits(automation, code, ts, subject, out):
                        out.firings.append(
                            Firing(
                                firing_id=firing_id(
                                    automation.name,
                                    "RUN_STATE",
                                    event.project,
                                    event.run_id,
                                    state,
                                    event.timestamp.isoformat(),
                                ),
                                automation=automation.name,
                                event_type="RUN_STATE",
                                timestamp=event.timestamp,
                                project=event.project,
                                run_id=event.run_id,
                                run_name=name,
                                state=state,
                                user=user,
                                metric_filter=trigger.describe(),
                                arrival=arrival,
                            )
                        )
                    continue
                if explain:
                    out.skips.append(Skip(automation.name, subject, reason))

    def _admits(
        self, automation: Automation, code: int, ts: int, subject: str, out: Evaluation
    ) -> bool:
        """Whether a run event's match (run `code`, at `ts`) fires: not when the automation is
        paused, over its budget or in the run's cooldown — then it is held back, and the skip
        says why. A match that fires starts the run's cooldown."""
        name = automation.name
        reason = None
        last = self.state.last_fired_for(name)
        if name in self.paused:
            reason = PAUSED
        elif name in self.budgets.exhausted:  # every match from then on
            reason = self.budgets.reasons[name]
        elif last[code] != NO_TIME and ts < last[code] + _ns(automation):
            reason = f"held back by the cooldown ({_cooldown_text(automation)})"
        elif not self.budgets.spend(name, 1):
            reason = self.budgets.reasons[name]
        if reason is not None:
            out.skips.append(Skip(name, subject, reason, held_back=True))
            return False
        last[code] = ts
        return True

    # -- stalled runs ----------------------------------------------------------------------------

    def _running(self) -> Bool:
        """Per run code, whether the run's last state seen is `running`."""
        return np.array([s == "running" for s in self.state.runs.state], bool)

    def _watching(self, automation: Automation) -> Bool:
        """Per run code, whether the run is in the project `automation` watches."""
        projects = np.array([p for p, _ in self.state.runs.keys], object)
        watched: Bool = projects == automation.project
        return watched

    def _signs_of_life(
        self, run: _Batch, running: Bool | None, since_ns: int, explain: bool, out: Evaluation
    ) -> None:
        """Judge the stalls the batch's run events end (each arrived `after` or more after the
        run's last sign of life), then move each run's last sign of life on."""
        columns, runs = run.columns, self.state.runs
        if not len(columns):
            return
        if running is not None:
            watched_projects = {a.project for a in self._stalled}
            in_watch = np.array([p in watched_projects for p in run.projects], bool)
            spells = QuietSpells.of(
                runs=run.row_run,
                ts=columns.ts,
                active=runs.active,
                running=running,
                sets=run.sets,
                rows=np.flatnonzero(in_watch[columns.run]),
                local=columns.run,
            )
            for automation in self._stalled:
                trigger = _stall(automation)
                judged = self.state.stall_judged_for(automation.name)
                ended = spells.ended(
                    after_ns=trigger.after_ns, judged=judged, watched=self._watching(automation)
                )
                for at in sorted(ended.tolist(), key=lambda i: int(spells.rows[i])):
                    row = int(spells.rows[at])
                    self._judge_stall(
                        automation,
                        int(spells.runs[at]),
                        int(spells.before[at]),
                        arrival=int(columns.arrival[row]),
                        name=run.name_at(row),
                        user=run.user_at(row),
                        since_ns=since_ns,
                        explain=explain,
                        out=out,
                    )
        np.maximum.at(runs.active, run.row_run, columns.ts)

    def _stalls_by(
        self,
        now: datetime | None,
        clock_runs: Collection[tuple[str, str]] | None,
        since_ns: int,
        explain: bool,
        out: Evaluation,
    ) -> None:
        """Judge the stalls due by `now` (of `clock_runs` only, if given), after every event
        of the batch."""
        runs = self.state.runs
        n = len(runs)
        running = self._running()
        judged_now = running
        if clock_runs is not None:
            only = np.zeros(n, bool)
            only[[c for key in clock_runs if (c := runs.index.get(key)) is not None]] = True
            judged_now = running & only
        for automation in self._stalled:
            trigger = _stall(automation)
            judged = self.state.stall_judged_for(automation.name)
            watched = self._watching(automation)
            codes: list[int] = []
            if now is not None:
                found = due(
                    active=runs.active[:n],
                    running=judged_now,
                    judged=judged[:n],
                    watched=watched,
                    after_ns=trigger.after_ns,
                    now_ns=to_ns(now),
                )
                codes = sorted(found.tolist(), key=lambda c: (int(runs.active[c]), runs.keys[c]))
            for code in codes:  # (one arrival: they keep this order)
                self._judge_stall(
                    automation,
                    code,
                    int(runs.active[code]),
                    arrival=AFTER_EVERY_EVENT,
                    name=runs.name[code],
                    user=runs.user[code],
                    since_ns=since_ns,
                    explain=explain,
                    out=out,
                )
            if explain:
                self._explain_quiet(automation, np.flatnonzero(watched), running, now, out)

    def _judge_stall(
        self,
        automation: Automation,
        code: int,
        quiet_from: int,
        *,
        arrival: int,
        name: str | None,
        user: str | None,
        since_ns: int,
        explain: bool,
        out: Evaluation,
    ) -> None:
        """A stall of run `code` after its sign of life at `quiet_from`: it fires once."""
        trigger = _stall(automation)
        self.state.stall_judged_for(automation.name)[code] = quiet_from
        at = quiet_from + trigger.after_ns
        project, run_id = self.state.runs.keys[code]
        subject = run_subject(run_id, name)
        reason = None
        watching = self.watching_since.get(automation.name)
        if watching is not None and at < watching:
            reason = (
                f"it stalled at {from_ns(at).isoformat()}, before the sensor watched for this "
                f"automation's stalls (since {from_ns(watching).isoformat()})"
            )
        elif at < since_ns:
            reason = "before --since"
        elif (reason := automation.run_filters.admits(user=user, run_name=name)) is not None:
            pass
        elif self._admits(automation, code, at, subject, out):
            since = from_ns(quiet_from)
            out.firings.append(
                Firing(
                    firing_id=firing_id(
                        automation.name, "RUN_STALLED", project, run_id, since.isoformat()
                    ),
                    automation=automation.name,
                    event_type="RUN_STALLED",
                    timestamp=from_ns(at),
                    project=project,
                    run_id=run_id,
                    run_name=name,
                    state="running",
                    quiet_since=since,
                    user=user,
                    metric_filter=trigger.describe(),
                    arrival=arrival,
                )
            )
        if reason is not None and explain:
            out.skips.append(Skip(automation.name, subject, reason))

    def _explain_quiet(
        self,
        automation: Automation,
        codes: I64,
        running: Bool,
        now: datetime | None,
        out: Evaluation,
    ) -> None:
        """Why each watched run has no stall to judge (yet)."""
        runs, trigger = self.state.runs, _stall(automation)
        judged = self.state.stall_judged_for(automation.name)
        after = duration_text(trigger.after)
        for code in codes.tolist():
            active, state = int(runs.active[code]), runs.state[code]
            if state is None:
                reason = "no state was seen for the run: only a run known to be running can stall"
            elif not running[code]:
                reason = f"the run is {state!r}, not running"
            elif judged[code] >= active:
                continue  # (its stall was judged: fired, or explained then)
            elif now is None:
                reason = (
                    f"quiet since {from_ns(active).isoformat()}; without a clock (`now`) a "
                    "stall shows only when the run's next event arrives late"
                )
            elif active > to_ns(now):
                reason = (
                    f"last sign of life at {from_ns(active).isoformat()}, after the clock's "
                    f"time {now.isoformat()}"
                )
            else:
                reason = (
                    f"last sign of life at {from_ns(active).isoformat()}, less than {after} "
                    f"before {now.isoformat()}"
                )
            out.skips.append(
                Skip(automation.name, run_subject(runs.keys[code][1], runs.name[code]), reason)
            )

    def _note_quiet(self) -> None:
        """Mark the runs a stall automation may still fire for, so a store finds them when
        their quiet time runs out."""
        runs = self.state.runs
        n = len(runs)
        pending = np.zeros(n, bool)
        if self._stalled and n:
            for automation in self._stalled:
                judged = self.state.stall_judged_for(automation.name)[:n]
                pending |= self._watching(automation) & (judged < runs.active[:n])
            pending &= self._running() & (runs.active[:n] != NO_TIME)
        runs.quiet[:n] = np.where(pending, runs.active[:n], NO_TIME)

    # -- artifact events ------------------------------------------------------------------------

    def _artifact_events(
        self, batch: EventBatch, since_ns: int, explain: bool, out: Evaluation
    ) -> None:
        seen = self.state.seen_artifact_events
        for arrival, event in batch.artifacts:
            identity = artifact_event_identity(event)
            repeated = identity in seen
            seen.add(identity)
            change = event.alias or event.tag
            subject = event.version_string + (f" ({change})" if change else "")
            for automation in self._artifact:
                trigger: ArtifactTrigger = automation.event  # type: ignore[assignment]
                if trigger.type != event.type:
                    continue
                reason = automation.scope.mismatch(event) or trigger.matches(event)
                if reason is None and repeated:
                    reason = "the very same event was seen before (a re-delivery)"
                if reason is None and to_ns(event.timestamp) < since_ns:
                    reason = "before --since"
                if reason is None and automation.name in self.paused:
                    out.skips.append(Skip(automation.name, subject, PAUSED, held_back=True))
                elif reason is None and not self.budgets.spend(automation.name, 1):
                    reason = self.budgets.reasons[automation.name]
                    out.skips.append(Skip(automation.name, subject, reason, held_back=True))
                elif reason is None:
                    out.firings.append(
                        Firing(
                            firing_id=firing_id(
                                automation.name,
                                event.type,
                                event.registry,
                                event.project,
                                event.collection,
                                event.version,
                                event.alias,
                                event.tag,
                                event.timestamp.isoformat(),
                            ),
                            automation=automation.name,
                            event_type=event.type,
                            timestamp=event.timestamp,
                            project=event.project,
                            registry=event.registry,
                            collection=event.collection,
                            version=event.version,
                            alias=event.alias,
                            tag=event.tag,
                            user=event.user,
                            metadata=event.metadata,
                            metric_filter=trigger.describe(),
                            arrival=arrival,
                        )
                    )
                elif explain:
                    out.skips.append(Skip(automation.name, subject, reason))


class _Batch:
    """A batch seen through the state: global run codes and each event's run name and user."""

    def __init__(self, state: EvaluatorState, batch: EventBatch) -> None:
        self.state = state
        self.batch = batch
        self.columns = columns = batch.columns
        self.codes = state.runs.register(batch)
        self.row_run: I64 = self.codes[columns.run]
        #: Per row: 1 if it is a state event that made the run running, 0 if one that made it
        #: anything else, -1 otherwise (set as run states are judged).
        self.sets = np.full(len(columns), -1, np.int8)
        self.projects = [project for project, _ in batch.runs]
        self.names = list(batch.names)
        self.users = list(batch.users)
        self.name = self._as_of(columns.name, self.names, state.runs.name)
        self.user = self._as_of(columns.user, self.users, state.runs.user)

    def _as_of(
        self, codes: npt.NDArray[np.int32], strings: list[str], known: npt.NDArray[np.object_]
    ) -> I64:
        """Each event's value, else the run's last one before it (in the batch or the state).

        Values are codes into `strings`, which grows by the values only the state knew.
        """
        if not len(codes) or (codes >= 0).all():
            return codes.astype(np.int64)
        present = self.codes[self.codes >= 0]
        if (codes < 0).all() and not (known[present] != None).any():  # noqa: E711 (elementwise)
            return codes.astype(np.int64)  # nothing is known of any run: nothing to fill in
        run = self.columns.run
        order = stable_argsort(run)
        valid = codes[order] >= 0
        reach = np.maximum.accumulate(np.where(valid, np.arange(len(order)), -1))
        boundary = np.ones(len(order), bool)
        boundary[1:] = run[order][1:] != run[order][:-1]
        group_start = np.maximum.accumulate(np.where(boundary, np.arange(len(order)), 0))
        filled = np.where(reach >= group_start, codes[order][np.maximum(reach, 0)], -1)
        fallback = np.full(len(self.codes), -1, np.int64)
        interned = {s: i for i, s in enumerate(strings)}
        for local in np.flatnonzero(self.codes >= 0).tolist():
            value = known[self.codes[local]]
            if value is not None:
                if value not in interned:
                    interned[value] = len(strings)
                    strings.append(value)
                fallback[local] = interned[value]
        filled = np.where(filled >= 0, filled, fallback[run[order]])
        result = np.empty(len(codes), np.int64)
        result[order] = filled
        return result

    @cached_property
    def finishes(self) -> dict[str, dict[int, int]]:
        """Per project, per run code: the arrival of the batch's first state event that made
        the run finished."""
        rows = np.flatnonzero(self.columns.metric == STATE_ROW).tolist()
        out: dict[str, dict[int, int]] = defaultdict(dict)
        for (arrival, event), row in zip(self.batch.states, rows, strict=True):
            if STATE_ALIASES.get(event.state, event.state) == "finished":
                out[event.project].setdefault(int(self.row_run[row]), arrival)
        return out

    def name_at(self, row: int) -> str | None:
        code = int(self.name[row])
        return self.names[code] if code >= 0 else None

    def user_at(self, row: int) -> str | None:
        code = int(self.user[row])
        return self.users[code] if code >= 0 else None

    def admitted(self, automation: Automation, rows: I64) -> Bool:
        """Whether the run filters admit each row's run, as the run was known at that row."""
        filters = automation.run_filters
        if filters.user is None and filters.run_name is None:
            return np.ones(len(rows), bool)
        user_ok = np.array(
            [filters.admits_user(u) for u in self.users] + [filters.admits_user(None)]
        )
        name_ok = np.array(
            [filters.admits_name(n) for n in self.names] + [filters.admits_name(None)]
        )
        admitted: Bool = user_ok[self.user[rows]] & name_ok[self.name[rows]]  # -1: the None entry
        return admitted

    def remember(self) -> None:
        """Keep each run's last name and user for later batches."""
        if not len(self.columns):
            return
        last = np.full(len(self.codes), -1, np.int64)
        last[self.columns.run] = np.arange(len(self.columns))  # the last write wins
        local = np.flatnonzero(last >= 0)
        rows, codes = last[local], self.codes[local]
        self.state.runs.name[codes] = np.array([*self.names, None], object)[self.name[rows]]
        self.state.runs.user[codes] = np.array([*self.users, None], object)[self.user[rows]]


class _MetricPass:
    """All metric automations of one (project, metric) over one batch."""

    def __init__(
        self,
        state: EvaluatorState,
        run: _Batch,
        project: str,
        metric: str,
        automations: list[Automation],
        since_ns: int,
        explain: bool,
        *,
        held: _HeldBack | None = None,
        paused: frozenset[str] = frozenset(),
        budgets: _Budgets | None = None,
    ) -> None:
        self.state, self.events, self.project, self.metric = state, run, project, metric
        self.automations, self.since_ns, self.explain = automations, since_ns, explain
        self.held = held if held is not None else _HeldBack()
        self.paused = paused
        self.budgets = budgets if budgets is not None else _Budgets({}, {})
        self.triggers: list[MetricTrigger] = [a.event for a in automations]  # type: ignore[misc]

    def evaluate(self, out: Evaluation) -> None:
        if self.ingest(out):
            for automation, trigger in zip(self.automations, self.triggers, strict=True):
                self._judge(automation, trigger, out)
            self.remember()
        elif self._finished_baselines():
            self._enter_finished()

    def ingest(self, out: Evaluation) -> bool:
        """Lay out the batch's trigger points of the metric in the project, advancing the series
        (False: the batch has none). The windows below read this layout."""
        batch, columns = self.events.batch, self.events.columns
        if self.metric not in batch.metrics:
            if self.explain:
                for automation in self.automations:
                    out.skips.append(
                        Skip(
                            automation.name,
                            f"project {self.project!r}",
                            f"no run logged {self.metric!r}",
                        )
                    )
            return False
        metric_code = batch.metrics.index(self.metric)
        in_project = np.array([p == self.project for p in self.events.projects], bool)
        of_metric = columns.metric == metric_code
        if self.explain:
            self._explain_other_projects(out, of_metric & ~in_project[columns.run])
        selected = np.flatnonzero(of_metric & in_project[columns.run] & ~np.isnan(columns.value))
        if not len(selected):
            return False
        table = self._table()
        self._newest_rows: tuple[I64, I64] | None = None
        if any(t.counts_streaks for t in self.triggers):  # (before the batch advances them)
            runs = np.unique(self.events.row_run[selected])
            self._newest_rows = (runs, table.latest(table.rows_for(runs))[1])
        self._prepare_members(table)  # before the batch changes the tails
        self.segments = table.ingest(
            self.events.row_run[selected], columns.order[selected], columns.value[selected]
        )
        self.rows = selected[self.segments.points]  # the trigger points' rows in the batch
        self.trigger_runs = self.events.row_run[self.rows]
        self._z: dict[tuple[int, int, float, str, bool], F64] = {}
        self._zbatch: ZScoreBatch | None = None
        self._last_row: tuple[I64, I64] | None = None
        return True

    def _over_budget(self, automation: Automation, candidate: I64, fired: Bool) -> Bool:
        """The candidates from the first firing the automation's budget does not allow on (in
        arrival order): they are held back, and the automation is paused."""
        if automation.name in self.budgets.exhausted:  # spent earlier in this evaluation
            return np.ones(len(candidate), bool)
        allowed = self.budgets.spend(automation.name, int(fired.sum()))
        over = np.zeros(len(candidate), bool)
        if allowed < fired.sum():
            arrival = self.events.columns.arrival[self.rows[candidate]]
            over = arrival >= np.sort(arrival[fired])[allowed]
        return over

    def _newest_before(self) -> I64:
        """Per run code, the order (step) of the run's newest point before the batch."""
        newest = np.full(len(self.state.runs), NO_ORDER, np.int64)
        if self._newest_rows is not None:
            runs, orders = self._newest_rows
            newest[runs] = orders
        return newest

    def remember(self) -> None:
        """Keep the z-score member lists as they stand after the batch."""
        for (k, finished), members in self._members_before.items():
            if self._zbatch is not None:
                self.state.members[(self.project, self.metric, k, finished)] = (
                    self._zbatch.membership(members, k, self.state.runs.rank, finished).after
                )

    # MetricWindows ------------------------------------------------------------------------------

    def aggregate(self, aggregation: str, size: int, lag: int = 0) -> F64:
        return self.segments.window(aggregation, size, lag)

    def zscores(self, trigger: RunMetricZScore) -> F64:
        window, finished = trigger.window, trigger.baseline == "finished"
        floor = float(trigger.sigma_floor)
        key = (window, trigger.min_baseline, floor, trigger.method, finished)
        if key not in self._z:
            zbatch = self._z_batch()
            members, rank = self._members(window, finished), self.state.runs.rank
            judge = zbatch.robust_zscores if trigger.method == "median_mad" else zbatch.zscores
            z = judge(window, members, rank, trigger.min_baseline, floor, finished)
            self._z[key] = z[self._position]  # back from arrival order to trigger order
        return self._z[key]

    def values_at(self, points: I64, size: int) -> list[list[float]]:
        return self.segments.window_values(points, size)

    def baseline_at(self, points: I64, trigger: RunMetricZScore) -> list[list[float]]:
        positions = self._position[points].tolist()
        finished = trigger.baseline == "finished"
        members = self._members(trigger.window, finished)
        return self._z_batch().baselines(
            positions, trigger.window, members, self.state.runs.rank, finished
        )

    # -------------------------------------------------------------------------------------------

    def _table(self) -> SeriesTable:
        capacity = max(t.values_needed for t in self.triggers)
        return self.state.series_table(self.project, self.metric, capacity)

    def _finished_baselines(self) -> bool:
        return any(
            isinstance(t, RunMetricZScore) and t.baseline == "finished" for t in self.triggers
        )

    def _prepare_members(self, table: SeriesTable) -> None:
        """The z-score member lists and their latest values, as they stand before the batch
        (and those of the runs the batch finishes, which may enter a baseline of finished runs).

        A window no automation used before starts from the runs already in the table.
        """
        self._members_before: dict[tuple[int, bool], list[int]] = {}
        runs = self.state.runs
        for trigger in self.triggers:
            if isinstance(trigger, RunMetricZScore):
                finished = trigger.baseline == "finished"
                for k in (trigger.window, trigger.window + 1):
                    key = (self.project, self.metric, k, finished)
                    if key not in self.state.members:
                        rows = np.flatnonzero(table.length[: table.rows] > 0)
                        logged = table.run[rows]
                        if finished:
                            logged = logged[runs.finished[logged]]
                        self.state.members[key] = sorted(
                            logged.tolist(), key=runs.rank, reverse=True
                        )[:k]
                    self._members_before[(k, finished)] = list(self.state.members[key])
        self._finishing = self._finishing_runs() if self._finished_baselines() else {}
        members = sorted(
            {m for ms in self._members_before.values() for m in ms} | self._finishing.keys()
        )
        rows = np.array([table.row(m) for m in members], np.int64)
        values = np.full(len(rows), np.nan)  # (a run not in the table has no value)
        values[rows >= 0] = table.latest(rows[rows >= 0])[0]
        self._latest_before = dict(zip(members, values.tolist(), strict=True))

    def _finishing_runs(self) -> dict[int, int]:
        """The runs of the project the batch finishes that were not finished before: the
        arrival of their first `finished` state here."""
        finished = self.state.runs.finished
        finishes = self.events.finishes.get(self.project, {})
        return {code: arrival for code, arrival in finishes.items() if not finished[code]}

    def _finish_entries(self, first_values: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(arrival, run) where runs enter a baseline of finished runs over the batch: at the
        later of their first value (`first_values`: (arrival, run) in the batch) and their
        `finished` state, one of them in the batch."""
        runs = self.state.runs
        first_value = {run: arrival for arrival, run in first_values}
        entries = []
        for run in first_value.keys() | self._finishing.keys():
            logged_before = not np.isnan(self._latest_before.get(run, np.nan))
            logged = first_value.get(run, -1 if logged_before else None)
            finished = self._finishing.get(run, -1 if runs.finished[run] else None)
            if logged is not None and finished is not None:
                entries.append((max(logged, finished), run))
        return sorted(entries)

    def _enter_finished(self) -> None:
        """Runs the batch finishes enter baselines of finished runs, though the batch has no
        point of the metric to judge."""
        table = self.state.series.get((self.project, self.metric))
        if table is None:
            return  # (no run has logged the metric: none enters)
        self._prepare_members(table)
        entries = self._finish_entries([])
        if not entries:
            return
        for (k, finished), members in self._members_before.items():
            if finished:
                walk = Membership.walk(members, entries, k, self.state.runs.rank)
                self.state.members[(self.project, self.metric, k, True)] = walk.after

    def _members(self, window: int, finished: bool) -> dict[int, list[int]]:
        return {k: self._members_before[(k, finished)] for k in (window, window + 1)}

    def _z_batch(self) -> ZScoreBatch:
        """The trigger points in arrival order, with each run's value before the point."""
        if self._zbatch is None:
            segments = self.segments
            # The value before a trigger point in its series is the run's latest before it.
            prev = np.where(segments.avail > 1, segments.flat[segments.pos - 1], np.nan)
            # Trigger points in arrival order: their rows are distinct batch rows.
            marks = np.full(len(self.events.columns), -1, np.int64)
            marks[self.rows] = np.arange(len(self.rows))
            order = marks[marks >= 0]
            self._position = np.empty(len(order), np.int64)
            self._position[order] = np.arange(len(order))
            rows = self.rows[order]
            value = self.events.columns.value[rows]
            key = (self.project, self.metric)
            if key not in self.state.shifts:
                self.state.shifts[key] = float(value[0]) if len(value) else 0.0
            self._zbatch = ZScoreBatch(
                run=self.events.row_run[rows],
                value=value,
                arrival=self.events.columns.arrival[rows],
                prev=prev[order],
                latest_before=self._latest_before,
                shift=self.state.shifts[key],
            )
            if self._finished_baselines():
                self._zbatch.finishes = self._finish_entries(self._zbatch.entering)
        return self._zbatch

    def _judge(self, automation: Automation, trigger: MetricTrigger, out: Evaluation) -> None:
        columns = self.events.columns
        measured = trigger.measure(self)
        ts = columns.ts[self.rows]
        timely = ts >= self.since_ns
        admitted = self.events.admitted(automation, self.rows)
        held_long = measured.holds
        walk = None
        if trigger.counts_streaks:
            streak, spent, counted_to = self.state.streaks_for(automation.name)
            # A streak goes on only from the run's newest point before the batch: else the run
            # logged while the automation did not count (it had no for_points then).
            n = len(self.state.runs)
            carried = counted_to[:n] == self._newest_before()
            streak_before, spent_before = np.where(carried, streak[:n], 0), spent[:n] & carried
            walk = StreakWalk.of(self.trigger_runs, measured.holds, streak_before, spent_before)
            held_long = walk.streak >= trigger.for_points
        candidate = np.flatnonzero(held_long & timely & admitted)
        runs, at = self.trigger_runs[candidate], ts[candidate]
        last = self.state.last_fired_for(automation.name)
        budgeted = automation.name in self.budgets.left
        last_before = last[runs] if budgeted else None  # (one the budget cuts starts no cooldown)
        #: The matches that did not fire and are in the history as held back (the others, with
        #: rearm, wait for the condition to stop holding).
        reported = np.zeros(len(candidate), bool)
        if automation.name in self.paused:
            fired = np.zeros(len(candidate), bool)
            reported[:] = True
            self.held.add(automation.name, PAUSED, runs)
        elif walk is not None and trigger.rearm:
            fired = walk.rearmed(candidate)  # (instead of the cooldown)
        else:
            fired = apply_cooldown(runs, at, last, _ns(automation))  # (it sets `last`)
            reported = ~fired
        over = np.zeros(len(candidate), bool)
        if last_before is not None:  # (budgeted)
            over = self._over_budget(automation, candidate, fired)
            fired &= ~over
            reported = (reported & ~over) | over
            self.held.add(automation.name, self.budgets.reasons[automation.name], runs[over])
            last[runs] = last_before
        if automation.name not in self.paused and not trigger.rearm:
            cooldown = reported & ~over
            reason = f"held back by the cooldown ({_cooldown_text(automation)})"
            self.held.add(automation.name, reason, runs[cooldown])
        if budgeted or trigger.rearm:  # (the cooldown's own walk has set the rest)
            last[runs[fired]] = at[fired]  # (per run, the latest wins: a run's points in order)
        fired_idx = candidate[fired]
        out.firings += self._firings(automation, trigger, fired_idx, measured.value[fired_idx])
        if walk is not None:
            orders = self.events.columns.order[self.rows]
            walk.remember(fired_idx, orders, streak, spent, counted_to, MAX_FOR_POINTS)
        if self.explain:
            self._explain(
                automation,
                trigger,
                measured.value,
                measured.holds,
                held_long,
                timely,
                admitted,
                candidate,
                fired,
                reported,
                out,
            )

    def _firings(
        self, automation: Automation, trigger: MetricTrigger, points: I64, value: F64
    ) -> list[Firing]:
        """The firings at trigger points `points`: their columns are read once, for all."""
        if not len(points):
            return []
        columns, events = self.events.columns, self.events
        rows = self.rows[points]
        keys = self.state.runs.keys
        system = is_system_metric(self.metric)
        describe = trigger.describe()
        with_none = [None]  # code -1: not known
        names = (np.array([*events.names, *with_none], object)[events.name[rows]]).tolist()
        users = (np.array([*events.users, *with_none], object)[events.user[rows]]).tolist()
        firings = []
        for run, step, ts, arrival, at, window, name, user in zip(
            self.trigger_runs[points].tolist(),
            columns.order[rows].tolist(),
            columns.ts[rows].tolist(),
            columns.arrival[rows].tolist(),
            value.tolist(),
            trigger.metric_values(self, points),
            names,
            users,
            strict=True,
        ):
            project, run_id = keys[run]
            firings.append(
                Firing(
                    firing_id=firing_id(
                        automation.name,
                        trigger.type,
                        project,
                        run_id,
                        self.metric,
                        f"t{ts}" if system else step,
                    ),
                    automation=automation.name,
                    event_type=trigger.type,
                    timestamp=from_ns(ts),
                    project=project,
                    run_id=run_id,
                    run_name=name,
                    metric=self.metric,
                    step=None if system else step,
                    value=at,
                    metric_values=window,
                    user=user,
                    metric_filter=describe,
                    arrival=arrival,
                )
            )
        return firings

    # explain ----------------------------------------------------------------------------------

    def _explain_other_projects(self, out: Evaluation, elsewhere: Bool) -> None:
        if not elsewhere.any():
            return
        counts: dict[str, set[int]] = defaultdict(set)
        for local in np.unique(self.events.columns.run[elsewhere]).tolist():
            counts[self.events.projects[local]].add(local)
        for project, runs in sorted(counts.items()):
            for automation in self.automations:
                out.skips.append(
                    Skip(
                        automation.name,
                        f"project {project!r}",
                        f"{len(runs)} run(s) there logged {self.metric!r}, but the automation "
                        f"watches project {self.project!r}",
                    )
                )

    def _explain(
        self,
        automation: Automation,
        trigger: MetricTrigger,
        value: F64,
        holds: Bool,
        held_long: Bool,
        timely: Bool,
        admitted: Bool,
        candidate: I64,
        fired: Bool,
        reported: Bool,
        out: Evaluation,
    ) -> None:
        full = self.segments.avail >= trigger.points_needed
        held_back = np.zeros(len(value), bool)  # reported by _judge, always
        held_back[candidate[reported]] = True
        spent = np.zeros(len(value), bool)  # (with rearm: waiting for the condition to stop)
        spent[candidate[~fired & ~reported]] = True
        reasons: list[tuple[Bool, Callable[[int], str]]] = [
            (~timely, lambda run: "before --since"),
            (
                ~full,
                lambda run: f"the window is not full yet (it needs {trigger.points_needed} values)",
            ),
            (np.isnan(value), lambda run: trigger.undefined_reason()),
            (~holds, lambda run: f"{trigger.condition()} did not hold"),
            (
                ~held_long,
                lambda run: (
                    f"{trigger.condition()} had not yet held at {trigger.for_points} "
                    "points in a row"
                ),
            ),
            (~admitted, lambda run: self._filter_reason(automation, run)),
            (
                spent,
                lambda run: (
                    "already fired since the condition last stopped holding (rearm: "
                    "fires again once it stops holding and holds again)"
                ),
            ),
        ]
        decided = held_back.copy()
        for mask, reason in reasons:
            mask = mask & ~decided
            decided |= mask
            if not mask.any():
                continue
            runs, counts = np.unique(self.trigger_runs[mask], return_counts=True)
            for run, subject, count in zip(
                runs.tolist(), self._subjects(runs), counts.tolist(), strict=True
            ):
                out.skips.append(Skip(automation.name, subject, reason(run), count))

    def _subjects(self, runs: I64) -> list[str]:
        """The runs (sorted codes of runs with trigger points here) in words, each named as the
        state knows it, else as the batch last named it — looked up for all of them at once."""
        known = self.state.runs.name[runs]
        rows = self._last_rows(runs)
        batch_names = np.array([*self.events.names, None], object)[self.events.name[rows]]
        names = np.where(known == None, batch_names, known)  # noqa: E711 (elementwise)
        keys = self.state.runs.keys
        return [
            run_subject(keys[run][1], name)
            for run, name in zip(runs.tolist(), names.tolist(), strict=True)
        ]

    def _filter_reason(self, automation: Automation, run: int) -> str:
        """Why the run filters refused `run`, as the run was last known in the batch."""
        row = int(self._last_rows(np.array([run], np.int64))[0])
        user, name = self.events.user_at(row), self.events.name_at(row)
        return automation.run_filters.admits(user=user, run_name=name) or "filtered out"

    def _last_rows(self, runs: I64) -> I64:
        """Each of `runs`' last trigger point's row in the batch. The runs with trigger points
        and their last rows are found in one pass, the first time they are needed."""
        if self._last_row is None:
            reverse = self.trigger_runs[::-1]
            with_points, first_in_reverse = np.unique(reverse, return_index=True)
            last = self.rows[len(reverse) - 1 - first_in_reverse]
            self._last_row = (with_points, last)
        with_points, last = self._last_row
        found: I64 = last[np.searchsorted(with_points, runs)]
        return found


def metric_windows(
    batch: EventBatch,
    project: str,
    triggers: Sequence[MetricTrigger],
    *,
    stream_size: int | None = None,
) -> Iterator[tuple[I64, MetricWindows]]:
    """The windows `Evaluator.evaluate` judges metric triggers on, from a fresh state.

    `triggers` share one metric; `batch` holds its points (or more). For each slice the
    evaluator cuts a stream into (`CHUNK_EVENTS` events of arrival each), this yields the
    arrival index of every trigger point of the metric in `project`, in the order the evaluator
    judges them, and the windows at those points: `trigger.measure(windows).value` is, number for
    number, what the evaluator compares with the trigger's condition (with these triggers alone:
    the series kept for a longer window of another automation can round windows over 16 values
    differently). Read each windows object before asking for the next slice. (In pandas terms,
    an aggregate is, per run, a rolling window over the run's counted points in step order, read
    at the points that extend the series — without `groupby().rolling()`'s cost.)

    `batch` may hold part of a longer stream, its `arrival` the events' places in that stream of
    `stream_size` events: it is cut where the evaluator would cut the whole stream.
    """
    size = batch.size if stream_size is None else stream_size
    state = EvaluatorState()
    automations = [
        Automation.model_validate(
            {
                "name": f"measure-{i}",
                "scope": {"project": project},
                "event": trigger.model_dump(),
                "action": {"type": "no_op"},
            }
        )
        for i, trigger in enumerate(triggers)
    ]
    metric = triggers[0].metric
    if size <= CHUNK_EVENTS:
        pieces: Iterable[EventBatch] = [batch]
    else:
        pieces = (batch.between(lo, lo + CHUNK_EVENTS) for lo in range(0, size, CHUNK_EVENTS))
    for piece in pieces:
        if not len(piece.columns):
            continue
        events = _Batch(state, piece)
        metric_pass = _MetricPass(state, events, project, metric, automations, NO_TIME, False)
        if metric_pass.ingest(Evaluation()):
            yield piece.columns.arrival[metric_pass.rows], metric_pass
            metric_pass.remember()


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _stall(automation: Automation) -> RunStalled:
    trigger = automation.event
    assert isinstance(trigger, RunStalled)
    return trigger


def _ns(automation: Automation) -> int:
    return int(automation.cooldown.total_seconds() * 1_000_000) * 1000


def _cooldown_text(automation: Automation) -> str:
    return duration_text(automation.cooldown)
