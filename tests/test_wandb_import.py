"""`import-wandb`: W&B's saved automations become ours, and whatever does not carry over is said.

The automations are built with W&B's own SDK (`wandb.automations`) and dumped in the shape W&B's
API returns once they are saved (`TriggerFields`: the research report's §4.6 route), each checked
with W&B's generated response types — so these are the answers the importer really meets.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("wandb", reason="W&B's SDK (a test-only dependency) builds the automations")

from graphql import parse, print_ast
from wandb._pydantic import to_json
from wandb.automations import (
    ArtifactEvent,
    Automation,
    DoNothing,
    MetricChangeFilter,
    NewAutomation,
    OnAddArtifactAlias,
    OnAddArtifactTag,
    OnAddCollectionTag,
    OnCreateArtifact,
    OnLinkArtifact,
    OnRemoveArtifactTag,
    OnRemoveCollectionTag,
    OnRunMetric,
    OnRunState,
    OnUnlinkArtifact,
    OrgScope,
    ProjectScope,
    RegistryScope,
    RunEvent,
    SendNotification,
    SendPromptToAria,
    SendWebhook,
    TeamScope,
)
from wandb.automations._generated import (
    GetAutomationsLegacy,
    GetEntityAutomations,
    GetEntityAutomationsLegacy,
    TriggerFields,
    operations,
)
from wandb.automations._inputs import prepare_to_create
from wandb.automations._run_state_filters import ReportedRunState
from wandb.automations.events import _BaseMutationEventInput
from wandb.automations.scopes import _ArtifactPortfolioScope, _ArtifactSequenceScope

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import parse_config
from prefect_ml_automations.wandb_import import (
    GET_ENTITY_AUTOMATIONS,
    GET_ENTITY_AUTOMATIONS_LEGACY,
    CollectionHome,
    import_wandb,
)

# W&B's SDK warns about its own deprecated `metric_filter` field whenever it builds or reads a
# run-metric filter (the cases below are built as this module loads, and again in some tests).
warnings.filterwarnings("ignore", "deprecated", DeprecationWarning, "pydantic.main")
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning:pydantic.main")


def gid(kind: str, key: object) -> str:
    """A W&B-style global id: base64 of `Kind:key`."""
    return base64.b64encode(f"{kind}:{key}".encode()).decode()


ENTITY = "acme"
PROJECT = ProjectScope(id=gid("Project", 1), name="vision")
REGISTRY = RegistryScope(id=gid("Project", 2), full_name="wandb-registry-models")
PORTFOLIO = _ArtifactPortfolioScope(id=gid("ArtifactCollection", 3), name="churn")
SEQUENCE = _ArtifactSequenceScope(id=gid("ArtifactCollection", 4), name="churn-data")
OLD_REGISTRY_PORTFOLIO = _ArtifactPortfolioScope(id=gid("ArtifactCollection", 5), name="churn")
UNKNOWN_PORTFOLIO = _ArtifactPortfolioScope(id=gid("ArtifactCollection", 6), name="fraud")
UNKNOWN_SEQUENCE = _ArtifactSequenceScope(id=gid("ArtifactCollection", 7), name="fraud-data")
TEAM = TeamScope(id=gid("Entity", 1), name="acme")
ORG = OrgScope(id=gid("Entity", 2), name="acme-org")
#: Which project holds each collection, as `fetch_automations` looks them up (the saved scope
#: names only the collection); the last two are not known.
HOMES = {
    PORTFOLIO.id: CollectionHome("wandb-registry-models", "acme-org"),
    SEQUENCE.id: CollectionHome("vision", "acme"),
    OLD_REGISTRY_PORTFOLIO.id: CollectionHome("model-registry", "acme"),
}

HOOK = {
    "__typename": "GenericWebhookIntegration",
    "id": gid("Integration", 1),
    "name": "deployer",
    "urlEndpoint": "https://hooks.example.com/deploy",
}
SLACK = {
    "__typename": "SlackIntegration",
    "id": gid("Integration", 2),
    "teamName": "acme",
    "channelName": "#ml-alerts",
}
_ACTION_TYPENAMES = {
    "GENERIC_WEBHOOK": "GenericWebhookTriggeredAction",
    "NOTIFICATION": "NotificationTriggeredAction",
    "NO_OP": "NoOpTriggeredAction",
    "ARIA": "ARIATriggeredAction",
}


def saved(new: NewAutomation, name: str, **fields: Any) -> dict[str, Any]:
    """`new` as W&B's API returns it once saved: `TriggerFields`, keys `event` and `action`,
    the filter a JSON string (an artifact event's wrapped in {"filter": …})."""
    event, action = new.event, new.action
    assert event is not None
    assert action is not None
    inner = json.loads(to_json(event.filter))  # what the create input's eventFilter carries
    wrapped = {"filter": inner} if isinstance(event, _BaseMutationEventInput) else inner
    dumped = action.model_dump()
    typename = _ACTION_TYPENAMES[action.action_type.value]
    extra: dict[str, Any] = {
        "GenericWebhookTriggeredAction": {
            "integration": HOOK,
            "requestPayload": dumped.get("requestPayload"),
        },
        "NotificationTriggeredAction": {
            "integration": SLACK,
            **{key: dumped.get(key) for key in ("title", "message", "severity")},
        },
        "NoOpTriggeredAction": {"noOp": True},
        "ARIATriggeredAction": {"prompt": dumped.get("prompt")},
    }[typename]
    scope = event.scope.model_dump()
    node = {
        "__typename": "Trigger",
        "id": gid("Trigger", name),
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": None,
        "name": name,
        "description": None,
        "enabled": True,
        "scope": {k: v for k, v in scope.items() if k not in ("scopeType", "isRegistry")},
        "event": {
            "__typename": "FilterEventTriggeringCondition",
            "eventType": event.event_type.value,
            "filter": json.dumps(wrapped),
        },
        "action": {"__typename": typename, **extra},
        **fields,
    }
    TriggerFields.model_validate(node)  # W&B's wire schema: exactly what its API sends
    Automation.model_validate(TriggerFields.model_validate(node))  # and what its SDK reads
    return node


def by_hand(
    name: str,
    scope: Any,
    event_type: str,
    event_filter: Any,
    action: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A saved automation W&B's SDK can not build (legacy kinds, the App's comparisons, …),
    checked against W&B's wire schema."""
    node = {
        "__typename": "Trigger",
        "id": gid("Trigger", name),
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": None,
        "name": name,
        "description": None,
        "enabled": True,
        "scope": scope
        if isinstance(scope, dict)
        else scope.model_dump(include={"id", "name"}) | {"__typename": scope.typename__},
        "event": {
            "__typename": "FilterEventTriggeringCondition",
            "eventType": event_type,
            "filter": json.dumps(event_filter),
        },
        "action": action or {"__typename": "NoOpTriggeredAction", "noOp": True},
    }
    TriggerFields.model_validate(node)
    return node


def entity_answer(*nodes: dict[str, Any]) -> dict[str, Any]:
    """A whole `GetEntityAutomations` answer, as W&B's generated type reads it."""
    answer = {
        "data": {
            "scope": {
                "triggers": {
                    "pageInfo": {"endCursor": None, "hasNextPage": False},
                    "edges": [{"node": node} for node in nodes],
                }
            }
        }
    }
    GetEntityAutomations.model_validate(answer["data"])
    return answer


def legacy_answer(projects: list[list[dict[str, Any]]], *, viewer: bool = False) -> dict[str, Any]:
    """A `GetEntityAutomationsLegacy` (or `GetAutomationsLegacy`) answer: the project walk."""
    answer = {
        "data": {
            "scope": {
                "projects": {
                    "pageInfo": {"endCursor": None, "hasNextPage": False},
                    "edges": [
                        {"node": {"__typename": "Project", "triggers": triggers}}
                        for triggers in projects
                    ],
                }
            }
        }
    }
    (GetAutomationsLegacy if viewer else GetEntityAutomationsLegacy).model_validate(answer["data"])
    return answer


def valid_config(text: str) -> Any:
    """What `import-wandb` wrote, loaded by our config loader (it must always load)."""
    return parse_config(yaml.safe_load(text), env={})


NO_OP = {"type": "no_op"}
IN_PROJECT = {"project": "acme/vision"}
IN_REGISTRY = {"registry": "models"}
NOT_IMPORTED = "not carried over: the whole automation (written commented out below): "
SECRETS = (
    "not carried over: the access token and secret of W&B's webhook integration 'deployer', if "
    "it has them (W&B's API never returns them): set action.access_token / action.secret"
)
SLACK_NOTE = (
    "not carried over: W&B's Slack integration (team 'acme', channel '#ml-alerts'): save a "
    "Prefect Slack notification block for it and replace slack-webhook/CHANGE-ME in "
    "action.block (W&B's own links to the run or artifact are not added; the message is what "
    "is sent)"
)


def wider(what: str, conjunct: str, why: str, subjects: str = "artifact events") -> str:
    return (
        f"not carried over: the {what} {conjunct} ({why}): left out, so the imported automation "
        f"matches MORE {subjects} than the W&B one"
    )


@dataclass
class Case:
    """A named scenario: one saved W&B automation and exactly what it becomes here."""

    id: str
    node: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    imported: bool = True


def convert_one(case: Case) -> None:
    result = import_wandb(entity_answer(case.node), entity=ENTITY, homes=HOMES)
    (automation,) = result.automations
    assert automation.settings == case.settings
    assert automation.notes == case.notes
    assert automation.imported is case.imported
    assert result.notes == []
    config = valid_config(result.yaml())
    assert [a.name for a in config.automations] == ([case.node["name"]] if case.imported else [])
    assert result.yaml().count("# not carried over:") == len(case.notes)


# -- every event ---------------------------------------------------------------------------------

EVENTS = [
    Case(
        "a version linked into a registry (W&B's LINK_MODEL)",
        saved(OnLinkArtifact(scope=REGISTRY) >> DoNothing(), "link"),
        {"name": "link", "scope": IN_REGISTRY, "event": {"type": "LINK_ARTIFACT"}, "action": NO_OP},
    ),
    Case(
        "a link filtered by alias: our LINK_ARTIFACT takes no alias, so it fires more",
        saved(
            OnLinkArtifact(scope=REGISTRY, filter=ArtifactEvent.alias.eq("production"))
            >> DoNothing(),
            "link-production",
        ),
        {
            "name": "link-production",
            "scope": IN_REGISTRY,
            "event": {"type": "LINK_ARTIFACT"},
            "action": NO_OP,
        },
        [
            wider(
                "alias filter",
                '{"alias": {"$eq": "production"}}',
                "LINK_ARTIFACT here takes no alias filter",
            )
        ],
    ),
    Case(
        "a version unlinked",
        saved(OnUnlinkArtifact(scope=REGISTRY) >> DoNothing(), "unlink"),
        {
            "name": "unlink",
            "scope": IN_REGISTRY,
            "event": {"type": "UNLINK_ARTIFACT"},
            "action": NO_OP,
        },
    ),
    Case(
        "a new version in a project's collection",
        saved(OnCreateArtifact(scope=SEQUENCE) >> DoNothing(), "created"),
        {
            "name": "created",
            "scope": {"project": "acme/vision", "collection": "churn-data"},
            "event": {"type": "CREATE_ARTIFACT"},
            "action": NO_OP,
        },
    ),
    Case(
        "a new version with an alias filter: our CREATE_ARTIFACT takes no alias",
        saved(
            OnCreateArtifact(scope=SEQUENCE, filter=ArtifactEvent.alias.eq("latest"))
            >> DoNothing(),
            "created-latest",
        ),
        {
            "name": "created-latest",
            "scope": {"project": "acme/vision", "collection": "churn-data"},
            "event": {"type": "CREATE_ARTIFACT"},
            "action": NO_OP,
        },
        [
            wider(
                "alias filter",
                '{"alias": {"$eq": "latest"}}',
                "CREATE_ARTIFACT here takes no alias filter",
            )
        ],
    ),
    Case(
        "alias production added in a registry collection",
        saved(
            OnAddArtifactAlias(scope=PORTFOLIO, filter=ArtifactEvent.alias.eq("production"))
            >> DoNothing(),
            "production",
        ),
        {
            "name": "production",
            "scope": {"registry": "models", "collection": "churn"},
            "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
            "action": NO_OP,
        },
    ),
    Case(
        "an alias matching a regex or equal to one name",
        saved(
            OnAddArtifactAlias(
                scope=REGISTRY,
                filter=ArtifactEvent.alias.matches_regex("^prod") | (ArtifactEvent.alias == "v1.0"),
            )
            >> DoNothing(),
            "prod-or-v1",
        ),
        {
            "name": "prod-or-v1",
            "scope": IN_REGISTRY,
            "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": r"^prod|^v1\.0$"},
            "action": NO_OP,
        },
    ),
    Case(
        "any alias added anywhere in a registry",
        saved(OnAddArtifactAlias(scope=REGISTRY) >> DoNothing(), "any-alias"),
        {
            "name": "any-alias",
            "scope": IN_REGISTRY,
            "event": {"type": "ADD_ARTIFACT_ALIAS"},
            "action": NO_OP,
        },
    ),
    Case(
        "a tag added",
        saved(
            OnAddArtifactTag(scope=REGISTRY, filter=ArtifactEvent.tag.matches_regex("^europe"))
            >> DoNothing(),
            "europe",
        ),
        {
            "name": "europe",
            "scope": IN_REGISTRY,
            "event": {"type": "ADD_ARTIFACT_TAG", "tag": "^europe"},
            "action": NO_OP,
        },
    ),
    Case(
        "a tag removed",
        saved(
            OnRemoveArtifactTag(scope=REGISTRY, filter=ArtifactEvent.tag.eq("eu-west"))
            >> DoNothing(),
            "untagged",
        ),
        {
            "name": "untagged",
            "scope": IN_REGISTRY,
            "event": {"type": "REMOVE_ARTIFACT_TAG", "tag": "^eu-west$"},
            "action": NO_OP,
        },
    ),
    Case(
        "an alias filter on a tag event: our tag events take no alias",
        saved(
            OnAddArtifactTag(
                scope=REGISTRY,
                filter=ArtifactEvent.alias.eq("production") & ArtifactEvent.tag.eq("eu"),
            )
            >> DoNothing(),
            "tag-on-production",
        ),
        {
            "name": "tag-on-production",
            "scope": IN_REGISTRY,
            "event": {"type": "ADD_ARTIFACT_TAG", "tag": "^eu$"},
            "action": NO_OP,
        },
        [
            wider(
                "alias filter",
                '{"alias": {"$eq": "production"}}',
                "ADD_ARTIFACT_TAG here takes no alias filter",
            )
        ],
    ),
    Case(
        "legacy UPDATE_ARTIFACT_ALIAS becomes ADD_ARTIFACT_ALIAS, and says so",
        by_hand(
            "legacy-alias",
            REGISTRY,
            "UPDATE_ARTIFACT_ALIAS",
            {"filter": {"$or": [{"$and": [{"alias": {"$regex": "^prod"}}]}]}},
        ),
        {
            "name": "legacy-alias",
            "scope": IN_REGISTRY,
            "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^prod"},
            "action": NO_OP,
        },
        [
            "not carried over: W&B's legacy event UPDATE_ARTIFACT_ALIAS as such: imported as "
            "ADD_ARTIFACT_ALIAS (an alias added to a version, or moved onto it)"
        ],
    ),
    Case(
        "a tag added to a collection: no counterpart, commented out",
        saved(OnAddCollectionTag(scope=REGISTRY) >> DoNothing(), "collection-tagged"),
        {"name": "collection-tagged", "scope": IN_REGISTRY, "action": NO_OP},
        [
            NOT_IMPORTED + "W&B's event ADD_COLLECTION_TAG (a tag added to a collection, not to "
            "a version) has no counterpart here"
        ],
        imported=False,
    ),
    Case(
        "a tag removed from a collection: no counterpart, commented out",
        saved(OnRemoveCollectionTag(scope=REGISTRY) >> DoNothing(), "collection-untagged"),
        {"name": "collection-untagged", "scope": IN_REGISTRY, "action": NO_OP},
        [
            NOT_IMPORTED + "W&B's event REMOVE_COLLECTION_TAG (a tag removed from a collection, "
            "not from a version) has no counterpart here"
        ],
        imported=False,
    ),
    Case(
        "a Weave metric: no counterpart, commented out",
        by_hand("weave", PROJECT, "WEAVE_METRIC_THRESHOLD", {}),
        {"name": "weave", "scope": IN_PROJECT, "action": NO_OP},
        [
            NOT_IMPORTED
            + "W&B's event WEAVE_METRIC_THRESHOLD (a Weave metric) has no counterpart here"
        ],
        imported=False,
    ),
]


