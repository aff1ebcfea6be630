"""The dry run as a Prefect task: a metric frame (or events) and automations in, decisions out.

`evaluate_automations` judges the points as `ml-automations evaluate` does — the same evaluator,
from a fresh state, every point in arrival order — and starts nothing. It returns one DataFrame,
one row per decision, with the columns `DECISION_COLUMNS`:

- the fields of the firing record (SPEC §4, `FIRING_COLUMNS`): `firing_id`, `automation`,
  `event_type`, `timestamp`, `project`, …, `metric`, `step`, `value`, `metric_values`, `status`
  (`pending`: nothing was delivered) — empty (None, NaN, NaT) where they do not apply;
- `decision`: `fired`, or `not_fired` (only with `explain=True`);
- `subject`: the run (`run 'r1' (sweep-1)`) or artifact version it is about;
- `reason`: for a firing the condition that held, else why it did not fire;
- `count`: how many points or events the row stands for (1 for a firing).

Without `explain` the rows are the firings, in the order they fired; with it, the reasons for
every "no" follow them (one row per automation, subject and reason, as `--explain` prints them).
So `result[result.decision == "fired"]` are always the firings, and `result[list(FIRING_COLUMNS)]`
the records the dry run prints.

>>> import pandas as pd
>>> from prefect_ml_automations.automations import Automation
>>> frame = pd.DataFrame({
...     "project": "p", "run_id": "r1", "metric": "acc", "step": range(3),
...     "value": [0.5, 0.8, 0.9],
...     "timestamp": pd.date_range("2026-01-01", periods=3, freq="s", tz="UTC"),
... })
>>> good = Automation.model_validate({
...     "name": "good", "scope": {"project": "p"}, "action": {"type": "no_op"}, "cooldown": 0,
...     "event": {"type": "RUN_METRIC", "metric": "acc", "window": 2, "operator": ">",
...               "threshold": 0.6}})
>>> evaluate_automations.fn(frame, [good])[["automation", "step", "value", "reason"]]
  automation  step  value                 reason
0       good     1   0.65  average(acc, 2) > 0.6
1       good     2   0.85  average(acc, 2) > 0.6
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.errors import BadInputError
from prefect_ml_automations.evaluator import Evaluation, Evaluator, EventBatch
from prefect_ml_automations.event_files import read_batch
from prefect_ml_automations.events import Event
from prefect_ml_automations.tasks.metrics import batch_from_frame

FIRING_COLUMNS = tuple(name for name, info in Firing.model_fields.items() if not info.exclude)
"""The fields of the firing record (SPEC §4), in its order."""

DECISION_COLUMNS = (*FIRING_COLUMNS, "decision", "subject", "reason", "count")
"""The columns `evaluate_automations` returns."""

_INTEGERS = ("version", "step", "count")


@task(name="evaluate-automations", cache_policy=NO_CACHE)
def evaluate_automations(
    frame_or_events: pd.DataFrame | Iterable[Event] | str | Path,
    automations: AutomationsConfig | Sequence[Automation | Mapping[str, Any]],
    explain: bool = False,
    since: datetime | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Judge points against automations, as the dry run does; one row per decision.

    `frame_or_events`: a metric frame (its rows in arrival order), normalized events (any
    kind: run states and artifact events are judged too), or the path of a JSON-lines file of
    them. `automations`: a loaded config, or automations (models or the dicts you would write
    in YAML). Disabled automations are not evaluated. Triggering points before `since` fire
    nothing but still fill windows and baselines; stalled runs are judged by the clock at
    `now`, by default the time of the latest event. The columns are described in this module's
    docstring (`DECISION_COLUMNS`).
    """
    chosen = _automations(automations)
    batch = _batch(frame_or_events)
    clock = now if now is not None else batch.latest
    evaluation = Evaluator(chosen).evaluate(batch, since=since, explain=explain, now=clock)
    return decisions_frame(evaluation, explain=explain)


def decisions_frame(evaluation: Evaluation, *, explain: bool = False) -> pd.DataFrame:
    """An evaluation as `evaluate_automations` returns it (the reasons only with `explain`)."""
    rows: list[dict[str, Any]] = [
        {
            **{name: getattr(firing, name) for name in FIRING_COLUMNS},
            "decision": "fired",
            "subject": firing.subject,
            "reason": firing.metric_filter,
            "count": 1,
        }
        for firing in evaluation.firings
    ]
    if explain:
        rows += [
            {
                "automation": skip.automation,
                "decision": "not_fired",
                "subject": skip.subject,
                "reason": skip.reason,
                "count": skip.count,
            }
            for skip in evaluation.skips
        ]
    frame = pd.DataFrame(rows, columns=list(DECISION_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["value"] = frame["value"].astype(float)
    for name in _INTEGERS:
        frame[name] = frame[name].astype("Int64")
    return frame


def _automations(
    automations: AutomationsConfig | Sequence[Automation | Mapping[str, Any]],
) -> list[Automation]:
    if isinstance(automations, AutomationsConfig):
        return list(automations.automations)
    if isinstance(automations, Automation | Mapping):
        automations = [automations]
    chosen = []
    for i, automation in enumerate(automations):
        if isinstance(automation, Mapping):
            try:
                automation = Automation.model_validate(automation)
            except ValidationError as exc:
                raise BadInputError(
                    f"automations[{i}] is not a valid automation: {exc.errors()[0]['msg']} "
                    f"(at {'.'.join(str(p) for p in exc.errors()[0]['loc'])})."
                ) from None
        if not isinstance(automation, Automation):
            raise BadInputError(
                f"automations[{i}] is a {type(automation).__name__}; give Automation models, "
                "the dicts you would write in YAML, or a loaded config (load_config(path))."
            )
        chosen.append(automation)
    names = [a.name for a in chosen]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise BadInputError(
            f"Two automations are named {twice[0]!r}; automation names must be unique."
        )
    return chosen


def _batch(frame_or_events: pd.DataFrame | Iterable[Event] | str | Path) -> EventBatch:
    if isinstance(frame_or_events, pd.DataFrame):
        return batch_from_frame(frame_or_events)
    if isinstance(frame_or_events, EventBatch):
        return frame_or_events
    if isinstance(frame_or_events, str | Path):
        return read_batch(frame_or_events)
    return EventBatch.from_events(frame_or_events)
