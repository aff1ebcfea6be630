"""The automation model: what users write in YAML or edit as Prefect blocks."""

from prefect_ml_automations.automations.actions import (
    AnyAction,
    EmitEvent,
    NoOp,
    Notification,
    RunDeployment,
    Webhook,
)
from prefect_ml_automations.automations.automation import Automation
from prefect_ml_automations.automations.filters import RunFilters
from prefect_ml_automations.automations.scopes import ProjectScope, RegistryScope, Scope
from prefect_ml_automations.automations.triggers import (
    AddArtifactAlias,
    AddArtifactTag,
    ArtifactTrigger,
    CreateArtifact,
    EventTrigger,
    LinkArtifact,
    Measurement,
    MetricTrigger,
    MetricWindows,
    RemoveArtifactTag,
    RunMetric,
    RunMetricChange,
    RunMetricZScore,
    RunStalled,
    RunState,
    RunTrigger,
    UnlinkArtifact,
)

__all__ = [
    "AddArtifactAlias",
    "AddArtifactTag",
    "AnyAction",
    "ArtifactTrigger",
    "Automation",
    "CreateArtifact",
    "EmitEvent",
    "EventTrigger",
    "LinkArtifact",
    "Measurement",
    "MetricTrigger",
    "MetricWindows",
    "NoOp",
    "Notification",
    "ProjectScope",
    "RegistryScope",
    "RemoveArtifactTag",
    "RunDeployment",
    "RunFilters",
    "RunMetric",
    "RunMetricChange",
    "RunMetricZScore",
    "RunStalled",
    "RunState",
    "RunTrigger",
    "Scope",
    "UnlinkArtifact",
    "Webhook",
]
