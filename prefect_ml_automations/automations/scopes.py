"""Scopes: where an automation looks — a registry or a project, and optionally some collections.

A registry scope sees only events that happen in the registry; a project scope only events in the
project. Each scope can say why an event is outside it, in words a user can act on, because
"my alias on the project's artifact did not fire the registry automation" is the most common
surprise of W&B Automations.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import Discriminator, Field, Tag, model_validator

from prefect_ml_automations.automations._types import Regex, StrictModel, compiled


class Located(Protocol):
    """What a scope needs to know of an event: where it happened."""

    @property
    def registry(self) -> str | None: ...
    @property
    def project(self) -> str | None: ...
    @property
    def collection(self) -> str | None: ...


class RegistryScope(StrictModel):
    """Every collection of a registry (`{registry: models}`), or one (`collection: churn`)."""

    registry: str = Field(
        description="The registry's name: in W&B without the 'wandb-registry-' prefix; in MLflow "
        "the name the source gives its model registry (default 'models')."
    )
    collection: str | None = Field(
        default=None,
        description="One collection of the registry (a W&B registry collection, an MLflow "
        "registered model); leave it out for every collection, also those created later.",
    )

    @property
    def is_plain_project(self) -> bool:
        return False

    def describe(self) -> str:
        where = f"registry {self.registry!r}"
        return f"collection {self.collection!r} of {where}" if self.collection else where

    def mismatch_run(self, project: str) -> str | None:
        """Runs live in projects, never in a registry."""
        return f"the run is in project {project!r}; runs are never in {self.describe()}"

    def mismatch(self, event: Located) -> str | None:
        """None when the event is in scope, else the reason it is not."""
        if event.registry is None:
            return (
                f"the event happened in project {event.project!r}, not in {self.describe()}: "
                "a registry automation sees only events in the registry (link the version into "
                f"registry {self.registry!r}, or scope the automation to the project)"
            )
        if event.registry != self.registry:
            return f"the event happened in registry {event.registry!r}, not {self.registry!r}"
        if self.collection is not None and event.collection != self.collection:
            return f"collection {event.collection!r} is not {self.collection!r}"
        return None


class ProjectScope(StrictModel):
    """A project's runs and collections (`{project: team/vision}`), or some of its collections."""

    project: str = Field(
        description="The project: W&B 'entity/project', or an MLflow experiment's name."
    )
    collection: str | None = Field(
        default=None,
        description="One artifact collection of the project (an MLflow logged model's name); "
        "leave collection and collection_regex out for every collection and all runs.",
    )
    collection_regex: Regex | None = Field(
        default=None,
        description="The project's collections whose names match this regex (searched; anchor "
        "with ^ and $); not together with collection.",
    )

    @model_validator(mode="after")
    def _one_collection_selector(self) -> ProjectScope:
        if self.collection is not None and self.collection_regex is not None:
            raise ValueError(
                "give either 'collection' (one name) or 'collection_regex' (a pattern), not both"
            )
        return self

    @property
    def is_plain_project(self) -> bool:
        return self.collection is None and self.collection_regex is None

    def describe(self) -> str:
        if self.collection is not None:
            return f"collection {self.collection!r} of project {self.project!r}"
        if self.collection_regex is not None:
            return f"collections matching {self.collection_regex!r} in project {self.project!r}"
        return f"project {self.project!r}"

    def mismatch_run(self, project: str) -> str | None:
        """None when a run of `project` is in scope, else the reason it is not."""
        if project != self.project:
            return f"the run is in project {project!r}, not {self.project!r}"
        return None

    def mismatch(self, event: Located) -> str | None:
        """None when the event is in scope, else the reason it is not."""
        if event.project is None:
            return (
                f"the event happened in registry {event.registry!r}, not in {self.describe()}: "
                "a project automation does not see registry events (scope the automation to "
                f"registry {event.registry!r} instead)"
            )
        if event.project != self.project:
            return f"the event happened in project {event.project!r}, not {self.project!r}"
        if event.collection is not None:
            if self.collection is not None and event.collection != self.collection:
                return f"collection {event.collection!r} is not {self.collection!r}"
            if self.collection_regex is not None and not compiled(self.collection_regex).search(
                event.collection
            ):
                return f"collection {event.collection!r} does not match {self.collection_regex!r}"
        return None


def _scope_kind(value: Any) -> str | None:
    if isinstance(value, RegistryScope | ProjectScope):
        return "registry" if isinstance(value, RegistryScope) else "project"
    if isinstance(value, dict) and ("registry" in value) != ("project" in value):
        return "registry" if "registry" in value else "project"
    return None


Scope = Annotated[
    Annotated[RegistryScope, Tag("registry")] | Annotated[ProjectScope, Tag("project")],
    Discriminator(
        _scope_kind,
        custom_error_type="scope",
        custom_error_message=(
            "a scope names either 'registry: NAME' or 'project: NAME' (not both), "
            "for example {registry: models, collection: churn-classifier}"
        ),
    ),
]
