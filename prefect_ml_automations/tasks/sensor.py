"""The sensor cycle's steps as Prefect tasks: poll a source, commit, deliver a firing, publish.

`flows.sensor.sensor_cycle` composes them, so each cycle's task runs show in the Prefect UI: one
per source polled, the transaction, one per action delivered. The work itself is `Sensor`'s
(plain functions, tested without Prefect); these wrappers add what Prefect gives: retries of a
poll on transient errors, a task run that is Failed when its action failed, the firing events
and the cycle's artifacts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from prefect_ml_automations.automations.actions import (
    emit_firing_event,
    firing_event,
    send_event,
)
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.errors import ActionError, SourceUnavailable
from prefect_ml_automations.sensor import (
    POLL_TIMEOUT,
    CycleReport,
    Delivery,
    Polled,
    Sensor,
    in_daemon_thread,
    summary,
)
from prefect_ml_automations.sources import Poll, Source

logger = logging.getLogger("prefect_ml_automations")

#: Table artifact of each busy cycle; markdown report of what fired (with plots).
ARTIFACT_KEY = "ml-automations-sensor"
REPORT_KEY = "ml-automations-report"


def _transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a poll only when the tracker could not be reached or was busy — not when it hung
    (the poll's time is up; the next cycle asks again)."""
    error = state.data
    return isinstance(error, (SourceUnavailable, OSError)) and not isinstance(error, TimeoutError)


@task(
    name="poll-source",
    task_run_name="poll {source.name}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_transient,
    timeout_seconds=POLL_TIMEOUT.total_seconds(),
    cache_policy=NO_CACHE,
)
async def poll_source(source: Source, cursor: dict[str, Any] | None, now: datetime) -> Poll:
    """What `source` found since `cursor` (outside the store's lock). A tracker that hangs
    fails the task after `POLL_TIMEOUT`; its poll is left in a daemon thread, which does not
    keep the flow run's process alive."""
    return await in_daemon_thread(source.poll, cursor, now)


@task(name="commit", task_run_name="commit {sensor.name}", cache_policy=NO_CACHE)
async def commit_cycle(sensor: Sensor, polled: Sequence[Polled]) -> CycleReport:
    """The one transaction: inbox, cursors (compare and swap), evaluate, record, state."""
    return await asyncio.to_thread(sensor.commit, polled)


class DeliveryFailed(ActionError):
    """A firing's action failed: its task run is Failed, and the delivery says what became of
    the firing (tried again later, or failed for good)."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery.describe(), retryable=delivery.retry_at is not None)
        self.delivery = delivery


@task(
    name="deliver-firing",
    task_run_name="{firing.automation} · {firing.event_type} · {firing.subject}",
    cache_policy=NO_CACHE,
)
async def deliver_firing(
    sensor: Sensor,
    firing: Firing,
    attempt: int,
    block_ids: Mapping[str, UUID] | None = None,
) -> Delivery:
    """Run one claimed firing's action; the task run fails when the action did."""
    delivery = await sensor.deliver_one(firing, attempt)
    await aannounce(delivery, block_ids or {})  # confirmed by the API, or a WARNING
    if delivery.failed:
        # A Failed state, not an exception: an action's failure is news, not a bug with a
        # traceback. The flow logs it (ERROR) and reads the delivery from the state.
        return Failed(message=delivery.describe(), data=DeliveryFailed(delivery))  # type: ignore[return-value]
    return delivery


