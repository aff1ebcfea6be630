"""The sensor: read new events, judge them, record firings, then carry out their actions.

One cycle is four steps (the flow `ml-automations-sensor` runs each as Prefect task runs):

1. `poll` — each source this sensor holds the lease of (one sensor polls a source at a time)
   reads what changed since its cursor, *outside* any transaction (a slow tracker holds up
   nobody), starting from the cursor read just before.
2. `commit` — first, in one short transaction, the polls' events go into the inbox with their
   cursors, keeping each poll whose source's cursor is still the one it started from (compare
   and swap: a poll that raced another sensor or a webhook is dropped and done again next
   cycle, never counted twice). Then, in one transaction: take this sensor's share of the
   partitions (projects, registries) that have inbox events and that no other sensor holds
   (see `partitions`), evaluate their events with their persisted evaluator state, record the
   new firings as `pending`, save the state rows that changed. A crash anywhere here rolls it
   back; the evaluation being deterministic, the next cycle finds the same firings.
3. `deliver` — for every pending firing that is due: claim it (a lease, so two sensors never run
   one action at once), run the action — several at a time, up to `DELIVERY_CONCURRENCY` —, mark
   it `finished`, or `failed` with the error once its retries are spent. A firing left pending by
   a crash is due again later, and a deployment is started with an idempotency key, so a retried
   firing starts no second flow run. A cycle on its own (`run --once`, the flow) delivers after
   its commit; the long-running service delivers beside its cycles (`DeliveryPool`), so that a
   slow action holds back neither the next commit nor the firings behind it.
4. `publish` (flows only) — the cycle's artifact for the Prefect UI.

Example (no Prefect API needed):

    report = Sensor(load_config("automations.yaml")).run_once()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from prefect_ml_automations.automations import RunStalled
from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.decisions import Firing, Skip, merged_skips
from prefect_ml_automations.errors import ActionError, SourceError
from prefect_ml_automations.evaluator import Evaluator, EvaluatorState, EventBatch
from prefect_ml_automations.events import Event, RunEvent
from prefect_ml_automations.redact import scrub
from prefect_ml_automations.sources import Poll, Source
from prefect_ml_automations.store import Cycle, StateStore, is_outage, utcnow

logger = logging.getLogger("prefect_ml_automations")
T = TypeVar("T")

#: Attempts of a firing's action before it stays `failed`.
MAX_ATTEMPTS = 3
#: How long a sensor holds a firing it delivers; renewed every `LEASE / 4` while the action
#: runs, so a sensor that dies lets go of its firings within a minute. (One webhook call times
#: out after 15 s, well inside it.)
LEASE = timedelta(minutes=1)
#: An action still running after this long is abandoned as failed (and retried): a hung call
#: must not hold its firing, renewed, for ever.
ACTION_DEADLINE = timedelta(minutes=10)
#: Wait before the next attempt after a retryable failure, by attempt number.
BACKOFF = (timedelta(seconds=10), timedelta(seconds=60), timedelta(minutes=5))
#: How long a poll may take before the cycle goes on without it (the poll is left to finish in
#: the background; the source is not polled again until it has).
POLL_TIMEOUT = timedelta(minutes=5)
#: Actions run at once by one sensor (a burst of 1,000 firings is not delivered one by one).
DELIVERY_CONCURRENCY = 16
#: The inbox origin of what a tracker held before the sensor watched it (it fills the windows
#: and fires nothing).
FILLING = "fill"
#: How often a delivery pool with nothing to do looks for firings that fell due meanwhile (a
#: retry's back-off ended, another sensor's lease ran out); a commit wakes it at once.
POOL_IDLE_CHECK = 1.0


@dataclass
class Polled:
    """One source's poll, and the cursor it started from (for the compare and swap)."""

    source: str
    started_from: dict[str, Any] | None
    poll: Poll | None = None
    #: Why the poll gave nothing (the cursor stays where it was).
    error: str | None = None


