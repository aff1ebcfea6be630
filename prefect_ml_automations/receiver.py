"""The push receiver (SPEC §6): an ASGI app that takes events into the inbox, durably, at once.

`POST /events` takes normalized events — one JSON object, a JSON array, or JSON lines — with
`Authorization: Bearer <receiver.token>`. Every event is checked first; if any is malformed the
request gets a 422 naming each problem and nothing is stored. Otherwise all of them are committed
to the inbox before the 202 answer, and the sensor is woken so they fire within a second.
`GET /health` answers without authentication.

>>> # uvicorn.run(create_app(config, store))   — or: ml-automations receive FILE
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.errors import StateError
from prefect_ml_automations.events import Event, describe_problem, event_from_dict
from prefect_ml_automations.sources.wandb import Deferred
from prefect_ml_automations.store import StateStore, store_problem

logger = logging.getLogger("prefect_ml_automations")

#: Largest request body accepted (bytes).
MAX_BODY = 1 << 20


class RequestProblem(Exception):
    """A request that is answered with a 4xx and stores nothing."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []


def read_json(text: str | bytes) -> Any:
    """Parsed JSON, or `ValueError` — also for what would hurt later: nesting deeper than 200
    levels and numbers beyond what a float holds (pydantic-core's parser refuses both, where
    `json.loads` raises `RecursionError` or takes a 5,000-digit integer)."""
    return pydantic_core.from_json(text)


def parse_body(body: bytes) -> list[Event]:
    """Events from a request body: a JSON object, a JSON array of them, or JSON lines."""
    text = body.decode("utf-8", errors="strict").strip()
    if not text:
        raise RequestProblem(
            400, "The request has no body; send one event, an array or JSON lines."
        )
    try:
        parsed = read_json(text)
        items = parsed if isinstance(parsed, list) else [parsed]
        where = "item" if isinstance(parsed, list) else "event"
    except ValueError:
        items, where = [], "line"
        # Lines end at "\n" (and "\r\n") only: `splitlines` would also cut at U+2028 or U+0085,
        # which a JSON string may hold as they are.
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    items.append(read_json(line))
                except ValueError as exc:
                    raise RequestProblem(
                        400, f"Line {number} of the body is not valid JSON ({exc})."
                    ) from None
    events, problems = [], []
    for index, item in enumerate(items, start=1):
        try:
            events.append(event_from_dict(item))
        except ValidationError as exc:
            problems.append(f"{where} {index}: {describe_problem(exc)}")
    if problems:
        raise RequestProblem(
            422, f"{len(problems)} malformed event(s); nothing was stored.", problems[:20]
        )
    return events


async def _limited_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    too_large = RequestProblem(
        413, f"The body is larger than {MAX_BODY} bytes; send smaller batches."
    )
    digits = declared is not None and declared.isascii() and declared.isdigit()
    if digits and (len(declared) > 12 or int(declared) > MAX_BODY):  # type: ignore[arg-type]
        raise too_large
    # Read as it arrives, and stop at the limit: a chunked body declares no length.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


#: How old an MLflow webhook's timestamp may be (seconds), against replays.
MLFLOW_TOLERANCE = 300


def _mlflow_signed(request: Request, body: bytes, secret: str | None) -> bool:
    """X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "{delivery id}.{timestamp}.{body}")>."""
    import base64
    import hashlib
    import time

    signature = request.headers.get("x-mlflow-signature", "")
    delivery = request.headers.get("x-mlflow-delivery-id", "")
    stamp = request.headers.get("x-mlflow-timestamp", "")
    if secret is None or not signature.startswith("v1,"):
        return False
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return False
    if abs(time.time() - int(stamp)) > MLFLOW_TOLERANCE:
        return False
    signed = f"{delivery}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return hmac.compare_digest(signature[3:].encode("utf-8", "surrogateescape"), expected)


def _wandb_signed(request: Request, body: bytes, secret: str | None) -> bool:
    """X-Wandb-Signature: HMAC-SHA256 of the body with the secret, base64 (W&B's docs) or hex."""
    import base64
    import hashlib

    given = request.headers.get("x-wandb-signature", "").strip()
    if secret is None or not given:
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    candidates = (base64.b64encode(digest), digest.hex().encode())
    given_bytes = given.encode("utf-8", "surrogateescape")  # (a header may hold any bytes)
    return any(hmac.compare_digest(given_bytes, c) for c in candidates)


