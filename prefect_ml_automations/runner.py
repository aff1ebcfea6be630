"""The long-running sensor loop (`ml-automations run`, and the service beside the receiver).

The loop runs a cycle when it is woken (a push arrived), when the inbox has events (another
process ingested some; checked every quarter second, one cheap query), when a retry falls due,
or every `interval` seconds — never on an idle clock faster than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from prefect_ml_automations.errors import StateError
from prefect_ml_automations.sensor import CycleReport, Sensor, summary
from prefect_ml_automations.store import StateStore, is_outage, store_problem, utcnow

logger = logging.getLogger("prefect_ml_automations")

#: How often an idle loop looks at the inbox (seconds).
INBOX_POLL = 0.25
#: Longest wait between attempts while the store (or anything else a cycle needs) is failing.
MAX_BACKOFF = 60.0

_WAKE: dict[str, asyncio.Event] = {}
_STATUS: dict[str, ServiceStatus] = {}


def wake_event(sensor: str) -> asyncio.Event:
    """The event that wakes a sensor in this process (set by the receiver after a push)."""
    return _WAKE.setdefault(sensor, asyncio.Event())


@dataclass
class ServiceStatus:
    """How a long-running sensor is doing, for the receiver's `/health`."""

    last_cycle_at: datetime | None = None
    #: Since when cycles fail (None while they succeed), how many in a row, and why.
    failing_since: datetime | None = None
    failures: int = 0
    problem: str | None = None
    #: Sources whose last poll failed, with the error.
    sources: list[str] = field(default_factory=list)

    def cycle_failed(self, problem: str) -> float:
        """Note a failed cycle; returns how long to wait before the next attempt."""
        self.failures += 1
        self.failing_since = self.failing_since or utcnow()
        self.problem = problem
        return min(MAX_BACKOFF, 2.0 ** (self.failures - 1))

    def cycle_done(self, report: CycleReport) -> None:
        if self.failures:
            logger.info(
                "The sensor works again after %d failed cycle(s) since %s.",
                self.failures,
                f"{self.failing_since:%H:%M:%S} UTC",
            )
        self.last_cycle_at = utcnow()
        self.failing_since, self.failures, self.problem = None, 0, None
        self.sources = list(report.source_errors)

    def to_dict(self) -> dict[str, Any]:
        """What `/health` shows; `problem` is set when the sensor is degraded."""
        problem = self.problem or (f"source {self.sources[0]}" if self.sources else None)
        shown: dict[str, Any] = {
            "last_cycle_at": self.last_cycle_at.isoformat() if self.last_cycle_at else None,
            "problem": problem,
        }
        if self.failing_since is not None:
            shown.update(failing_since=self.failing_since.isoformat(), failures=self.failures)
        if self.sources:
            shown["sources"] = self.sources
        return shown


def service_status(sensor: str) -> ServiceStatus:
    """The status of the sensor of that name running in this process."""
    return _STATUS.setdefault(sensor, ServiceStatus())


async def sensor_loop(
    sensor: Sensor,
    *,
    interval: float,
    wake: asyncio.Event | None = None,
    cycles: int | None = None,
    block_ids: Mapping[str, UUID] | None = None,
) -> None:
    """Run cycles until cancelled (or `cycles` of them have run).

    Nothing a cycle meets ends the loop: a failed action or source is logged (ERROR) and the
    firing retried or kept `failed`; a cycle that fails as a whole (the store is unreachable,
    locked or full; the Prefect API is down) is logged and tried again with back-off (1 s,
    2 s, 4 s … up to a minute), and the loop catches up once it is back. Everything a failed
    cycle did was rolled back, so nothing is lost or done twice."""
    from prefect_ml_automations.tasks.sensor import announce, publish

    wake = wake or asyncio.Event()
    status = service_status(sensor.name)
    logger.info("sensor %s: started — %s", sensor.name, describe(sensor, interval))
    done = 0
    while cycles is None or done < cycles:
        try:
            report = await sensor.cycle()
        except Exception as exc:
            done += 1
            problem = _problem(exc)
            delay = status.cycle_failed(problem)
            log = (
                logger.error if status.failures == 1 or status.failures % 10 == 0 else logger.debug
            )
            log(
                "sensor %s: the cycle failed (%s); trying again in %.0f s (failure %d in a row).",
                sensor.name,
                problem,
                delay,
                status.failures,
                exc_info=not is_outage(exc) and status.failures == 1,
            )
            if cycles is not None and done >= cycles:
                break
            await asyncio.sleep(delay)
            continue
        done += 1
        status.cycle_done(report)
        if not report.idle:
            logger.info("sensor %s: %s", sensor.name, summary(report))
        for error in report.source_errors:
            logger.error("sensor %s: source %s", sensor.name, error)
        for delivery in report.deliveries:  # one line per firing: what its action did
            log = logger.error if delivery.failed else logger.info
            log("sensor %s: %s", sensor.name, delivery.describe())
        if report.quarantined:
            logger.error(
                "sensor %s: %d event(s) could not be evaluated and are quarantined "
                "(`ml-automations quarantine CONFIG` lists them).",
                sensor.name,
                report.quarantined,
            )
        if in_flow_run():
            try:
                for delivery in report.deliveries:
                    announce(delivery, block_ids or {})
                if not report.idle:
                    await publish(report, sensor=sensor.name)
            except Exception as exc:  # the UI is a view: a failed artifact stops nothing
                logger.warning("could not write the cycle's artifact or events: %s", exc)
        if cycles is not None and done >= cycles:
            break
        await _idle(sensor.store, wake, interval)


def describe(sensor: Sensor, interval: float) -> str:
    """What a starting sensor watches, in one line (no credentials: the store without them)."""
    from prefect_ml_automations.redact import safe_url

    sources = ", ".join(s.name for s in sensor.sources) or "none (pushed and ingested events)"
    count = len(sensor.automations)
    return (
        f"{count} automation{'s' if count != 1 else ''}, store {safe_url(sensor.store.url)}, "
        f"sources: {sources}; polls every {interval:g} s"
    )


def _problem(exc: BaseException) -> str:
    if isinstance(exc, StateError):  # "The state store '…' can not be opened: …"
        return str(exc)[:1].lower() + str(exc)[1:]
    if isinstance(exc, SQLAlchemyError):
        return f"the state store is unavailable: {store_problem(exc)}"
    return f"{exc.__class__.__name__}: {exc}"


def in_flow_run() -> bool:
    """Artifacts belong to flow runs: only a loop run as a flow (`sensor_service`) writes them."""
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


async def _idle(store: StateStore, wake: asyncio.Event, interval: float) -> None:
    """Wait for a wake-up, inbox events, or the interval, whichever comes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + interval
    while loop.time() < deadline:
        if wake.is_set():
            wake.clear()
            return
        try:
            if await asyncio.to_thread(store.has_inbox):
                return
        except Exception:  # the store is failing: the next cycle says so, and backs off
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(INBOX_POLL, deadline - loop.time()))
