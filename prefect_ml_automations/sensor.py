"""The sensor: read new events, judge them, record firings, then carry out their actions.

One cycle is two steps:

1. `evaluate` — in one store transaction: take the inbox (and, later, what the sources found),
   evaluate it with the persisted evaluator state, record the new firings as `pending` and save
   the new state. A crash anywhere here rolls all of it back; the next cycle does it again and,
   the evaluation being deterministic, finds the same firings.
2. `deliver` — for every pending firing that is due: claim it (a lease, so that two sensors never
   run one action at once), run the action, mark it `finished`, or `failed` with the error once
   its retries are spent. A firing left pending by a crash is simply due again later, and a
   deployment is started with an idempotency key, so a retried firing starts no second flow run.

>>> # Sensor(load_config("automations.yaml")).run_once()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.decisions import Firing, Skip
from prefect_ml_automations.errors import ActionError, SourceError
from prefect_ml_automations.evaluator import Evaluator, EventBatch
from prefect_ml_automations.events import Event
from prefect_ml_automations.sources import Source
from prefect_ml_automations.store import StateStore, utcnow

logger = logging.getLogger("prefect_ml_automations")

#: Attempts of a firing's action before it stays `failed`.
MAX_ATTEMPTS = 3
#: How long a claimed action may run before another sensor may take it over.
LEASE = timedelta(minutes=5)
#: Wait before the next attempt after a retryable failure, by attempt number.
BACKOFF = (timedelta(seconds=10), timedelta(seconds=60), timedelta(minutes=5))


@dataclass(frozen=True)
class Delivery:
    """What became of one firing's action."""

    firing: Firing
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class CycleReport:
    """What one cycle evaluated, fired, held back and delivered."""

    events: int = 0
    fired: list[Firing] = field(default_factory=list)
    held_back: list[Skip] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    source_errors: list[str] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not (self.events or self.fired or self.deliveries or self.source_errors)

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

    def evaluate(self, *, limit: int = 100_000, now: datetime | None = None) -> CycleReport:
        """Step 1: take the inbox, poll the sources, judge what they found and record the
        firings and every cursor — all in one transaction."""
        report = CycleReport()
        now = now or utcnow()
        with self.store.cycle(self.name) as cycle:
            events = cycle.take_inbox(limit)
            filling: list[Event] = []
            for source in self.sources:
                try:
                    poll = source.poll(cycle.cursor(source.name), now)
                except SourceError as exc:
                    # A tracker that is down holds back only itself: its cursor stays where it
                    # was (nothing unread is skipped) and pushed events go on firing.
                    report.source_errors.append(f"{source.name}: {exc}")
                    continue
                except Exception as exc:
                    # So does a source that trips over an answer it did not expect (or a bug of
                    # ours): one source's surprise must not stop every automation.
                    logger.exception("Source %r failed while polling.", source.name)
                    report.source_errors.append(
                        f"{source.name}: the poll failed ({exc.__class__.__name__}: {exc}); its "
                        "cursor stays where it was and the poll is tried again next cycle."
                    )
                    continue
                cycle.save_cursor(source.name, poll.cursor)
                events += poll.events
                filling += poll.filling
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

    async def deliver(self, now: datetime | None = None) -> list[Delivery]:
        """Step 2: carry out the actions of the firings that are due."""
        deliveries: list[Delivery] = []
        now = now or utcnow()
        while due := self.store.due(now, limit=500):
            claimed = self.store.claim_many([f.firing_id for f in due], now, LEASE)
            for firing in due:
                if firing.firing_id in claimed:  # else another sensor has it
                    deliveries.append(await self._deliver(firing, claimed[firing.firing_id]))
            if not claimed:
                break
        return deliveries

    async def _deliver(self, firing: Firing, attempt: int) -> Delivery:
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
            self.store.fail(firing.firing_id, str(exc), retry_at=retry_at)
            return Delivery(firing, "pending" if again else "failed", error=str(exc))
        except Exception as exc:  # an action's own bug must not stop the sensor; keep the error
            error = f"{exc.__class__.__name__}: {exc}"
            self.store.fail(firing.firing_id, error, retry_at=None)
            return Delivery(firing, "failed", error=error)
        self.store.finish(firing.firing_id, result)
        return Delivery(firing, "finished", result=result)

    async def cycle(self) -> CycleReport:
        """Evaluate, then deliver what is due."""
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
        return await self._deliver(firing, attempt)


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
    failed = sum(d.status == "failed" for d in report.deliveries)
    problems = "".join(f"; source {e}" for e in report.source_errors)
    return (
        f"{report.events} event(s) evaluated, {len(report.fired)} firing(s), "
        f"{done} action(s) done, {failed} failed{problems}"
    )
