"""`ml-automations import-wandb`: W&B's saved automations become our YAML, saying what can not.

W&B's API returns a saved automation as its SDK's `TriggerFields` fragment
(`tools/graphql_codegen/automations/automations.graphql` in `wandb/wandb`), with the condition and
the action under the aliases `event` and `action`, and the filter as a JSON *string*::

    {"name": "promote", "description": null, "enabled": true,
     "scope": {"__typename": "ArtifactPortfolio", "id": "…", "name": "churn"},
     "event": {"eventType": "LINK_MODEL",
               "filter": "{\\"filter\\": {\\"$or\\": [{\\"$and\\": [{\\"alias\\": …}]}]}}"},
     "action": {"__typename": "GenericWebhookTriggeredAction",
                "integration": {"urlEndpoint": "https://…"}, "requestPayload": "{…}"}}

`import_wandb` reads any JSON that holds such automations: a whole `GetEntityAutomations` answer
(`data.scope.triggers.edges[].node`), a legacy project walk (`data.scope.projects.edges[].node.
triggers[]`), a list, `{"automations": […]}`, the schema's own names (`triggeringCondition`,
`triggeredAction`) or the create input (`triggeringEventType`, `eventFilter`). `fetch_automations`
asks W&B for them the way W&B's SDK does. Whatever does not carry over exactly becomes a note — a
comment above the automation in the YAML, and a line on stderr; an automation that can not be
expressed here at all is written commented out, so the YAML always loads.

>>> state_filter = {"run_filter": '{"$and": []}', "run_state_filter": {"states": ["FAILED"]}}
>>> imported = import_wandb([{
...     "name": "failures",
...     "scope": {"__typename": "Project", "id": "UHJvamVjdDox", "name": "vision"},
...     "event": {"eventType": "RUN_STATE", "filter": json.dumps(state_filter)},
...     "action": {"__typename": "NoOpTriggeredAction", "noOp": True},
... }], entity="acme")
>>> print(imported.yaml())
# 1 of 1 W&B automation imported by `ml-automations import-wandb`; the comments say what did not
#   carry over.
# Beyond W&B (no W&B setting carries over to these, so none is set): RUN_STALLED (a running run
#   quiet for a while); for_points and rearm on metric events; min_baseline, sigma_floor, method:
#   median_mad and baseline: finished on z-scores; a budget on any automation.
automations:
<BLANKLINE>
  - name: failures
    scope: {project: acme/vision}
    event:
      type: RUN_STATE
      states: [failed]
    action: {type: no_op}
<BLANKLINE>
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from prefect_ml_automations.automations.triggers import (
    AddArtifactAlias,
    AddArtifactTag,
    ArtifactTrigger,
    CreateArtifact,
    LinkArtifact,
    RemoveArtifactTag,
    UnlinkArtifact,
)
from prefect_ml_automations.errors import BadInputError, ConfigError, SourceError
from prefect_ml_automations.sources.wandb import (
    DEFAULT_BASE_URL,
    REGISTRY_PREFIX,
    GraphQLRefused,
    WandbAPI,
    graphql_errors,
)

if TYPE_CHECKING:
    import httpx

#: Stands where W&B's answer lacks a value the user must write in (it loads, and watches nothing).
PLACEHOLDER = "CHANGE-ME"
_NOT_IMPORTED = "not carried over: the whole automation (written commented out below): "


class _NotImportable(Exception):
    """A part of an automation that has no counterpart here: the automation is commented out."""


class _NotExpressible(Exception):
    """A filter condition our filters can not express: it is left out, with a loud note."""


# --------------------------------------------------------------------------------------------
# W&B's saved automations, read leniently (a newer server's extra fields are ignored)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class _ProjectRef(_Lenient):
    """Not in W&B's answers: some exports name a collection's project (and its entity)."""

    name: str
    entity_name: str | None = Field(default=None, alias="entityName")


class SavedScope(_Lenient):
    """`ProjectScopeFields`, `ArtifactSequenceScopeFields`, `ArtifactPortfolioScopeFields` or
    `EntityScopeFields`: a type, an id and a name — for a collection, not its project."""

    typename: str = Field(default="", alias="__typename")
    id: str | None = None
    name: str = ""
    entity_type: str | None = Field(default=None, alias="entityType")
    entity_name: str | None = Field(default=None, alias="entityName")
    project: _ProjectRef | None = None


class SavedEvent(_Lenient):
    """`FilterEventFields`: the event type and its filter (a JSON string)."""

    event_type: str = Field(alias="eventType")
    filter: Any = None


class SavedIntegration(_Lenient):
    """`WebhookIntegrationFields` or `SlackIntegrationFields` (or only an id)."""

    typename: str = Field(default="", alias="__typename")
    id: str | None = None
    name: str | None = None
    url_endpoint: str | None = Field(default=None, alias="urlEndpoint")
    team_name: str | None = Field(default=None, alias="teamName")
    channel_name: str | None = Field(default=None, alias="channelName")


class SavedAction(_Lenient):
    """One of the `…ActionFields` fragments, told apart by `__typename`."""

    typename: str = Field(default="", alias="__typename")
    integration: SavedIntegration | None = None
    request_payload: Any = Field(default=None, alias="requestPayload")
    title: str | None = None
    message: str | None = None
    severity: str | None = None
    queue: dict[str, Any] | None = None
    prompt: str | None = None


#: The create input nests an action's settings under one key per kind (`TriggeredActionConfig`).
_ACTION_INPUTS = {
    "genericWebhookActionInput": "GenericWebhookTriggeredAction",
    "notificationActionInput": "NotificationTriggeredAction",
    "noOpActionInput": "NoOpTriggeredAction",
    "queueJobActionInput": "QueueJobTriggeredAction",
    "ariaActionInput": "ARIATriggeredAction",
    "pushNotificationActionInput": "PushNotificationTriggeredAction",
}
#: The create input's `scopeType`, as the `__typename` a saved scope would have.
_SCOPE_TYPES = {
    "PROJECT": "Project",
    "ARTIFACT_COLLECTION": "ArtifactCollection",
    "ENTITY": "Entity",
}


class SavedTrigger(_Lenient):
    """`TriggerFields` (keys `event`/`action`), the schema's names (`triggeringCondition`/
    `triggeredAction`), or the create input (`triggeringEventType`, `eventFilter`, …)."""

    name: str
    description: str | None = None
    enabled: bool | None = True
    scope: SavedScope | None = None
    event: SavedEvent = Field(validation_alias=AliasChoices("event", "triggeringCondition"))
    action: SavedAction | None = Field(
        default=None, validation_alias=AliasChoices("action", "triggeredAction")
    )

    @model_validator(mode="before")
    @classmethod
    def _from_create_input(cls, data: Any) -> Any:
        """`CreateFilterTriggerInput` names the parts differently, and holds only the scope's id."""
        if not isinstance(data, dict) or "triggeringEventType" not in data:
            return data
        data = dict(data)
        data.setdefault(
            "event", {"eventType": data["triggeringEventType"], "filter": data.get("eventFilter")}
        )
        if "action" not in data and "triggeredAction" not in data:
            for key, settings in (data.get("triggeredActionConfig") or {}).items():
                if key in _ACTION_INPUTS and isinstance(settings, dict):
                    integration = settings.get("integrationID")
                    data["action"] = {
                        **settings,
                        "__typename": _ACTION_INPUTS[key],
                        "integration": {"id": integration} if integration else None,
                    }
        if "scope" not in data and "scopeType" in data:
            kind = _SCOPE_TYPES.get(str(data["scopeType"]), str(data["scopeType"]))
            data["scope"] = {"__typename": kind, "id": data.get("scopeID")}
        return data


