"""What an automation does when it fires: start a deployment, call a webhook, notify, emit an
event, or only record the firing.

These are the settings users write. String values in `parameters`, `payload`, `title` and
`message` are templates (`${run_name}`, …) filled in per firing; every other field is read as
written (with `${ENV}` taken from the environment when the config file is loaded).
"""

from __future__ import annotations

import asyncio
import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field, JsonValue, SecretStr, field_validator

from prefect_ml_automations.automations._types import StrictModel, shown
from prefect_ml_automations.errors import ActionError
from prefect_ml_automations.redact import safe_url, scrub

if TYPE_CHECKING:
    from prefect_ml_automations.decisions import Firing

#: What an HTTP/1.1 header name may be (RFC 9110 "token"), and what httpx can send as a value.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
#: "flow-name/deployment-name", "block-type-slug/block-name"
_DEPLOYMENT = re.compile(r"^[^/\s][^/]*/[^/\s][^/]*$")


class Action(StrictModel):
    """Common to every action: settings, and `deliver`, which carries the action out."""

    type: str
    #: Fields whose string values are templates (not environment references).
    templated_fields: ClassVar[tuple[str, ...]] = ()
    #: Seconds one `deliver` may take, unless an action says otherwise (`max_duration`).
    default_max_duration: ClassVar[float] = 60.0

    @property
    def max_duration(self) -> float:
        """The longest one `deliver` can take, in seconds: a sensor holds a firing's lease at
        least this long, so no other sensor starts the same action meanwhile. `deliver` gives up
        (with a retryable `ActionError`) rather than run longer."""
        return self.default_max_duration

    @abstractmethod
    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        """Carry the action out for a firing; returns what to keep in the history record
        (`flow_run_id`, `http_status`, `event_id`). Raises `ActionError` saying whether a retry
        may help; its message holds no secret (`redact.scrub`)."""


def _values(firing: Firing) -> dict[str, Any]:
    from prefect_ml_automations.templates import variables

    return variables(firing)


def _render(template: Any, firing: Firing) -> Any:
    from prefect_ml_automations.templates import render

    return render(template, _values(firing))


class RunDeployment(Action):
    """Start a flow run of a Prefect deployment, at most once per firing, without waiting for it."""

    type: Literal["run_deployment"]
    deployment: str = Field(description="The deployment as 'flow-name/deployment-name'.")
    parameters: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="The flow run's parameters; string values are templates (${run_name}, …).",
    )
    tags: list[str] = Field(default_factory=list, description="Tags for the flow run.")
    job_variables: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Job variables for the flow run's infrastructure (its work pool's variables).",
    )
    templated_fields: ClassVar[tuple[str, ...]] = ("parameters",)

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        if not _DEPLOYMENT.match(value):
            raise ValueError(
                f"{shown(value)} is not a deployment name; write it as 'flow-name/deployment-name' "
                "(see `prefect deployment ls`)"
            )
        return value

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        from prefect_ml_automations.tasks.deployments import start_flow_run

        deadline = asyncio.timeout(self.max_duration)
        try:
            async with deadline:
                flow_run = await start_flow_run(
                    self.deployment,
                    _render(self.parameters, firing),
                    idempotency_key=firing.firing_id,
                    tags=self.tags,
                    job_variables=self.job_variables,
                )
        except ActionError as exc:
            raise ActionError(
                scrub(str(exc), _prefect_secrets(), limit=_MESSAGE), retryable=exc.retryable
            ) from exc
        except Exception as exc:
            if deadline.expired():
                # The idempotency key makes the next attempt safe even if this one got through.
                raise ActionError(
                    f"The Prefect API did not start {self.deployment!r} within "
                    f"{self.max_duration:g} s.",
                    retryable=True,
                ) from None
            raise ActionError(
                f"Starting {self.deployment!r} failed ({_describe(exc, _prefect_secrets())}).",
                retryable=False,
            ) from exc
        return {"flow_run_id": str(flow_run.id), "deployment_id": str(flow_run.deployment_id)}


#: Headers of every webhook call; they name the firing, so a target can tell a call it has
#: already handled (a retry) from a new firing. A user's `headers` can not override them.
IDEMPOTENCY_HEADER = "Idempotency-Key"
FIRING_ID_HEADER = "X-ML-Automations-Firing-Id"