def metric_case(
    id: str, filter: Any, event: dict[str, Any], notes: list[str] | None = None
) -> Case:
    return Case(
        id,
        saved(OnRunMetric(scope=PROJECT, filter=filter) >> DoNothing(), "metric"),
        {"name": "metric", "scope": IN_PROJECT, "event": event, "action": NO_OP},
        notes or [],
    )


def threshold_by_hand(id: str, threshold: dict[str, Any], event: dict[str, Any], **kw: Any) -> Case:
    spec = {"run_filter": '{"$and":[]}', "run_metric_filter": {"threshold_filter": threshold}}
    return Case(
        id,
        by_hand("metric", PROJECT, "RUN_METRIC", spec),
        {"name": "metric", "scope": IN_PROJECT, "event": event, "action": NO_OP},
        **kw,
    )


METRIC_EVENTS = [
    metric_case(
        "average of the last 5 above 0.5",
        RunEvent.metric("loss").avg(5) > 0.5,
        {
            "type": "RUN_METRIC",
            "metric": "loss",
            "window": 5,
            "aggregation": "average",
            "operator": ">",
            "threshold": 0.5,
        },
    ),
    metric_case(
        "min of the last 3 at most 0.1",
        RunEvent.metric("loss").min(3) <= 0.1,
        {
            "type": "RUN_METRIC",
            "metric": "loss",
            "window": 3,
            "aggregation": "min",
            "operator": "<=",
            "threshold": 0.1,
        },
    ),
    metric_case(
        "max of the last 10 at least 0.9",
        RunEvent.metric("acc").max(10) >= 0.9,
        {
            "type": "RUN_METRIC",
            "metric": "acc",
            "window": 10,
            "aggregation": "max",
            "operator": ">=",
            "threshold": 0.9,
        },
    ),
    metric_case(
        "mean of the last 4 below 2",
        RunEvent.metric("loss").mean(4) < 2,
        {
            "type": "RUN_METRIC",
            "metric": "loss",
            "window": 4,
            "aggregation": "average",
            "operator": "<",
            "threshold": 2.0,
        },
    ),
    metric_case(
        "the latest value, with no aggregation",
        RunEvent.metric("acc") >= 0.9,
        {"type": "RUN_METRIC", "metric": "acc", "window": 1, "operator": ">=", "threshold": 0.9},
    ),
    threshold_by_hand(
        "the App's 'equal to' ($eq, which W&B's SDK can not read)",
        {"name": "epoch", "agg_op": None, "window_size": 1, "cmp_op": "$eq", "threshold": 10},
        {"type": "RUN_METRIC", "metric": "epoch", "window": 1, "operator": "==", "threshold": 10.0},
    ),
    threshold_by_hand(
        "the App's 'not equal to' ($ne)",
        {"name": "acc", "agg_op": "MAX", "window_size": 3, "cmp_op": "$ne", "threshold": 0},
        {
            "type": "RUN_METRIC",
            "metric": "acc",
            "window": 3,
            "aggregation": "max",
            "operator": "!=",
            "threshold": 0.0,
        },
    ),
    threshold_by_hand(
        "a window with no aggregation: the latest value, said",
        {"name": "acc", "agg_op": None, "window_size": 5, "cmp_op": "$gt", "threshold": 0.5},
        {"type": "RUN_METRIC", "metric": "acc", "window": 1, "operator": ">", "threshold": 0.5},
        notes=[
            "not carried over: the window sizes (window 5) come without an aggregation, and "
            "W&B's answer does not say how it combines the values: imported as the latest value "
            "only (windows of 1)"
        ],
    ),
    Case(
        "the legacy metric_filter, alone",
        by_hand(
            "metric",
            PROJECT,
            "RUN_METRIC",
            {
                "run_filter": '{"$and":[]}',
                "metric_filter": json.dumps(
                    {
                        "name": "acc",
                        "agg_op": "MAX",
                        "window_size": 3,
                        "cmp_op": "$gt",
                        "threshold": 0.8,
                    }
                ),
            },
        ),
        {
            "name": "metric",
            "scope": IN_PROJECT,
            "event": {
                "type": "RUN_METRIC",
                "metric": "acc",
                "window": 3,
                "aggregation": "max",
                "operator": ">",
                "threshold": 0.8,
            },
            "action": NO_OP,
        },
    ),
    metric_case(
        "the min of 10 falls by 25 % against the 10 before",
        RunEvent.metric("loss").min(10).decreases_by(frac=0.25),
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "loss",
            "current_window": 10,
            "prior_window": 10,
            "aggregation": "min",
            "change_type": "relative",
            "direction": "decrease",
            "amount": 0.25,
        },
    ),
    metric_case(
        "the max of 5 rises by 0.1",
        RunEvent.metric("acc").max(5).increases_by(diff=0.1),
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "acc",
            "current_window": 5,
            "prior_window": 5,
            "aggregation": "max",
            "change_type": "absolute",
            "direction": "increase",
            "amount": 0.1,
        },
    ),
    metric_case(
        "any change of the latest value by 2",
        RunEvent.metric("loss").changes_by(diff=2),
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "loss",
            "current_window": 1,
            "prior_window": 1,
            "change_type": "absolute",
            "direction": "any",
            "amount": 2.0,
        },
    ),
    metric_case(
        "a change against a longer prior window",
        MetricChangeFilter(
            name="loss",
            agg="AVERAGE",
            window=5,
            prior_window=20,
            change_type="RELATIVE",
            change_dir="ANY",
            threshold=0.5,
        ),
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "loss",
            "current_window": 5,
            "prior_window": 20,
            "aggregation": "average",
            "change_type": "relative",
            "direction": "any",
            "amount": 0.5,
        },
    ),
    metric_case(
        "z-score above 2 against the last 20 runs",
        RunEvent.metric("acc").zscore(20) > 2,
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "acc",
            "window": 20,
            "threshold": 2.0,
            "direction": "above",
        },
    ),
    metric_case(
        "z-score below -2.5",
        RunEvent.metric("loss").zscore(30) < -2.5,
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "loss",
            "window": 30,
            "threshold": 2.5,
            "direction": "below",
        },
    ),
    metric_case(
        "|z-score| above 3",
        abs(RunEvent.metric("loss").zscore(30)) > 3,
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "loss",
            "window": 30,
            "threshold": 3.0,
            "direction": "either",
        },
    ),
]