def _is_trigger(value: Any) -> bool:
    keys = ("event", "triggeringCondition", "triggeringEventType")
    return isinstance(value, dict) and "name" in value and any(k in value for k in keys)


def _found_triggers(document: Any) -> Iterator[Any]:
    """Every saved automation in the answer, wherever its query put it (edges, projects, lists)."""
    if _is_trigger(document):
        yield document
    elif isinstance(document, list):
        for item in document:
            yield from _found_triggers(item)
    elif isinstance(document, dict):
        for value in document.values():
            yield from _found_triggers(value)


def _holds_automations(document: Any) -> bool:
    """Whether the JSON is an answer about automations at all (an empty one counts)."""
    if isinstance(document, list):
        return True
    if isinstance(document, dict):
        if any(key in document for key in ("automations", "triggers", "edges", "data")):
            return True
        return any(_holds_automations(v) for v in document.values() if isinstance(v, dict))
    return False


# --------------------------------------------------------------------------------------------
# Filters: W&B's MongoDB-like conditions on one string field, as one `re.search` regex


@dataclass(frozen=True)
class _Pattern:
    """A regex that `re.search` matches exactly where a W&B condition on a string holds."""

    regex: str
    #: Starts with `^` and has no top-level `|` (known only of the patterns built here), so
    #: the part after `^` can stand in a look-ahead at the start.
    anchored: bool = False


_EVERYTHING = _Pattern("")
_NOTHING = _Pattern("(?!)")
#: The characters special in a regex outside a character class. (`re.escape` escapes more —
#: '-', ' ', … — which is correct but harder to read in YAML.)
_SPECIAL = re.compile(r"([.^$*+?{}\[\]\\|()])")
#: A back-reference counts groups from the start of the whole regex: combined with another
#: regex it would point at the wrong group.
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _NotExpressible(f"{json.dumps(value)} is not a string")
    return value


def _literal(value: Any) -> str:
    return _SPECIAL.sub(r"\\\1", _text(value))


def _equal(value: Any) -> _Pattern:
    return _Pattern(f"^{_literal(value)}$", anchored=True)


def _one_of(values: Any) -> _Pattern:
    if not isinstance(values, list):
        raise _NotExpressible(f"{json.dumps(values)} is not a list")
    if len(values) <= 1:
        return _equal(values[0]) if values else _NOTHING
    return _Pattern(f"^(?:{'|'.join(_literal(v) for v in values)})$", anchored=True)


def _regex(value: Any) -> _Pattern:
    return _Pattern(_text(value))


def _combinable(parts: list[_Pattern]) -> None:
    if any(_BACKREFERENCE.search(part.regex) for part in parts[1:]):
        raise _NotExpressible("a regex with a back-reference can not be combined with another")


def _negated(part: _Pattern) -> _Pattern:
    if part in (_EVERYTHING, _NOTHING):
        return _NOTHING if part == _EVERYTHING else _EVERYTHING
    if part.anchored:
        return _Pattern(f"^(?!{part.regex[1:]})", anchored=True)
    # `.*(?:R)` from the start matches where `re.search(R)` would (names and aliases are one line).
    return _Pattern(f"^(?!.*(?:{part.regex}))", anchored=True)


def _all_of(parts: list[_Pattern]) -> _Pattern:
    parts = [part for part in parts if part != _EVERYTHING]
    if _NOTHING in parts:
        return _NOTHING
    if len(parts) <= 1:
        return parts[0] if parts else _EVERYTHING
    _combinable(parts)
    looks = (f"(?={p.regex[1:]})" if p.anchored else f"(?=.*(?:{p.regex}))" for p in parts)
    return _Pattern("^" + "".join(looks), anchored=True)


def _any_of(parts: list[_Pattern]) -> _Pattern:
    parts = [part for part in parts if part != _NOTHING]
    if _EVERYTHING in parts:
        return _EVERYTHING
    if len(parts) <= 1:
        return parts[0] if parts else _NOTHING
    _combinable(parts)
    return _Pattern("|".join(part.regex for part in parts))  # `|` binds loosest: no groups needed


#: W&B's value operators (`wandb/_filters/operators.py`) that a regex can say exactly.
_VALUE_OPERATORS: dict[str, Callable[[Any], _Pattern]] = {
    "$eq": _equal,
    "$ne": lambda value: _negated(_equal(value)),
    "$in": _one_of,
    "$nin": lambda values: _negated(_one_of(values)),
    "$regex": _regex,
    "$contains": lambda value: _Pattern(_literal(value)),
    "$not": lambda condition: _negated(_condition(condition)),
}


def _condition(condition: Any) -> _Pattern:
    """`{"$contains": "x"}`, `{"$regex": "^a", "$ne": "ab"}`, or a bare value (equality)."""
    if not isinstance(condition, dict):
        return _equal(condition)
    parts = []
    for operator, operand in condition.items():
        if operator not in _VALUE_OPERATORS:
            raise _NotExpressible(f"{operator} has no regex counterpart")
        parts.append(_VALUE_OPERATORS[operator](operand))
    return _all_of(parts)


def _each(expressions: Any, field: str) -> list[_Pattern]:
    if not isinstance(expressions, list):
        raise _NotExpressible(f"{json.dumps(expressions)} is not a list")
    return [_expression(item, field) for item in expressions]


_LOGIC: dict[str, Callable[[Any, str], _Pattern]] = {
    "$and": lambda items, field: _all_of(_each(items, field)),
    "$or": lambda items, field: _any_of(_each(items, field)),
    "$nor": lambda items, field: _negated(_any_of(_each(items, field))),
    "$not": lambda item, field: _negated(_expression(item, field)),
}


def _expression(expression: Any, field: str) -> _Pattern:
    """The regex for a filter that tests only `field` (through `$and`, `$or`, `$not`, `$nor`)."""
    if not isinstance(expression, dict):
        raise _NotExpressible(f"{json.dumps(expression)} is not a condition")
    parts = []
    for key, value in expression.items():
        if key == field:
            parts.append(_condition(value))
        elif key in _LOGIC:
            parts.append(_LOGIC[key](value, field))
        else:
            raise _NotExpressible(f"it tests {key!r}")
    return _all_of(parts)


def _checked(pattern: _Pattern) -> _Pattern:
    try:
        re.compile(pattern.regex)
    except re.error as exc:
        raise _NotExpressible(f"{pattern.regex!r} is not a Python regex ({exc})") from None
    return pattern


