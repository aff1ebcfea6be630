"""An automation: scope + event (+ run filters) + action, with a name."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, PositiveInt, field_validator, model_validator

from prefect_ml_automations.automations._types import Duration, StrictModel, shown
from prefect_ml_automations.automations.actions import AnyAction
from prefect_ml_automations.automations.filters import RunFilters
from prefect_ml_automations.automations.scopes import ProjectScope, RegistryScope, Scope
from prefect_ml_automations.automations.triggers import EventTrigger, RunTrigger


class Budget(StrictModel):
    """At most `firings` firings within `per`, counted when they are recorded."""

    firings: PositiveInt = Field(description="How many firings `per` allows (at least 1).")
    per: Duration = Field(description="The period they are counted over: '1h', '1d', …")

    @field_validator("per")
    @classmethod
    def _a_period(cls, value: timedelta) -> timedelta:
        if not value:
            raise ValueError("must be a period such as '1h' or '1d', not 0")
        return value

    def describe(self) -> str:
        seconds = self.per.total_seconds()
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{self.firings} firings per {seconds / size:g}{unit}"
        return f"{self.firings} firings per {seconds:g}s"


class Automation(StrictModel):
    """One automation, as written in YAML or saved as a Prefect block.

    >>> a = Automation.model_validate({
    ...     "name": "deploy-on-production",
    ...     "scope": {"registry": "models", "collection": "churn-classifier"},
    ...     "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
    ...     "action": {"type": "run_deployment", "deployment": "deploy-model/production"},
    ... })
    >>> a.event.describe()
    "alias matching '^production$' added"
    """

    name: str = Field(
        min_length=1,
        max_length=255,
        description="The automation's name, unique among the automations (at most 255 "
        "characters); it names the firings in the history.",
    )
    description: str = Field(default="", description="What the automation is for (optional).")
    enabled: bool = Field(
        default=True, description="A disabled automation is kept but never fires."
    )
    source: str | None = Field(
        default=None, description="The source this automation watches; optional with one source."
    )
    scope: Scope = Field(
        description="Where the automation looks: a registry or a project, and optionally some "
        "of their collections."
    )
    event: EventTrigger = Field(description="What happens that fires the automation.")
    filters: RunFilters | None = Field(
        default=None, description="Run filters (run events only): user, run_name regex."
    )
    cooldown: Duration = Field(
        default=timedelta(hours=24),
        description="A run fires at most once per cooldown of event time ('0' turns it off); "
        "a metric event with `rearm: true` uses its rearm instead.",
    )
    budget: Budget | None = Field(
        default=None,
        description="At most this many firings per period, e.g. {firings: 20, per: 1h}: past "
        "it the rest are held back as skipped and the automation is paused until "
        "`ml-automations resume` (a runaway guard).",
    )
    action: AnyAction = Field(description="What the automation does when it fires.")

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if value != value.strip() or any(ch in value for ch in "\n\r\t"):
            raise ValueError(
                f"{shown(value)} has leading/trailing blanks or line breaks; remove them"
            )
        return value

    @field_validator("scope", mode="before")
    @classmethod
    def _scope_names_one_place(cls, scope: Any) -> Any:
        if isinstance(scope, dict) and "registry" in scope and "project" in scope:
            raise ValueError(
                "names both a registry and a project; a scope is one or the other, "
                "so write two automations to watch both"
            )
        return scope

    @model_validator(mode="after")
    def _event_fits_scope(self) -> Automation:
        kind = _scope_kind(self.scope)
        allowed = self.event.allowed_scopes
        if kind not in allowed and not (kind == "plain_project" and "project" in allowed):
            if allowed == ("plain_project",):
                fix = (
                    "run events need a plain project scope such as "
                    f"{{project: {_project_of(self)}}} "
                    "(no registry, no collection)"
                )
            else:
                fix = "use a project scope such as {project: team/project}"
            raise ValueError(
                f"event: {self.event.type} can not be used with {self.scope.describe()}; {fix}"
            )
        if self.filters is not None and not isinstance(self.event, RunTrigger):
            raise ValueError(
                f"filters: run filters apply to run events only, not to {self.event.type}; "
                "remove 'filters' or narrow the scope instead"
            )
        return self

    @property
    def project(self) -> str | None:
        """The project a project-scoped automation watches (None for a registry scope)."""
        return self.scope.project if isinstance(self.scope, ProjectScope) else None

    @property
    def run_filters(self) -> RunFilters:
        return self.filters or RunFilters()


def _scope_kind(scope: RegistryScope | ProjectScope) -> str:
    if isinstance(scope, RegistryScope):
        return "registry"
    return "plain_project" if scope.is_plain_project else "project"


def _project_of(automation: Automation) -> str:
    return (
        automation.scope.project if isinstance(automation.scope, ProjectScope) else "team/project"
    )
