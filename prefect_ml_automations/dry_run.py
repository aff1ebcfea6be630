"""The dry run: judge a file of events against a config and report, starting nothing.

>>> # ml-automations evaluate automations.yaml events.jsonl --since 2026-01-01 --explain
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.decisions import Firing, Skip
from prefect_ml_automations.evaluator import Evaluation, Evaluator
from prefect_ml_automations.event_files import read_batch


def dry_run(
    config: AutomationsConfig,
    events: str | Path,
    *,
    since: datetime | None = None,
    explain: bool = False,
    progress: Callable[[int], None] | None = None,
    now: datetime | None = None,
) -> Evaluation:
    """Evaluate the events of a JSON-lines file (in file order) against every enabled automation.

    Stalled runs are judged by the clock at `now`, by default the time of the file's latest
    event. Raises `EventError` (naming file, line and field) before evaluating anything if a line
    is malformed. `progress` is called with the number of events read so far, now and then.
    """
    batch = read_batch(events, progress=progress)
    clock = now if now is not None else batch.latest
    return Evaluator(config.automations).evaluate(batch, since=since, explain=explain, now=clock)


def decision_records(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Every decision as a JSON-ready record: one `fired` per firing (in firing order), then
    one `not_fired` per reason an automation did not fire for a subject.

    >>> from datetime import UTC, datetime
    >>> from prefect_ml_automations.evaluator import Evaluation
    >>> firing = Firing(firing_id="f" * 32, automation="a", event_type="RUN_STATE",
    ...                 timestamp=datetime(2026, 1, 1, tzinfo=UTC), run_id="r1")
    >>> [record] = decision_records(Evaluation(firings=[firing], skips=[]))
    >>> record["decision"], record["subject"], record["firing_id"] == firing.firing_id
    ('fired', "run 'r1'", True)
    """
    fired = [
        {
            "decision": "fired",
            "automation": firing.automation,
            "subject": firing.subject,
            "firing_id": firing.firing_id,
        }
        for firing in evaluation.firings
    ]
    return fired + [skip.to_record() for skip in evaluation.skips]


def explain_lines(config: AutomationsConfig, evaluation: Evaluation) -> list[str]:
    """Per automation and subject, why it fired or did not — as lines for a person."""
    fired: dict[str, dict[str, list[Firing]]] = defaultdict(lambda: defaultdict(list))
    for firing in evaluation.firings:
        fired[firing.automation][firing.subject].append(firing)
    skipped: dict[str, dict[str, list[Skip]]] = defaultdict(lambda: defaultdict(list))
    for skip in evaluation.skips:
        skipped[skip.automation][skip.subject].append(skip)
    lines = []
    for automation in config.automations:
        where = automation.scope.describe()
        state = "" if automation.enabled else " — disabled, not evaluated"
        lines.append(f"{automation.name}: {automation.event.describe()} in {where}{state}")
        subjects = list(dict.fromkeys([*fired[automation.name], *skipped[automation.name]]))
        if not subjects and automation.enabled:
            lines.append("  no event reached it")
        for subject in subjects:
            parts = []
            if firings := fired[automation.name].get(subject):
                at = ", ".join(_trigger(f) for f in firings[:5]) + (
                    " …" if len(firings) > 5 else ""
                )
                parts.append(f"fired {len(firings)}× ({at})")
            for skip in skipped[automation.name].get(subject, []):
                times = f" ({skip.count}×)" if skip.count > 1 else ""
                parts.append(f"not fired: {skip.reason}{times}")
            lines.append(f"  {subject}: " + "; ".join(parts))
    return lines


def _trigger(firing: Firing) -> str:
    if firing.step is not None:
        return f"step {firing.step}"
    return firing.timestamp.isoformat()