def _fields(expression: Any) -> set[str]:
    """The fields a filter tests."""
    if isinstance(expression, list):
        return set().union(*(_fields(item) for item in expression))
    if not isinstance(expression, dict):
        return set()
    found: set[str] = set()
    for key, value in expression.items():
        found |= _fields(value) if key in _LOGIC else {key}
    return found


def _conjuncts(expression: Any) -> list[Any]:
    """The parts of a filter that must all hold. W&B wraps run filters in `$and`, and artifact
    filters in `$or: [$and: […]]`; an `$or` of one part is that part."""
    if expression in (None, {}):
        return []
    if not isinstance(expression, dict):
        return [expression]
    if len(expression) > 1:
        return [part for key, value in expression.items() for part in _conjuncts({key: value})]
    ((key, value),) = expression.items()
    if key == "$and" and isinstance(value, list):
        return [part for item in value for part in _conjuncts(item)]
    if key == "$or" and isinstance(value, list) and len(value) == 1:
        return _conjuncts(value[0])
    return [expression]


def _decoded(value: Any) -> Any:
    """A filter as W&B sends it: a JSON string (at times a JSON string in a JSON string)."""
    if isinstance(value, str):
        return json.loads(value) if value.strip() else {}
    return {} if value is None else value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {json.dumps(value)}, not a JSON object")
    return value


def _compact(expression: Any) -> str:
    return json.dumps(expression, separators=(", ", ": "), ensure_ascii=False)


def _left_out(what: str, conjunct: Any, why: str, subjects: str) -> str:
    return (
        f"not carried over: the {what} {_compact(conjunct)} ({why}): left out, so the imported "
        f"automation matches MORE {subjects} than the W&B one"
    )


#: `RunEvent.name` is sent as `display_name` (W&B's `automations/events.py`); W&B's `name` is
#: the run's id, which run filters here do not test.
_RUN_NAME = "display_name"
_RUN_USER = "username"


def _run_filters(saved: Any, notes: list[str]) -> dict[str, str]:
    """Our `filters` (`user`, `run_name`) for W&B's `run_filter`; a part they can not say is
    left out, which makes the automation match more runs — the note says so."""
    names: list[_Pattern] = []
    users: list[str] = []
    for conjunct in _conjuncts(_decoded(saved)):
        fields = _fields(conjunct)
        try:
            if fields <= {_RUN_NAME}:  # a part that tests nothing is always or never true
                names.append(_checked(_expression(conjunct, _RUN_NAME)))
            elif fields == {_RUN_USER}:
                users.append(_exact_user(conjunct))
            else:
                raise _NotExpressible(
                    "run filters here test the user (one username) and the run name (a regex)"
                )
        except _NotExpressible as exc:
            notes.append(_left_out("run filter", conjunct, str(exc), "runs"))
    out: dict[str, str] = {}
    if len(set(users)) > 1:
        notes.append(
            f"not carried over: the run filters on users {sorted(set(users))} (no run has two "
            "users, so the W&B automation never fires): left out, so the imported automation "
            "matches MORE runs than the W&B one"
        )
    elif users:
        out["user"] = users[0]
    name = _all_of(names)
    if name != _EVERYTHING:
        out["run_name"] = name.regex
    return out


def _exact_user(conjunct: dict[str, Any]) -> str:
    value = conjunct.get(_RUN_USER) if set(conjunct) == {_RUN_USER} else None
    if isinstance(value, dict) and set(value) == {"$eq"}:
        value = value["$eq"]
    elif isinstance(value, dict) and set(value) == {"$in"} and len(value["$in"] or []) == 1:
        value = value["$in"][0]
    if not isinstance(value, str):
        raise _NotExpressible("the user filter here is one exact username")
    return value


def _artifact_filter(saved: Any, model: type[ArtifactTrigger], notes: list[str]) -> dict[str, str]:
    """The `alias` / `tag` regex of an artifact event, where our event model takes one."""
    expression = _decoded(saved)
    # Saved filters are wrapped in {"filter": …} (its value an object or a JSON string); the
    # create input's are not.
    if isinstance(expression, dict) and set(expression) == {"filter"}:
        expression = _decoded(expression["filter"])
    kind = _type_of(model)
    found: dict[str, list[_Pattern]] = {}
    for conjunct in _conjuncts(expression):
        fields = _fields(conjunct)
        what = f"{'/'.join(sorted(fields)) or 'artifact'} filter"
        try:
            if not fields and _expression(conjunct, "") == _EVERYTHING:
                continue  # it tests nothing and always holds
            (name,) = fields if len(fields) == 1 else ("",)
            if name not in ("alias", "tag"):
                raise _NotExpressible("artifact filters here test an alias or a tag")
            if name not in model.model_fields:
                raise _NotExpressible(f"{kind} here takes no {name} filter")
            found.setdefault(name, []).append(_checked(_expression(conjunct, name)))
        except _NotExpressible as exc:
            notes.append(_left_out(what, conjunct, str(exc), "artifact events"))
    patterns = {name: _all_of(parts) for name, parts in found.items()}
    return {name: p.regex for name, p in patterns.items() if p != _EVERYTHING}


# --------------------------------------------------------------------------------------------
# Events: W&B's event types (`EventTriggeringConditionType`) and their filters

_AGGREGATIONS = {"AVERAGE": "average", "MIN": "min", "MAX": "max"}
#: W&B's SDK writes `$gt` … `$lte`; its App also offers "equal to" / "not equal to".
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$eq": "==", "$ne": "!="}
_CHANGE_TYPES = {"ABSOLUTE": "absolute", "RELATIVE": "relative"}
_CHANGE_DIRECTIONS = {"INCREASE": "increase", "DECREASE": "decrease", "ANY": "any"}
_ZSCORE_DIRECTIONS = {"INCREASE": "above", "DECREASE": "below", "ANY": "either"}
#: `ReportedRunState` (CRASHED is an alias of FAILED in W&B's SDK).
_STATES = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "CRASHED": "failed"}


def _choice(table: Mapping[str, str], value: str | None, what: str) -> str:
    ours = table.get(str(value).upper())
    if ours is None:
        raise _NotImportable(f"W&B's {what} {value!r} has no counterpart here")
    return ours


def _aggregation(agg_op: str | None, windows: dict[str, int], notes: list[str]) -> dict[str, Any]:
    """Our `aggregation` and window fields; W&B's `agg_op: null` means the single latest value."""
    if agg_op is not None:
        return {**windows, "aggregation": _choice(_AGGREGATIONS, agg_op, "aggregation")}
    if any(size != 1 for size in windows.values()):
        sizes = ", ".join(f"{name} {size}" for name, size in windows.items())
        notes.append(
            f"not carried over: the window sizes ({sizes}) come without an aggregation, and "
            "W&B's answer does not say how it combines the values: imported as the latest "
            "value only (windows of 1)"
        )
    return dict.fromkeys(windows, 1)