@dataclass(frozen=True)
class Delivery:
    """What became of one firing's action."""

    firing: Firing
    #: `finished`, `failed` (retries spent), or `pending` (failed; tried again at `retry_at`).
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    attempt: int = 1
    retry_at: datetime | None = None

    @property
    def failed(self) -> bool:
        """The action did not succeed this time (whether or not it is tried again)."""
        return self.error is not None

    def describe(self) -> str:
        """One line for logs: the firing, and what became of its action."""
        firing = self.firing
        what = f"Firing {firing.firing_id[:8]} of {firing.automation!r} ({firing.subject})"
        if not self.failed:
            done = ", ".join(f"{k} {v}" for k, v in (self.result or {}).items())
            return f"{what}: done ({done or 'ok'})."
        if self.retry_at is not None:
            again = (
                f"attempt {self.attempt} of {MAX_ATTEMPTS}; "
                f"to be tried again after {self.retry_at:%H:%M:%S} UTC"
            )
        else:
            again = f"after attempt {self.attempt}; `ml-automations retry` runs it again"
        return f"{what}: its action failed ({again}): {self.error}"


@dataclass
class CycleReport:
    """What one cycle evaluated, fired, held back and delivered, and what went wrong."""

    events: int = 0
    fired: list[Firing] = field(default_factory=list)
    held_back: list[Skip] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    source_errors: list[str] = field(default_factory=list)
    #: Saved blocks that could not be used (a sensor run from blocks).
    config_problems: list[str] = field(default_factory=list)
    #: Sources whose poll raced a concurrent change of their cursor (polled again next cycle).
    dropped_polls: list[str] = field(default_factory=list)
    #: Events this cycle could not evaluate, moved to the quarantine.
    quarantined: int = 0
    #: Automations this cycle paused: they went over their budget.
    paused: list[str] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not (
            self.events
            or self.fired
            or self.deliveries
            or self.source_errors
            or self.config_problems
            or self.quarantined
        )

    def merged(self, later: CycleReport) -> CycleReport:
        """This report and a later one as one (the service's artifact covers several)."""
        return CycleReport(
            events=self.events + later.events,
            fired=self.fired + later.fired,
            held_back=merged_skips(self.held_back + later.held_back),
            deliveries=self.deliveries + later.deliveries,
            source_errors=later.source_errors or self.source_errors,
            config_problems=later.config_problems or self.config_problems,
            dropped_polls=self.dropped_polls + later.dropped_polls,
            quarantined=self.quarantined + later.quarantined,
            paused=self.paused + later.paused,
        )

    @property
    def problems(self) -> list[str]:
        """What makes this cycle a failed one: bad blocks, sources down, failed actions."""
        quarantined = (
            [
                f"{self.quarantined} event(s) could not be evaluated and are quarantined "
                "(`ml-automations quarantine FILE` lists them)"
            ]
            if self.quarantined
            else []
        )
        return [
            *self.config_problems,
            *quarantined,
            *(f"source {e}" for e in self.source_errors),
            *(d.describe() for d in self.deliveries if d.failed),
        ]

    def table(self) -> list[dict[str, object]]:
        """Rows for the cycle's Prefect table artifact."""
        rows: list[dict[str, object]] = []
        delivered = {d.firing.firing_id: d for d in self.deliveries}
        for firing in self.fired:
            d = delivered.pop(firing.firing_id, None)
            rows.append(_row(firing, d.status if d else "pending", d))
        rows.extend(_row(d.firing, d.status, d) for d in delivered.values())
        rows.extend(
            {
                "automation": s.automation,
                "event": "",
                "subject": s.subject,
                "status": "skipped",
                "detail": f"{s.reason} ({s.count}×)",
            }
            for s in self.held_back
        )
        return rows


def _row(firing: Firing, status: str, delivery: Delivery | None) -> dict[str, object]:
    if delivery is None:
        # (the service delivers beside its cycles: a later artifact has the action's outcome)
        detail = "its action is under way"
    elif delivery.failed and delivery.retry_at is not None:
        detail = f"to be tried again after {delivery.retry_at:%H:%M:%S} UTC: {delivery.error}"
    else:
        detail = delivery.error or ", ".join(f"{k} {v}" for k, v in (delivery.result or {}).items())
    return {
        "automation": firing.automation,
        "event": firing.event_type,
        "subject": firing.subject,
        "status": status,
        "detail": detail,
    }


