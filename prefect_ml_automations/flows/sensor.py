"""The sensor as Prefect flows: one cycle (what a scheduled deployment runs), or a long-running
service.

A cycle is a flow run made of task runs — one poll per source, the commit, one delivery per
firing, the publication — so the Prefect UI shows what each cycle read, fired and started. A
cycle in which a block could not be read, a source failed or an action failed ends **Failed**,
with an ERROR line for each problem; everything else in it still ran. Every busy cycle leaves a
table artifact (`ml-automations-sensor`) and, when something fired, a report with plots
(`ml-automations-report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.utilities.annotations import quote
from sqlalchemy.exc import SQLAlchemyError

from prefect_ml_automations.config import AutomationsConfig, load_config
from prefect_ml_automations.errors import SourceError, StateError
from prefect_ml_automations.runner import sensor_loop, wake_event
from prefect_ml_automations.sensor import (
    DELIVERY_CONCURRENCY,
    CycleReport,
    Delivery,
    Polled,
    Sensor,
    poll_failure,
    summary,
)
from prefect_ml_automations.sources import Poll
from prefect_ml_automations.store import StateStore, store_problem, utcnow
from prefect_ml_automations.tasks.deployments import sharing_one_client
from prefect_ml_automations.tasks.sensor import (
    DeliveryFailed,
    commit_cycle,
    deliver_firing,
    poll_source,
    publish_cycle,
)


@flow(name="ml-automations-sensor", log_prints=True)
async def sensor_cycle(config_file: str | None = None, sensor: str = "default") -> Any:
    """One sensor cycle: poll the trackers, evaluate what is new, record firings, run actions.

    Returns counts (`events`, `fired`, `finished`, `failed`); the run ends Failed when a block,
    a source or an action failed.

    Args:
        config_file: Path of the config file (YAML) on the machine that runs the flow. Leave it
            empty (no config file) to read the saved blocks: the automations, trackers,
            receiver and store that `ml-automations apply` saved or the UI edited.
        sensor: The sensor's name; its evaluator state in the store is kept under it.
    """
    logger = get_run_logger()
    config, problems, block_ids = await _config(config_file)
    for problem in problems:
        logger.error(problem)
    try:
        worker = Sensor(config, name=sensor)
        try:
            async with heartbeats(worker.store, sensor):
                report = await run_cycle(worker, block_ids)
        finally:
            await asyncio.to_thread(worker.leave)
    except (StateError, SQLAlchemyError) as exc:
        # Nothing of the cycle was kept (its transaction rolled back): the next run does it.
        problem = (
            str(exc)
            if isinstance(exc, StateError)
            else f"The state store is unavailable: {store_problem(exc)}"
        )
        logger.error(problem)
        return Failed(message=problem, data={"events": 0, "fired": 0, "finished": 0, "failed": 0})
    report.config_problems = problems
    if not report.idle:
        await publish_cycle(quote(report), sensor)  # type: ignore[call-overload]
    counts = {
        "events": report.events,
        "fired": len(report.fired),
        "finished": sum(d.status == "finished" for d in report.deliveries),
        "failed": sum(d.failed for d in report.deliveries),
    }
    logger.info(summary(report))
    if report.problems:
        return Failed(
            message=f"{len(report.problems)} problem(s) in this cycle: "
            + " | ".join(report.problems),
            data=counts,
        )
    return counts


async def run_cycle(
    sensor: Sensor, block_ids: dict[str, UUID], *, concurrency: int = DELIVERY_CONCURRENCY
) -> CycleReport:
    """Poll (a task run per source), commit (one), deliver (a task run per firing,
    `concurrency` at a time). Called inside a flow run."""
    logger = get_run_logger()
    now = utcnow()
    sources = await asyncio.to_thread(sensor.to_poll, now)
    cursors = await asyncio.to_thread(sensor.read_cursors)
    states = await asyncio.gather(
        *(_final_state(poll_source, source, cursors.get(source.name), now) for source in sources)
    )
    polled: list[Polled] = []
    for polled_source, state in zip(sources, states, strict=True):
        outcome = await state.aresult(raise_on_failure=False)
        cursor = cursors.get(polled_source.name)
        if isinstance(outcome, Poll):
            polled.append(Polled(polled_source.name, cursor, outcome))
        else:
            error = str(outcome) if isinstance(outcome, SourceError) else poll_failure(outcome)
            polled.append(Polled(polled_source.name, cursor, error=error))
    report = await commit_cycle(sensor, quote(polled))
    for name in report.dropped_polls:
        logger.info(
            "Source %r: its cursor moved while it was polled (another sensor or a webhook); "
            "this poll is dropped and the next cycle polls from there.",
            name,
        )
    for error in report.source_errors:
        logger.error("Source %s", error)
    report.deliveries = await deliver_due(sensor, block_ids, concurrency=concurrency)
    for delivery in report.deliveries:
        if delivery.failed:
            logger.error(delivery.describe())
    return report


async def deliver_due(
    sensor: Sensor, block_ids: dict[str, UUID], *, concurrency: int = DELIVERY_CONCURRENCY
) -> list[Delivery]:
    """Every due firing's action as a task run, `concurrency` at a time."""

    async def as_task_run(firing: Any, attempt: int) -> Delivery:
        state = await _final_state(deliver_firing, sensor, firing, attempt, block_ids)
        outcome = await state.aresult(raise_on_failure=False)
        if isinstance(outcome, Delivery):
            return outcome
        if isinstance(outcome, DeliveryFailed):
            return outcome.delivery
        # The task itself broke (not the action): the firing stays claimed until its lease
        # runs out, then it is due again.
        error = f"{outcome.__class__.__name__}: {outcome}"
        return Delivery(firing, "pending", error=error, attempt=attempt)

    async with sharing_one_client():
        return await sensor.deliver(concurrency=concurrency, run=as_task_run)