class Webhook(Action):
    """POST a templated JSON payload; W&B-compatible auth (bearer token, HMAC signature).

    Every call carries `Idempotency-Key` and `X-ML-Automations-Firing-Id` (the firing id), the
    same in every call of every attempt. Within one attempt a call is repeated only when it
    surely never reached the target (it could not connect) or was answered 429 or 5xx; a call
    the target may have received without answering in time ends the attempt, and the sensor's
    back-off tries again later — so a slow target sees at most one call per attempt.
    """

    type: Literal["webhook"]
    url: str = Field(description="Where to POST (http or https).")
    payload: JsonValue = Field(default=None, description="The JSON body; strings are templates.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra HTTP headers, sent as given (not templated). Authorization, X-Wandb-Signature, "
            "Idempotency-Key and X-ML-Automations-Firing-Id are set from the other fields and "
            "the firing, whatever is given here."
        ),
    )
    access_token: SecretStr | None = Field(default=None, description="Sent as a bearer token.")
    secret: SecretStr | None = Field(
        default=None, description="Signs the body (HMAC-SHA256, base64) in X-Wandb-Signature."
    )
    templated_fields: ClassVar[tuple[str, ...]] = ("payload",)

    #: Seconds one call may take, from connecting to the last byte of the answer read.
    call_timeout: ClassVar[float] = 15.0
    #: Seconds to wait before each repeated call (could not connect, 429 and 5xx answers only).
    retry_delays: ClassVar[tuple[float, ...]] = (0.5, 2.0, 5.0)
    #: The longest wait a Retry-After header may ask for (longer ones are cut to this).
    retry_after_cap: ClassVar[float] = 30.0
    #: Bytes of an error answer read, to quote its beginning.
    body_read_limit: ClassVar[int] = 16_384

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(
                f"{shown(safe_url(value))} is not an http(s) URL; write it as https://host/path"
            )
        from urllib.parse import urlsplit

        try:
            urlsplit(value).port  # noqa: B018 — raises on a port out of range
        except ValueError:
            raise ValueError(
                f"{shown(safe_url(value))} has a port out of range; ports are 1 to 65535"
            ) from None
        return value

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, str]) -> dict[str, str]:
        # Found here, not at the first firing: what HTTP can not carry. (Values are not shown:
        # a header often holds a credential.)
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"the header name {shown(name)} can not be sent; a name is letters, digits "
                    "and -_.!#$%&'*+^`|~ only"
                )
            if not _HEADER_VALUE.fullmatch(text):
                raise ValueError(
                    f"the value of header {name!r} can not be sent: it holds a line break, a "
                    "control character or a non-ASCII character"
                )
        return value

    @field_validator("access_token")
    @classmethod
    def _sendable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _HEADER_VALUE.fullmatch(value.get_secret_value()):
            raise ValueError(
                "can not be sent as 'Authorization: Bearer …': it holds a line break, a control "
                "character or a non-ASCII character (check what the variable or Secret holds)"
            )
        return value

    @property
    def max_duration(self) -> float:
        """Every call taking `call_timeout`, and every wait between calls the longest a
        Retry-After may ask for: (1 + 3) × 15 s + 3 × 30 s = 150 s by default."""
        waits = sum(max(delay, self.retry_after_cap) for delay in self.retry_delays)
        return (len(self.retry_delays) + 1) * self.call_timeout + waits

    def signed_request(self, firing: Firing) -> tuple[bytes, dict[str, str]]:
        """The body and headers to send: W&B-compatible bearer token and signature, and the
        firing's id as the idempotency key."""
        import base64
        import hashlib
        import hmac
        import json

        body = json.dumps(_render(self.payload, firing)).encode()
        ours = {IDEMPOTENCY_HEADER: firing.firing_id, FIRING_ID_HEADER: firing.firing_id}
        if self.access_token is not None:
            ours["Authorization"] = f"Bearer {self.access_token.get_secret_value()}"
        if self.secret is not None:
            digest = hmac.new(
                self.secret.get_secret_value().encode(), body, hashlib.sha256
            ).digest()
            ours["X-Wandb-Signature"] = base64.b64encode(digest).decode()
        # Header names are case-insensitive: a user's 'authorization' must not travel beside ours.
        taken = {name.lower() for name in ours}
        headers = {"Content-Type": "application/json"}
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                headers.pop("Content-Type", None)
            if name.lower() not in taken:
                headers[name] = value
        return body, {**headers, **ours}

    def secret_values(self) -> list[str]:
        """What must never show in an error: the token, the signing secret, every header value
        and the URL's password, query values (a Slack-like `?token=`) and deeper path."""
        from urllib.parse import parse_qsl, urlsplit

        found = [v for v in self.headers.values() if v]
        found += [s.get_secret_value() for s in (self.access_token, self.secret) if s is not None]
        try:
            parts = urlsplit(self.url)
            found += [v for _, v in parse_qsl(parts.query, keep_blank_values=False)]
            found += [p for p in (parts.password, parts.fragment) if p]
            # The path past its first segment, which `safe_url` hides too (Slack's and Discord's
            # webhook URLs keep their secret there); short segments would scrub common words.
            found += [seg for seg in parts.path.split("/")[2:] if len(seg) >= 8]
        except ValueError:
            pass
        return found

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        import httpx

        body, headers = self.signed_request(firing)
        where = safe_url(self.url)
        problem = ""
        timeout = httpx.Timeout(self.call_timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            for delay in (*self.retry_delays, None):
                try:
                    answer = await self._call(client, body, headers)
                except _Unreached as exc:
                    problem = f"could not connect ({exc})"
                else:
                    status = answer.status
                    if 200 <= status < 300:
                        return {"http_status": status}
                    if 300 <= status < 400:
                        raise ActionError(
                            f"The webhook {where} answered HTTP {status} (a redirect to "
                            f"{safe_url(answer.location)}); redirects are not followed, so set "
                            "the webhook's url to where it points.",
                            retryable=False,
                        )
                    problem = f"answered HTTP {status}: {answer.text!r}"
                    if status != 429 and status < 500:
                        raise ActionError(f"The webhook {where} {problem}.", retryable=False)
                    if delay is not None and answer.retry_after is not None:
                        delay = min(max(answer.retry_after, 0.0), self.retry_after_cap)
                if delay is None:
                    break
                await asyncio.sleep(delay)
        raise ActionError(f"The webhook {where} {problem}, after retries.", retryable=True)

    async def _call(self, client: Any, body: bytes, headers: dict[str, str]) -> _Answer:
        """One POST, and its answer (the body read and scrubbed for errors only). Raises
        `_Unreached` when the request surely never reached the target, and `ActionError` when
        it may have (the attempt ends there)."""
        import httpx

        where = safe_url(self.url)
        secrets = self.secret_values()
        phase = "connect"

        async def trace(name: str, info: Any) -> None:
            # httpcore's progress events: which phase a timeout cut short.
            nonlocal phase
            if name.endswith("send_request_headers.started"):
                phase = "write"
            elif name.endswith("receive_response_headers.started"):
                phase = "read"

        deadline = asyncio.timeout(self.call_timeout)
        try:
            async with (
                deadline,
                client.stream(
                    "POST", self.url, content=body, headers=headers, extensions={"trace": trace}
                ) as response,
            ):
                if response.is_success:
                    return _Answer(response.status_code)
                raw, cut = bytearray(), False
                try:
                    async for chunk in response.aiter_bytes():
                        raw += chunk
                        if len(raw) >= self.body_read_limit:
                            del raw[self.body_read_limit :]
                            cut = True
                            break
                except httpx.DecodingError:
                    raw = bytearray(b"<an answer body that could not be decoded>")
                return _Answer(
                    response.status_code,
                    scrub(_decoded(bytes(raw), response.encoding), secrets, truncated=cut),
                    _retry_after(response.headers.get("Retry-After")),
                    response.headers.get("Location", ""),
                )
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.ProxyError,
        ) as exc:
            raise _Unreached(_describe(exc, secrets, limit=120)) from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise self._timed_out(where, type(exc).__name__) from exc
        except TimeoutError as exc:
            if not deadline.expired():
                raise ActionError(
                    f"The webhook {where} call failed ({_describe(exc, secrets)}).",
                    retryable=True,
                ) from exc
            if phase == "connect":
                raise _Unreached(
                    f"ConnectTimeout: no connection within {self.call_timeout:g} s"
                ) from None
            raise self._timed_out(
                where, "ReadTimeout" if phase == "read" else "WriteTimeout"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise ActionError(
                f"The webhook request to {where} could not be sent "
                f"({_describe(exc, secrets, limit=120)}).",
                retryable=False,
            ) from exc
        except httpx.TransportError as exc:  # RemoteProtocolError, ReadError, WriteError, …
            raise ActionError(
                f"The webhook {where} dropped the connection before answering "
                f"({_describe(exc, secrets, limit=120)}).",
                retryable=True,
            ) from exc

    def _timed_out(self, where: str, kind: str) -> ActionError:
        # The target may have the firing: calling again now is what a slow target can not
        # bear. The sensor's next attempt (after its back-off) calls again, same idempotency key.
        waiting = "waiting for an answer" if kind == "ReadTimeout" else "sending the request"
        return ActionError(
            f"The webhook {where} timed out after {self.call_timeout:g} s {waiting} ({kind}).",
            retryable=True,
        )


class _Unreached(Exception):
    """A webhook call that surely never reached its target (safe to repeat at once)."""


class _Answer(NamedTuple):
    """A webhook target's answer: its status, and for errors the scrubbed start of its body,
    its Retry-After (seconds) and Location."""

    status: int
    text: str = ""
    retry_after: float | None = None
    location: str = ""


def _decoded(raw: bytes, encoding: str | None) -> str:
    try:
        return raw.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (delta-seconds or an HTTP date), if it is one."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


class Notification(Action):
    """Send a message through a saved Prefect notification block (Slack, Teams, email, …)."""

    type: Literal["notification"]
    block: str = Field(
        description="A saved notification block, 'type-slug/name': 'slack-webhook/team-alerts'."
    )
    title: str = Field(
        default="${automation_name} fired", description="The subject line; a template."
    )
    message: str = Field(
        default="${event_type} on ${run_name}${artifact_version_string}: ${metric_filter}",
        description="The message body; a template.",
    )
    severity: Literal["info", "warn", "error"] = Field(
        default="info", description="info, warn or error; warn and error prefix the subject."
    )
    templated_fields: ClassVar[tuple[str, ...]] = ("title", "message")

    @field_validator("block")
    @classmethod
    def _slug_slash_name(cls, value: str) -> str:
        if not _DEPLOYMENT.match(value):
            raise ValueError(
                f"{shown(value)} is not a block reference; write it as "
                "'block-type-slug/block-name', for example 'slack-webhook/team-alerts' "
                "(see `prefect block ls`)"
            )
        return value

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        import inspect

        from prefect.blocks.abstract import NotificationBlock
        from prefect.blocks.core import Block

        secrets = _prefect_secrets()
        deadline = asyncio.timeout(self.max_duration)
        try:
            async with deadline:
                block = await Block.aload(self.block)
        except ValueError as exc:
            raise ActionError(
                f"No saved notification block is named {self.block!r} "
                f"({_describe(exc, secrets, name=False)}); create it in the Prefect UI (Blocks) "
                "or with its Python class's .save().",
                retryable=False,
            ) from None
        except Exception as exc:
            waited = f"no answer within {self.max_duration:g} s" if deadline.expired() else None
            raise ActionError(
                f"Block {self.block!r} could not be loaded ({waited or _describe(exc, secrets)}).",
                retryable=True,
            ) from exc
        if not isinstance(block, NotificationBlock):
            raise ActionError(
                f"Block {self.block!r} is a {type(block).__name__}, not a notification block.",
                retryable=False,
            )
        secrets += _block_secrets(block)
        subject = _render(self.title, firing)
        if self.severity != "info":
            subject = f"[{self.severity}] {subject}"
        body = _render(self.message, firing)
        deadline = asyncio.timeout(self.max_duration)
        try:
            async with deadline:
                anotify = getattr(block, "anotify", None)
                if inspect.iscoroutinefunction(anotify):
                    await anotify(body=body, subject=subject)
                else:
                    # A block's own `notify` may block (a plain HTTP call): not on the loop
                    # that runs every other delivery.
                    notify: Any = getattr(block, "notify")  # noqa: B009 — sync or async, by block
                    sent = await asyncio.to_thread(notify, body=body, subject=subject)
                    if inspect.isawaitable(sent):
                        await sent
        except Exception as exc:
            waited = f"not sent within {self.max_duration:g} s" if deadline.expired() else None
            raise ActionError(
                f"The notification block {self.block!r} could not send "
                f"({waited or _describe(exc, secrets)}).",
                retryable=True,
            ) from exc
        return None


class EmitEvent(Action):
    """Emit a Prefect event, so Prefect's own automations and deployment triggers can react.

    `deliver` returns only once the Prefect API has taken the event; it raises a retryable
    `ActionError` when the API could not be reached. The event's id is fixed per firing, so an
    event emitted again by a retry is not counted twice.
    """

    type: Literal["emit_event"]
    event: str = Field(
        default="ml.automation.fired",
        description="The Prefect event's name, for Prefect automations and deployment triggers.",
    )
    payload: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Added to the event's payload (beside 'firing'); string values are templates.",
    )
    templated_fields: ClassVar[tuple[str, ...]] = ("payload",)

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        event = firing_event(self.event, firing, _render(self.payload, firing))
        await send_event(event, timeout=min(EVENT_TIMEOUT, self.max_duration))
        return {"event_id": str(event.id)}


