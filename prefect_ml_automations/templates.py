"""`${variable}` templates in action settings, filled in per firing (W&B's variable names).

Substitution happens in the string values of a JSON structure, never in raw JSON text, so a
value can not inject structure; a string that is exactly one variable takes the variable's type.

>>> render({"v": "${artifact_version_index}", "t": "v${artifact_version_index} of ${missing}"},
...        {"artifact_version_index": 4})
{'v': 4, 't': 'v4 of '}
"""

from __future__ import annotations

import json
import re
from typing import Any

from prefect_ml_automations.decisions import Firing

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


def variables(firing: Firing) -> dict[str, Any]:
    """Every template variable of a firing; those that do not apply are empty strings."""
    place = firing.registry if firing.registry is not None else firing.project
    entity, _, project_name = (firing.project or "").rpartition("/")
    version = (
        f"{place}/{firing.collection}:v{firing.version}" if firing.collection is not None else ""
    )
    values: dict[str, Any] = {
        "automation_name": firing.automation,
        "event_type": firing.event_type,
        "event_author": firing.user or "",
        "entity_name": entity,
        "project_name": project_name if firing.project else "",
        "registry_name": firing.registry or "",
        "artifact_collection_name": firing.collection or "",
        "artifact_version": version,
        "artifact_version_string": version,
        "artifact_version_index": firing.version if firing.version is not None else "",
        "alias": firing.alias or "",
        "tag": firing.tag or "",
        "run_id": firing.run_id or "",
        "run_name": firing.run_name or "",
        "run_status": firing.state or "",
        "metric_name": firing.metric or "",
        "metric_values": firing.metric_values if firing.metric_values is not None else "",
        "metric_value": firing.value if firing.value is not None else "",
        "metric_filter": firing.metric_filter or "",
        "firing_id": firing.firing_id,
    }
    for key, value in (firing.metadata or {}).items():
        values[f"artifact_metadata.{key}"] = value
    return values


def render(template: Any, values: dict[str, Any]) -> Any:
    """The template with every string's variables filled in (unknown ones: empty strings)."""
    if isinstance(template, str):
        whole = _VARIABLE.fullmatch(template)
        if whole:
            return values.get(whole[1], "")
        return _VARIABLE.sub(lambda m: _text(values.get(m[1], "")), template)
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    return template


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