async def _final_state(task: Any, *args: Any) -> State[Any]:
    """Run a task and return its final state, failed or not. (Prefect's type hints say calling
    an async task with `return_state=True` gives the state itself; it gives a coroutine.)"""
    return await task(*args, return_state=True)  # type: ignore[no-any-return]


async def _config(config_file: str | None) -> tuple[AutomationsConfig, list[str], dict[str, UUID]]:
    """The config (from the file, or from the saved blocks), the blocks' problems, and the
    automations' block ids (for the firing events)."""
    from prefect_ml_automations.blocks import load_saved_config
    from prefect_ml_automations.blocks.saved import automation_block_ids

    if config_file is None:
        saved = await load_saved_config()
        return saved.config, saved.problems, saved.block_ids
    config = load_config(config_file)
    return config, [], await automation_block_ids([a.name for a in config.automations])


@flow(name="ml-automations-sensor-service", log_prints=True)
async def sensor_service(
    config_file: str | None = None, interval: float = 30.0, sensor: str = "default"
) -> None:
    """The sensor as one long-running flow run: cycles until cancelled, each busy cycle leaving
    its artifact on this run. Woken early by pushes when it runs beside the receiver; a failed
    action or source is logged and the service goes on.

    Args:
        config_file: Path of the config file (YAML); empty: read the saved blocks.
        interval: Seconds between polls of the trackers (pushed events wake it sooner).
        sensor: The sensor's name; its evaluator state in the store is kept under it.
    """
    config, problems, block_ids = await _config(config_file)
    for problem in problems:
        get_run_logger().error(problem)
    # A store that is down when the service starts is waited for, as one that goes down later.
    worker = Sensor(config, StateStore(config.store, wait=True), name=sensor)
    reported = set(problems)

    async def saved_now() -> AutomationsConfig:
        """The blocks as saved now (a box ticked in the UI takes effect on the next poll)."""
        config, problems, ids = await _config(None)
        for problem in set(problems) - reported:
            get_run_logger().error(problem)
        reported.update(problems)
        block_ids.update(ids)
        return config

    async with heartbeats(worker.store, sensor):
        looping = sensor_loop(
            worker,
            interval=interval,
            wake=wake_event(sensor),
            block_ids=block_ids,
            refresh=saved_now if config_file is None else None,
        )
        on_signal = STOP_ON_SIGNALS.get()
        if on_signal is not None:
            await until_signalled(looping, sensor, on_signal)
        else:
            await looping


