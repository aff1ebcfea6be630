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
from uuid import UUID

from prefect_ml_automations.sensor import Sensor, summary
from prefect_ml_automations.store import StateStore

logger = logging.getLogger("prefect_ml_automations")

#: How often an idle loop looks at the inbox (seconds).
INBOX_POLL = 0.25

_WAKE: dict[str, asyncio.Event] = {}


def wake_event(sensor: str) -> asyncio.Event:
    """The event that wakes a sensor in this process (set by the receiver after a push)."""
    return _WAKE.setdefault(sensor, asyncio.Event())


async def sensor_loop(
    sensor: Sensor,
    *,
    interval: float,
    wake: asyncio.Event | None = None,
    cycles: int | None = None,
    block_ids: Mapping[str, UUID] | None = None,
) -> None:
    """Run cycles until cancelled (or `cycles` of them have run). A failed action or source is
    logged (ERROR) and the loop goes on: the firing is retried or stays `failed` in the history."""
    from prefect_ml_automations.tasks.sensor import announce, publish

    wake = wake or asyncio.Event()
    done = 0
    while cycles is None or done < cycles:
        report = await sensor.cycle()
        done += 1
        if not report.idle:
            logger.info("sensor %s: %s", sensor.name, summary(report))
        for error in report.source_errors:
            logger.error("sensor %s: source %s", sensor.name, error)
        for delivery in report.deliveries:
            if delivery.failed:
                logger.error("sensor %s: %s", sensor.name, delivery.describe())
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
        if await asyncio.to_thread(store.has_inbox):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(INBOX_POLL, deadline - loop.time()))