class NoOp(Action):
    """Record the firing only (for trying an automation out)."""

    type: Literal["no_op"]

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        return None


def _firing_event_fields(
    name: str,
    firing: Firing,
    payload: dict[str, Any] | None,
    related: Sequence[dict[str, str]],
    key: str,
) -> dict[str, Any]:
    import uuid

    return {
        "event": name,
        "resource": {
            "prefect.resource.id": f"ml-automations.firing.{firing.firing_id}",
            "prefect.resource.name": firing.automation,
        },
        "related": [
            {
                "prefect.resource.id": f"ml-automations.automation.{firing.automation}",
                "prefect.resource.role": "automation",
                "prefect.resource.name": firing.automation,
            },
            *related,
        ],
        "payload": {
            "triggered_at": firing.timestamp.isoformat(),
            "firing": firing.model_dump(mode="json", exclude_none=True),
            **(payload or {}),
        },
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{firing.firing_id}/{key}"),
    }


def firing_event(
    name: str,
    firing: Firing,
    payload: dict[str, Any] | None = None,
    *,
    related: Sequence[dict[str, str]] = (),
    key: str = "",
) -> Any:
    """The Prefect event about a firing, as it happens (`occurred` is now; the time of what
    triggered it is `triggered_at` in the payload). The resource is the firing; the automation
    (and whatever `related` adds: its block, the deployment and flow run it started) are related
    resources, so the Event Feed filtered by any of them shows it. A fixed id per name, firing
    and `key` (the attempt, say) keeps a re-emitted event from being counted twice.
    Returns a `prefect.events.Event`; `send_event` sends it."""
    from prefect.events import Event

    return Event(**_firing_event_fields(name, firing, payload, related, key))