class _Threshold(_Lenient):
    """`threshold_filter` (`MetricThresholdFilter` in W&B's `_run_metric_filters.py`)."""

    name: str
    agg_op: str | None = None
    window_size: int = 1
    cmp_op: str
    threshold: float

    def event(self, notes: list[str]) -> dict[str, Any]:
        operator = _COMPARISONS.get(self.cmp_op)
        if operator is None:
            raise _NotImportable(f"W&B's comparison {self.cmp_op!r} has no counterpart here")
        return {
            "type": "RUN_METRIC",
            "metric": self.name,
            **_aggregation(self.agg_op, {"window": self.window_size}, notes),
            "operator": operator,
            "threshold": self.threshold,
        }


class _Change(_Lenient):
    """`change_filter` (`MetricChangeFilter`); the prior window defaults to the current one."""

    name: str
    agg_op: str | None = None
    current_window_size: int = Field(
        default=1, validation_alias=AliasChoices("current_window_size", "window_size")
    )
    prior_window_size: int | None = None
    change_type: str
    change_dir: str
    change_amount: float

    def event(self, notes: list[str]) -> dict[str, Any]:
        windows = {
            "current_window": self.current_window_size,
            "prior_window": self.prior_window_size or self.current_window_size,
        }
        return {
            "type": "RUN_METRIC_CHANGE",
            "metric": self.name,
            **_aggregation(self.agg_op, windows, notes),
            "change_type": _choice(_CHANGE_TYPES, self.change_type, "change type"),
            "direction": _choice(_CHANGE_DIRECTIONS, self.change_dir, "change direction"),
            "amount": self.change_amount,
        }


class _ZScore(_Lenient):
    """`zscore_filter` (`MetricZScoreFilter`); W&B compares inclusively (≥), as we do."""

    name: str
    window_size: int = 30
    threshold: float = 3.0
    change_dir: str = "ANY"

    def event(self, notes: list[str]) -> dict[str, Any]:
        return {
            "type": "RUN_METRIC_ZSCORE",
            "metric": self.name,
            "window": self.window_size,
            "threshold": self.threshold,
            "direction": _choice(_ZSCORE_DIRECTIONS, self.change_dir, "z-score direction"),
        }


#: W&B's `run_metric_filter` holds exactly one of these.
_METRIC_FILTERS: dict[str, type[_Threshold | _Change | _ZScore]] = {
    "threshold_filter": _Threshold,
    "change_filter": _Change,
    "zscore_filter": _ZScore,
}


def _run_metric(saved: Any, notes: list[str]) -> dict[str, Any]:
    """RUN_METRIC (threshold), RUN_METRIC_CHANGE and RUN_METRIC_ZSCORE: the filter says which."""
    spec = _object(_decoded(saved), "the run metric filter")
    metric = _object(spec.get("run_metric_filter") or {}, "run_metric_filter")
    if not metric and spec.get("metric_filter"):  # the legacy field: a threshold, JSON-encoded
        metric = {"threshold_filter": _decoded(spec["metric_filter"])}
    kinds = [kind for kind in _METRIC_FILTERS if metric.get(kind)]
    if len(kinds) != 1:
        raise _NotImportable(f"W&B's metric condition {_compact(metric)} is not one known here")
    event = _METRIC_FILTERS[kinds[0]].model_validate(metric[kinds[0]]).event(notes)
    filters = _run_filters(spec.get("run_filter"), notes)
    return {"event": event, "filters": filters} if filters else {"event": event}


def _run_state(saved: Any, notes: list[str]) -> dict[str, Any]:
    spec = _object(_decoded(saved), "the run state filter")
    wanted = _object(spec.get("run_state_filter") or {}, "run_state_filter").get("states") or []
    states: list[str] = []
    for state in wanted if isinstance(wanted, list) else [wanted]:
        ours = _STATES.get(str(state).upper())
        if ours is None:
            notes.append(
                f"not carried over: the run state {state!r} (here a run can fire on entering "
                "running, finished or failed; a killed run never fires)"
            )
        elif ours not in states:
            states.append(ours)
    if not states:
        raise _NotImportable(f"none of W&B's run states {wanted!r} can be chosen here")
    filters = _run_filters(spec.get("run_filter"), notes)
    event = {"type": "RUN_STATE", "states": states}
    return {"event": event, "filters": filters} if filters else {"event": event}


def _type_of(model: type[ArtifactTrigger]) -> str:
    return str(get_args(model.model_fields["type"].annotation)[0])


_EventConverter = Callable[[Any, list[str]], dict[str, Any]]


def _artifact_event(model: type[ArtifactTrigger], note: str | None = None) -> _EventConverter:
    def convert(saved: Any, notes: list[str]) -> dict[str, Any]:
        if note:
            notes.append(note)
        return {"event": {"type": _type_of(model), **_artifact_filter(saved, model, notes)}}

    return convert


def _no_counterpart(why: str) -> _EventConverter:
    def convert(saved: Any, notes: list[str]) -> dict[str, Any]:
        raise _NotImportable(why)

    return convert


_EVENTS: dict[str, _EventConverter] = {
    # LINK_MODEL is still the value on the wire; W&B's SDK calls it LINK_ARTIFACT.
    "LINK_MODEL": _artifact_event(LinkArtifact),
    "LINK_ARTIFACT": _artifact_event(LinkArtifact),
    "UNLINK_ARTIFACT": _artifact_event(UnlinkArtifact),
    "CREATE_ARTIFACT": _artifact_event(CreateArtifact),
    "ADD_ARTIFACT_ALIAS": _artifact_event(AddArtifactAlias),
    "UPDATE_ARTIFACT_ALIAS": _artifact_event(
        AddArtifactAlias,
        note=(
            "not carried over: W&B's legacy event UPDATE_ARTIFACT_ALIAS as such: imported as "
            "ADD_ARTIFACT_ALIAS (an alias added to a version, or moved onto it)"
        ),
    ),
    "ADD_ARTIFACT_TAG": _artifact_event(AddArtifactTag),
    "REMOVE_ARTIFACT_TAG": _artifact_event(RemoveArtifactTag),
    "ADD_COLLECTION_TAG": _no_counterpart(
        "W&B's event ADD_COLLECTION_TAG (a tag added to a collection, not to a version) has no "
        "counterpart here"
    ),
    "REMOVE_COLLECTION_TAG": _no_counterpart(
        "W&B's event REMOVE_COLLECTION_TAG (a tag removed from a collection, not from a version) "
        "has no counterpart here"
    ),
    "RUN_METRIC": _run_metric,
    "RUN_METRIC_THRESHOLD": _run_metric,
    "RUN_METRIC_CHANGE": _run_metric,
    "RUN_METRIC_ZSCORE": _run_metric,
    "RUN_STATE": _run_state,
    "WEAVE_METRIC_THRESHOLD": _no_counterpart(
        "W&B's event WEAVE_METRIC_THRESHOLD (a Weave metric) has no counterpart here"
    ),
}


# --------------------------------------------------------------------------------------------
# Scopes


@dataclass(frozen=True)
class CollectionHome:
    """The project (and its entity) that holds an artifact collection."""

    project: str
    entity: str | None = None


