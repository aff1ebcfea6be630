"""`ml-automations import-wandb`: W&B automation definitions (from W&B's API) to our YAML.

Each W&B automation has a `triggeringEventType`, an `eventFilter` (a JSON string: a run filter and
a metric, state or artifact condition), a `scope` (a project, or an artifact collection — a
portfolio in a `wandb-registry-*` project is a registry collection) and an `action`. What maps
onto our model is carried over; what does not is said, per automation, in `notes`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from prefect_ml_automations.errors import BadInputError

_AGG = {"AVERAGE": "average", "MIN": "min", "MAX": "max"}
_ZSCORE_DIR = {"ANY": "either", "INCREASE": "above", "DECREASE": "below"}
_STATES = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "CRASHED": "failed"}
_EVENTS = {"LINK_MODEL": "LINK_ARTIFACT"}


@dataclass
class Imported:
    """The automations that could be carried over, and what could not."""

    automations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        import yaml

        return yaml.safe_dump(
            {"automations": self.automations}, sort_keys=False, allow_unicode=True
        )


def import_wandb(document: Any, *, entity: str | None = None) -> Imported:
    """Our automations for W&B's (a list, `{"automations": [...]}` or a GraphQL edges answer)."""
    result = Imported()
    for node in _nodes(document):
        name = str(node.get("name") or "unnamed")
        notes: list[str] = []
        try:
            automation = _automation(node, entity, notes)
        except (KeyError, TypeError, ValueError) as exc:
            result.notes.append(f"{name}: not imported ({exc.__class__.__name__}: {exc}).")
            continue
        result.automations.append(automation)
        result.notes.extend(f"{name}: {note}" for note in notes)
    return result


def _nodes(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, list):
        return [n for n in document if isinstance(n, dict)]
    if isinstance(document, dict):
        if isinstance(document.get("automations"), list):
            return _nodes(document["automations"])
        if "triggeringEventType" in document:
            return [document]
        for value in document.values():  # GraphQL: {"data": {...: {"edges": [{"node": …}]}}}
            if isinstance(value, dict) and "edges" in value:
                return [e["node"] for e in value["edges"] if isinstance(e, dict) and "node" in e]
            found = _nodes(value) if isinstance(value, dict) else []
            if found:
                return found
    raise BadInputError(
        "The file holds no W&B automations: give the JSON W&B's API returns for them "
        "(a list, or an object with 'automations' or GraphQL 'edges')."
    )


def _automation(node: dict[str, Any], entity: str | None, notes: list[str]) -> dict[str, Any]:
    kind = _EVENTS.get(node["triggeringEventType"], node["triggeringEventType"])
    raw_filter = node.get("eventFilter") or "{}"
    event_filter = json.loads(raw_filter) if isinstance(raw_filter, str) else raw_filter
    out: dict[str, Any] = {"name": node["name"]}
    if node.get("description"):
        out["description"] = node["description"]
    if node.get("enabled") is False:
        out["enabled"] = False
    out["scope"] = _scope(node.get("scope") or {}, entity, notes)
    event, filters = _event(kind, event_filter, notes)
    out["event"] = event
    if filters:
        out["filters"] = filters
    out["action"] = _action(node.get("action") or {}, notes)
    return out


def _scope(scope: dict[str, Any], entity: str | None, notes: list[str]) -> dict[str, str]:
    project = scope.get("project") or {}
    owner = scope.get("entityName") or project.get("entityName") or entity
    if scope.get("__typename") == "Project":
        return {"project": f"{owner}/{scope['name']}" if owner else scope["name"]}
    home = project.get("name", "")
    if home.startswith("wandb-registry-"):
        return {"registry": home.removeprefix("wandb-registry-"), "collection": scope["name"]}
    if not owner:
        notes.append("the scope's entity is unknown; pass --entity")
    return {"project": f"{owner}/{home}" if owner else home, "collection": scope["name"]}


