"""The sensor: read new events, judge them, record firings, then carry out their actions.

One cycle is four steps (the flow `ml-automations-sensor` runs each as Prefect task runs):

1. `poll` — each source reads what changed since its cursor, *outside* the store's lock (a slow
   tracker holds up nobody), starting from the cursor read just before.
2. `commit` — in one store transaction: take the inbox, keep each poll whose source's cursor is
   still the one it started from (compare and swap: a poll that raced another sensor or a
   webhook is dropped and done again next cycle, never counted twice), evaluate everything with
   the persisted evaluator state, record the new firings as `pending`, save cursors and state.
   A crash anywhere here rolls all of it back; the evaluation being deterministic, the next
   cycle finds the same firings.
3. `deliver` — for every pending firing that is due: claim it (a lease, so two sensors never run
   one action at once), run the action — several at a time, up to `DELIVERY_CONCURRENCY` —, mark
   it `finished`, or `failed` with the error once its retries are spent. A firing left pending by
   a crash is due again later, and a deployment is started with an idempotency key, so a retried
   firing starts no second flow run.
4. `publish` (flows only) — the cycle's artifact for the Prefect UI.

Example (no Prefect API needed):

    report = Sensor(load_config("automations.yaml")).run_once()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.decisions import Firing, Skip
from prefect_ml_automations.errors import ActionError, SourceError
from prefect_ml_automations.evaluator import Evaluator, EventBatch
from prefect_ml_automations.events import Event
from prefect_ml_automations.sources import Poll, Source
from prefect_ml_automations.store import StateStore, utcnow

logger = logging.getLogger("prefect_ml_automations")

#: Attempts of a firing's action before it stays `failed`.
MAX_ATTEMPTS = 3
#: How long a claimed action may run before another sensor may take it over.
LEASE = timedelta(minutes=5)
#: Wait before the next attempt after a retryable failure, by attempt number.
BACKOFF = (timedelta(seconds=10), timedelta(seconds=60), timedelta(minutes=5))
#: Actions run at once by one sensor (a burst of 1,000 firings is not delivered one by one).
DELIVERY_CONCURRENCY = 16


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
                f"tried again after {self.retry_at:%H:%M:%S} UTC"
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

    @property
    def idle(self) -> bool:
        return not (
            self.events
            or self.fired
            or self.deliveries
            or self.source_errors
            or self.config_problems
        )

    @property
    def problems(self) -> list[str]:
        """What makes this cycle a failed one: bad blocks, sources down, failed actions."""
        return [
            *self.config_problems,
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
    detail = ""
    if delivery is not None:
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

    # -- 1. poll -----------------------------------------------------------------------------

    def read_cursors(self) -> dict[str, dict[str, Any] | None]:
        """Each source's cursor as stored now (one short read; no lock held)."""
        return self.store.cursors([s.name for s in self.sources])

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
        cursors = self.read_cursors()
        return [self.poll(source, cursors.get(source.name), now) for source in self.sources]

    # -- 2. commit ---------------------------------------------------------------------------

    def commit(
        self, polled: Sequence[Polled], *, limit: int = 100_000, now: datetime | None = None
    ) -> CycleReport:
        """In one transaction: take the inbox, keep the polls whose cursor nobody moved meanwhile,
        judge all of it, record the firings, save the cursors and the evaluator state."""
        report = CycleReport()
        now = now or utcnow()
        with self.store.cycle(self.name) as cycle:
            events = cycle.take_inbox(limit)
            filling: list[Event] = []
            for one in polled:
                if one.poll is None:
                    report.source_errors.append(f"{one.source}: {one.error}")
                    continue
                if cycle.cursor(one.source) != one.started_from:
                    # Another sensor, or a webhook, moved the cursor while we polled: what we
                    # found is theirs too. Drop it; the next cycle polls from their cursor.
                    report.dropped_polls.append(one.source)
                    continue
                cycle.save_cursor(one.source, one.poll.cursor)
                events += one.poll.events
                filling += one.poll.filling
            if not events and not filling:
                return report
            state = cycle.state()
            evaluator = Evaluator(self.config.automations, state)
            if filling:  # what a tracker held before we watched it: fills windows, fires nothing
                evaluator.evaluate(EventBatch.from_events(filling), since=_FAR_FUTURE)
            evaluation = evaluator.evaluate(EventBatch.from_events(events))
            held_back = [s for s in evaluation.skips if s.held_back]
            report.events = len(events) + len(filling)
            report.fired = cycle.record(evaluation.firings, held_back)
            report.held_back = held_back
            cycle.save(state)
        return report

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
        each with `run` (default `deliver_one`; the flow runs each as a task run)."""
        gate = asyncio.Semaphore(concurrency)
        run = run or self.deliver_one

        async def one(firing: Firing, attempt: int) -> Delivery:
            async with gate:
                return await run(firing, attempt)

        deliveries: list[Delivery] = []
        while claimed := await asyncio.to_thread(self.claim_due, now):
            deliveries += await asyncio.gather(*(one(f, a) for f, a in claimed))
        return deliveries

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
            again = exc.retryable and attempt < MAX_ATTEMPTS
            retry_at = utcnow() + BACKOFF[min(attempt, len(BACKOFF)) - 1] if again else None
            await asyncio.to_thread(self.store.fail, firing.firing_id, str(exc), retry_at=retry_at)
            return Delivery(
                firing,
                "pending" if again else "failed",
                error=str(exc),
                attempt=attempt,
                retry_at=retry_at,
            )
        except Exception as exc:  # an action's own bug must not stop the sensor; keep the error
            error = f"{exc.__class__.__name__}: {exc}"
            await asyncio.to_thread(self.store.fail, firing.firing_id, error, retry_at=None)
            return Delivery(firing, "failed", error=error, attempt=attempt)
        await asyncio.to_thread(self.store.finish, firing.firing_id, result)
        return Delivery(firing, "finished", result=result, attempt=attempt)

    # -- all of it ---------------------------------------------------------------------------

    async def cycle(self) -> CycleReport:
        """Poll, commit, then deliver what is due (without Prefect task runs)."""
        report = await asyncio.to_thread(self.evaluate)
        report.deliveries = await self.deliver()
        return report

    def run_once(self) -> CycleReport:
        return asyncio.run(self.cycle())

    async def retry(self, firing_id: str) -> Delivery:
        """Run a failed firing's action again, now."""
        firing = self.store.reset(firing_id)
        attempt = self.store.claim(firing.firing_id, utcnow(), LEASE)
        if attempt is None:
            return Delivery(firing, "pending", error="another sensor is delivering it right now")
        return await self.deliver_one(firing, attempt)


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


def summary(report: CycleReport) -> str:
    """One line for logs."""
    done = sum(d.status == "finished" for d in report.deliveries)
    failed = sum(d.failed for d in report.deliveries)
    problems = "".join(f"; source {e}" for e in report.source_errors)
    return (
        f"{report.events} event(s) evaluated, {len(report.fired)} firing(s), "
        f"{done} action(s) done, {failed} failed{problems}"
    )
