"""Long-running processes: the sensor loop, and the receiver with the sensor beside it.

The loop runs a cycle when it is woken (a push arrived), when the inbox has events (another
process ingested some; checked every quarter second, one cheap query), when a retry falls due,
or every `interval` seconds — never on an idle clock faster than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.flows.sensor import publish
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
    sensor: Sensor, *, interval: float, wake: asyncio.Event | None = None, cycles: int | None = None
) -> None:
    """Run cycles until cancelled (or `cycles` of them have run)."""
    wake = wake or asyncio.Event()
    done = 0
    while cycles is None or done < cycles:
        report = await sensor.cycle()
        done += 1
        if not report.idle:
            logger.info("sensor %s: %s", sensor.name, summary(report))
        if not report.idle and in_flow_run():
            try:
                await publish(report, sensor=sensor.name)
            except Exception as exc:  # the UI is a view: a failed artifact stops nothing
                logger.warning("could not write the cycle's artifact: %s", exc)
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


def serve_receiver(
    config_file: str,
    config: AutomationsConfig,
    *,
    host: str,
    port: int,
    insecure: bool,
    with_sensor: bool,
    interval: float,
) -> None:
    """Serve the receiver (and the sensor service, woken by each push) until interrupted."""
    import uvicorn

    from prefect_ml_automations.receiver import create_app

    store = StateStore(config.store)
    app = create_app(config, store, wake=lambda: wake_event("default").set(), insecure=insecure)
    if with_sensor:
        from prefect_ml_automations.flows.sensor import sensor_service

        @contextlib.asynccontextmanager
        async def lifespan(_: object):  # type: ignore[no-untyped-def]
            wake_event("default")  # created on uvicorn's loop, before the first push
            task = asyncio.create_task(sensor_service(config_file, interval=interval))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.router.lifespan_context = lifespan
    uvicorn.run(app, host=host, port=port, log_level="info")
