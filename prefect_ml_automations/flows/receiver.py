"""The push receiver with the sensor service beside it, woken by each push."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.redact import safe_url
from prefect_ml_automations.runner import service_status, wake_event
from prefect_ml_automations.store import StateStore

logger = logging.getLogger("prefect_ml_automations")


def serve_receiver(
    config_file: str,
    config: AutomationsConfig,
    *,
    host: str,
    port: int,
    insecure: bool,
    with_sensor: bool,
    interval: float,
) -> str | None:
    """Serve the receiver (and the sensor service, woken by each push) until SIGTERM or Ctrl-C;
    returns the signal's name (None when the server stopped by itself, e.g. its port was taken).

    Both stop cleanly: the server stops accepting, requests in flight are answered, the sensor
    finishes (or rolls back) its cycle and its flow run completes."""
    from prefect_ml_automations.flows.sensor import STOP_ON_SIGNALS, sensor_service
    from prefect_ml_automations.receiver import create_app

    store = StateStore(config.store, wait=True)  # while it is down: 503s, and /health says so
    app = create_app(
        config,
        store,
        wake=lambda: wake_event("default").set(),
        insecure=insecure,
        status=(lambda: service_status("default").to_dict()) if with_sensor else None,
    )
    # Uvicorn's own request and start-up lines stay quiet (warnings and errors still show);
    # the receiver says itself when it listens, what it refuses, and when it stops.
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    received: list[str] = []

    def stop(name: str) -> None:
        if received:  # a second Ctrl-C: stop waiting for open connections
            server.force_exit = True
        received.append(name)
        server.should_exit = True

    kinds = [
        kind
        for kind, given in (
            ("bearer token", config.receiver.token),
            ("signing secret", config.receiver.secret),
        )
        if given
    ]
    server.listening = (
        f"receiver: listening on http://{host}:{port} (POST /events, /mlflow, /wandb; "
        f"GET /health); config {config_file}, store {safe_url(config.store)}, auth: "
        + (" and ".join(kinds) or "none (--insecure, loopback only)")
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        wake_event("default")  # created on this loop, before the first push
        task = None
        if with_sensor:
            STOP_ON_SIGNALS.set(stop)  # the sensor's flow run stops first, then the server
            task = asyncio.create_task(sensor_service(config_file, interval=interval))
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.router.lifespan_context = lifespan

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        await server.serve()

    try:
        asyncio.run(main())
    except SystemExit:  # uvicorn could not start (it logged why: a port in use, …)
        return None
    if received:
        logger.info("receiver: stopped (%s).", received[0])
    return received[0] if received else None


class _Server(uvicorn.Server):
    """Uvicorn's server without its own signal handling: `serve_receiver` owns the signals (and
    hands them to the sensor's flow run while it runs), so a stop takes one clean path."""

    listening = ""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            logger.info(self.listening)
