"""What an automation does when it fires: start a deployment, call a webhook, notify, emit an
event, or only record the firing.

These are the settings users write. String values in `parameters`, `payload`, `title` and
`message` are templates (`${run_name}`, …) filled in per firing; every other field is read as
written (with `${ENV}` taken from the environment when the config file is loaded).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, JsonValue, SecretStr, field_validator

from prefect_ml_automations.automations._types import StrictModel
from prefect_ml_automations.errors import ActionError

if TYPE_CHECKING:
    from prefect_ml_automations.decisions import Firing

#: "flow-name/deployment-name", "block-type-slug/block-name"
_DEPLOYMENT = re.compile(r"^[^/\s][^/]*/[^/\s][^/]*$")


class Action(StrictModel):
    """Common to every action: settings, and `deliver`, which carries the action out."""

    type: str
    #: Fields whose string values are templates (not environment references).
    templated_fields: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        """Carry the action out for a firing; returns what to keep in the history record
        (`flow_run_id`, `http_status`, `event_id`). Raises `ActionError` saying whether a retry
        may help."""


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
                f"{value!r} is not a deployment name; write it as 'flow-name/deployment-name' "
                "(see `prefect deployment ls`)"
            )
        return value

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        from prefect_ml_automations.tasks.deployments import start_flow_run

        flow_run = await start_flow_run(
            self.deployment,
            _render(self.parameters, firing),
            idempotency_key=firing.firing_id,
            tags=self.tags,
            job_variables=self.job_variables,
        )
        return {"flow_run_id": str(flow_run.id), "deployment_id": str(flow_run.deployment_id)}


class Webhook(Action):
    """POST a templated JSON payload; W&B-compatible auth (bearer token, HMAC signature)."""

    type: Literal["webhook"]
    url: str = Field(description="Where to POST (http or https).")
    payload: JsonValue = Field(default=None, description="The JSON body; strings are templates.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers, sent as given (not templated)."
    )
    access_token: SecretStr | None = Field(default=None, description="Sent as a bearer token.")
    secret: SecretStr | None = Field(
        default=None, description="Signs the body (HMAC-SHA256, base64) in X-Wandb-Signature."
    )
    templated_fields: ClassVar[tuple[str, ...]] = ("payload",)

    #: Seconds to wait before each retry (connection errors, 429 and 5xx answers only).
    retry_delays: ClassVar[tuple[float, ...]] = (0.5, 2.0, 5.0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL; write it as https://host/path")
        return value

    def signed_request(self, firing: Firing) -> tuple[bytes, dict[str, str]]:
        """The body and headers to send: W&B-compatible bearer token and signature."""
        import base64
        import hashlib
        import hmac
        import json

        body = json.dumps(_render(self.payload, firing)).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        if self.access_token is not None:
            headers["Authorization"] = f"Bearer {self.access_token.get_secret_value()}"
        if self.secret is not None:
            digest = hmac.new(
                self.secret.get_secret_value().encode(), body, hashlib.sha256
            ).digest()
            headers["X-Wandb-Signature"] = base64.b64encode(digest).decode()
        return body, headers

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        import asyncio

        import httpx

        body, headers = self.signed_request(firing)
        problem = ""
        async with httpx.AsyncClient(timeout=15) as client:
            for delay in (*self.retry_delays, None):
                try:
                    response = await client.post(self.url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    problem = f"could not connect ({exc.__class__.__name__})"
                else:
                    if response.status_code < 400:
                        return {"http_status": response.status_code}
                    problem = f"answered HTTP {response.status_code}: {response.text[:200]!r}"
                    if response.status_code != 429 and response.status_code < 500:
                        raise ActionError(f"The webhook {self.url} {problem}.", retryable=False)
                    delay = _retry_after(response, delay)
                if delay is None:
                    break
                await asyncio.sleep(delay)
        raise ActionError(f"The webhook {self.url} {problem}, after retries.", retryable=True)


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
                f"{value!r} is not a block reference; write it as 'block-type-slug/block-name', "
                "for example 'slack-webhook/team-alerts' (see `prefect block ls`)"
            )
        return value

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        import inspect

        from prefect.blocks.abstract import NotificationBlock
        from prefect.blocks.core import Block

        try:
            block = await Block.aload(self.block)
        except ValueError as exc:
            raise ActionError(
                f"No saved notification block is named {self.block!r} ({exc}); create it in the "
                "Prefect UI (Blocks) or with its Python class's .save().",
                retryable=False,
            ) from None
        if not isinstance(block, NotificationBlock):
            raise ActionError(
                f"Block {self.block!r} is a {type(block).__name__}, not a notification block.",
                retryable=False,
            )
        subject = _render(self.title, firing)
        if self.severity != "info":
            subject = f"[{self.severity}] {subject}"
        notify: Any = getattr(block, "notify")  # noqa: B009 — sync or async, by block
        sent = notify(body=_render(self.message, firing), subject=subject)
        if inspect.isawaitable(sent):
            await sent
        return None


class EmitEvent(Action):
    """Emit a Prefect event, so Prefect's own automations and deployment triggers can react."""

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
        emitted = emit_firing_event(self.event, firing, _render(self.payload, firing))
        if emitted is None:
            raise ActionError("The Prefect event could not be emitted.", retryable=True)
        return {"event_id": str(emitted.id)}


class NoOp(Action):
    """Record the firing only (for trying an automation out)."""

    type: Literal["no_op"]

    async def deliver(self, firing: Firing) -> dict[str, Any] | None:
        return None


def emit_firing_event(
    name: str,
    firing: Firing,
    payload: dict[str, Any] | None = None,
    *,
    related: Sequence[dict[str, str]] = (),
    key: str = "",
) -> Any:
    """Emit a Prefect event about a firing, as it happens (`occurred` is now; the time of what
    triggered it is `triggered_at` in the payload). The resource is the firing; the automation
    (and whatever `related` adds: its block, the deployment and flow run it started) are related
    resources, so the Event Feed filtered by any of them shows it. A fixed id per name, firing
    and `key` (the attempt, say) keeps a re-emitted event from being counted twice."""
    import uuid

    from prefect.events import emit_event

    return emit_event(
        event=name,
        resource={
            "prefect.resource.id": f"ml-automations.firing.{firing.firing_id}",
            "prefect.resource.name": firing.automation,
        },
        related=[
            {
                "prefect.resource.id": f"ml-automations.automation.{firing.automation}",
                "prefect.resource.role": "automation",
                "prefect.resource.name": firing.automation,
            },
            *related,
        ],
        payload={
            "triggered_at": firing.timestamp.isoformat(),
            "firing": firing.model_dump(mode="json", exclude_none=True),
            **(payload or {}),
        },
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{firing.firing_id}/{key}"),
    )


def _retry_after(response: Any, default: float | None) -> float | None:
    """Honour a Retry-After in seconds (capped at a minute) when there is a retry left."""
    if default is None:
        return None
    try:
        return min(float(response.headers.get("Retry-After", default)), 60.0)
    except ValueError:
        return default


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