@dataclass(frozen=True)
class _Context:
    entity: str | None
    homes: Mapping[str, CollectionHome]

    def place(self, project: str, entity: str | None = None) -> dict[str, str]:
        """`{registry: name}` for a `wandb-registry-<name>` project, else `{project: e/p}`."""
        if project.startswith(REGISTRY_PREFIX) and project != REGISTRY_PREFIX:
            return {"registry": project.removeprefix(REGISTRY_PREFIX)}
        owner = entity or self.entity
        qualified = owner and "/" not in project  # --project may name the entity already
        return {"project": f"{owner}/{project}" if qualified else project}


def _project_scope(scope: SavedScope, context: _Context, notes: list[str]) -> dict[str, str]:
    if not scope.name:
        notes.append(
            f"not carried over: the project (W&B's answer gives only its id {scope.id!r}): "
            f"replace {PLACEHOLDER} in scope"
        )
        return {"project": PLACEHOLDER}
    return context.place(scope.name, scope.entity_name)


def _collection_scope(scope: SavedScope, context: _Context, notes: list[str]) -> dict[str, str]:
    collection = scope.name or PLACEHOLDER
    home = context.homes.get(scope.id or "") or (
        CollectionHome(scope.project.name, scope.project.entity_name) if scope.project else None
    )
    if home is not None:
        return {**context.place(home.project, home.entity), "collection": collection}
    # The saved scope names the collection only. A portfolio is most often a registry's.
    where = "registry" if scope.typename == "ArtifactPortfolio" else "project"
    what = (
        f"the registry or project that holds collection {scope.name!r} (W&B's answer names only "
        "the collection)"
        if scope.name
        else f"the collection, and its registry or project (W&B's answer gives only the id "
        f"{scope.id!r})"
    )
    notes.append(
        f"not carried over: {what}: replace {PLACEHOLDER} in scope (fetching with --entity "
        "looks the project up)"
    )
    return {where: PLACEHOLDER, "collection": collection}


def _entity_scope(scope: SavedScope, context: _Context, notes: list[str]) -> dict[str, str]:
    kind = {"team": "team", "organization": "organization"}.get(scope.entity_type or "", "entity")
    raise _NotImportable(
        f"its scope is the whole {kind} {scope.name!r}, and a scope here is one project or one "
        "registry: write one automation per project or registry it should watch"
    )


_SCOPES: dict[str, Callable[[SavedScope, _Context, list[str]], dict[str, str]]] = {
    "Project": _project_scope,
    "ArtifactSequence": _collection_scope,
    "ArtifactPortfolio": _collection_scope,
    "ArtifactCollection": _collection_scope,
    "Entity": _entity_scope,
}


# --------------------------------------------------------------------------------------------
# Actions

#: `${…}` in a webhook payload, as `templates.py` reads them.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")
#: Variables both know, rendered differently (W&B's `webhook.mdx`, "Payload variables").
_RENDERED_DIFFERENTLY = {
    "artifact_version": (
        "W&B renders an artifact handle (wandb-artifact://_id/…); here it is the version "
        "string <project or registry>/<collection>:v<N>"
    ),
    "artifact_version_string": (
        "W&B documents <entity>/<project>/<collection>:<alias>; here it is <project or "
        "registry>/<collection>:v<N>"
    ),
}


@cache
def _our_variables() -> frozenset[str]:
    from datetime import UTC, datetime

    from prefect_ml_automations.decisions import Firing
    from prefect_ml_automations.templates import variables

    firing = Firing(firing_id="", automation="", event_type="", timestamp=datetime.now(UTC))
    return frozenset(variables(firing))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _payload_notes(payload: Any, notes: list[str]) -> None:
    names = sorted({m for text in _strings(payload) for m in _VARIABLE.findall(text)})
    ours = _our_variables()
    for name in names:
        if name in _RENDERED_DIFFERENTLY:
            notes.append(
                f"not carried over: ${{{name}}} as W&B renders it: {_RENDERED_DIFFERENTLY[name]}"
            )
        elif name not in ours and not name.startswith("artifact_metadata."):
            notes.append(
                f"not carried over: ${{{name}}} in the payload (a W&B secret or a variable not "
                "known here, so it renders empty): write its value into action.headers or "
                "action.payload"
            )


def _webhook(action: SavedAction, notes: list[str]) -> dict[str, Any]:
    integration = action.integration or SavedIntegration()
    label = repr(integration.name or integration.id)
    url = integration.url_endpoint
    if not url:
        url = f"https://{PLACEHOLDER}.invalid/hook"
        notes.append(
            f"not carried over: the URL of W&B's webhook integration {label} (W&B's answer "
            f"does not include it): replace {url} in action.url"
        )
    out: dict[str, Any] = {"type": "webhook", "url": url}
    if action.request_payload not in (None, ""):
        try:
            payload = _decoded(action.request_payload)
        except ValueError as exc:
            notes.append(
                f"not carried over: the payload {action.request_payload!r} (not JSON: {exc}): "
                "write action.payload by hand"
            )
        else:
            out["payload"] = payload
            _payload_notes(payload, notes)
    notes.append(
        f"not carried over: the access token and secret of W&B's webhook integration {label}, "
        "if it has them (W&B's API never returns them): set action.access_token / action.secret"
    )
    return out


def _notification(action: SavedAction, notes: list[str]) -> dict[str, Any]:
    integration = action.integration or SavedIntegration()
    where = ", ".join(
        f"{what} {value!r}"
        for what, value in (("team", integration.team_name), ("channel", integration.channel_name))
        if value
    )
    block = f"slack-webhook/{PLACEHOLDER}"
    notes.append(
        f"not carried over: W&B's Slack integration{f' ({where})' if where else ''}: save a "
        f"Prefect Slack notification block for it and replace {block} in action.block "
        "(W&B's own links to the run or artifact are not added; the message is what is sent)"
    )
    out: dict[str, Any] = {"type": "notification", "block": block}
    for key in ("title", "message"):
        if getattr(action, key):
            out[key] = getattr(action, key)
    if action.severity:
        out["severity"] = _choice(
            {"INFO": "info", "WARN": "warn", "ERROR": "error"}, action.severity, "severity"
        )
    return out


def _no_op(action: SavedAction, notes: list[str]) -> dict[str, Any]:
    return {"type": "no_op"}


def _launch_job(action: SavedAction, notes: list[str]) -> dict[str, Any]:
    queue = (action.queue or {}).get("name")
    raise _NotImportable(
        f"W&B's Launch job action{f' (queue {queue!r})' if queue else ''} has no counterpart "
        "here; its Prefect equivalent is action: {type: run_deployment, deployment: flow/name}"
    )


def _aria(action: SavedAction, notes: list[str]) -> dict[str, Any]:
    raise _NotImportable(f"W&B's ARIA action (prompt {action.prompt!r}) has no counterpart here")


def _push(action: SavedAction, notes: list[str]) -> dict[str, Any]:
    raise _NotImportable(
        "W&B's push notification action has no counterpart here (a notification action sends "
        "through any Prefect notification block)"
    )