def announce(delivery: Delivery, block_ids: Mapping[str, UUID]) -> None:
    """The firing's Prefect event, `ml.automation.firing.finished` or `.failed`, related to the
    automation's block and to the deployment and flow run the action started.

    Handed to Prefect's events worker, which sends it in the background (one connection for all
    events, flushed when the process ends) — it can not say whether the Prefect API took it.
    Never raises: an event that could not even be queued is a WARNING in the log, and the cycle
    goes on. `aannounce` is the same event, sent and confirmed before it returns.
    """
    name, firing, payload, related, key = _announcement(delivery, block_ids)
    try:
        emitted = emit_firing_event(name, firing, payload, related=related, key=key)
    except Exception as exc:  # EventTooLarge, a bug: the view of a firing stops nothing
        logger.warning("%s was not sent: %s", _what(name, firing), _describe(exc))
        return
    if emitted is None:
        logger.warning(
            "%s was not sent: Prefect could not queue it (is PREFECT_API_URL set?); "
            "the firing's history has what it would have said.",
            _what(name, firing),
        )


async def aannounce(delivery: Delivery, block_ids: Mapping[str, UUID]) -> bool:
    """`announce`, sent the way that knows: returns once the Prefect API has the event (True),
    or after logging a WARNING that says why it has not (False). Never raises (but for
    cancellation), so the cycle goes on; the firing's status is in the history either way."""
    name, firing, payload, related, key = _announcement(delivery, block_ids)
    try:
        await send_event(
            firing_event(name, firing, payload, related=related, key=key),
            timeout=ANNOUNCE_TIMEOUT,
        )
    except ActionError as exc:
        logger.warning("%s was not sent: %s", _what(name, firing), exc)
        return False
    except Exception as exc:  # a bug of ours must not stop the cycle either
        logger.warning("%s was not sent: %s", _what(name, firing), _describe(exc))
        return False
    return True


#: Seconds `aannounce` waits for the Prefect API to take a firing's event.
ANNOUNCE_TIMEOUT = 10.0


def _announcement(
    delivery: Delivery, block_ids: Mapping[str, UUID]
) -> tuple[str, Firing, dict[str, Any], list[dict[str, str]], str]:
    """The name, firing, payload, related resources and id key of a delivery's event."""
    firing = delivery.firing
    result = delivery.result or {}
    related = [
        _resource(kind, value, role)
        for kind, value, role in (
            ("block-document", block_ids.get(firing.automation), "block"),
            (
                "block-type",
                "ml-automation" if firing.automation in block_ids else None,
                "block-type",
            ),
            ("deployment", result.get("deployment_id"), "deployment"),
            ("flow-run", result.get("flow_run_id"), "flow-run"),
        )
        if value
    ]
    payload = {
        "status": delivery.status,
        "attempt": delivery.attempt,
        "result": result,
        "error": delivery.error,
    }
    name = f"ml.automation.firing.{'failed' if delivery.failed else 'finished'}"
    return name, firing, payload, related, str(delivery.attempt)


def _what(name: str, firing: Firing) -> str:
    return f"The Prefect event {name} of firing {firing.firing_id[:8]} ({firing.automation!r})"


def _describe(exc: BaseException) -> str:
    from prefect_ml_automations.redact import scrub

    return f"{type(exc).__name__}: {scrub(str(exc))}"


def _resource(kind: str, value: object, role: str) -> dict[str, str]:
    return {"prefect.resource.id": f"prefect.{kind}.{value}", "prefect.resource.role": role}


@task(name="publish", task_run_name="publish {sensor}", cache_policy=NO_CACHE)
async def publish_cycle(report: CycleReport, sensor: str = "default") -> None:
    """Write the cycle's table artifact, and the markdown report of what fired (nothing for an
    idle cycle)."""
    await publish(report, sensor=sensor)


async def publish(report: CycleReport, *, sensor: str = "default") -> None:
    """`publish_cycle` without a task run (the long-running service calls it)."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

    from prefect_ml_automations.report import markdown_report

    if report.idle:
        return
    if report.fired:
        await acreate_markdown_artifact(
            markdown_report(report.fired),
            key=REPORT_KEY,
            description="What fired, with its window.",
        )
    await acreate_table_artifact(
        table=report.table()
        or [{"automation": "", "event": "", "subject": "", "status": "", "detail": ""}],
        key=ARTIFACT_KEY,
        description=f"Sensor {sensor!r}: {summary(report)}.",
    )