def state_case(
    id: str, node: dict[str, Any], states: list[str], notes: list[str] | None = None
) -> Case:
    return Case(
        id,
        node,
        {
            "name": node["name"],
            "scope": IN_PROJECT,
            "event": {"type": "RUN_STATE", "states": states},
            "action": NO_OP,
        },
        notes or [],
    )


STATE_EVENTS = [
    state_case(
        "a run finishes or fails",
        saved(
            OnRunState(scope=PROJECT, filter=RunEvent.state.in_(["finished", "failed"]))
            >> DoNothing(),
            "ended",
        ),
        ["failed", "finished"],
    ),
    state_case(
        "a run crashes (W&B's CRASHED is FAILED)",
        saved(
            OnRunState(scope=PROJECT, filter=RunEvent.state == ReportedRunState.CRASHED)
            >> DoNothing(),
            "crashed",
        ),
        ["failed"],
    ),
    state_case(
        "raw states: CRASHED is failed, KILLED can not be chosen",
        by_hand(
            "raw-states",
            PROJECT,
            "RUN_STATE",
            {
                "run_filter": '{"$and":[]}',
                "run_state_filter": {"states": ["RUNNING", "CRASHED", "KILLED"]},
            },
        ),
        ["running", "failed"],
        [
            "not carried over: the run state 'KILLED' (here a run can fire on entering running, "
            "finished or failed; a killed run never fires)"
        ],
    ),
]


@pytest.mark.parametrize("case", [*EVENTS, *METRIC_EVENTS, *STATE_EVENTS], ids=lambda c: c.id)
def test_every_wandb_event_becomes_ours_or_says_why_not(case: Case) -> None:
    convert_one(case)


# -- run filters: one regex, exactly where W&B's filter holds ------------------------------------


def run_filter_case(
    id: str, run_filter: Any, filters: dict[str, str] | None, notes: list[str] | None = None
) -> Case:
    node = saved(
        OnRunState(scope=PROJECT, filter=RunEvent.state.eq("finished") & run_filter) >> DoNothing(),
        "ended",
    )
    return Case(id, node, ended(filters), notes or [])


def run_filter_by_hand(
    id: str, run_filter: Any, filters: dict[str, str] | None, notes: list[str]
) -> Case:
    spec = {"run_filter": json.dumps(run_filter), "run_state_filter": {"states": ["FINISHED"]}}
    return Case(id, by_hand("ended", PROJECT, "RUN_STATE", spec), ended(filters), notes)


def ended(filters: dict[str, str] | None) -> dict[str, Any]:
    settings = {
        "name": "ended",
        "scope": IN_PROJECT,
        "event": {"type": "RUN_STATE", "states": ["finished"]},
        "filters": filters,
        "action": NO_OP,
    }
    return {key: value for key, value in settings.items() if value is not None}