def _event(kind: str, f: dict[str, Any], notes: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    filters = _run_filters(f.get("run_filter"), notes) if kind.startswith("RUN_") else {}
    metric = f.get("run_metric_filter") or {}
    if kind == "RUN_METRIC":
        t = metric.get("threshold_filter") or json.loads(f.get("metric_filter") or "{}")
        return {
            "type": kind,
            "metric": t["name"],
            "window": t.get("window_size", 5),
            "aggregation": _AGG.get(t.get("agg_op") or "AVERAGE", "average"),
            "operator": t["cmp_op"],
            "threshold": t["threshold"],
        }, filters
    if kind == "RUN_METRIC_CHANGE":
        c = metric["change_filter"]
        return {
            "type": kind,
            "metric": c["name"],
            "current_window": c.get("current_window_size") or c["window_size"],
            "prior_window": c.get("prior_window_size") or c["window_size"],
            "aggregation": _AGG.get(c.get("agg_op") or "AVERAGE", "average"),
            "change_type": str(c.get("change_type", "RELATIVE")).lower(),
            "direction": str(c["change_dir"]).lower(),
            "amount": c["change_amount"],
        }, filters
    if kind == "RUN_METRIC_ZSCORE":
        z = metric["zscore_filter"]
        return {
            "type": kind,
            "metric": z["name"],
            "window": z.get("window_size", 30),
            "threshold": z["threshold"],
            "direction": _ZSCORE_DIR[str(z.get("change_dir", "ANY"))],
        }, filters
    if kind == "RUN_STATE":
        wanted = [str(s).upper() for s in (f.get("run_state_filter") or {}).get("states", [])]
        states = sorted({_STATES[s] for s in wanted if s in _STATES})
        if "KILLED" in wanted:
            notes.append("the state KILLED is dropped: a killed run never triggers here")
        return {"type": kind, "states": states}, filters
    event: dict[str, Any] = {"type": kind}
    pattern = _condition(f, "alias" if kind == "ADD_ARTIFACT_ALIAS" else "tag", notes)
    if pattern is not None and kind in (
        "ADD_ARTIFACT_ALIAS",
        "ADD_ARTIFACT_TAG",
        "REMOVE_ARTIFACT_TAG",
    ):
        event["alias" if kind == "ADD_ARTIFACT_ALIAS" else "tag"] = pattern
    return event, filters


def _run_filters(raw: Any, notes: list[str]) -> dict[str, str]:
    expression = json.loads(raw) if isinstance(raw, str) else (raw or {})
    out: dict[str, str] = {}
    for clause in _clauses(expression):
        for key, condition in clause.items():
            if key in ("display_name", "displayName"):
                out["run_name"] = _pattern(condition, notes)
            elif key in ("username", "user"):
                out["user"] = str(
                    condition.get("$eq", condition) if isinstance(condition, dict) else condition
                )
            else:
                notes.append(f"the run filter on {key!r} can not be carried over")
    return out


def _condition(expression: Any, key: str, notes: list[str]) -> str | None:
    for clause in _clauses(expression):
        if key in clause:
            return _pattern(clause[key], notes)
    return None


def _clauses(expression: Any) -> list[dict[str, Any]]:
    """The leaf conditions of a Mongo-like filter ($and/$or flattened)."""
    if not isinstance(expression, dict):
        return []
    found = []
    for key, value in expression.items():
        if key in ("$and", "$or") and isinstance(value, list):
            for item in value:
                found += _clauses(item)
        elif not key.startswith("$"):
            found.append({key: value})
    return found


def _pattern(condition: Any, notes: list[str]) -> str:
    if isinstance(condition, dict):
        if "$regex" in condition:
            return str(condition["$regex"])
        if "$contains" in condition:
            return re.escape(str(condition["$contains"]))
        if "$eq" in condition:
            return f"^{re.escape(str(condition['$eq']))}$"
        notes.append(f"the condition {condition!r} is kept as an exact match only if it is one")
        return ".*"
    return f"^{re.escape(str(condition))}$"


def _action(action: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    kind = action.get("__typename", "")
    if "Webhook" in kind:
        integration = action.get("integration") or {}
        url = integration.get("urlEndpoint")
        if not url:
            url = "https://CHANGE-ME.invalid/hook"
            notes.append("the webhook's URL is in a W&B integration: set action.url")
        payload = action.get("requestPayload")
        out: dict[str, Any] = {"type": "webhook", "url": url}
        if payload:
            out["payload"] = json.loads(payload) if isinstance(payload, str) else payload
        notes.append("W&B's webhook secrets do not travel: set access_token/secret if it used them")
        return out
    if "Notification" in kind:
        notes.append(
            "the Slack notification needs a Prefect notification block: create one and set "
            "action.block (now slack-webhook/CHANGE-ME)"
        )
        out = {"type": "notification", "block": "slack-webhook/CHANGE-ME"}
        for key in ("title", "message"):
            if action.get(key):
                out[key] = action[key]
        if action.get("severity"):
            out["severity"] = {"WARN": "warn", "ERROR": "error"}.get(
                str(action["severity"]), "info"
            )
        return out
    if kind and "NoOp" not in kind:
        notes.append(f"the action {kind} has no counterpart here: imported as no_op")
    return {"type": "no_op"}
