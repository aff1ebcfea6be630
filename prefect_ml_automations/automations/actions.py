"""What an automation does when it fires: start a deployment, call a webhook, notify, emit an
event, or only record the firing.

These are the settings users write. String values in `parameters`, `payload`, `title` and
`message` are templates (`${run_name}`, …) filled in per firing; every other field is read as
written (with `${ENV}` taken from the environment when the config file is loaded).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue, SecretStr, field_validator

from prefect_ml_automations.automations._types import StrictModel

_DEPLOYMENT = re.compile(r"^[^/\s][^/]*/[^/\s][^/]*$")


class Action(StrictModel):
    """Common to every action."""

    type: str
    #: Fields whose string values are templates (not environment references).
    templated_fields: ClassVar[tuple[str, ...]] = ()


class RunDeployment(Action):
    """Start a flow run of a Prefect deployment, at most once per firing, without waiting for it."""

    type: Literal["run_deployment"]
    deployment: str = Field(description="The deployment as 'flow-name/deployment-name'.")
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    job_variables: dict[str, JsonValue] = Field(default_factory=dict)
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


class Webhook(Action):
    """POST a templated JSON payload; W&B-compatible auth (bearer token, HMAC signature)."""

    type: Literal["webhook"]
    url: str = Field(description="Where to POST (http or https).")
    payload: JsonValue = Field(default=None, description="The JSON body; strings are templates.")
    headers: dict[str, str] = Field(default_factory=dict)
    access_token: SecretStr | None = Field(default=None, description="Sent as a bearer token.")
    secret: SecretStr | None = Field(
        default=None, description="Signs the body (HMAC-SHA256, base64) in X-Wandb-Signature."
    )
    templated_fields: ClassVar[tuple[str, ...]] = ("payload",)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL; write it as https://host/path")
        return value


class Notification(Action):
    """Send a message through a saved Prefect notification block (Slack, Teams, email, …)."""

    type: Literal["notification"]
    block: str = Field(min_length=1, description="The name of a saved notification block.")
    title: str = "${automation_name} fired"
    message: str = "${event_type} on ${run_name}${artifact_version_string}: ${metric_filter}"
    severity: Literal["info", "warn", "error"] = "info"
    templated_fields: ClassVar[tuple[str, ...]] = ("title", "message")


class EmitEvent(Action):
    """Emit a Prefect event, so Prefect's own automations and deployment triggers can react."""

    type: Literal["emit_event"]
    event: str = "ml.automation.fired"
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    templated_fields: ClassVar[tuple[str, ...]] = ("payload",)


class NoOp(Action):
    """Record the firing only (for trying an automation out)."""

    type: Literal["no_op"]


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