display_name = RunEvent.name  # W&B sends it as display_name
RUN_FILTERS = [
    run_filter_case("name equals", display_name == "sweep-1", {"run_name": "^sweep-1$"}),
    run_filter_case(
        "name contains (escaped)", display_name.contains("sweep."), {"run_name": r"sweep\."}
    ),
    run_filter_case(
        "name matches a regex", display_name.matches_regex(r"^exp-\d+$"), {"run_name": r"^exp-\d+$"}
    ),
    run_filter_case(
        "name is one of", display_name.in_(["a", "b.c"]), {"run_name": r"^(?:a|b\.c)$"}
    ),
    run_filter_case("name is not", display_name != "debug", {"run_name": "^(?!debug$)"}),
    run_filter_case(
        "name is none of", display_name.not_in(["a", "b"]), {"run_name": "^(?!(?:a|b)$)"}
    ),
    run_filter_case(
        "name contains a OR ends with b",
        display_name.contains("a") | display_name.matches_regex("b$"),
        {"run_name": "a|b$"},
    ),
    run_filter_case(
        "NOT name contains debug", ~display_name.contains("debug"), {"run_name": "^(?!.*(?:debug))"}
    ),
    run_filter_case(
        "NOT (a OR b): W&B's $nor",
        ~(display_name.contains("a") | display_name.contains("b")),
        {"run_name": "^(?!.*(?:a|b))"},
    ),
    run_filter_case("NOT name equals", ~(display_name == "x"), {"run_name": "^(?!x$)"}),
    run_filter_case(
        "a AND b: look-aheads",
        display_name.contains("a") & display_name.matches_regex("b$"),
        {"run_name": "^(?=.*(?:a))(?=.*(?:b$))"},
    ),
    run_filter_case(
        "name exists: no regex says it, so the filter is left out and says it fires more",
        display_name.exists(),
        None,
        [
            wider(
                "run filter",
                '{"display_name": {"$exists": true}}',
                "$exists has no regex counterpart",
                "runs",
            )
        ],
    ),
    run_filter_case(
        "a regex Python can not compile is left out, loudly",
        display_name.matches_regex("(?<n>x)"),
        None,
        [
            wider(
                "run filter",
                '{"display_name": {"$regex": "(?<n>x)"}}',
                "'(?<n>x)' is not a Python regex (unknown extension ?<n at position 1)",
                "runs",
            )
        ],
    ),
    run_filter_by_hand(
        "a user and a name",
        {"$and": [{"username": {"$eq": "alice"}}, {"display_name": {"$contains": "sweep"}}]},
        {"user": "alice", "run_name": "sweep"},
        [],
    ),
    run_filter_by_hand(
        "a filter on something else (tags) is left out, loudly",
        {"$and": [{"tags": {"$in": ["prod"]}}, {"display_name": {"$regex": "^exp"}}]},
        {"run_name": "^exp"},
        [
            wider(
                "run filter",
                '{"tags": {"$in": ["prod"]}}',
                "run filters here test the user (one username) and the run name (a regex)",
                "runs",
            )
        ],
    ),
    run_filter_by_hand(
        "user OR name can not be said with our two filters",
        {"$and": [{"$or": [{"username": "alice"}, {"display_name": {"$contains": "x"}}]}]},
        None,
        [
            wider(
                "run filter",
                '{"$or": [{"username": "alice"}, {"display_name": {"$contains": "x"}}]}',
                "run filters here test the user (one username) and the run name (a regex)",
                "runs",
            )
        ],
    ),
]


@pytest.mark.parametrize("case", RUN_FILTERS, ids=lambda c: c.id)
def test_run_filters_become_one_regex_or_a_loud_note(case: Case) -> None:
    convert_one(case)


@pytest.mark.parametrize(
    ("filter", "event", "filters"),
    [
        (
            (RunEvent.metric("loss").avg(5) > 0.5) & RunEvent.name.contains("sweep"),
            {
                "type": "RUN_METRIC",
                "metric": "loss",
                "window": 5,
                "aggregation": "average",
                "operator": ">",
                "threshold": 0.5,
            },
            {"run_name": "sweep"},
        ),
        (
            RunEvent.name.matches_regex("^exp-") & (RunEvent.metric("acc").zscore(10) > 3),
            {
                "type": "RUN_METRIC_ZSCORE",
                "metric": "acc",
                "window": 10,
                "threshold": 3.0,
                "direction": "above",
            },
            {"run_name": "^exp-"},
        ),
    ],
    ids=["threshold with a name filter", "z-score with a name filter (either order)"],
)
def test_metric_events_keep_their_run_filters(
    filter: Any, event: dict[str, Any], filters: dict[str, str]
) -> None:
    node = saved(OnRunMetric(scope=PROJECT, filter=filter) >> DoNothing(), "m")
    convert_one(
        Case(
            "m",
            node,
            {"name": "m", "scope": IN_PROJECT, "event": event, "filters": filters, "action": NO_OP},
        )
    )


# The algebra, against an independent evaluator of W&B's (MongoDB-like) semantics.

_NAMES = st.text(alphabet="ab.|x", max_size=5)
_REGEXES = st.sampled_from(["^a", "b$", "a.b", "a|b", "(a)b", "x*", "^$", r"\."])
_LEAVES = st.one_of(
    st.builds(lambda v: {"$eq": v}, _NAMES),
    st.builds(lambda v: {"$ne": v}, _NAMES),
    st.builds(lambda v: {"$in": v}, st.lists(_NAMES, max_size=3)),
    st.builds(lambda v: {"$nin": v}, st.lists(_NAMES, max_size=3)),
    st.builds(lambda v: {"$contains": v}, _NAMES),
    st.builds(lambda v: {"$regex": v}, _REGEXES),
    _NAMES,
)
_CONDITIONS = st.recursive(
    _LEAVES, lambda inner: st.builds(lambda c: {"$not": c}, inner), max_leaves=2
)
_EXPRESSIONS = st.recursive(
    st.builds(lambda c: {"display_name": c}, _CONDITIONS),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$nor": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
    ),
    max_leaves=5,
)


def holds(expression: dict[str, Any], run_name: str) -> bool:
    """W&B's meaning of a run-name filter, evaluated directly."""
    logic = {
        "$and": lambda xs: all(holds(x, run_name) for x in xs),
        "$or": lambda xs: any(holds(x, run_name) for x in xs),
        "$nor": lambda xs: not any(holds(x, run_name) for x in xs),
        "$not": lambda x: not holds(x, run_name),
        "display_name": lambda c: meets(c, run_name),
    }
    return all(logic[key](value) for key, value in expression.items())


def meets(condition: Any, value: str) -> bool:
    if not isinstance(condition, dict):
        return value == condition
    operators = {
        "$eq": lambda v: value == v,
        "$ne": lambda v: value != v,
        "$in": lambda v: value in v,
        "$nin": lambda v: value not in v,
        "$contains": lambda v: v in value,
        "$regex": lambda v: re.search(v, value) is not None,
        "$not": lambda v: not meets(v, value),
    }
    return all(operators[op](operand) for op, operand in condition.items())


@settings(max_examples=300, deadline=None)
@given(expression=_EXPRESSIONS, run_names=st.lists(_NAMES, min_size=1, max_size=8))
def test_the_run_name_regex_holds_exactly_where_wandbs_filter_holds(
    expression: dict[str, Any], run_names: list[str]
) -> None:
    spec = {
        "run_filter": json.dumps({"$and": [expression]}),
        "run_state_filter": {"states": ["FINISHED"]},
    }
    result = import_wandb([by_hand("ended", PROJECT, "RUN_STATE", spec)], entity=ENTITY)
    (automation,) = result.automations
    assert automation.notes == []  # nothing here needs leaving out
    pattern = automation.settings.get("filters", {}).get("run_name")
    for run_name in run_names:
        ours = pattern is None or re.search(pattern, run_name) is not None
        assert ours == holds(expression, run_name), (pattern, run_name)


# -- every scope ---------------------------------------------------------------------------------


def scope_case(
    id: str, scope: Any, ours: dict[str, str] | None, notes: list[str] | None = None
) -> Case:
    node = saved(OnAddArtifactAlias(scope=scope) >> DoNothing(), "alias")
    settings = {
        "name": "alias",
        "scope": ours,
        "event": {"type": "ADD_ARTIFACT_ALIAS"},
        "action": NO_OP,
    }
    if ours is None:
        del settings["scope"]
    return Case(id, node, settings, notes or [], imported=ours is not None)


