"""Shared builders: automations and events written the way users write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.evaluator import Evaluator
from prefect_ml_automations.events import Event, event_from_dict

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """An ISO time `seconds` after 2026-01-01T10:00:00Z."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def automation(
    name: str = "a", *, project: str = "p", cooldown: Any = 0, **event: Any
) -> Automation:
    """A run automation in project `project`, no-op action, cooldown off unless given."""
    return Automation.model_validate(
        {
            "name": name,
            "scope": {"project": project},
            "event": event,
            "cooldown": cooldown,
            "action": {"type": "no_op"},
            **({"filters": event.pop("filters")} if "filters" in event else {}),
        }
    )


def metric(run: str, step: int | None, value: Any, t: float, **extra: Any) -> dict[str, Any]:
    return {
        "type": "METRIC",
        "project": extra.pop("project", "p"),
        "run_id": run,
        "metric": extra.pop("metric", "acc"),
        "value": value,
        "timestamp": at(t),
        **({"step": step} if step is not None else {}),
        **extra,
    }


def state(run: str, value: str, t: float, **extra: Any) -> dict[str, Any]:
    return {
        "type": "RUN_STATE",
        "project": extra.pop("project", "p"),
        "run_id": run,
        "state": value,
        "timestamp": at(t),
        **extra,
    }


def events(*dicts: dict[str, Any]) -> list[Event]:
    return [event_from_dict(d) for d in dicts]


def fire(automations: list[Automation], dicts: list[dict[str, Any]], **kwargs: Any) -> list[Firing]:
    """Evaluate normalized event dicts in one batch; the firings."""
    return Evaluator(automations).evaluate(events(*dicts), **kwargs).firings


def fired_at(firings: list[Firing]) -> list[tuple[str | None, int | None]]:
    """(run, step) of each firing, in order: what most scenarios assert."""
    return [(f.run_id, f.step) for f in firings]


@pytest.fixture
def ramp() -> list[dict[str, Any]]:
    """Run r1 logging acc = 0.1, 0.2, … 1.0 at steps 0..9, one second apart."""
    return [metric("r1", step, round(0.1 * (step + 1), 10), step) for step in range(10)]