_ACTIONS: dict[str, Callable[[SavedAction, list[str]], dict[str, Any]]] = {
    "GenericWebhookTriggeredAction": _webhook,
    "NotificationTriggeredAction": _notification,
    "NoOpTriggeredAction": _no_op,
    "QueueJobTriggeredAction": _launch_job,
    "ARIATriggeredAction": _aria,
    "PushNotificationTriggeredAction": _push,
}


# --------------------------------------------------------------------------------------------
# One automation, and the whole import


@dataclass
class ImportedAutomation:
    """One W&B automation: our settings for it, and what did not carry over."""

    name: str
    #: Our YAML for it; when not imported, what could be said (written commented out).
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    imported: bool = True

    def refuse(self, why: str) -> None:
        self.imported = False
        self.notes.insert(0, _NOT_IMPORTED + why)


_ORDER = ("name", "description", "enabled", "scope", "event", "filters", "action")


#: `${NAME}` outside action templates: the config reads it from the environment.
_ENVIRONMENT_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _escaped_references(text: str, what: str, notes: list[str]) -> str:
    if not _ENVIRONMENT_REFERENCE.search(text):
        return text
    notes.append(
        f"not carried over: the {what} exactly: its ${{…}} would be read from the environment "
        "here, so it is written as $ {…}"
    )
    return text.replace("${", "$ {")


def _convert(raw: Any, context: _Context) -> ImportedAutomation:
    try:
        trigger = SavedTrigger.model_validate(raw)
    except ValidationError as exc:
        automation = ImportedAutomation(name=str(raw.get("name") or "(unnamed)"), settings={})
        automation.refuse(f"W&B's answer for it can not be read ({_first_line(exc)})")
        return automation
    notes: list[str] = []
    name = trigger.name.strip()
    if name != trigger.name:
        notes.append(f"not carried over: the blanks around the name {trigger.name!r}")
    settings: dict[str, Any] = {"name": _escaped_references(name, "name", notes)}
    if trigger.description:
        settings["description"] = _escaped_references(trigger.description, "description", notes)
    if trigger.enabled is False:
        settings["enabled"] = False
    missing: list[str] = []
    for what, convert in (("scope", _scope), ("event", _event), ("action", _action)):
        try:
            settings.update(convert(trigger, context, notes))
        except _NotImportable as exc:
            missing.append(str(exc))
        except ValueError as exc:  # malformed JSON, or a filter W&B's SDK would refuse too
            missing.append(f"W&B's {what} can not be read ({_first_line(exc)})")
    ordered = {key: settings[key] for key in _ORDER if key in settings}
    automation = ImportedAutomation(name=settings["name"], settings=ordered, notes=notes)
    if missing:
        automation.refuse("; ".join(missing))
    return automation


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        problem = exc.errors()[0]
        return f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
    return str(exc).splitlines()[0]


def _scope(trigger: SavedTrigger, context: _Context, notes: list[str]) -> dict[str, Any]:
    scope = trigger.scope or SavedScope()
    convert = _SCOPES.get(scope.typename)
    if convert is None:
        raise _NotImportable(f"W&B's scope {scope.typename or '(none)'!r} is not known here")
    return {"scope": convert(scope, context, notes)}


def _event(trigger: SavedTrigger, context: _Context, notes: list[str]) -> dict[str, Any]:
    kind = trigger.event.event_type
    convert = _EVENTS.get(kind.upper())
    if convert is None:
        raise _NotImportable(f"W&B's event {kind!r} is not known here")
    return convert(trigger.event.filter, notes)


def _action(trigger: SavedTrigger, context: _Context, notes: list[str]) -> dict[str, Any]:
    action = trigger.action or SavedAction()
    convert = _ACTIONS.get(action.typename)
    if convert is None:
        raise _NotImportable(f"W&B's action {action.typename or '(none)'!r} is not known here")
    return {"action": convert(action, notes)}


def _validated(automation: ImportedAutomation) -> None:
    """Comment out what our config would refuse (an event in a scope it can not watch, …)."""
    from prefect_ml_automations.config import parse_config

    if not automation.imported:
        return
    try:
        parse_config({"automations": [automation.settings]}, env={}, secrets=_no_secrets)
    except ConfigError as exc:
        label = f"automation {automation.name!r} (automations[0]): "
        automation.refuse("; ".join(p.removeprefix(label) for p in exc.problems))


def _no_secrets(name: str) -> str:
    raise LookupError(name)


@dataclass
class Imported:
    """The W&B automations read, as ours, with what did not carry over."""

    automations: list[ImportedAutomation] = field(default_factory=list)
    #: Notes about the whole answer (automations left out by --project / --registry, …).
    notes: list[str] = field(default_factory=list)
    #: How many W&B automations the answer held.
    found: int = 0
    #: Why there was nothing to read, when the answer was empty.
    empty_because: str = "W&B's answer lists no automations"

    @property
    def carried_over(self) -> list[ImportedAutomation]:
        return [a for a in self.automations if a.imported]

    def messages(self) -> list[str]:
        """Every note, for stderr: `name: note`."""
        return [*self.notes, *(f"{a.name}: {note}" for a in self.automations for note in a.notes)]

    def nothing_imported(self) -> str | None:
        """Why nothing could be imported, or None when something was."""
        if self.carried_over:
            return None
        if not self.found:
            return f"Nothing to import: {self.empty_because}."
        if not self.automations:
            return (
                f"Nothing to import: none of the {self.found} W&B automations is in the "
                "project or registry asked for (see the notes above)."
            )
        return (
            f"Nothing could be imported: none of the {self.found} W&B automations can be "
            "expressed here; the notes above say why."
        )

    def yaml(self) -> str:
        """Our config (`automations:`), notes as comments; what can not load is commented out."""
        import yaml

        kept = len(self.carried_over)
        lines = _comment(
            f"{kept} of {self.found} W&B automation{'s' if self.found != 1 else ''} imported by "
            "`ml-automations import-wandb`; the comments say what did not carry over.",
            "",
        )
        lines += _comment(BEYOND_WANDB, "")
        lines += [line for note in self.notes for line in _comment(note, "")]
        # A list of only comments would load as null: say "none" when all are commented out.
        lines.append("automations:" if kept else "automations: []")
        for automation in self.automations:
            lines.append("")
            lines += [line for note in automation.notes for line in _comment(note, "  ")]
            if not automation.settings:
                continue
            text = yaml.safe_dump(
                [automation.settings],
                sort_keys=False,
                allow_unicode=True,
                default_flow_style=None,
                width=96,
            )
            prefix = "  " if automation.imported else "  # "
            lines += [prefix + line for line in text.splitlines()]
        return "\n".join(lines) + "\n"


#: What automations here can do that W&B's can not, so no import sets it (said once, on top).
BEYOND_WANDB = (
    "Beyond W&B (no W&B setting carries over to these, so none is set): RUN_STALLED (a running "
    "run quiet for a while); for_points and rearm on metric events; min_baseline, sigma_floor, "
    "method: median_mad and baseline: finished on z-scores; a budget on any automation."
)


