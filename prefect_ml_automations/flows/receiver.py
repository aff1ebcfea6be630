"""The push receiver with the sensor service beside it, woken by each push."""

from __future__ import annotations

import asyncio
import contextlib

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.runner import service_status, wake_event
from prefect_ml_automations.store import StateStore


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

    store = StateStore(config.store, wait=True)  # while it is down: 503s, and /health says so
    app = create_app(
        config,
        store,
        wake=lambda: wake_event("default").set(),
        insecure=insecure,
        status=(lambda: service_status("default").to_dict()) if with_sensor else None,
    )
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