WHOLE = "a scope here is one project or one registry: write one automation per project or registry it should watch"
SCOPES = [
    scope_case("a project", PROJECT, {"project": "acme/vision"}),
    scope_case("a registry (the project wandb-registry-models)", REGISTRY, {"registry": "models"}),
    scope_case(
        "a registry collection (a portfolio)",
        PORTFOLIO,
        {"registry": "models", "collection": "churn"},
    ),
    scope_case(
        "a portfolio in a project (the old model registry)",
        OLD_REGISTRY_PORTFOLIO,
        {"project": "acme/model-registry", "collection": "churn"},
    ),
    scope_case(
        "a project's collection (a sequence)",
        SEQUENCE,
        {"project": "acme/vision", "collection": "churn-data"},
    ),
    scope_case(
        "a portfolio whose registry nobody told us: a value to fill in",
        UNKNOWN_PORTFOLIO,
        {"registry": "CHANGE-ME", "collection": "fraud"},
        [
            "not carried over: the registry or project that holds collection 'fraud' (W&B's "
            "answer names only the collection): replace CHANGE-ME in scope (fetching with "
            "--entity looks the project up)"
        ],
    ),
    scope_case(
        "a sequence whose project nobody told us: a value to fill in",
        UNKNOWN_SEQUENCE,
        {"project": "CHANGE-ME", "collection": "fraud-data"},
        [
            "not carried over: the registry or project that holds collection 'fraud-data' (W&B's "
            "answer names only the collection): replace CHANGE-ME in scope (fetching with "
            "--entity looks the project up)"
        ],
    ),
    scope_case(
        "a whole team: no counterpart",
        TEAM,
        None,
        [NOT_IMPORTED + f"its scope is the whole team 'acme', and {WHOLE}"],
    ),
    scope_case(
        "a whole organization: no counterpart",
        ORG,
        None,
        [NOT_IMPORTED + f"its scope is the whole organization 'acme-org', and {WHOLE}"],
    ),
]


@pytest.mark.parametrize("case", SCOPES, ids=lambda c: c.id)
def test_every_wandb_scope_becomes_ours_or_says_why_not(case: Case) -> None:
    convert_one(case)


def test_a_run_event_on_a_collection_is_refused_with_our_configs_reason() -> None:
    # W&B's SDK allows CREATE_ARTIFACT on a registry collection; here versions are created in
    # projects, and the config loader says so.
    node = saved(OnCreateArtifact(scope=PORTFOLIO) >> DoNothing(), "created")
    convert_one(
        Case(
            "created",
            node,
            {
                "name": "created",
                "scope": {"registry": "models", "collection": "churn"},
                "event": {"type": "CREATE_ARTIFACT"},
                "action": NO_OP,
            },
            [
                NOT_IMPORTED + "event: CREATE_ARTIFACT can not be used with collection 'churn' of "
                "registry 'models'; use a project scope such as {project: team/project}."
            ],
            imported=False,
        )
    )


# -- every action --------------------------------------------------------------------------------


def action_case(
    id: str, node: dict[str, Any], action: dict[str, Any] | None, notes: list[str]
) -> Case:
    settings = {
        "name": node["name"],
        "scope": IN_REGISTRY,
        "event": {"type": "ADD_ARTIFACT_ALIAS"},
        "action": action,
    }
    return Case(
        id,
        node,
        {k: v for k, v in settings.items() if v is not None},
        notes,
        imported=action is not None,
    )


def on_alias(action: Any, name: str = "promote") -> dict[str, Any]:
    return saved(OnAddArtifactAlias(scope=REGISTRY) >> action, name)


def alias_by_hand(action: dict[str, Any]) -> dict[str, Any]:
    return by_hand(
        "promote", REGISTRY, "ADD_ARTIFACT_ALIAS", {"filter": {"$or": [{"$and": []}]}}, action
    )


ACTIONS = [
    action_case(
        "a webhook with a templated payload",
        on_alias(
            SendWebhook(
                integration_id=HOOK["id"],
                request_payload={
                    "model": "${artifact_version_string}",
                    "alias": "${alias}",
                    "by": "${event_author}",
                },
            )
        ),
        {
            "type": "webhook",
            "url": "https://hooks.example.com/deploy",
            "payload": {
                "model": "${artifact_version_string}",
                "alias": "${alias}",
                "by": "${event_author}",
            },
        },
        [
            "not carried over: ${artifact_version_string} as W&B renders it: W&B documents "
            "<entity>/<project>/<collection>:<alias>; here it is <project or "
            "registry>/<collection>:v<N>",
            SECRETS,
        ],
    ),
    action_case(
        "a webhook payload with a W&B secret and an artifact handle",
        on_alias(
            SendWebhook(
                integration_id=HOOK["id"],
                request_payload={"token": "${GITHUB_TOKEN}", "v": "${artifact_version}"},
            )
        ),
        {
            "type": "webhook",
            "url": "https://hooks.example.com/deploy",
            "payload": {"token": "${GITHUB_TOKEN}", "v": "${artifact_version}"},
        },
        [
            "not carried over: ${GITHUB_TOKEN} in the payload (a W&B secret or a variable not "
            "known here, so it renders empty): write its value into action.headers or "
            "action.payload",
            "not carried over: ${artifact_version} as W&B renders it: W&B renders an artifact "
            "handle (wandb-artifact://_id/…); here it is the version string <project or "
            "registry>/<collection>:v<N>",
            SECRETS,
        ],
    ),
    action_case(
        "a webhook with no payload",
        on_alias(SendWebhook(integration_id=HOOK["id"])),
        {"type": "webhook", "url": "https://hooks.example.com/deploy"},
        [SECRETS],
    ),
    action_case(
        "a webhook whose integration lacks its URL (an older server's stub)",
        alias_by_hand(
            {
                "__typename": "GenericWebhookTriggeredAction",
                "integration": {
                    "__typename": "GenericWebhookIntegration",
                    "id": HOOK["id"],
                    "name": "deployer",
                    "urlEndpoint": "",
                },
                "requestPayload": None,
            }
        ),
        {"type": "webhook", "url": "https://CHANGE-ME.invalid/hook"},
        [
            "not carried over: the URL of W&B's webhook integration 'deployer' (W&B's answer does "
            "not include it): replace https://CHANGE-ME.invalid/hook in action.url",
            SECRETS,
        ],
    ),
    action_case(
        "a Slack notification",
        on_alias(
            SendNotification(
                integration_id=SLACK["id"], title="Promoted", text="alias ${alias}", level="ERROR"
            )
        ),
        {
            "type": "notification",
            "block": "slack-webhook/CHANGE-ME",
            "title": "Promoted",
            "message": "alias ${alias}",
            "severity": "error",
        },
        [SLACK_NOTE],
    ),
    action_case("nothing (W&B's no-op)", on_alias(DoNothing()), NO_OP, []),
    action_case(
        "a Launch job (deprecated in W&B): no counterpart",
        alias_by_hand(
            {
                "__typename": "QueueJobTriggeredAction",
                "queue": {"id": gid("RunQueue", 1), "name": "gpu"},
                "template": "{}",
            }
        ),
        None,
        [
            NOT_IMPORTED + "W&B's Launch job action (queue 'gpu') has no counterpart here; its "
            "Prefect equivalent is action: {type: run_deployment, deployment: flow/name}"
        ],
    ),
    action_case(
        "a prompt to W&B's ARIA: no counterpart",
        on_alias(SendPromptToAria(prompt="Summarise the new version")),
        None,
        [
            NOT_IMPORTED
            + "W&B's ARIA action (prompt 'Summarise the new version') has no counterpart here"
        ],
    ),
    action_case(
        "a push notification: no counterpart",
        alias_by_hand({"__typename": "PushNotificationTriggeredAction"}),
        None,
        [
            NOT_IMPORTED + "W&B's push notification action has no counterpart here (a "
            "notification action sends through any Prefect notification block)"
        ],
    ),
]


@pytest.mark.parametrize("case", ACTIONS, ids=lambda c: c.id)
def test_every_wandb_action_becomes_ours_or_says_why_not(case: Case) -> None:
    convert_one(case)


# -- the shapes W&B's JSON comes in --------------------------------------------------------------

PRODUCTION = saved(
    OnAddArtifactAlias(scope=PORTFOLIO, filter=ArtifactEvent.alias.eq("production")) >> DoNothing(),
    "production",
    description="deploy what is promoted",
    enabled=False,
)
PRODUCTION_OURS = {
    "name": "production",
    "description": "deploy what is promoted",
    "enabled": False,
    "scope": {"registry": "models", "collection": "churn"},
    "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
    "action": NO_OP,
}


def schema_names(node: dict[str, Any]) -> dict[str, Any]:
    """The same trigger under the schema's own field names (no query aliases)."""
    out = dict(node)
    out["triggeringCondition"] = out.pop("event")
    out["triggeredAction"] = out.pop("action")
    return out