class Sensor:
    """Evaluates and fires the automations of a config against its state store."""

    def __init__(
        self,
        config: AutomationsConfig,
        store: StateStore | None = None,
        *,
        name: str = "default",
        sources: Sequence[Source] | None = None,
    ) -> None:
        self.config = config
        self.store = store or StateStore(config.store)
        self.name = name
        self.automations = {a.name: a for a in config.automations}
        self.sources = list(sources) if sources is not None else sources_of(config)
        self.poll_timeout = POLL_TIMEOUT
        #: Polls still running, by source (a tracker that hangs is not asked again meanwhile).
        self._polling: dict[str, asyncio.Future[Polled]] = {}

    def reconfigure(self, config: AutomationsConfig) -> bool:
        """Go on with `config`'s automations and sources from the next cycle on (the store
        stays: its evaluator state is the automations' memory, and each source's cursor is in
        it); False if nothing changed."""
        if config == self.config:
            return False
        self.config = config
        self.automations = {a.name: a for a in config.automations}
        self.sources = sources_of(config)  # (what they watch follows the automations)
        return True

    # -- 1. poll -----------------------------------------------------------------------------

    def read_cursors(self) -> dict[str, dict[str, Any] | None]:
        """Each source's cursor as stored now (one short read; no lock held)."""
        return self.store.cursors([s.name for s in self.sources])

    def to_poll(self, now: datetime) -> list[Source]:
        """The sources this sensor polls now: those no other sensor on the store is polling
        (each is leased to its poller until the commit that takes its events)."""
        if not self.sources:
            return []
        lease = self.poll_timeout + timedelta(minutes=1)
        claimed = self.store.claim_sources([s.name for s in self.sources], now, lease)
        return [source for source in self.sources if source.name in claimed]

    def poll(self, source: Source, cursor: dict[str, Any] | None, now: datetime) -> Polled:
        """Poll one source; any failure becomes the poll's `error` (its cursor stays)."""
        try:
            return Polled(source.name, cursor, source.poll(cursor, now))
        except SourceError as exc:
            # A tracker that is down holds back only itself: its cursor stays where it was
            # (nothing unread is skipped) and pushed events go on firing.
            return Polled(source.name, cursor, error=str(exc))
        except Exception as exc:
            # So does a source that trips over an answer it did not expect (or a bug of ours):
            # one source's surprise must not stop every automation.
            logger.exception("Source %r failed while polling.", source.name)
            return Polled(source.name, cursor, error=poll_failure(exc))

    def poll_all(self, now: datetime) -> list[Polled]:
        sources = self.to_poll(now)
        cursors = self.read_cursors()
        return [self.poll(source, cursors.get(source.name), now) for source in sources]

    async def poll_within(self, now: datetime) -> list[Polled]:
        """Poll every source at once, each given `poll_timeout`: a tracker that hangs holds up
        neither the pushed events nor the other sources. Its poll goes on in the background
        (a daemon thread: it can not be stopped, and must not keep the process alive) and the
        source is skipped until it ends; its result is dropped (its cursor stays)."""
        sources = await asyncio.to_thread(self.to_poll, now)
        cursors = await asyncio.to_thread(self.read_cursors)
        timeout = self.poll_timeout.total_seconds()

        async def one(source: Source) -> Polled:
            cursor = cursors.get(source.name)
            running = self._polling.get(source.name)
            if running is not None and not running.done():
                return Polled(
                    source.name,
                    cursor,
                    error="its previous poll has not answered yet; it is not asked again until "
                    "that one ends.",
                )
            future = in_daemon_thread(self.poll, source, cursor, now)
            self._polling[source.name] = future
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                return Polled(
                    source.name,
                    cursor,
                    error=f"the poll did not answer within {timeout:.0f} s; the cycle went on "
                    "without it (its cursor stays).",
                )

        return list(await asyncio.gather(*(one(source) for source in sources)))

    # -- 2. commit ---------------------------------------------------------------------------

    def commit(
        self, polled: Sequence[Polled], *, limit: int = 100_000, now: datetime | None = None
    ) -> CycleReport:
        """Put what the polls found into the inbox, keeping only the polls whose cursor nobody
        moved meanwhile (one short transaction); then, in one transaction, take this sensor's
        share of the partitions that have events waiting, judge their events, record the
        firings, save their evaluator state (see `partitions`)."""
        report = CycleReport()
        now = now or utcnow()
        with self.store.intake(self.name) as intake:
            for one in polled:
                if one.poll is None:
                    report.source_errors.append(f"{one.source}: {one.error}")
                    continue
                if intake.cursor(one.source) != one.started_from:
                    # Another sensor, or a webhook, moved the cursor while we polled: what we
                    # found is theirs too. Drop it; the next cycle polls from their cursor.
                    report.dropped_polls.append(one.source)
                    continue
                intake.save_cursor(one.source, one.poll.cursor, polled_at=now)
                intake.put(one.poll.filling, origin=FILLING)
                intake.put(one.poll.events, origin="poll")
            intake.release_sources([one.source for one in polled], now)
        with self.store.cycle(self.name) as cycle:
            clock = self._clock(cycle, now)
            cycle.watch_stalls(self.config.automations, now)
            quiet_before = Evaluator(self.config.automations).reads([], now=clock).quiet_before
            taken = cycle.take_inbox(
                limit, workers=intake.workers, known=intake.put_events, quiet_before=quiet_before
            )
            filling = [e for e in taken if cycle.origins[id(e)][0] == FILLING]
            events = [e for e in taken if cycle.origins[id(e)][0] != FILLING]
            report.quarantined = cycle.quarantined
            if not events and not filling and not cycle.partitions:
                return report
            report.events = len(events) + len(filling)
            if clock is not None and cycle.backlogged():
                clock = None  # (the events left for the next cycle may be the runs' signs of life)
            state = self._judge(cycle, filling, events, report, clock)
            report.quarantined = cycle.quarantined
            cycle.save(state)
        for name in report.paused:
            _announce_pause(name, report)
        return report

    def _clock(self, cycle: Cycle, now: datetime) -> datetime | None:
        """The time stalled runs are judged by: `now`, or — with sources — when every one of
        them was last read (a tracker read a while ago, or one that can not be read, would make
        its busy runs look quiet). None (no clock: stalls show only as late signs of life) until
        each source has been read once; also None without a `RUN_STALLED` automation."""
        if not any(isinstance(a.event, RunStalled) and a.enabled for a in self.config.automations):
            return None
        if not self.sources:
            return now
        read_at = cycle.read_at([source.name for source in self.sources])
        return None if read_at is None else min(now, read_at)

    def _judge(
        self,
        cycle: Cycle,
        filling: list[Event],
        events: list[Event],
        report: CycleReport,
        now: datetime | None,
    ) -> EvaluatorState:
        """Evaluate and record, all at once; if that fails on something an event carries, find
        the events that make it fail (halving, each part in its own savepoint and from the state
        before it) and quarantine them, so that they never hold back the events behind them."""
        keys = Evaluator(self.config.automations).reads([*filling, *events], now=now)
        state = cycle.state(keys)
        try:
            with cycle.attempt():
                if filling:
                    self._evaluate(cycle, state, filling, fills=True, now=now)
                fired, held_back, paused = self._evaluate(
                    cycle, state, events, fills=False, now=now
                )
        except Exception as exc:
            if is_outage(exc):
                raise
            logger.warning("Evaluation failed (%s); finding the events that fail it.", exc)
        else:
            report.fired += fired
            report.held_back += held_back
            report.paused += paused
            return state
        state = cycle.state(keys)  # as the cycle found it: the failed attempt may have changed it

        def settle(part: list[Event], fills: bool, clock: datetime | None) -> None:
            nonlocal state
            snapshot = state.to_bytes()
            try:
                with cycle.attempt():
                    fired, held_back, paused = self._evaluate(
                        cycle, state, part, fills=fills, now=clock
                    )
            except Exception as exc:
                if is_outage(exc):
                    raise
                state = EvaluatorState.from_bytes(snapshot)
                if len(part) > 1:
                    middle = len(part) // 2
                    settle(part[:middle], fills, clock)
                    settle(part[middle:], fills, clock)
                    return
                error = f"{exc.__class__.__name__}: {exc}"
                logger.error(
                    "An event could not be evaluated and is quarantined (%s); "
                    "`ml-automations quarantine FILE` lists it.",
                    error,
                )
                cycle.quarantine(part[0], error)
                return
            report.fired += fired
            report.held_back += held_back
            report.paused += paused

        # The parts are judged without the clock (a part's runs may have newer events in the
        # next part), then the clock once, over them all.
        if filling:
            settle(filling, True, None)
        if events:
            settle(events, False, None)
        if now is not None:
            snapshot = state.to_bytes()
            try:
                with cycle.attempt():
                    if filling:
                        self._evaluate(cycle, state, [], fills=True, now=now, of=filling)
                    fired, held_back, paused = self._evaluate(
                        cycle, state, [], fills=False, now=now
                    )
            except Exception as exc:
                if is_outage(exc):
                    raise
                state = EvaluatorState.from_bytes(snapshot)
                logger.error("Stalled runs could not be judged this cycle (%s).", exc)
            else:
                report.fired += fired
                report.held_back += held_back
                report.paused += paused
        return state

    def _evaluate(
        self,
        cycle: Cycle,
        state: EvaluatorState,
        events: list[Event],
        *,
        fills: bool,
        now: datetime | None,
        of: list[Event] | None = None,
    ) -> tuple[list[Firing], list[Skip], list[str]]:
        """Evaluate events against `state`, with the clock at `now` (None: none), and record
        the firings; `fills`: what a tracker held before we watched it, which fills windows and
        fires nothing — the stalls of its runs (those of `of`, by default of `events`) that the
        clock says are past are judged then too, silently: no surprise backfill. Also the
        automations it paused, over their budget."""
        if not events and now is None:
            return [], [], []
        automations = self.config.automations
        if fills:
            runs = {(e.project, e.run_id) for e in (of or events) if isinstance(e, RunEvent)}
            batch = EventBatch.from_events(events)
            evaluator = Evaluator(automations, state)
            evaluator.evaluate(batch, since=_FAR_FUTURE, now=now, clock_runs=runs)
            return [], [], []
        left = cycle.budget_left(automations, utcnow())
        evaluator = Evaluator(
            automations,
            state,
            paused=cycle.paused(),
            budgets=left,
            watching_since=cycle.watching_since,
        )
        evaluation = evaluator.evaluate(EventBatch.from_events(events), now=now)
        budgets = {a.name: a.budget for a in automations if a.budget is not None}
        for name in evaluation.exhausted:
            cycle.pause(name, f"over its budget of {budgets[name].describe()}")
        held_back = [s for s in evaluation.skips if s.held_back]
        return cycle.record(evaluation.firings, held_back), held_back, evaluation.exhausted

    def evaluate(self, *, limit: int = 100_000, now: datetime | None = None) -> CycleReport:
        """Steps 1 and 2: poll every source, then commit."""
        now = now or utcnow()
        return self.commit(self.poll_all(now), limit=limit, now=now)

    # -- 3. deliver --------------------------------------------------------------------------

    def claim_due(self, now: datetime | None = None, limit: int = 500) -> list[tuple[Firing, int]]:
        """The due firings this sensor now holds the lease of, each with its attempt number."""
        now = now or utcnow()
        due = self.store.due(now, limit=limit)
        claimed = self.store.claim_many([f.firing_id for f in due], now, LEASE)
        return [(f, claimed[f.firing_id]) for f in due if f.firing_id in claimed]

    async def deliver(
        self,
        now: datetime | None = None,
        *,
        concurrency: int = DELIVERY_CONCURRENCY,
        run: Callable[[Firing, int], Awaitable[Delivery]] | None = None,
    ) -> list[Delivery]:
        """Step 3: carry out the actions of the firings that are due, `concurrency` at a time;
        each with `run` (default `deliver_one`; the flow runs each as a task run).

        The firings are claimed a batch at a time, and the lease of every firing this sensor
        holds — running, or waiting for its turn — is renewed every `LEASE / 4` until it is
        settled: no other sensor takes over a firing this one is delivering, and a sensor that
        dies lets go of its firings within `LEASE`."""
        gate = asyncio.Semaphore(concurrency)
        run = run or self.deliver_one

        async def one(leases: _Leases, firing: Firing, attempt: int) -> Delivery:
            try:
                async with gate:
                    return await self._within_deadline(firing, attempt, run)
            finally:
                leases.release(firing.firing_id)

        deliveries: list[Delivery] = []
        async with _Leases(self.store) as leases:
            while claimed := await asyncio.to_thread(self.claim_due, now):
                leases.hold(claimed)
                deliveries += await asyncio.gather(*(one(leases, f, a) for f, a in claimed))
        return deliveries

    async def _within_deadline(
        self, firing: Firing, attempt: int, run: Callable[[Firing, int], Awaitable[Delivery]]
    ) -> Delivery:
        """Run a claimed firing's action; give up on it (failed, tried again later) after
        `ACTION_DEADLINE`, so a hung call does not hold its firing, renewed, for ever."""
        automation = self.automations.get(firing.automation)
        # Each action keeps to its own `max_duration`; this is the backstop, with room for a
        # task run's own start.
        deadline = (
            automation.action.max_duration + 30.0
            if automation is not None
            else ACTION_DEADLINE.total_seconds()
        )
        try:
            return await asyncio.wait_for(
                run(firing, attempt), min(deadline, ACTION_DEADLINE.total_seconds())
            )
        except TimeoutError:
            error = f"the action did not finish within {deadline:.0f} s and was abandoned"
            return await self._failed(firing, attempt, error, retryable=True)

    async def deliver_one(self, firing: Firing, attempt: int) -> Delivery:
        """Run one claimed firing's action and settle it in the store."""
        automation = self.automations.get(firing.automation)
        try:
            if automation is None:
                raise ActionError(
                    f"Automation {firing.automation!r} is no longer in the config, so its action "
                    "is unknown; restore it and retry the firing.",
                    retryable=False,
                )
            result = await automation.action.deliver(firing)
        except ActionError as exc:
            return await self._failed(firing, attempt, str(exc), retryable=exc.retryable)
        except Exception as exc:  # an action's own bug must not stop the sensor; keep the error
            error = f"{exc.__class__.__name__}: {scrub(str(exc), limit=500)}"
            return await self._failed(firing, attempt, error, retryable=False)
        await asyncio.to_thread(self.store.finish, firing.firing_id, result)
        return Delivery(firing, "finished", result=result, attempt=attempt)

    async def _failed(
        self, firing: Firing, attempt: int, error: str, *, retryable: bool
    ) -> Delivery:
        """Settle a failed attempt: back off and try again, or `failed` once retries are spent."""
        again = retryable and attempt < MAX_ATTEMPTS
        retry_at = utcnow() + BACKOFF[min(attempt, len(BACKOFF)) - 1] if again else None
        await asyncio.to_thread(self.store.fail, firing.firing_id, error, retry_at=retry_at)
        return Delivery(
            firing,
            "pending" if again else "failed",
            error=error,
            attempt=attempt,
            retry_at=retry_at,
        )

    # -- all of it ---------------------------------------------------------------------------

    async def poll_and_commit(self, *, poll: bool = True) -> CycleReport:
        """Steps 1 and 2, every source polled at once (see `poll_within`); `poll=False`: only
        the inbox."""
        now = utcnow()
        polled = await self.poll_within(now) if poll else []
        return await asyncio.to_thread(self.commit, polled, now=now)

    async def cycle(self) -> CycleReport:
        """Poll, commit, then deliver what is due (without Prefect task runs)."""
        report = await self.poll_and_commit()
        report.deliveries = await self.deliver()
        return report

    def run_once(self) -> CycleReport:
        try:
            return asyncio.run(self.cycle())
        finally:
            self.leave()

    def leave(self) -> None:
        """This process stops working on the store: other sensors' shares of the partitions
        grow at once (see `partitions`)."""
        with contextlib.suppress(Exception):  # (a store that is down forgets it in seconds)
            self.store.leave()

    async def retry(self, firing_id: str) -> Delivery:
        """Run a failed firing's action again, now."""
        firing = self.store.reset(firing_id)
        attempt = self.store.claim(firing.firing_id, utcnow(), LEASE)
        if attempt is None:
            return Delivery(firing, "pending", error="another sensor is delivering it right now")
        async with _Leases(self.store) as leases:
            leases.hold([(firing, attempt)])
            return await self._within_deadline(firing, attempt, self.deliver_one)