def _json_object(body: bytes, required: str, missing: str) -> dict[str, Any]:
    try:
        payload = read_json(body)
    except ValueError as exc:
        raise RequestProblem(400, f"The body is not valid JSON ({exc}).") from None
    if not isinstance(payload, dict) or required not in payload:
        raise RequestProblem(422, missing)
    return payload


def _named_source(config: AutomationsConfig, kind: type[Any], name: str | None, path: str) -> Any:
    """The one source of a kind a webhook reports on (None when the config has none)."""
    sources = [s for s in config.sources if isinstance(s, kind)]
    if name is not None:
        sources = [s for s in sources if s.name == name]
    if len(sources) == 1:
        return sources[0]
    if not sources and name is None:
        return None
    raise RequestProblem(
        404 if name is not None else 400,
        f"No single matching source; name it in the URL, e.g. {path}?source=NAME "
        f"(sources: {', '.join(s.name for s in sources) or 'none'}).",
    )


def create_app(
    config: AutomationsConfig,
    store: StateStore,
    *,
    wake: Callable[[], None] | None = None,
    insecure: bool = False,
    status: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """The receiver for a config; `wake` is called after events are stored, `status` tells
    `/health` how the sensor beside it is doing."""
    token = config.receiver.token.get_secret_value() if config.receiver.token else None
    if token is None and config.receiver.secret is None and not insecure:
        from prefect_ml_automations.errors import BadInputError

        raise BadInputError(
            "The receiver has neither a token nor a secret: set receiver.token (and, for signed "
            'webhooks, receiver.secret) in the config, for example "${RECEIVER_TOKEN}", or pass '
            "--insecure to accept unauthenticated requests on loopback only."
        )
    app = FastAPI(title="prefect-ml-automations receiver", docs_url=None, redoc_url=None)

    def authorized(request: Request) -> bool:
        if token is None:
            return insecure
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()
        )

    @app.exception_handler(RequestProblem)
    async def _problem(request: Request, exc: RequestProblem) -> JSONResponse:
        # A sender whose webhook is misconfigured learns from the answer; the person running the
        # receiver, from this line.
        client = request.client.host if request.client else "?"
        logger.warning(
            "receiver: %d for %s %s from %s: %s",
            exc.status,
            request.method,
            request.url.path,
            client,
            str(exc)[:300],
        )
        content: dict[str, Any] = {"error": str(exc)}
        if exc.problems:
            content["problems"] = exc.problems
        return JSONResponse(content, status_code=exc.status)

    @app.exception_handler(StateError)
    @app.exception_handler(SQLAlchemyError)
    async def _store_down(_: Request, exc: Exception) -> JSONResponse:
        # The store is the inbox: without it nothing can be accepted. Say so, and when to retry;
        # the sender keeps the events (nothing was stored, the transaction rolled back).
        logger.error("The state store is unavailable: %s", store_problem(exc))
        return JSONResponse(
            {
                "error": "The state store is unavailable, so nothing was stored; send the "
                "request again shortly.",
                "store": store_problem(exc),
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        """`ok`, `degraded` (the sensor beside the receiver is failing: it says why), or
        `unavailable` (503: the store is unreachable, pushes can not be accepted)."""
        report: dict[str, Any] = {"status": "ok"}
        try:
            report.update(await asyncio.to_thread(store.counts))
        except (StateError, SQLAlchemyError) as exc:
            report.update(status="unavailable", store=store_problem(exc))
        if status is not None:
            sensor = status()
            report["sensor"] = sensor
            if report["status"] == "ok" and sensor.get("problem"):
                report["status"] = "degraded"
        return JSONResponse(report, status_code=503 if report["status"] == "unavailable" else 200)

    secret = config.receiver.secret.get_secret_value() if config.receiver.secret else None

    async def push(source: str, change: Any, origin: str, kind: str) -> dict[str, Any]:
        """A tracker's webhook: its change against the source's snapshot, stored, then a wake."""

        def read(cursor: dict[str, Any] | None) -> Any:
            try:
                return change(cursor)
            except (RequestProblem, Deferred):
                raise
            except (ValueError, ValidationError) as exc:
                raise RequestProblem(422, f"The {kind} payload can not be read: {exc}") from None
            except Exception as exc:
                # An authenticated sender's payload of a shape we did not foresee: a clear 4xx
                # for them, the traceback for us — and nothing stored (the transaction rolls back).
                logger.warning("A %s payload could not be read.", kind, exc_info=True)
                raise RequestProblem(
                    422,
                    f"The {kind} payload can not be read ({exc.__class__.__name__}: {exc}); "
                    f"send the {kind} webhook's own JSON body unchanged.",
                ) from None

        stored = await asyncio.to_thread(store.push_source_change, source, read, origin=origin)
        if stored and wake is not None:
            wake()
        return {"accepted": stored}

    @app.post("/mlflow", status_code=202)
    async def mlflow_webhook(request: Request, source: str | None = None) -> dict[str, Any]:
        """MLflow 3 registry webhooks, signed with `receiver.secret` (or the bearer token)."""
        body = await _limited_body(request)
        if not authorized(request) and not _mlflow_signed(request, body, secret):
            raise RequestProblem(
                401,
                "The MLflow signature is missing, wrong or older than 5 minutes; give the webhook "
                "the receiver's secret (or send the bearer token).",
            )
        payload = _json_object(
            body, "entity", "This is not an MLflow webhook payload (no 'entity')."
        )
        from prefect_ml_automations.config import MLflowSourceSettings

        settings = _named_source(config, MLflowSourceSettings, source, "/mlflow")
        name, registry = (settings.name, settings.registry) if settings else ("mlflow", "models")
        from prefect_ml_automations.sources.mlflow import registry_changes

        return await push(
            name,
            lambda cursor: registry_changes(cursor, payload, registry, name),
            "mlflow",
            "MLflow",
        )

    @app.post("/wandb", status_code=202)
    async def wandb_webhook(request: Request, source: str | None = None) -> dict[str, Any]:
        """W&B automation webhooks: bearer token, or X-Wandb-Signature made with the secret."""
        body = await _limited_body(request)
        if not authorized(request) and not _wandb_signed(request, body, secret):
            raise RequestProblem(
                401,
                "Missing or wrong bearer token or X-Wandb-Signature; give the W&B webhook the "
                "receiver's token (access token) or secret.",
            )
        payload = _json_object(
            body, "event_type", "The payload has no 'event_type'; put W&B's ${event_type} into it."
        )
        from prefect_ml_automations.config import WandbSourceSettings

        settings = _named_source(config, WandbSourceSettings, source, "/wandb")
        name, entity = (settings.name, settings.entity) if settings else ("wandb", "")
        from prefect_ml_automations.sources.wandb import webhook_changes
        from prefect_ml_automations.store import utcnow

        try:
            return await push(
                name,
                lambda cursor: webhook_changes(cursor, payload, entity, utcnow(), name),
                "wandb",
                "W&B",
            )
        except Deferred as exc:
            if settings is None:
                raise RequestProblem(
                    422,
                    f"The W&B payload can not be read: {exc}, and no W&B source is configured "
                    "to look it up; make the webhook send the version's number (…:v3).",
                ) from None
            if wake is not None:
                wake()  # the poll that finds the version's number, now
            return {"accepted": 0, "deferred": f"{exc}: the next poll of {name!r} reports it"}

    @app.post("/events", status_code=202)
    async def events(request: Request) -> dict[str, Any]:
        if not authorized(request):
            raise RequestProblem(
                401, "Missing or wrong bearer token; send 'Authorization: Bearer <receiver.token>'."
            )
        body = await _limited_body(request)
        try:
            parsed = parse_body(body)
        except UnicodeDecodeError:
            raise RequestProblem(400, "The body is not UTF-8 text.") from None
        accepted = await asyncio.to_thread(store.put_events, parsed, origin="push")
        if wake is not None:
            wake()
        return {"accepted": accepted}

    return app