@pytest.mark.parametrize(
    "document",
    [
        entity_answer(PRODUCTION),
        entity_answer(PRODUCTION)["data"],
        legacy_answer([[], [PRODUCTION]]),
        legacy_answer([[PRODUCTION]], viewer=True),
        [PRODUCTION],
        {"automations": [PRODUCTION]},
        [schema_names(PRODUCTION)],
        PRODUCTION,
    ],
    ids=[
        "a GetEntityAutomations answer",
        "its data only",
        "a GetEntityAutomationsLegacy answer (the project walk)",
        "a GetAutomationsLegacy answer (the viewer's projects)",
        "a list",
        "an object with automations",
        "the schema's names: triggeringCondition, triggeredAction",
        "one automation",
    ],
)
def test_every_shape_of_wandbs_answer_is_read(document: Any) -> None:
    result = import_wandb(document, entity=ENTITY, homes=HOMES)
    assert [(a.settings, a.notes, a.imported) for a in result.automations] == [
        (PRODUCTION_OURS, [], True)
    ]
    valid_config(result.yaml())


def test_the_inner_filter_may_be_a_json_string_as_w_and_bs_sdk_writes_it() -> None:
    node = json.loads(json.dumps(PRODUCTION))
    inner = json.loads(node["event"]["filter"])["filter"]
    node["event"]["filter"] = json.dumps({"filter": json.dumps(inner)})
    Automation.model_validate(TriggerFields.model_validate(node))
    (automation,) = import_wandb([node], homes=HOMES).automations
    assert automation.settings["event"] == {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"}


def test_the_create_input_names_only_the_scopes_id() -> None:
    new = OnAddArtifactAlias(
        scope=PORTFOLIO, filter=ArtifactEvent.alias.eq("production")
    ) >> SendWebhook(integration_id=HOOK["id"], request_payload={"v": "${artifact_version_string}"})
    create_input = prepare_to_create(new, name="production").model_dump()
    assert (
        create_input["eventFilter"] == '{"$or":[{"$and":[{"alias":{"$eq":"production"}}]}]}'
    )  # not wrapped
    (automation,) = import_wandb([create_input], entity=ENTITY).automations
    assert automation.settings == {
        "name": "production",
        "scope": {"project": "CHANGE-ME", "collection": "CHANGE-ME"},
        "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
        "action": {
            "type": "webhook",
            "url": "https://CHANGE-ME.invalid/hook",
            "payload": {"v": "${artifact_version_string}"},
        },
    }
    assert automation.notes == [
        "not carried over: the collection, and its registry or project (W&B's answer gives only "
        f"the id {PORTFOLIO.id!r}): replace CHANGE-ME in scope (fetching with --entity looks the "
        "project up)",
        "not carried over: the URL of W&B's webhook integration "
        f"{HOOK['id']!r} (W&B's answer does not include it): replace "
        "https://CHANGE-ME.invalid/hook in action.url",
        "not carried over: ${artifact_version_string} as W&B renders it: W&B documents "
        "<entity>/<project>/<collection>:<alias>; here it is <project or "
        "registry>/<collection>:v<N>",
        f"not carried over: the access token and secret of W&B's webhook integration {HOOK['id']!r}, "
        "if it has them (W&B's API never returns them): set action.access_token / action.secret",
    ]


def test_an_older_export_that_names_the_collections_project_still_reads() -> None:
    old = {
        "name": "deploy-prod",
        "triggeringEventType": "ADD_ARTIFACT_ALIAS",
        "eventFilter": json.dumps({"$or": [{"$and": [{"alias": {"$regex": "^production$"}}]}]}),
        "scope": {
            "__typename": "ArtifactPortfolio",
            "name": "churn",
            "project": {"name": "wandb-registry-models", "entityName": "acme"},
        },
        "action": {"__typename": "NoOpTriggeredAction"},
    }
    (automation,) = import_wandb(
        {"data": {"project": {"automations": {"edges": [{"node": old}]}}}}
    ).automations
    assert automation.settings == {
        "name": "deploy-prod",
        "scope": {"registry": "models", "collection": "churn"},
        "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
        "action": NO_OP,
    }


def test_without_an_entity_projects_are_written_by_name_and_a_note_says_so() -> None:
    result = import_wandb(
        legacy_answer(
            [
                [
                    saved(
                        OnRunState(scope=PROJECT, filter=RunEvent.state.eq("failed"))
                        >> DoNothing(),
                        "failed",
                    )
                ]
            ],
            viewer=True,
        )
    )
    assert result.automations[0].settings["scope"] == {"project": "vision"}
    assert result.notes == [
        "W&B's answer does not name the projects' entity: they are written without it; pass "
        "--entity to write ENTITY/PROJECT"
    ]


def test_names_are_made_unique_and_references_are_not_read_from_the_environment() -> None:
    a = saved(
        OnAddArtifactAlias(scope=REGISTRY) >> DoNothing(), "promote", description="posts ${alias}"
    )
    b = saved(OnAddArtifactTag(scope=REGISTRY) >> DoNothing(), "promote")
    result = import_wandb([a, b])
    assert [x.settings["name"] for x in result.automations] == ["promote", "promote (2)"]
    assert result.automations[0].settings["description"] == "posts $ {alias}"
    assert result.automations[0].notes == [
        "not carried over: the description exactly: its ${…} would be read from the environment "
        "here, so it is written as $ {…}"
    ]
    assert result.automations[1].notes == [
        "renamed to 'promote (2)': another imported automation is named 'promote'"
    ]
    assert [a.name for a in valid_config(result.yaml()).automations] == ["promote", "promote (2)"]


def test_project_and_registry_keep_only_their_automations() -> None:
    in_project = saved(
        OnRunState(scope=PROJECT, filter=RunEvent.state.eq("failed")) >> DoNothing(), "failed"
    )
    in_collection = saved(OnCreateArtifact(scope=SEQUENCE) >> DoNothing(), "created")
    in_registry = saved(OnAddArtifactAlias(scope=PORTFOLIO) >> DoNothing(), "promoted")
    unknown = saved(OnCreateArtifact(scope=UNKNOWN_SEQUENCE) >> DoNothing(), "fraud-created")
    answer = entity_answer(in_project, in_collection, in_registry, unknown)

    mine = import_wandb(answer, entity=ENTITY, homes=HOMES, project="vision")
    assert [a.name for a in mine.automations] == ["failed", "created"]
    assert mine.notes == [
        "left out 2 automations not known to be in project 'acme/vision': promoted, fraud-created"
    ]
    assert [
        a.name
        for a in import_wandb(answer, entity=ENTITY, homes=HOMES, project="acme/vision").automations
    ] == ["failed", "created"]
    registry = import_wandb(answer, entity=ENTITY, homes=HOMES, registry="models")
    assert [a.name for a in registry.automations] == ["promoted"]
    nothing = import_wandb(answer, entity=ENTITY, homes=HOMES, project="other")
    assert nothing.nothing_imported() == (
        "Nothing to import: none of the 4 W&B automations is in the project or registry asked "
        "for (see the notes above)."
    )


# -- the command line, from a file ---------------------------------------------------------------

STORY = [
    saved(
        OnAddArtifactAlias(scope=REGISTRY, filter=ArtifactEvent.alias.eq("production"))
        >> SendWebhook(
            integration_id=HOOK["id"], request_payload={"model": "${artifact_version_string}"}
        ),
        "deploy-on-production",
        description="Deploy what is promoted.",
    ),
    saved(
        OnRunMetric(
            scope=PROJECT,
            filter=(RunEvent.metric("accuracy").avg(5) > 0.6) & RunEvent.name.contains("sweep-"),
        )
        >> SendNotification(
            integration_id=SLACK["id"], title="good run", text="accuracy is up", level="INFO"
        ),
        "good-accuracy",
    ),
    saved(OnAddCollectionTag(scope=REGISTRY) >> DoNothing(), "collection-tagged"),
]

STORY_YAML = """\
# 2 of 3 W&B automations imported by `ml-automations import-wandb`; the comments say what did not
#   carry over.
# Beyond W&B (no W&B setting carries over to these, so none is set): RUN_STALLED (a running run
#   quiet for a while); for_points and rearm on metric events; min_baseline, sigma_floor, method:
#   median_mad and baseline: finished on z-scores; a budget on any automation.
automations:

  # not carried over: ${artifact_version_string} as W&B renders it: W&B documents
  #   <entity>/<project>/<collection>:<alias>; here it is <project or registry>/<collection>:v<N>
  # not carried over: the access token and secret of W&B's webhook integration 'deployer', if it
  #   has them (W&B's API never returns them): set action.access_token / action.secret
  - name: deploy-on-production
    description: Deploy what is promoted.
    scope: {registry: models}
    event: {type: ADD_ARTIFACT_ALIAS, alias: ^production$}
    action:
      type: webhook
      url: https://hooks.example.com/deploy
      payload: {model: '${artifact_version_string}'}

  # not carried over: W&B's Slack integration (team 'acme', channel '#ml-alerts'): save a Prefect
  #   Slack notification block for it and replace slack-webhook/CHANGE-ME in action.block (W&B's
  #   own links to the run or artifact are not added; the message is what is sent)
  - name: good-accuracy
    scope: {project: acme/vision}
    event: {type: RUN_METRIC, metric: accuracy, window: 5, aggregation: average, operator: '>', threshold: 0.6}
    filters: {run_name: sweep-}
    action: {type: notification, block: slack-webhook/CHANGE-ME, title: good run, message: accuracy
        is up, severity: info}

  # not carried over: the whole automation (written commented out below): W&B's event
  #   ADD_COLLECTION_TAG (a tag added to a collection, not to a version) has no counterpart here
  # - name: collection-tagged
  #   scope: {registry: models}
  #   action: {type: no_op}
"""


def test_a_file_of_wandbs_answer_becomes_our_yaml_and_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wandb.json"
    path.write_text(json.dumps(entity_answer(*STORY)))
    assert main(["import-wandb", str(path), "--entity", "acme"]) == 0
    out, err = capsys.readouterr()
    assert out == STORY_YAML
    assert err.splitlines() == [
        "note: deploy-on-production: not carried over: ${artifact_version_string} as W&B renders "
        "it: W&B documents <entity>/<project>/<collection>:<alias>; here it is <project or "
        "registry>/<collection>:v<N>",
        "note: deploy-on-production: " + SECRETS,
        "note: good-accuracy: " + SLACK_NOTE,
        "note: collection-tagged: " + NOT_IMPORTED + "W&B's event ADD_COLLECTION_TAG (a tag added "
        "to a collection, not to a version) has no counterpart here",
    ]
    config = valid_config(out)
    assert [a.name for a in config.automations] == ["deploy-on-production", "good-accuracy"]
    assert config.automation("good-accuracy").event.describe() == "average(accuracy, 5) > 0.6"


def test_nothing_importable_exits_1_naming_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wandb.json"
    path.write_text(
        json.dumps(
            entity_answer(
                STORY[2], saved(OnAddArtifactAlias(scope=TEAM) >> DoNothing(), "team-wide")
            )
        )
    )
    assert main(["import-wandb", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        "error: Nothing could be imported: none of the 2 W&B automations can be expressed here; "
        "the notes above say why."
    )
    assert (
        "note: team-wide: " + NOT_IMPORTED + f"its scope is the whole team 'acme', and {WHOLE}"
        in err
    )


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (
            "{not json",
            2,
            "is not JSON (Expecting property name enclosed in double quotes, line 1).",
        ),
        (
            '{"hello": 1}',
            2,
            "The file holds no W&B automations: give the JSON W&B's API returns for them",
        ),
        (
            '{"errors": [{"message": "permission denied"}], "data": null}',
            2,
            "The file holds W&B's error answer, not automations: permission denied",
        ),
        (
            '{"data": {"scope": null}}',
            1,
            "Nothing to import: W&B's answer holds no entity (data.scope is null: the entity does not exist, or the API key can not see it).",
        ),
        (
            '{"data": {"scope": {"triggers": {"pageInfo": {"endCursor": null, "hasNextPage": false}, "edges": []}}}}',
            1,
            "Nothing to import: W&B's answer lists no automations.",
        ),
    ],
    ids=[
        "not JSON",
        "no automations in it",
        "W&B's error answer",
        "no such entity",
        "an empty answer",
    ],
)
def test_files_that_hold_nothing_to_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, code: int, message: str
) -> None:
    path = tmp_path / "wandb.json"
    path.write_text(content)
    assert main(["import-wandb", str(path)]) == code
    assert message in capsys.readouterr().err