class DeliveryPool:
    """Carries out due firings continuously, up to `concurrency` at once, apart from the cycles
    that record them — the long-running service's way to deliver (a cycle on its own uses
    `Sensor.deliver`, which returns once everything due is done).

    A slow action holds back neither the next cycle nor the firings behind it: a freed slot
    takes the next due firing at once, a commit that recorded firings `wake`s the pool, and each
    delivery goes to `on_delivery` as it ends. Claims and leases are `Sensor.deliver`'s, so
    several sensors (or a `retry`) never run one firing at once.

        async with DeliveryPool(sensor, on_delivery=print) as pool:
            await sensor.poll_and_commit()
            pool.wake()
            await pool.settle()  # (only to wait for what is due now; the service never does)
    """

    def __init__(
        self,
        sensor: Sensor,
        *,
        concurrency: int = DELIVERY_CONCURRENCY,
        on_delivery: Callable[[Delivery], Any] | None = None,
    ) -> None:
        self.sensor = sensor
        self.concurrency = concurrency
        self.on_delivery = on_delivery or (lambda _: None)
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._leases = _Leases(sensor.store)
        self._claiming: asyncio.Task[None] | None = None
        #: Set while nothing is running and the last claim found nothing due.
        self._idle = asyncio.Event()

    async def __aenter__(self) -> DeliveryPool:
        await self._leases.__aenter__()
        self._claiming = asyncio.create_task(self._claim_forever())
        return self

    async def __aexit__(self, *_: object) -> None:
        """Stop at once: actions in flight are cancelled, and their firings, still pending, go
        to whichever sensor claims them once their lease has run out (a deployment is started
        with the firing's idempotency key, so never twice)."""
        tasks = [t for t in (self._claiming, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._leases.__aexit__()

    def wake(self) -> None:
        """New firings may be due: claim them now."""
        self._idle.clear()
        self._wake.set()

    async def settle(self) -> None:
        """Wait until nothing is running and nothing is due."""
        self.wake()
        await self._idle.wait()

    async def _claim_forever(self) -> None:
        failures = 0
        while True:
            # Cleared before claiming (a commit meanwhile wakes us again), and also when every
            # slot is taken (then a delivery that ends wakes us; without this, the wait below
            # would return at once, for ever).
            self._wake.clear()
            free = self.concurrency - len(self._running)
            claimed: list[tuple[Firing, int]] = []
            if free > 0:
                try:
                    claimed = await asyncio.to_thread(self.sensor.claim_due, None, free)
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            "sensor %s: could not claim the firings that are due (%s); trying "
                            "again.",
                            self.sensor.name,
                            exc,
                        )
                    await asyncio.sleep(min(POOL_IDLE_CHECK * 2**failures, 60.0))
                    continue
                failures = 0
                self._leases.hold(claimed)
                for firing, attempt in claimed:
                    task = asyncio.create_task(self._deliver(firing, attempt))
                    self._running.add(task)
                if not claimed and not self._running:
                    self._idle.set()
            if claimed and len(claimed) == free:
                continue  # perhaps more are due: claim again as soon as a slot is free
            # (`asyncio.timeout`, not `wait_for`: a `wait_for` cancelled just as its timer fired
            # was seen to hang here on Python 3.11, so the pool never stopped; 3.12 rebuilt
            # `wait_for` on `asyncio.timeout`.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POOL_IDLE_CHECK):
                    await self._wake.wait()

    async def _deliver(self, firing: Firing, attempt: int) -> None:
        try:
            try:
                delivery = await self.sensor._within_deadline(
                    firing, attempt, self.sensor.deliver_one
                )
            except Exception as exc:  # its outcome could not be recorded (the store is down)
                logger.error(
                    "sensor %s: Firing %s of %r (%s): its outcome could not be recorded (%s); "
                    "it stays pending and is delivered again once its lease runs out.",
                    self.sensor.name,
                    firing.firing_id[:8],
                    firing.automation,
                    firing.subject,
                    exc,
                )
                return
            finally:
                self._leases.release(firing.firing_id)
            try:
                outcome = self.on_delivery(delivery)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception:  # reporting a delivery must not stop the pool
                logger.exception("Reporting a delivery failed.")
        finally:
            self._running.discard(asyncio.current_task())
            self._wake.set()  # a slot is free


class _Leases:
    """The firings a sensor holds, their leases renewed together every `LEASE / 4`."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.held: dict[str, int] = {}
        self._renewing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Leases:
        self._renewing = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._renewing is not None:
            self._renewing.cancel()

    def hold(self, claimed: Sequence[tuple[Firing, int]]) -> None:
        self.held.update((f.firing_id, attempt) for f, attempt in claimed)

    def release(self, firing_id: str) -> None:
        self.held.pop(firing_id, None)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 4)
            held = list(self.held.items())
            if not held:
                continue
            try:
                kept = await asyncio.to_thread(self.store.renew, held, utcnow() + LEASE)
            except Exception as exc:  # the store is down: the leases may run out; say so
                logger.warning("Could not renew the leases of %d firing(s): %s", len(held), exc)
                continue
            for firing_id, _ in held:
                if firing_id not in kept and firing_id in self.held:
                    logger.warning(
                        "Firing %s: its lease ran out while this sensor held it (the store was "
                        "unreachable?); another sensor may deliver it too.",
                        firing_id[:8],
                    )
                    self.release(firing_id)


def in_daemon_thread(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`function(*args)` in a daemon thread of its own, as a future of the running loop — for
    calls that may hang for ever (a tracker that never answers): unlike `asyncio.to_thread`,
    such a thread neither holds a worker of the loop's pool nor keeps the process from ending."""
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop ended meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="ml-automations-poll", daemon=True).start()
    return future