#: Set by the commands whose process is the service (`run`, `receive`): SIGTERM and Ctrl-C then
#: stop the loop between cycles (a cycle in flight finishes or rolls back) and the flow run
#: completes, instead of Prefect's engine crashing it. The value is then called with the
#: signal's name (`receive` stops its HTTP server with it), and stays the process's handler.
STOP_ON_SIGNALS: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "stop_on_signals", default=None
)


async def until_signalled(looping: Any, sensor: str, then: Callable[[str], None]) -> None:
    """Run the loop until SIGTERM or SIGINT, stop it cleanly, then call `then(signal name)`.

    Prefect's flow engine puts its own SIGTERM handler in place while the flow runs (one that
    crashes the run); the loop's handlers replace it for as long as the service loops."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(looping)
    received: list[str] = []

    def stop(name: str) -> None:
        received.append(name)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
        get_run_logger().info("sensor %s: stopped (%s).", sensor, received[0])
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, then, sig.name)  # what the process does from now on
    if received:
        then(received[0])


#: How often a sensor flow run says it is alive, and after how long without that it is dead.
HEARTBEAT = timedelta(seconds=20)
SILENT_AFTER = timedelta(seconds=90)


@contextlib.asynccontextmanager
async def heartbeats(store: StateStore, sensor: str) -> AsyncIterator[None]:
    """While a sensor flow run works, its heartbeat in the store; when it starts, the sensor
    flow runs whose heartbeat stopped (their process was killed) are marked Crashed in Prefect
    instead of staying Running for ever. None of this stops the sensor when it fails."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        yield
        return
    run_id = str(context.flow_run.id)
    logger = get_run_logger()

    async def beat() -> None:
        while True:
            try:
                await asyncio.to_thread(store.beat, run_id, sensor, utcnow())
            except Exception as exc:  # the store is down: the cycle says so, louder
                logger.debug("Heartbeat not written: %s", exc)
            await asyncio.sleep(HEARTBEAT.total_seconds())

    beating = asyncio.create_task(beat())
    try:
        await _crash_silent_runs(store, logger)
    except Exception as exc:
        logger.warning("Could not look for killed sensor flow runs: %s", exc)
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(store.stopped, run_id)


async def _crash_silent_runs(store: StateStore, logger: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    silent = await asyncio.to_thread(store.silent_runs, utcnow() - SILENT_AFTER)
    if not silent:
        return
    async with get_client() as client:
        for flow_run_id, last in silent:
            try:
                flow_run = await client.read_flow_run(UUID(flow_run_id))
            except Exception:  # deleted meanwhile: nothing to mark
                continue
            if flow_run.state is None or flow_run.state.is_final():
                continue
            message = (
                f"Its sensor stopped without ending the run (no heartbeat since {last:%H:%M:%S} "
                "UTC: the process was killed); marked crashed by the next sensor run."
            )
            await client.set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
            logger.warning("Sensor flow run %s (%s) %s", flow_run.name, flow_run_id, message)


def sensor_deployment(config_file: Path | None, *, interval: float, name: str = "sensor") -> Any:
    """The sensor as a deployment that runs one cycle every `interval` seconds (for `serve`)."""
    return sensor_cycle.to_deployment(
        name,
        interval=interval,
        parameters={"config_file": str(config_file.resolve()) if config_file else None},
        description=(
            "The ml-automations sensor: one cycle per run (poll, evaluate, fire). "
            + ("Reads the saved blocks." if config_file is None else f"Reads {config_file}.")
        ),
    )
