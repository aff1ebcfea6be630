"""Start a Prefect deployment, at most once per idempotency key, without waiting for it.

What a `run_deployment` action does, as a task for your own flows:

    from prefect import flow
    from prefect_ml_automations.tasks import start_deployment

    @flow
    def promote(version: str) -> None:
        start_deployment("deploy-model/production", {"model_version": version},
                         idempotency_key=f"promote-{version}")
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_ml_automations.errors import ActionError

#: A client shared by the deliveries of one cycle (`sharing_one_client`): a burst of firings
#: reuses its connections instead of opening new ones per flow run.
_CLIENT: ContextVar[Any] = ContextVar("ml_automations_prefect_client", default=None)
#: Deployment name -> (id, when looked up): a burst of firings looks its deployment up once.
_DEPLOYMENT_IDS: dict[tuple[str, str], tuple[UUID, float]] = {}
#: How long a looked-up deployment id is trusted (a deleted one is looked up again at once).
DEPLOYMENT_ID_TTL = 60.0


@contextlib.asynccontextmanager
async def sharing_one_client() -> AsyncIterator[None]:
    """Within this block, `start_flow_run` calls share one Prefect client."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        token = _CLIENT.set(client)
        try:
            yield
        finally:
            _CLIENT.reset(token)


async def start_flow_run(
    deployment: str,
    parameters: dict[str, Any] | None = None,
    *,
    idempotency_key: str,
    tags: list[str] | None = None,
    job_variables: dict[str, Any] | None = None,
) -> Any:
    """Create a flow run of `deployment` ('flow-name/deployment-name'), scheduled now; the same
    `idempotency_key` gives back the run it already started. Returns Prefect's `FlowRun`.

    One API call (the deployment's id is remembered for a minute) and no waiting: the run is not
    linked to the caller as a subflow (so cancelling the caller does not cancel it). Prefect
    scopes idempotency keys per *flow*, so the key sent is prefixed with the deployment's id: two
    deployments of one flow never share a run. Raises `ActionError` — not retryable for an
    unknown deployment or a refused request, retryable when the API could not be reached.
    """
    import httpx

    try:
        shared = _CLIENT.get()
        if shared is not None:
            return await _start(
                shared, deployment, parameters, idempotency_key, tags, job_variables
            )
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return await _start(
                client, deployment, parameters, idempotency_key, tags, job_variables
            )
    except httpx.HTTPStatusError as exc:
        retryable = exc.response.status_code == 429 or exc.response.status_code >= 500
        raise ActionError(
            f"The Prefect API refused to start {deployment!r} (HTTP {exc.response.status_code}: "
            f"{exc.response.text[:300]}).",
            retryable=retryable,
        ) from exc
    except httpx.HTTPError as exc:
        raise ActionError(f"The Prefect API could not be reached ({exc}).", retryable=True) from exc


async def _start(
    client: Any,
    deployment: str,
    parameters: dict[str, Any] | None,
    idempotency_key: str,
    tags: list[str] | None,
    job_variables: dict[str, Any] | None,
) -> Any:
    import httpx
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Scheduled

    for fresh in (False, True):
        deployment_id = await _deployment_id(client, deployment, fresh=fresh)
        try:
            return await client.create_flow_run_from_deployment(
                deployment_id,
                parameters=parameters or {},
                state=Scheduled(),
                tags=tags or None,
                job_variables=job_variables or None,
                idempotency_key=f"{deployment_id}:{idempotency_key}",
            )
        except (ObjectNotFound, httpx.HTTPStatusError) as exc:
            if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code != 404:
                raise
            # Deleted (and perhaps re-created) since it was looked up: look it up again.
            _DEPLOYMENT_IDS.pop((str(client.api_url), deployment), None)
    raise ActionError(
        f"Deployment {deployment!r} does not exist; create it (for example with `prefect "
        "deploy`) or fix the name.",
        retryable=False,
    )


async def _deployment_id(client: Any, deployment: str, *, fresh: bool) -> UUID:
    from prefect.exceptions import ObjectNotFound

    key = (str(client.api_url), deployment)
    known = _DEPLOYMENT_IDS.get(key)
    if known is not None and not fresh and time.monotonic() - known[1] < DEPLOYMENT_ID_TTL:
        return known[0]
    try:
        found = await client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        raise ActionError(
            f"Deployment {deployment!r} does not exist; create it (for example with `prefect "
            "deploy`) or fix the name.",
            retryable=False,
        ) from None
    _DEPLOYMENT_IDS[key] = (found.id, time.monotonic())
    return UUID(str(found.id))


@task(name="start-deployment", task_run_name="start {deployment}", cache_policy=NO_CACHE)
def start_deployment(
    deployment: str,
    parameters: dict[str, Any] | None = None,
    *,
    idempotency_key: str,
    tags: list[str] | None = None,
    job_variables: dict[str, Any] | None = None,
) -> Any:
    """Start a flow run of `deployment` ('flow-name/deployment-name') with `parameters`, once per
    `idempotency_key`, without waiting for it; returns the `FlowRun` (`.id`, `.name`)."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(
        start_flow_run(
            deployment,
            parameters,
            idempotency_key=idempotency_key,
            tags=tags,
            job_variables=job_variables,
        )
    )