def _comment(note: str, indent: str) -> list[str]:
    # YAML refuses control characters even in comments: a name W&B holds may carry them.
    note = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in note)
    wrapped = textwrap.wrap(
        note,
        width=96 - len(indent),
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [f"{indent}# {line}" for line in wrapped]


def import_wandb(
    document: Any,
    *,
    entity: str | None = None,
    project: str | None = None,
    registry: str | None = None,
    homes: Mapping[str, CollectionHome] | None = None,
) -> Imported:
    """Our automations for the W&B automations in `document` (any answer that holds them).

    `entity` qualifies project names (`entity/project`); `project` / `registry` keep only the
    automations of that project or registry (and of their collections, where W&B's answer says
    which project holds them); `homes` says, by collection id, which project holds a collection
    (`fetch_automations` looks them up).
    """
    errors = graphql_errors(document)
    triggers = list(_found_triggers(document))
    if not triggers and errors:
        raise BadInputError(f"The file holds W&B's error answer, not automations: {errors[0]}")
    if not triggers and not _holds_automations(document):
        raise BadInputError(
            "The file holds no W&B automations: give the JSON W&B's API returns for them (a "
            "GetEntityAutomations answer, a list, or an object with 'automations')."
        )
    context = _Context(entity=entity, homes=homes or {})
    result = Imported(found=len(triggers))
    data = document.get("data") if isinstance(document, dict) else None
    if isinstance(data, dict) and "scope" in data and data["scope"] is None:
        result.empty_because = (
            "W&B's answer holds no entity (data.scope is null: the entity does not exist, or "
            "the API key can not see it)"
        )
    wanted = [context.place(project)] if project else []
    if registry:
        wanted.append({"registry": registry.removeprefix(REGISTRY_PREFIX)})
    left_out: list[str] = []
    for raw in triggers:
        automation = _convert(raw, context)
        if wanted and not _selected(automation, wanted):
            left_out.append(automation.name)
            continue
        result.automations.append(automation)
    if left_out:
        places = " or ".join(f"{kind} {name!r}" for place in wanted for kind, name in place.items())
        result.notes.append(
            f"left out {len(left_out)} automation{'s' if len(left_out) != 1 else ''} not known "
            f"to be in {places}: {', '.join(left_out)}"
        )
    _unique_names(result.automations)
    for automation in result.automations:
        _validated(automation)
    projects = [a.settings.get("scope", {}).get("project", "") for a in result.automations]
    if any(p and "/" not in p and p != PLACEHOLDER for p in projects):
        result.notes.append(
            "W&B's answer does not name the projects' entity: they are written without it; "
            "pass --entity to write ENTITY/PROJECT"
        )
    return result


def _selected(automation: ImportedAutomation, wanted: list[dict[str, str]]) -> bool:
    """Whether the automation's scope is one of the places asked for (a placeholder is not)."""
    scope = automation.settings.get("scope") or {}
    for place in wanted:
        ((kind, name),) = place.items()
        ours = scope.get(kind)
        if ours is None or ours == PLACEHOLDER:
            continue
        if ours == name or (kind == "project" and _same_project(ours, name)):
            return True
    return False


def _same_project(ours: str, wanted: str) -> bool:
    """`acme/vision` is `vision` when either side does not name the entity."""
    if "/" in ours and "/" in wanted:
        return ours == wanted
    return ours.rpartition("/")[2] == wanted.rpartition("/")[2]


def _unique_names(automations: list[ImportedAutomation]) -> None:
    """Names must be unique in our config; W&B's are unique per project only."""
    taken: set[str] = set()
    for automation in automations:
        name, number = automation.name, 1
        while name in taken:
            number += 1
            name = f"{automation.name} ({number})"
        if name != automation.name:
            automation.notes.append(
                f"renamed to {name!r}: another imported automation is named {automation.name!r}"
            )
            automation.name = name
            automation.settings["name"] = name
        taken.add(name)


# --------------------------------------------------------------------------------------------
# Fetching: the queries W&B's SDK sends (`wandb/automations/_generated/operations.py`)

#: W&B's `tools/graphql_codegen/automations/automations.graphql`, as W&B's SDK 0.31 sends them.
_FRAGMENT_TEXT = """
fragment AriaActionFields on ARIATriggeredAction {
  __typename
  prompt
}

fragment ArtifactPortfolioScopeFields on ArtifactPortfolio {
  __typename
  id
  name
}

fragment ArtifactSequenceScopeFields on ArtifactSequence {
  __typename
  id
  name
}

fragment EntityScopeFields on Entity {
  __typename
  id
  name
  entityType
}

fragment FilterEventFields on FilterEventTriggeringCondition {
  __typename
  eventType
  filter
}

fragment GenericWebhookActionFields on GenericWebhookTriggeredAction {
  __typename
  integration {
    ...WebhookIntegrationFields
  }
  requestPayload
}

fragment NoOpActionFields on NoOpTriggeredAction {
  __typename
  noOp
}

fragment NotificationActionFields on NotificationTriggeredAction {
  __typename
  integration {
    ...SlackIntegrationFields
  }
  title
  message
  severity
}

fragment PageInfoFields on PageInfo {
  endCursor
  hasNextPage
}

fragment ProjectScopeFields on Project {
  __typename
  id
  name
}

fragment ProjectTriggersFields on Project {
  __typename
  triggers {
    ...TriggerFields
  }
}

fragment QueueJobActionFields on QueueJobTriggeredAction {
  __typename
  queue {
    id
    name
  }
  template
}

fragment SlackIntegrationFields on SlackIntegration {
  __typename
  id
  teamName
  channelName
}

fragment TriggerFields on Trigger {
  __typename
  id
  createdAt
  updatedAt
  name
  description
  enabled
  scope {
    ...ProjectScopeFields
    ...ArtifactPortfolioScopeFields
    ...ArtifactSequenceScopeFields
    ...EntityScopeFields
  }
  event: triggeringCondition {
    ...FilterEventFields
  }
  action: triggeredAction {
    ...QueueJobActionFields
    ...NotificationActionFields
    ...GenericWebhookActionFields
    ...NoOpActionFields
    ...AriaActionFields
  }
}

fragment WebhookIntegrationFields on GenericWebhookIntegration {
  __typename
  id
  name
  urlEndpoint
}
"""
_FRAGMENTS = {text.split()[1]: text for text in _FRAGMENT_TEXT.strip().split("\n\n")}

_GET_ENTITY_AUTOMATIONS = """query GetEntityAutomations($entity: String!, $cursor: String, \
$perPage: Int, $order: String, $filters: JSONString) {
  scope: entity(name: $entity) {
    triggers(after: $cursor, first: $perPage, order: $order, filters: $filters) {
      pageInfo {
        ...PageInfoFields
      }
      edges {
        node {
          ...TriggerFields
        }
      }
    }
  }
}"""

_GET_ENTITY_AUTOMATIONS_LEGACY = """query GetEntityAutomationsLegacy($entity: String!, \
$cursor: String, $perPage: Int) {
  scope: entity(name: $entity) {
    projects(after: $cursor, first: $perPage) {
      pageInfo {
        ...PageInfoFields
      }
      edges {
        node {
          ...ProjectTriggersFields
        }
      }
    }
  }
}"""

#: Which project holds a collection: the saved scope names only the collection. (Fields as in
#: W&B's `artifact_collections.graphql`: `artifactCollection(id:)`, `project { name entity }`.)
COLLECTION_PROJECT = """query ArtifactCollectionProject($id: ID!) {
  artifactCollection(id: $id) {
    __typename
    name
    project {
      name
      entity {
        name
      }
    }
  }
}"""

#: Fragments on types an older W&B server lacks, and how its error names them. W&B's SDK leaves
#: them out by the server's feature flags (`_compat.omit_automation_fragments`); we leave out
#: those the server's error names.
_OPTIONAL_FRAGMENTS = {
    "AriaActionFields": ('"ARIATriggeredAction"', '"AriaActionFields"'),
    "NoOpActionFields": ('"NoOpTriggeredAction"', '"NoOpActionFields"'),
    "EntityScopeFields": ('"EntityScopeFields"', 'of type "Entity"'),
}


def _document(operation: str, omit: frozenset[str] = frozenset()) -> str:
    """The operation with every fragment it spreads (transitively), less those in `omit`."""
    spread = re.compile(r"^[ \t]*\.\.\.(\w+)\n", re.M)
    texts = {
        name: spread.sub(lambda m: "" if m[1] in omit else m[0], text)
        for name, text in _FRAGMENTS.items()
        if name not in omit
    }
    body = spread.sub(lambda m: "" if m[1] in omit else m[0], operation)
    used: set[str] = set()
    pending = [m[1] for m in spread.finditer(body)]
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending += [m[1] for m in spread.finditer(texts[name])]
    return "\n\n".join([body, *(texts[name] for name in sorted(used))]) + "\n"


GET_ENTITY_AUTOMATIONS = _document(_GET_ENTITY_AUTOMATIONS)
GET_ENTITY_AUTOMATIONS_LEGACY = _document(_GET_ENTITY_AUTOMATIONS_LEGACY)


def _lacks_field(refused: GraphQLRefused, name: str) -> bool:
    """Whether the server does not have the field (`Cannot query field "triggers" …`)."""
    return any(f'"{name}"' in m and "field" in m.lower() for m in refused.messages)


def _named_fragments(refused: GraphQLRefused) -> set[str]:
    """The optional fragments whose types the server said it does not know."""
    return {
        fragment
        for fragment, marks in _OPTIONAL_FRAGMENTS.items()
        if any(mark in m for m in refused.messages for mark in marks)
    }


@dataclass
class Fetched:
    """W&B's saved automations of an entity, and the projects that hold their collections."""

    triggers: list[dict[str, Any]] = field(default_factory=list)
    homes: dict[str, CollectionHome] = field(default_factory=dict)
    #: Answered by the project walk older servers need (no `Entity.triggers`).
    legacy: bool = False
    #: Fragments the server did not know, left out of the query.
    omitted: set[str] = field(default_factory=set)


def _pages(
    api: WandbAPI, document: str, connection: str, variables: dict[str, Any], per_page: int
) -> Iterator[dict[str, Any]]:
    """Each page of `data.scope.<connection>`, following `pageInfo.endCursor`."""
    cursor: str | None = None
    while True:
        data = api.query(document, **variables, cursor=cursor, perPage=per_page)
        scope = data.get("scope")
        if not isinstance(scope, dict):
            raise SourceError(
                f"{api.where} has no entity {variables.get('entity')!r} that this API key "
                "can see; check --entity."
            )
        page = scope.get(connection) or {}
        yield page
        info = page.get("pageInfo") or {}
        if not info.get("hasNextPage"):
            return
        if not info.get("endCursor") or info["endCursor"] == cursor:
            raise SourceError(f"{api.where} says there is a next page but gives no cursor.")
        cursor = info["endCursor"]


def fetch_automations(
    entity: str,
    *,
    api_key: str,
    base_url: str = DEFAULT_BASE_URL,
    per_page: int = 50,
    transport: httpx.BaseTransport | None = None,
) -> Fetched:
    """An entity's saved automations, asked for as W&B's SDK asks (`Api.automations(entity)`):
    `GetEntityAutomations`, or on a server without `Entity.triggers` the legacy project walk;
    then, for each collection scope, the project that holds the collection."""
    fetched = Fetched()
    api = WandbAPI(
        base_url,
        api_key,
        key_hint="it refused the API key in WANDB_API_KEY. Check the key "
        "(https://wandb.ai/authorize) and --base-url.",
        retry_delays=(),
        transport=transport,
    )
    try:
        while True:  # each retry drops the legacy field or a fragment: a few at most
            try:
                fetched.triggers = list(_fetch_triggers(api, entity, per_page, fetched))
                break
            except GraphQLRefused as refused:
                if not fetched.legacy and _lacks_field(refused, "triggers"):
                    fetched.legacy = True
                elif _named_fragments(refused) - fetched.omitted:
                    fetched.omitted |= _named_fragments(refused)
                else:
                    raise SourceError(
                        f"{api.where} refused the automations query: {'; '.join(refused.messages)}"
                    ) from None
        fetched.homes = _collection_homes(api, fetched.triggers)
    finally:
        api.close()
    return fetched


def _fetch_triggers(
    api: WandbAPI, entity: str, per_page: int, fetched: Fetched
) -> Iterator[dict[str, Any]]:
    operation = _GET_ENTITY_AUTOMATIONS_LEGACY if fetched.legacy else _GET_ENTITY_AUTOMATIONS
    document = _document(operation, frozenset(fetched.omitted))
    connection = "projects" if fetched.legacy else "triggers"
    for page in _pages(api, document, connection, {"entity": entity}, per_page):
        for edge in page.get("edges") or []:
            node = edge.get("node") or {}
            yield from (node.get("triggers") or []) if fetched.legacy else [node]


def _collection_homes(api: WandbAPI, triggers: list[dict[str, Any]]) -> dict[str, CollectionHome]:
    homes: dict[str, CollectionHome] = {}
    asked: set[str] = set()
    for trigger in triggers:
        scope = (trigger.get("scope") if isinstance(trigger, dict) else None) or {}
        kind, collection = scope.get("__typename"), scope.get("id")
        if kind not in ("ArtifactSequence", "ArtifactPortfolio") or not collection:
            continue
        if collection in asked:
            continue
        asked.add(collection)
        try:
            data = api.query(COLLECTION_PROJECT, id=collection)
        except GraphQLRefused:
            continue  # an older server: the automation's note says the project is unknown
        project = ((data.get("artifactCollection") or {}).get("project")) or {}
        if project.get("name"):
            entity = (project.get("entity") or {}).get("name")
            homes[collection] = CollectionHome(project["name"], entity)
    return homes