def emit_firing_event(
    name: str,
    firing: Firing,
    payload: dict[str, Any] | None = None,
    *,
    related: Sequence[dict[str, str]] = (),
    key: str = "",
) -> Any:
    """`firing_event`, handed to Prefect's `emit_event`: queued for Prefect's events worker and
    sent in the background (one connection for all events, flushed when the process ends).
    Returns the event, or None when Prefect could not even queue it — a returned event may
    still be lost if the Prefect API is down; `send_event` is the way that knows."""
    from prefect.events import emit_event

    return emit_event(**_firing_event_fields(name, firing, payload, related, key))


#: Seconds `send_event` waits for the Prefect API to take an event.
EVENT_TIMEOUT = 20.0


async def send_event(event: Any, *, timeout: float = EVENT_TIMEOUT) -> None:
    """Send a Prefect event and return once the Prefect API has it; raises `ActionError`
    (retryable) when it could not be sent within `timeout` seconds.

    It goes the way Prefect's own `prefect event emit` does — the events client of the API in
    `PREFECT_API_URL` (the `/events/in` websocket, on a Prefect server and on Prefect Cloud) —
    but waits for the server to confirm it (a ping answered after the event: the server has
    read it) instead of queueing it for a background worker that drops it when the API is down.
    Inside a flow or task run the run's resources are related to the event, as `emit_event` does.
    """
    from prefect.events.clients import get_events_client
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
        get_current_settings,
    )

    api_url = PREFECT_API_URL.value()
    # With no API configured, Prefect's events client sends to the temporary server Prefect
    # starts for the process (as its flow runs do) — unless that mode is switched off.
    if not api_url and not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        raise ActionError(
            f"The Prefect event {event.event!r} was not sent: no Prefect API is configured. "
            "Set PREFECT_API_URL (for example http://127.0.0.1:4200/api) or log in to Prefect "
            "Cloud.",
            retryable=False,
        )
    maximum = get_current_settings().server.events.maximum_size_bytes
    if event.size_bytes > maximum:
        raise ActionError(
            f"The Prefect event {event.event!r} is {event.size_bytes} bytes, more than the "
            f"Prefect API takes ({maximum}); make its payload smaller.",
            retryable=False,
        )
    where = safe_url(api_url) if api_url else "Prefect's temporary server"
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await _relate_to_run(event)
            async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as client:
                await client.emit(event)
    except Exception as exc:
        reason = (
            f"no confirmation within {timeout:g} s"
            if deadline.expired()
            else _describe(exc, _prefect_secrets(), limit=160)
        )
        raise ActionError(
            f"The Prefect API at {where} did not take the event {event.event!r} ({reason}).",
            retryable=True,
        ) from exc


