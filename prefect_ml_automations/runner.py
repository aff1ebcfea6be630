"""The long-running sensor loop (`ml-automations run`, and the service beside the receiver).

The loop runs a cycle when it is woken (a push arrived), when the inbox has events (another
process ingested some; checked every quarter second, one cheap query), when a retry falls due,
or every `interval` seconds — never on an idle clock faster than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.errors import StateError
from prefect_ml_automations.sensor import CycleReport, Delivery, DeliveryPool, Sensor, summary
from prefect_ml_automations.store import StateStore, is_outage, store_problem, utcnow

logger = logging.getLogger("prefect_ml_automations")

#: How often an idle loop looks at the inbox (seconds).
INBOX_POLL = 0.25
#: Longest wait between attempts while the store (or anything else a cycle needs) is failing.
MAX_BACKOFF = 60.0
#: Seconds over which the service's busy cycles and deliveries make one artifact.
ARTIFACT_EVERY = 1.0
#: Longest wait for the last artifact when the service stops.
ARTIFACT_CLOSE_TIMEOUT = 5.0

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
    refresh: Callable[[], Awaitable[AutomationsConfig | None]] | None = None,
) -> None:
    """Run cycles until cancelled (or `cycles` of them have run, and what they fired is done).

    A cycle polls and commits; the firings it records are delivered by a `DeliveryPool` beside
    the loop, so a slow action never holds back the next cycle, and each firing's line is
    logged when its action ends. `refresh` (with the saved blocks): called before each poll of
    the trackers, it gives the config as it is saved now (None: as it was), so an automation
    changed, disabled or added in the Prefect UI takes effect without a restart.

    Nothing a cycle meets ends the loop: a failed action or source is logged (ERROR) and the
    firing retried or kept `failed`; a cycle that fails as a whole (the store is unreachable,
    locked or full; the Prefect API is down) is logged and tried again with back-off (1 s,
    2 s, 4 s … up to a minute), and the loop catches up once it is back. Everything a failed
    cycle did was rolled back, so nothing is lost or done twice."""
    from prefect_ml_automations.tasks.sensor import announce

    wake = wake or asyncio.Event()
    status = service_status(sensor.name)
    logger.info("sensor %s: started — %s", sensor.name, describe(sensor, interval))
    artifacts = _Artifacts(sensor.name) if in_flow_run() else None

    def delivered(delivery: Delivery) -> None:
        log = logger.error if delivery.failed else logger.info
        log("sensor %s: %s", sensor.name, delivery.describe())
        if artifacts is not None:
            announce(delivery, block_ids or {})
            artifacts.add(CycleReport(deliveries=[delivery]))

    async with (
        _one_prefect_client(artifacts is not None),
        _leaving(sensor),
        DeliveryPool(sensor, on_delivery=delivered) as pool,
        _closing(artifacts),
    ):
        done = 0
        loop = asyncio.get_running_loop()
        polled_at = -math.inf
        settled = False
        while cycles is None or done < cycles:
            # The trackers are polled every `interval`, or sooner for a wake-up or inbox
            # events — but not again within it by a cycle that comes only because other
            # sensors hold the partitions with events (it would poll them four times a second).
            poll = not settled or loop.time() - polled_at >= interval
            if poll:
                polled_at = loop.time()
            if poll and refresh is not None:
                await _refreshed(sensor, refresh, interval)
            try:
                report = await sensor.poll_and_commit(poll=poll)
            except Exception as exc:
                done += 1
                problem = _problem(exc)
                delay = status.cycle_failed(problem)
                log = (
                    logger.error
                    if status.failures == 1 or status.failures % 10 == 0
                    else logger.debug
                )
                log(
                    "sensor %s: the cycle failed (%s); trying again in %.0f s (failure %d in a "
                    "row).",
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
            if report.fired:
                pool.wake()
            if not report.idle:
                logger.info("sensor %s: %s", sensor.name, summary(report, delivered=False))
            for error in report.source_errors:
                logger.error("sensor %s: source %s", sensor.name, error)
            if report.quarantined:
                logger.error(
                    "sensor %s: %d event(s) could not be evaluated and are quarantined "
                    "(`ml-automations quarantine CONFIG` lists them).",
                    sensor.name,
                    report.quarantined,
                )
            if artifacts is not None and not report.idle:
                artifacts.add(report)
            if cycles is not None and done >= cycles:
                break
            # (A cycle that took nothing while the inbox holds events: other sensors hold
            # their partitions. It waits a moment, not spinning on them.)
            settled = report.events == 0
            woken = await _idle(sensor.store, wake, interval, settled=settled)
            settled = settled and not woken
        await pool.settle()  # (reached only with `cycles`: what they fired is done first)


class _Artifacts:
    """The service's artifacts in the Prefect UI: its busy cycles and deliveries, merged over
    `ARTIFACT_EVERY` seconds, so that a steady stream of pushes does not become a stream of
    artifact calls to the Prefect API (which creates the flow runs too), and no cycle waits for
    one."""

    def __init__(self, sensor: str) -> None:
        self.sensor = sensor
        self.pending: CycleReport | None = None
        self._added = asyncio.Event()
        self._writing = asyncio.create_task(self._write_forever())

    def add(self, report: CycleReport) -> None:
        self.pending = report if self.pending is None else self.pending.merged(report)
        self._added.set()

    async def _write_forever(self) -> None:
        while True:
            await self._added.wait()
            await asyncio.sleep(ARTIFACT_EVERY)
            await self._write()

    async def _write(self) -> None:
        from prefect_ml_automations.tasks.sensor import publish

        self._added.clear()
        report, self.pending = self.pending, None
        if report is None:
            return
        try:
            await publish(report, sensor=self.sensor)
        except Exception as exc:  # the UI is a view: a failed artifact stops nothing
            logger.warning("could not write the sensor's artifact: %s", exc)

    async def close(self) -> None:
        """Write what is pending (a few seconds at most), then stop."""
        self._writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writing
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._write(), ARTIFACT_CLOSE_TIMEOUT)


@contextlib.asynccontextmanager
async def _one_prefect_client(in_flow_run: bool) -> AsyncIterator[None]:
    """In a flow run, the deployments the service starts share one Prefect client: a client
    per flow run started costs a new connection and TLS set-up each time (~20 ms of CPU)."""
    if not in_flow_run:
        yield
        return
    from prefect_ml_automations.tasks.deployments import sharing_one_client

    async with sharing_one_client():
        yield


@contextlib.asynccontextmanager
async def _closing(artifacts: _Artifacts | None) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if artifacts is not None:
            await artifacts.close()


async def _refreshed(
    sensor: Sensor,
    refresh: Callable[[], Awaitable[AutomationsConfig | None]],
    interval: float,
) -> None:
    """Take up the config as saved now; if it can not be read, go on with the one in use."""
    try:
        config = await refresh()
    except Exception as exc:  # (the Prefect API is down, say: the sensor goes on as it was)
        logger.warning(
            "sensor %s: the saved automations could not be read again (%s); going on with "
            "those read before.",
            sensor.name,
            _problem(exc),
        )
        return
    if config is not None and sensor.reconfigure(config):
        logger.info(
            "sensor %s: the saved automations changed; now %s",
            sensor.name,
            describe(sensor, interval),
        )


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


@contextlib.asynccontextmanager
async def _leaving(sensor: Sensor) -> AsyncIterator[None]:
    """When the loop ends, the other sensors on the store take over its share at once."""
    try:
        yield
    finally:
        await asyncio.to_thread(sensor.leave)


async def _idle(
    store: StateStore, wake: asyncio.Event, interval: float, *, settled: bool = False
) -> bool:
    """Wait for a wake-up, inbox events, or the interval, whichever comes first; True for a
    wake-up. `settled`: the last cycle took nothing, so inbox events are looked for after a
    first `INBOX_POLL`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + interval
    while loop.time() < deadline:
        if wake.is_set():
            wake.clear()
            return True
        try:
            if not settled and await asyncio.to_thread(store.has_inbox):
                return False
        except Exception:  # the store is failing: the next cycle says so, and backs off
            return False
        with contextlib.suppress(TimeoutError):  # (not `wait_for`: see DeliveryPool)
            async with asyncio.timeout(min(INBOX_POLL, deadline - loop.time())):
                await wake.wait()
        settled = False
    return False
