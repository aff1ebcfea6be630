"""W&B-style Automations for Prefect.

When a model gets the alias `production`, a dataset version lands, a run fails, or a run's metric
crosses a threshold, changes sharply or stands out from the last runs, start a Prefect deployment.

>>> from prefect_ml_automations import load_config, Evaluator
"""

from prefect_ml_automations.automations import (
    AddArtifactAlias,
    AddArtifactTag,
    Automation,
    CreateArtifact,
    EmitEvent,
    LinkArtifact,
    NoOp,
    Notification,
    ProjectScope,
    RegistryScope,
    RemoveArtifactTag,
    RunDeployment,
    RunFilters,
    RunMetric,
    RunMetricChange,
    RunMetricZScore,
    RunStalled,
    RunState,
    UnlinkArtifact,
    Webhook,
)
from prefect_ml_automations.config import AutomationsConfig, load_config
from prefect_ml_automations.decisions import Firing, Skip
from prefect_ml_automations.errors import (
    ActionError,
    BadInputError,
    ConfigError,
    EventError,
    MLAutomationsError,
    SourceError,
    StateError,
)
from prefect_ml_automations.evaluator import Evaluation, Evaluator, EvaluatorState, EventBatch
from prefect_ml_automations.events import Event, read_events

__all__ = [  # noqa: RUF022 -- grouped by concept, not alphabetically
    # configuration
    "AutomationsConfig",
    "load_config",
    # automations: scopes, events, filters, actions
    "Automation",
    "ProjectScope",
    "RegistryScope",
    "AddArtifactAlias",
    "AddArtifactTag",
    "CreateArtifact",
    "LinkArtifact",
    "RemoveArtifactTag",
    "RunMetric",
    "RunMetricChange",
    "RunMetricZScore",
    "RunStalled",
    "RunState",
    "UnlinkArtifact",
    "RunFilters",
    "EmitEvent",
    "NoOp",
    "Notification",
    "RunDeployment",
    "Webhook",
    # events and evaluation
    "Event",
    "read_events",
    "EventBatch",
    "Evaluation",
    "Evaluator",
    "EvaluatorState",
    "Firing",
    "Skip",
    # errors
    "ActionError",
    "BadInputError",
    "ConfigError",
    "EventError",
    "MLAutomationsError",
    "SourceError",
    "StateError",
]
