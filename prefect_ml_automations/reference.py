"""The reference of every event, scope, filter, action and template variable, generated from the
models so that the README can not drift from the code.

    python -m prefect_ml_automations.reference --write README.md   # between the markers
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from prefect_ml_automations.automations import actions, filters, scopes, triggers
from prefect_ml_automations.automations.automation import Automation

START, END = "<!-- reference:start -->", "<!-- reference:end -->"

TEMPLATE_VARIABLES = {
    "automation_name": "the automation's name",
    "event_type": "the event's type, e.g. ADD_ARTIFACT_ALIAS",
    "event_author": "who caused it (run user, artifact author)",
    "entity_name": "the W&B entity (the part of the project before '/')",
    "project_name": "the project (after the entity)",
    "registry_name": "the registry",
    "artifact_collection_name": "the collection",
    "artifact_version": "the version as a handle, e.g. models/churn:v4",
    "artifact_version_string": "<project or registry>/<collection>:v<N>",
    "artifact_version_index": "N (a number)",
    "artifact_metadata.<KEY>": "a key of the version's metadata",
    "alias": "the alias added",
    "tag": "the tag added or removed",
    "run_id": "the run's id",
    "run_name": "the run's name",
    "run_status": "the state the run entered",
    "metric_name": "the metric",
    "metric_values": "the window's values (a list)",
    "metric_value": "the aggregate, change or z that fired (a number)",
    "metric_filter": "the condition in words, e.g. average(accuracy, 5) > 0.6",
    "firing_id": "the firing's id",
}


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(annotation))
    return text.replace("typing.", "").replace("prefect_ml_automations.automations._types.", "")


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ("type",)) -> str:
    parts = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default = info.get_default(call_default_factory=True)
        if hasattr(default, "total_seconds"):  # a duration, as users write it
            default = f"{default.total_seconds() / 3600:g}h"
        if info.default is PydanticUndefined and info.default_factory is None:
            parts.append(f"`{name}` (required)")
        elif default in (None, [], {}, ""):
            parts.append(f"`{name}`")
        else:
            parts.append(f"`{name}` ({default})")
    return ", ".join(parts) or "—"


def _members(module: Any, base: type) -> list[Any]:
    """The concrete kinds (a literal `type`) defined in a module, in source order."""
    found: list[Any] = []
    for obj in vars(module).values():
        kind = getattr(obj, "model_fields", {}).get("type")
        concrete = kind is not None and typing.get_origin(kind.annotation) is typing.Literal
        if isinstance(obj, type) and issubclass(obj, base) and concrete:
            found.append(obj)
    return found


def render() -> str:
    """The reference, as markdown."""
    lines = [
        START,
        "",
        "### Events",
        "",
        "| `type` | scopes | fields (defaults) | what |",
        "|---|---|---|---|",
    ]
    for model in _members(triggers, triggers.Trigger):
        kind = typing.get_args(model.model_fields["type"].annotation)[0]
        allowed = ", ".join(
            s.replace("plain_project", "project (plain)") for s in model.allowed_scopes
        )
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines.append(f"| `{kind}` | {allowed} | {_fields(model)} | {doc} |")
    lines += ["", "### Scopes", "", "| scope | fields | what |", "|---|---|---|"]
    for scope in (scopes.RegistryScope, scopes.ProjectScope):
        doc = (scope.__doc__ or "").strip().splitlines()[0]
        lines.append(f"| {scope.__name__} | {_fields(scope, ())} | {doc} |")
    lines += [
        "",
        "### Run filters",
        "",
        f"`filters`: {_fields(filters.RunFilters, ())}. "
        + (filters.RunFilters.__doc__ or "").strip().splitlines()[0],
    ]
    lines += [
        "",
        "### Actions",
        "",
        "| `type` | fields (defaults) | templated | what |",
        "|---|---|---|---|",
    ]
    for model in _members(actions, actions.Action):
        kind = typing.get_args(model.model_fields["type"].annotation)[0]
        doc = (model.__doc__ or "").strip().splitlines()[0]
        templated = ", ".join(f"`{f}`" for f in model.templated_fields) or "—"
        lines.append(f"| `{kind}` | {_fields(model)} | {templated} | {doc} |")
    lines += [
        "",
        "### Automation",
        "",
        f"{_fields(Automation, ())}.",
        "",
        "### Template variables",
        "",
        "| variable | value |",
        "|---|---|",
    ]
    lines += [f"| `${{{name}}}` | {what} |" for name, what in TEMPLATE_VARIABLES.items()]
    lines += ["", END]
    return "\n".join(lines)


def splice(text: str) -> str:
    """`text` with the part between the markers replaced by the current reference."""
    if START not in text or END not in text:
        raise ValueError(f"the markers {START} and {END} are missing")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return head + render() + tail


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        path = Path(argv[1])
        path.write_text(splice(path.read_text()))
        return 0
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