async def _relate_to_run(event: Any) -> None:
    """Relate the flow run and task run we are in (if any) to `event`, as Prefect's events
    worker does for `emit_event`."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    from prefect.client.orchestration import get_client
    from prefect.events.related import related_resources_from_run_context
    from prefect.settings import get_current_settings

    exclude = {resource.id for resource in event.involved_resources}
    async with get_client() as client:
        related = await related_resources_from_run_context(client, exclude=exclude)
    room = max(
        get_current_settings().server.events.maximum_related_resources - len(event.related), 0
    )
    event.related += related[:room]


#: How long an error message made of quoted text may grow.
_MESSAGE = 600


def _describe(
    exc: BaseException, secrets: Sequence[str] = (), *, limit: int | None = 200, name: bool = True
) -> str:
    """`ExceptionName: its message`, scrubbed of secrets (the name alone when it says nothing)."""
    text = scrub(str(exc), secrets, limit=limit)
    if not name:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _prefect_secrets() -> list[str]:
    """The Prefect API key and auth string, which an answer from the Prefect API may echo."""
    try:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        candidates = (getattr(api, "key", None), getattr(api, "auth_string", None))
    except Exception:
        return []
    return [c.get_secret_value() for c in candidates if c is not None]


def _block_secrets(block: Any) -> list[str]:
    """The secret values of a block's fields, nested blocks included (a Slack webhook URL, an
    SMTP password, a SecretDict's values)."""
    from pydantic import BaseModel

    found: list[str] = []

    def collect(value: Any, secret: bool) -> None:
        if hasattr(value, "get_secret_value"):
            collect(value.get_secret_value(), True)
        elif isinstance(value, str):
            if secret and value:
                found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                collect(getattr(value, name, None), secret)
        elif isinstance(value, dict):
            for leaf in value.values():
                collect(leaf, secret)
        elif isinstance(value, list | tuple):
            for leaf in value:
                collect(leaf, secret)

    collect(block, False)
    return found


AnyAction = Annotated[
    RunDeployment | Webhook | Notification | EmitEvent | NoOp, Field(discriminator="type")
]
"""Any action, chosen by its `type`."""

#: Top-level fields of any action whose strings are templates, for the config loader.
TEMPLATED_FIELDS = frozenset(
    f for cls in (RunDeployment, Webhook, Notification, EmitEvent) for f in cls.templated_fields
)

__all__ = [
    "TEMPLATED_FIELDS",
    "Action",
    "AnyAction",
    "EmitEvent",
    "NoOp",
    "Notification",
    "RunDeployment",
    "Webhook",
]
