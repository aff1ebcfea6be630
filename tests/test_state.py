"""The evaluator's state: persisted between batches, bounded, and upgraded with the automations."""

from __future__ import annotations

import pytest

from prefect_ml_automations.errors import StateError
from prefect_ml_automations.evaluator import Evaluator, EvaluatorState, engine

from .conftest import at, automation, events, fire, metric, state

CHANGE = automation(
    "change",
    type="RUN_METRIC_CHANGE",
    metric="acc",
    current_window=2,
    prior_window=3,
    direction="any",
    amount=0.5,
    change_type="absolute",
)
Z = automation("z", type="RUN_METRIC_ZSCORE", metric="acc", window=3, threshold=1)
FAILED = automation("failed", type="RUN_STATE", states=["failed"], cooldown="1h")


def stream(runs: int, steps: int, start: int = 0) -> list[dict]:
    return [
        metric(
            f"r{r}", s, (s * 7 + r * 3) % 5, s * 10 + r, run_created_at=at(r), run_name=f"sweep-{r}"
        )
        for s in range(start, start + steps)
        for r in range(runs)
    ]


def test_a_saved_state_continues_where_it_left_off() -> None:
    automations = [CHANGE, Z, FAILED]
    whole = fire(
        automations, [*stream(4, 12), state("r1", "failed", 500), state("r1", "failed", 600)]
    )
    first = Evaluator(automations)
    part = first.evaluate(events(*stream(4, 6))).firings
    saved = first.state.to_bytes()
    second = Evaluator(automations, EvaluatorState.from_bytes(saved))
    part += second.evaluate(events(*stream(4, 6, start=6), state("r1", "failed", 500))).firings
    third = Evaluator(automations, EvaluatorState.from_bytes(second.state.to_bytes()))
    part += third.evaluate(events(state("r1", "failed", 600))).firings  # a re-delivery
    assert [f.firing_id for f in part] == [f.firing_id for f in whole]
    assert sum(f.automation == "failed" for f in part) == 1


def test_the_state_does_not_grow_with_the_history() -> None:
    evaluator = Evaluator([CHANGE, Z])
    evaluator.evaluate(events(*stream(3, 20)))
    small = len(evaluator.state.to_bytes())
    evaluator.evaluate(events(*stream(3, 500, start=20)))
    assert len(evaluator.state.to_bytes()) == small


def test_a_longer_window_added_later_widens_the_kept_tail() -> None:
    short = automation(
        "short", type="RUN_METRIC", metric="acc", window=2, operator=">=", threshold=0
    )
    evaluator = Evaluator([short])
    evaluator.evaluate(events(*[metric("r1", s, s, s) for s in range(6)]))
    longer = automation(
        "longer", type="RUN_METRIC", metric="acc", window=3, operator=">=", threshold=0
    )
    later = Evaluator([short, longer], evaluator.state)
    [_, firing] = later.evaluate(events(metric("r1", 6, 6, 6))).firings
    # Only 2 values were kept for the short window; the third needed one arrives now.
    assert firing.automation == "longer"
    assert firing.metric_values == [4.0, 5.0, 6.0]


def test_a_zscore_automation_added_later_takes_its_baseline_from_runs_already_seen() -> None:
    plain = automation(
        "plain", type="RUN_METRIC", metric="acc", window=1, operator="<", threshold=-100
    )
    evaluator = Evaluator([plain])
    evaluator.evaluate(
        events(*[metric(f"b{i}", 0, v, i, run_created_at=at(i)) for i, v in enumerate([8, 10, 12])])
    )
    z = automation("z", type="RUN_METRIC_ZSCORE", metric="acc", window=3, threshold=3)
    [firing] = (
        Evaluator([plain, z], evaluator.state)
        .evaluate(events(metric("new", 0, 16, 100, run_created_at=at(100))))
        .firings
    )
    assert (firing.automation, firing.value) == ("z", 3.0)


def test_large_batches_are_judged_in_slices_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    automations = [CHANGE, Z, FAILED]
    data = [*stream(3, 10), state("r0", "failed", 55), *stream(3, 5, start=10)]
    whole = Evaluator(automations).evaluate(events(*data), explain=True)
    monkeypatch.setattr(engine, "CHUNK_EVENTS", 7)
    sliced = Evaluator(automations).evaluate(events(*data), explain=True)
    assert [f.firing_id for f in sliced.firings] == [f.firing_id for f in whole.firings]
    assert sorted(sliced.skips, key=repr) == sorted(whole.skips, key=repr)


@pytest.mark.parametrize("data", [b"not a state", b""], ids=["garbage", "empty"])
def test_unreadable_state_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(StateError, match="The saved evaluator state can not be read"):
        EvaluatorState.from_bytes(data)