def poll_failure(exc: BaseException) -> str:
    """The error of a poll that failed in a way no source expected."""
    return (
        f"the poll failed ({exc.__class__.__name__}: {exc}); its cursor stays where it was and "
        "the poll is tried again next cycle."
    )


_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def sources_of(config: AutomationsConfig) -> list[Source]:
    """The sources a config names, each watching what its automations look at."""
    from prefect_ml_automations.config import MLflowSourceSettings
    from prefect_ml_automations.sources import mlflow, wandb

    sources: list[Source] = []
    for settings in config.sources:
        if isinstance(settings, MLflowSourceSettings):
            sources.append(mlflow.source_for(settings, config.automations))
        else:
            sources.append(wandb.source_for(settings, config.automations))
    return sources


def summary(report: CycleReport, *, delivered: bool = True) -> str:
    """One line for logs; without `delivered`, for a cycle whose firings are delivered apart
    (each delivery has a line of its own)."""
    problems = "".join(f"; source {e}" for e in report.source_errors)
    held = sum(skip.count for skip in report.held_back)
    evaluated = f"{report.events} event(s) evaluated, {len(report.fired)} firing(s)" + (
        f" ({held} held back)" if held else ""
    )
    if not delivered:
        return evaluated + problems
    done = sum(d.status == "finished" for d in report.deliveries)
    failed = sum(d.failed for d in report.deliveries)
    again = sum(d.failed and d.retry_at is not None for d in report.deliveries)
    retried = f" ({again} to be tried again)" if again else ""
    return f"{evaluated}, {done} action(s) done, {failed} failed{retried}{problems}"


def _announce_pause(name: str, report: CycleReport) -> None:
    """Say that a cycle paused `name` (over its budget): a warning, and the Prefect event
    `ml.automation.paused` (for Prefect automations that page someone)."""
    held = sum(
        skip.count
        for skip in report.held_back
        if skip.automation == name and skip.reason.startswith("over its budget")
    )
    logger.warning(
        "%s went over its budget and is paused (%d match(es) held back); "
        "`ml-automations resume` lets it fire again.",
        name,
        held,
    )
    from prefect.events import emit_event

    # (Prefect's own emit_event logs, and returns None, when it can not send)
    if (
        emit_event(
            event="ml.automation.paused",
            resource={"prefect.resource.id": f"ml-automations.automation.{name}"},
            payload={"automation": name, "reason": "budget", "held_back": held},
        )
        is None
    ):
        logger.warning("The event ml.automation.paused for %s could not be sent.", name)