# -- the command line, fetching from W&B (faked with respx) -------------------------------------

WANDB = "https://api.wandb.ai/graphql"
KEY = "k" * 40


@dataclass
class FakeWandb:
    """W&B's GraphQL endpoint for the automations queries, answering as W&B's types say."""

    triggers: list[dict[str, Any]]
    homes: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Without `Entity.triggers`, as servers before v0.83.0.
    legacy: bool = False
    #: GraphQL types the server does not have.
    unknown_types: tuple[str, ...] = ()
    page_size: int = 2
    #: Without `Query.artifactCollection(id:)`: where a collection is can not be looked up.
    lookups: bool = True
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        body["authorization"] = request.headers.get("Authorization")
        self.requests.append(body)
        if self.status != 200:
            return httpx.Response(self.status, text="no")
        operation = parse(body["query"]).definitions[0].name.value  # type: ignore[union-attr]
        for typename in self.unknown_types:
            if f"on {typename} " in body["query"]:
                return httpx.Response(
                    200, json={"errors": [{"message": f'Unknown type "{typename}".'}], "data": None}
                )
        variables = body["variables"]
        if variables.get("entity", ENTITY) != ENTITY:
            return httpx.Response(200, json={"data": {"scope": None}})
        answer = getattr(self, operation)(variables)
        return httpx.Response(200, json=answer)

    def page(self, items: list[Any], variables: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        start = int(variables["cursor"] or 0)
        end = start + min(self.page_size, variables["perPage"])
        info = {"endCursor": str(end), "hasNextPage": end < len(items)}
        return items[start:end], info

    def GetEntityAutomations(self, variables: dict[str, Any]) -> dict[str, Any]:
        if self.legacy:
            return {
                "errors": [{"message": 'Cannot query field "triggers" on type "Entity".'}],
                "data": None,
            }
        nodes, info = self.page(self.triggers, variables)
        data = {"scope": {"triggers": {"pageInfo": info, "edges": [{"node": n} for n in nodes]}}}
        GetEntityAutomations.model_validate(data)
        return {"data": data}

    def GetEntityAutomationsLegacy(self, variables: dict[str, Any]) -> dict[str, Any]:
        projects, info = self.page([[t] for t in self.triggers], variables)
        edges = [{"node": {"__typename": "Project", "triggers": p}} for p in projects]
        data = {"scope": {"projects": {"pageInfo": info, "edges": edges}}}
        GetEntityAutomationsLegacy.model_validate(data)
        return {"data": data}

    def ArtifactCollectionProject(self, variables: dict[str, Any]) -> dict[str, Any]:
        if not self.lookups:
            return {
                "errors": [{"message": 'Cannot query field "artifactCollection" on type "Query".'}],
                "data": None,
            }
        home = self.homes.get(variables["id"])
        if home is None:
            return {"data": {"artifactCollection": None}}
        project, entity = home
        node = {
            "__typename": "ArtifactPortfolio",
            "name": "?",
            "project": {"name": project, "entity": {"name": entity}},
        }
        return {"data": {"artifactCollection": node}}

    def operations(self) -> list[str]:
        return [parse(r["query"]).definitions[0].name.value for r in self.requests]  # type: ignore[union-attr]


@pytest.fixture
def wandb_api(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Route W&B's API to a fake (Prefect's own API on 127.0.0.1 passes through)."""
    import respx

    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)

    def serve(fake: FakeWandb, url: str = WANDB) -> FakeWandb:
        mock.post(url).mock(side_effect=fake.handle)
        return fake

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield serve


def test_our_queries_are_the_ones_wandbs_sdk_sends() -> None:
    def definitions(document: str) -> set[str]:
        return {print_ast(d) for d in parse(document).definitions}

    assert definitions(GET_ENTITY_AUTOMATIONS) == definitions(operations.GET_ENTITY_AUTOMATIONS_GQL)
    assert definitions(GET_ENTITY_AUTOMATIONS_LEGACY) == definitions(
        operations.GET_ENTITY_AUTOMATIONS_LEGACY_GQL
    )


FETCHED = [
    saved(
        OnRunState(scope=PROJECT, filter=RunEvent.state.eq("failed")) >> DoNothing(),
        "page-on-failure",
    ),
    saved(OnLinkArtifact(scope=PORTFOLIO) >> DoNothing(), "linked"),
    saved(OnCreateArtifact(scope=UNKNOWN_SEQUENCE) >> DoNothing(), "fraud-created"),
]
FETCHED_YAML = """\
# 3 of 3 W&B automations imported by `ml-automations import-wandb`; the comments say what did not
#   carry over.
# Beyond W&B (no W&B setting carries over to these, so none is set): RUN_STALLED (a running run
#   quiet for a while); for_points and rearm on metric events; min_baseline, sigma_floor, method:
#   median_mad and baseline: finished on z-scores; a budget on any automation.
automations:

  - name: page-on-failure
    scope: {project: acme/vision}
    event:
      type: RUN_STATE
      states: [failed]
    action: {type: no_op}

  - name: linked
    scope: {registry: models, collection: churn}
    event: {type: LINK_ARTIFACT}
    action: {type: no_op}

  # not carried over: the registry or project that holds collection 'fraud-data' (W&B's answer
  #   names only the collection): replace CHANGE-ME in scope (fetching with --entity looks the
  #   project up)
  - name: fraud-created
    scope: {project: CHANGE-ME, collection: fraud-data}
    event: {type: CREATE_ARTIFACT}
    action: {type: no_op}
"""


def test_fetching_asks_wandb_as_its_sdk_does_page_by_page(
    wandb_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = wandb_api(
        FakeWandb(FETCHED, homes={PORTFOLIO.id: ("wandb-registry-models", "acme-org")})
    )
    assert main(["import-wandb", "--entity", "acme"]) == 0
    out = capsys.readouterr().out
    assert out == FETCHED_YAML
    assert fake.operations() == [
        "GetEntityAutomations",
        "GetEntityAutomations",
        "ArtifactCollectionProject",
        "ArtifactCollectionProject",
    ]
    first, second = fake.requests[:2]
    assert "triggers(" in first["query"]
    assert "...TriggerFields" in first["query"]
    assert first["query"] == operations.GET_ENTITY_AUTOMATIONS_GQL.lstrip("\n")
    assert first["authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert first["variables"] == {"entity": "acme", "cursor": None, "perPage": 50}
    assert second["variables"] == {"entity": "acme", "cursor": "2", "perPage": 50}
    assert [r["variables"] for r in fake.requests[2:]] == [
        {"id": PORTFOLIO.id},
        {"id": UNKNOWN_SEQUENCE.id},
    ]
    valid_config(out)


def test_an_older_server_is_read_by_the_legacy_project_walk(
    wandb_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = wandb_api(
        FakeWandb(FETCHED, homes={PORTFOLIO.id: ("wandb-registry-models", "acme-org")}, legacy=True)
    )
    assert main(["import-wandb", "--entity", "acme"]) == 0
    out, err = capsys.readouterr()
    assert out == FETCHED_YAML
    assert fake.operations()[:3] == [
        "GetEntityAutomations",
        "GetEntityAutomationsLegacy",
        "GetEntityAutomationsLegacy",
    ]
    assert fake.requests[1]["query"] == operations.GET_ENTITY_AUTOMATIONS_LEGACY_GQL.lstrip("\n")
    assert (
        err.splitlines()[0]
        == "note: https://api.wandb.ai has no Entity.triggers: read by the legacy project walk"
    )


def test_types_an_older_server_lacks_are_left_out_of_the_query(
    wandb_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = wandb_api(
        FakeWandb(FETCHED[:1], unknown_types=("ARIATriggeredAction", "NoOpTriggeredAction"))
    )
    assert main(["import-wandb", "--entity", "acme"]) == 0
    assert "on NoOpTriggeredAction" in fake.requests[0]["query"]
    last = fake.requests[-1]["query"]
    for gone in (
        "ARIATriggeredAction",
        "...AriaActionFields",
        "NoOpTriggeredAction",
        "...NoOpActionFields",
    ):
        assert gone not in last
    parse(last)  # still a whole document: no fragment left unused
    assert fake.operations() == ["GetEntityAutomations"] * 3
    assert capsys.readouterr().err.splitlines()[0] == (
        "note: https://api.wandb.ai does not know AriaActionFields, NoOpActionFields: left out of "
        "the query"
    )


def test_project_keeps_one_projects_automations_looked_up(
    wandb_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wandb_api(
        FakeWandb(
            [*FETCHED, saved(OnCreateArtifact(scope=SEQUENCE) >> DoNothing(), "created")],
            homes={SEQUENCE.id: ("vision", "acme")},
        )
    )
    assert main(["import-wandb", "--entity", "acme", "--project", "vision"]) == 0
    out, err = capsys.readouterr()
    assert [a.name for a in valid_config(out).automations] == ["page-on-failure", "created"]
    assert (
        "note: left out 2 automations not known to be in project 'acme/vision': linked, fraud-created"
        in err
    )


def test_base_url_points_at_a_self_managed_server(
    wandb_api: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = wandb_api(FakeWandb(FETCHED[:1]), "https://wandb.example.internal/graphql")
    assert (
        main(["import-wandb", "--entity", "acme", "--base-url", "https://wandb.example.internal"])
        == 0
    )
    assert len(fake.requests) == 1
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.internal/")
    assert main(["import-wandb", "--entity", "acme"]) == 0
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("fake", "argv", "code", "message"),
    [
        (
            FakeWandb([], status=401),
            ["--entity", "acme"],
            1,
            "error: W&B at https://api.wandb.ai answered HTTP 401: it refused the API key in WANDB_API_KEY. Check the key (https://wandb.ai/authorize) and --base-url.",
        ),
        (
            FakeWandb([], status=403),
            ["--entity", "acme"],
            1,
            "error: W&B at https://api.wandb.ai answered HTTP 403: it refused the API key in WANDB_API_KEY.",
        ),
        (
            FakeWandb([]),
            ["--entity", "nobody"],
            1,
            "error: W&B at https://api.wandb.ai has no entity 'nobody' that this API key can see; check --entity.",
        ),
        (
            FakeWandb([]),
            ["--entity", "acme"],
            1,
            "error: Nothing to import: W&B lists no automations for entity 'acme'.",
        ),
        (
            FakeWandb([]),
            [],
            2,
            "error: Give a FILE of W&B automations (JSON), or --entity to fetch them from W&B.",
        ),
    ],
    ids=[
        "a refused key (401)",
        "a forbidden key (403)",
        "no such entity",
        "no automations",
        "neither FILE nor --entity",
    ],
)
def test_fetching_failures_say_what_to_fix(
    wandb_api: Any,
    capsys: pytest.CaptureFixture[str],
    fake: FakeWandb,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    wandb_api(fake)
    assert main(["import-wandb", *argv]) == code
    assert message in capsys.readouterr().err


def test_fetching_without_a_key_is_bad_input(
    wandb_api: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = wandb_api(FakeWandb(FETCHED))
    monkeypatch.delenv("WANDB_API_KEY")
    assert main(["import-wandb", "--entity", "acme"]) == 2
    assert capsys.readouterr().err == (
        "error: WANDB_API_KEY is not set: export your W&B API key (https://wandb.ai/authorize) "
        "to fetch automations, or give a FILE.\n"
    )
    assert fake.requests == []


def test_a_server_that_can_not_say_where_a_collection_is_leaves_a_value_to_fill(
    wandb_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wandb_api(FakeWandb(FETCHED[1:2], lookups=False))
    assert main(["import-wandb", "--entity", "acme"]) == 0
    assert valid_config(capsys.readouterr().out).automations[0].scope.model_dump(
        exclude_none=True
    ) == {
        "registry": "CHANGE-ME",
        "collection": "churn",
    }


def test_an_unreachable_server_and_a_refused_query_are_runtime_failures(
    wandb_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import respx

    wandb_api(FakeWandb(FETCHED, unknown_types=("Trigger",)))
    assert main(["import-wandb", "--entity", "acme"]) == 1
    assert capsys.readouterr().err == (
        'error: W&B at https://api.wandb.ai refused the automations query: Unknown type "Trigger".\n'
    )
    with respx.mock:
        respx.post("https://wandb.example.internal/graphql").mock(
            side_effect=httpx.ConnectError("refused")
        )
        assert (
            main(
                ["import-wandb", "--entity", "acme", "--base-url", "https://wandb.example.internal"]
            )
            == 1
        )
    assert capsys.readouterr().err == (
        "error: W&B at https://wandb.example.internal could not be reached (ConnectError: refused).\n"
    )


def test_an_automation_that_can_not_be_read_is_said_and_the_rest_imported() -> None:
    broken = {
        "name": "broken",
        "event": {"filter": "{}"},
        "action": {"__typename": "NoOpTriggeredAction"},
    }
    blanks = saved(OnAddArtifactAlias(scope=REGISTRY) >> DoNothing(), " promote ")
    result = import_wandb([broken, blanks], entity=ENTITY)
    assert [(a.name, a.imported, a.notes) for a in result.automations] == [
        (
            "broken",
            False,
            [
                NOT_IMPORTED
                + "W&B's answer for it can not be read (event.eventType: Field required)"
            ],
        ),
        ("promote", True, ["not carried over: the blanks around the name ' promote '"]),
    ]
    assert [a.name for a in valid_config(result.yaml()).automations] == ["promote"]
