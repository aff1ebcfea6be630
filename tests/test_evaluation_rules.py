"""SPEC §3, one named scenario per rule (and its edge cases)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.decisions import Skip
from prefect_ml_automations.evaluator import Evaluator, engine

from .conftest import T0, at, automation, events, fire, fired_at, metric, state

THRESHOLD = {"type": "RUN_METRIC", "metric": "acc", "window": 3, "operator": ">", "threshold": 0.5}


# 1. Per run -------------------------------------------------------------------------------------


def test_each_run_is_judged_on_its_own_values() -> None:
    # r1 logs high values, r2 low ones, interleaved: a window never mixes the two runs.
    stream = []
    for step in range(3):
        stream += [metric("r1", step, 0.9, 2 * step), metric("r2", step, 0.1, 2 * step + 1)]
    assert fired_at(fire([automation(**THRESHOLD)], stream)) == [("r1", 2)]


def test_run_filters_decide_which_runs_may_fire() -> None:
    a = automation(**THRESHOLD, filters={"user": "alice", "run_name": "^sweep-"})
    stream = []
    for step in range(3):
        stream += [
            metric("r1", step, 0.9, 3 * step, user="alice", run_name="sweep-1"),
            metric("r2", step, 0.9, 3 * step + 1, user="bob", run_name="sweep-2"),
            metric("r3", step, 0.9, 3 * step + 2, user="alice", run_name="baseline"),
        ]
    assert fired_at(fire([a], stream)) == [("r1", 2)]


def test_run_name_filter_searches_and_a_later_event_may_name_the_run() -> None:
    a = automation(**THRESHOLD, filters={"run_name": "sweep"})
    stream = [
        metric("r1", 0, 0.9, 0),
        metric("r1", 1, 0.9, 1),
        metric("r1", 2, 0.9, 2),  # full window, but the run's name is not known yet
        metric("r1", 3, 0.9, 3, run_name="my-sweep-1"),  # now it is, and it matches by search
    ]
    assert fired_at(fire([a], stream)) == [("r1", 3)]


# 3. Points --------------------------------------------------------------------------------------


def test_a_redelivered_point_changes_nothing() -> None:
    a = automation(**THRESHOLD)
    stream = [
        metric("r1", 0, 0.1, 0),
        metric("r1", 1, 0.1, 1),
        metric("r1", 1, 5.0, 2),  # same (run, metric, step): a re-delivery, even with a new value
        metric("r1", 2, 0.1, 3),
    ]
    assert fire([a], stream) == []


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), float("-inf"), True, "0.9", None, {"_type": "histogram"}],
    ids=["nan", "inf", "-inf", "boolean", "string", "null", "histogram"],
)
def test_values_that_are_not_finite_numbers_do_not_count(bad: object) -> None:
    a = automation(**{**THRESHOLD, "window": 2})
    stream = [metric("r1", 0, 0.9, 0), metric("r1", 1, bad, 1)]
    stream[1]["value"] = bad
    assert fire([a], stream) == []
    # ...nor do they take the step: a real value at that step still counts.
    assert fired_at(fire([a], [*stream, metric("r1", 1, 0.9, 2)])) == [("r1", 1)]


def test_system_metrics_have_no_step_and_are_ordered_by_time() -> None:
    a = automation(type="RUN_METRIC", metric="system.gpu", window=2, operator=">=", threshold=90)
    stream = [
        metric("r1", None, 95, 10, metric="system.gpu"),
        metric("r1", None, 80, 5, metric="system.gpu"),  # older: late, not a trigger
        metric("r1", None, 99, 20, metric="system.gpu"),  # window (95, 99)
    ]
    [firing] = fire([a], stream)
    assert (firing.step, firing.metric_values, firing.timestamp) == (
        None,
        [95.0, 99.0],
        T0 + timedelta(seconds=20),
    )


# 4. Evaluated at every point ---------------------------------------------------------------------


def test_a_crossing_fires_even_if_the_latest_value_is_back_below() -> None:
    a = automation(**{**THRESHOLD, "window": 1})
    stream = [metric("r1", 0, 0.1, 0), metric("r1", 1, 0.9, 1), metric("r1", 2, 0.1, 2)]
    assert fired_at(fire([a], stream)) == [("r1", 1)]


def test_a_late_point_joins_later_windows_but_does_not_trigger() -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=2, operator=">=", threshold=1)
    stream = [
        metric("r1", 0, 0.0, 0),
        metric("r1", 2, 0.0, 1),
        metric("r1", 1, 2.0, 2),  # late: window (2.0 at step 1, 0.0 at step 2) is not judged now
        metric("r1", 3, 0.0, 3),  # window ending here: steps 2, 3 → average 0
        metric("r1", 4, 2.0, 4),  # steps 3, 4 → average 1 → fires
    ]
    assert fired_at(fire([a], stream)) == [("r1", 4)]


def test_a_late_point_changes_the_window_after_it() -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=3, operator=">=", threshold=1)
    stream = [
        metric("r1", 0, 0.0, 0),
        metric("r1", 1, 0.0, 1),
        metric("r1", 3, 1.5, 2),  # window (0, 0, 1.5): 0.5
        metric("r1", 2, 1.5, 3),  # late
        metric("r1", 4, 0.0, 4),  # window steps 2, 3, 4: (1.5, 1.5, 0) → 1.0
    ]
    [firing] = fire([a], stream)
    assert (firing.step, firing.metric_values) == (4, [1.5, 1.5, 0.0])


# 5. Full windows ---------------------------------------------------------------------------------


def test_nothing_fires_until_the_window_is_full(ramp: list[dict]) -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=5, operator=">", threshold=0)
    firings = fire([a], ramp)
    assert fired_at(firings)[0] == ("r1", 4)
    assert firings[0].metric_values == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert firings[0].value == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("aggregation", "expected"), [("min", 0.3), ("max", 0.5), ("average", 0.4)]
)
def test_aggregations(aggregation: str, expected: float, ramp: list[dict]) -> None:
    a = automation(
        type="RUN_METRIC",
        metric="acc",
        window=3,
        aggregation=aggregation,
        operator=">",
        threshold=0,
    )
    assert fire([a], ramp[:5])[-1].value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("operator", "value", "fires"),
    [
        (">", 2.0, False),
        (">=", 2.0, True),
        ("<", 2.0, False),
        ("<=", 2.0, True),
        ("==", 2.0, True),
        ("!=", 2.0, False),
        ("above", 2.5, True),
        ("$lt", 1.5, True),
    ],
)
def test_operators_at_the_threshold(operator: str, value: float, fires: bool) -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=1, operator=operator, threshold=2)
    assert bool(fire([a], [metric("r1", 0, value, 0)])) is fires


def change(**kw: object) -> Automation:
    return automation(
        **{
            "type": "RUN_METRIC_CHANGE",
            "metric": "acc",
            "current_window": 2,
            "prior_window": 2,
            **kw,
        }
    )


def test_change_needs_both_windows_and_they_do_not_overlap() -> None:
    a = change(direction="increase", amount=1, change_type="absolute")
    stream = [metric("r1", s, v, s) for s, v in enumerate([1, 1, 2, 2, 3])]
    # step 3: prior (1, 1) → current (2, 2): +1; step 4: prior (1, 2) → (2, 3): +1
    firings = fire([a], stream)
    assert fired_at(firings) == [("r1", 3), ("r1", 4)]
    assert firings[0].metric_values == [1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("direction", "values", "fires"),
    [
        ("increase", [4, 4, 5, 5], True),  # +25 %: ≥ amount fires
        ("increase", [4, 4, 3, 3], False),
        ("decrease", [4, 4, 3, 3], True),  # -25 %
        ("decrease", [4, 4, 5, 5], False),
        ("any", [4, 4, 3, 3], True),
        ("any", [4, 4, 5, 5], True),
        ("any", [4, 4, 4.5, 4.5], False),  # 12.5 %
    ],
)
def test_relative_change_directions(direction: str, values: list[float], fires: bool) -> None:
    a = change(direction=direction, amount=0.25)
    stream = [metric("r1", s, v, s) for s, v in enumerate(values)]
    assert bool(fire([a], stream)) is fires


def test_relative_change_from_zero_is_undefined_and_does_not_fire() -> None:
    a = change(direction="any", amount=0.1)
    stream = [metric("r1", s, v, s) for s, v in enumerate([0, 0, 5, 5])]
    assert fire([a], stream) == []
    assert fired_at(
        fire([change(direction="any", amount=0.1, change_type="absolute")], stream)
    ) == [("r1", 3)]


def test_relative_change_uses_the_absolute_prior() -> None:
    a = change(direction="increase", amount=0.5)
    stream = [metric("r1", s, v, s) for s, v in enumerate([-2, -2, -1, -1])]  # (-1 - -2) / 2
    [firing] = fire([a], stream)
    assert firing.value == 0.5


# 6. Z-score --------------------------------------------------------------------------------------


def zscore(**kw: object) -> Automation:
    return automation(**{"type": "RUN_METRIC_ZSCORE", "metric": "acc", "threshold": 2, **kw})


def finished_runs(values: list[float], start: float = 0) -> list[dict]:
    """One point per run r0, r1, … created one minute apart."""
    return [
        metric(f"r{i}", 0, v, start + i, run_created_at=at(60 * i)) for i, v in enumerate(values)
    ]


def test_an_outlier_among_the_last_runs_fires() -> None:
    baseline = finished_runs([8, 10, 12])  # mean 10, sample std 2
    outlier = metric("new", 0, 16, 100, run_created_at=at(1000))  # z = 3
    [firing] = fire([zscore(threshold=3)], [*baseline, outlier])
    assert (firing.run_id, firing.value) == ("new", 3.0)
    assert sorted(firing.metric_values) == [8.0, 10.0, 12.0]


def test_the_scored_run_is_left_out_of_its_own_baseline() -> None:
    stream = [*finished_runs([8, 10, 12]), metric("r0", 1, 16, 100)]  # r0's own value 8 is replaced
    # baseline = r1, r2 (10, 12): mean 11, std 1.414 → z = 3.54
    [firing] = fire([zscore(threshold=3.5)], stream)
    assert firing.run_id == "r0"
    assert firing.value == pytest.approx((16 - 11) / 2**0.5)


def test_the_baseline_is_the_most_recently_created_runs_by_run_created_at() -> None:
    # Created long ago but logging last: r-old is not among the 2 most recent.
    stream = [
        metric("a", 0, 10, 0, run_created_at=at(100)),
        metric("b", 0, 12, 1, run_created_at=at(200)),
        metric("old", 0, 1000, 2, run_created_at=at(-1000)),
        metric("new", 0, 20, 3, run_created_at=at(300)),
    ]
    firings = [f for f in fire([zscore(window=2, threshold=4.5)], stream) if f.run_id == "new"]
    # new against (a, b): mean 11, std 1.414 → z = 6.4; had `old` been in, z would be small.
    assert [(f.run_id, round(f.value, 2)) for f in firings] == [("new", 6.36)]


def test_creation_time_defaults_to_the_first_event_and_ties_go_by_run_id() -> None:
    stream = [
        metric("b", 0, 10, 0),
        metric("a", 0, 12, 0),  # the same creation time as b: the larger run id counts as newer
        metric("c", 0, 14, 5),
        metric("d", 0, 40, 9),
    ]
    # Baseline of d (window 2): the two most recent others: c, then the tie winner "b".
    [firing] = [f for f in fire([zscore(window=2, threshold=1)], stream) if f.run_id == "d"]
    assert firing.metric_values == [14.0, 10.0]


@pytest.mark.parametrize(
    ("baseline", "value", "reason"),
    [([10], 100, "one baseline run"), ([10, 10, 10], 100, "zero spread")],
)
def test_zscore_needs_two_baseline_runs_with_spread(
    baseline: list[float], value: float, reason: str
) -> None:
    stream = [*finished_runs(baseline), metric("x", 0, value, 100, run_created_at=at(9999))]
    assert fire([zscore(threshold=0.1)], stream) == [], reason


@pytest.mark.parametrize(
    ("direction", "value", "fires"),
    [
        ("above", 16, True),
        ("above", 4, False),
        ("below", 4, True),
        ("below", 16, False),
        ("either", 4, True),
    ],
)
def test_zscore_directions(direction: str, value: float, fires: bool) -> None:
    stream = [*finished_runs([8, 10, 12]), metric("x", 0, value, 100, run_created_at=at(9999))]
    assert bool(fire([zscore(threshold=3, direction=direction)], stream)) is fires


def test_run_filters_do_not_narrow_the_zscore_baseline() -> None:
    baseline = [
        metric(f"r{i}", 0, v, i, run_created_at=at(i), user="bob")
        for i, v in enumerate([8, 10, 12])
    ]
    alice = metric("x", 0, 16, 100, run_created_at=at(9999), user="alice")
    [firing] = fire([zscore(threshold=3, filters={"user": "alice"})], [*baseline, alice])
    assert firing.run_id == "x"


def test_zscore_uses_each_runs_latest_value_by_then() -> None:
    stream = [
        *finished_runs([8, 10, 0]),
        metric("r2", 1, 12, 50),  # r2's latest becomes 12 before x is scored
        metric("x", 0, 16, 100, run_created_at=at(9999)),
        metric("r2", 2, 100, 200),  # after: not in x's baseline as of step 0
    ]
    firings = [f for f in fire([zscore(threshold=3)], stream) if f.run_id == "x"]
    assert [f.value for f in firings] == [3.0]


# 7. Run state ------------------------------------------------------------------------------------


def run_state(*states: str, **kw: object) -> Automation:
    return automation(type="RUN_STATE", states=list(states), **kw)


def test_a_run_fires_when_it_enters_a_chosen_state() -> None:
    stream = [state("r1", "running", 0), state("r1", "running", 1), state("r1", "finished", 2)]
    firings = fire([run_state("running", "finished")], stream)
    assert [(f.run_id, f.state) for f in firings] == [("r1", "running"), ("r1", "finished")]


def test_a_run_first_seen_finished_has_entered_finished() -> None:
    assert [f.state for f in fire([run_state("finished")], [state("r1", "finished", 0)])] == [
        "finished"
    ]


def test_crashed_means_failed_and_killed_never_fires() -> None:
    stream = [state("r1", "crashed", 0), state("r2", "killed", 1), state("r3", "FAILED", 2)]
    firings = fire([run_state("failed", "finished", "running")], stream)
    assert [(f.run_id, f.state) for f in firings] == [("r1", "failed"), ("r3", "failed")]


def test_other_states_never_fire_but_count_as_a_change() -> None:
    stream = [state("r1", "running", 0), state("r1", "pending", 1), state("r1", "running", 2)]
    assert [f.timestamp for f in fire([run_state("running")], stream)] == [
        T0,
        T0 + timedelta(seconds=2),
    ]


# 8. Cooldown -------------------------------------------------------------------------------------


def test_a_run_fires_at_most_once_per_cooldown_of_event_time() -> None:
    a = automation(**{**THRESHOLD, "window": 1}, cooldown="1h")
    stream = [metric("r1", s, 0.9, 600 * s) for s in range(13)]  # every 10 minutes for 2 hours
    assert [f.step for f in fire([a], stream)] == [0, 6, 12]


def test_the_default_cooldown_is_24_hours() -> None:
    a = Automation.model_validate(
        {
            "name": "a",
            "scope": {"project": "p"},
            "event": {**THRESHOLD, "window": 1},
            "action": {"type": "no_op"},
        }
    )
    assert a.cooldown == timedelta(hours=24)
    stream = [metric("r1", 0, 0.9, 0), metric("r1", 1, 0.9, 86399), metric("r1", 2, 0.9, 86400)]
    assert [f.step for f in fire([a], stream)] == [0, 2]


def test_cooldown_is_per_run_and_per_automation() -> None:
    a = automation("a", **{**THRESHOLD, "window": 1}, cooldown="1d")
    b = automation("b", **{**THRESHOLD, "window": 1}, cooldown="1d")
    stream = [metric("r1", 0, 0.9, 0), metric("r2", 0, 0.9, 1), metric("r1", 1, 0.9, 2)]
    assert [(f.automation, f.run_id) for f in fire([a, b], stream)] == [
        ("a", "r1"),
        ("b", "r1"),
        ("a", "r2"),
        ("b", "r2"),
    ]


@pytest.mark.parametrize("slice_events", [None, 3], ids=["one-slice", "slices-of-3"])
def test_matches_held_back_are_counted_once_per_run_and_named_as_last_known(
    monkeypatch: pytest.MonkeyPatch, slice_events: int | None
) -> None:
    if slice_events is not None:
        monkeypatch.setattr(engine, "CHUNK_EVENTS", slice_events)
    a = automation(**{**THRESHOLD, "window": 1}, cooldown="1d")
    stream = [metric("r1", s, 0.9, 2 * s) for s in range(6)]
    stream += [metric("r2", s, 0.9, 2 * s + 1) for s in range(4)]
    stream += [metric("r2", 4, 0.9, 20, run_name="sweep-2")]  # named only at the end
    evaluation = Evaluator([a]).evaluate(events(*stream))
    assert [(f.run_id, f.step) for f in evaluation.firings] == [("r1", 0), ("r2", 0)]
    reason = "held back by the cooldown (24h)"
    assert evaluation.skips == [
        Skip("a", "run 'r1'", reason, 5, held_back=True),
        Skip("a", "run 'r2' (sweep-2)", reason, 4, held_back=True),
    ]


def test_cooldown_applies_to_run_states_too() -> None:
    a = run_state("running", "failed", cooldown="1h")
    stream = [state("r1", "running", 0), state("r1", "failed", 60), state("r1", "running", 4000)]
    assert [f.state for f in fire([a], stream)] == ["running", "running"]


# 9. Artifact events ------------------------------------------------------------------------------


def registry_automation(event: dict, **scope: str) -> Automation:
    return Automation.model_validate(
        {
            "name": "deploy",
            "scope": scope or {"registry": "models", "collection": "churn"},
            "event": event,
            "action": {"type": "run_deployment", "deployment": "deploy-model/production"},
        }
    )


def alias(version: int, t: float, name: str = "production", **place: str) -> dict:
    return {
        "type": "ADD_ARTIFACT_ALIAS",
        **(place or {"registry": "models"}),
        "collection": "churn",
        "version": version,
        "alias": name,
        "timestamp": at(t),
    }


def test_alias_production_moving_from_v3_to_v4_fires_for_v4() -> None:
    a = registry_automation({"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"})
    stream = [
        alias(3, 0),
        alias(3, 1, name="staging"),
        alias(4, 2),
        alias(4, 3, name="production-old"),
    ]
    assert [f.version for f in fire([a], stream)] == [3, 4]


def test_the_same_event_delivered_twice_is_one_event_but_added_again_is_new() -> None:
    a = registry_automation({"type": "ADD_ARTIFACT_TAG", "tag": "gold"})
    tag = {
        "type": "ADD_ARTIFACT_TAG",
        "registry": "models",
        "collection": "churn",
        "version": 1,
        "tag": "gold",
    }
    removed = {**tag, "type": "REMOVE_ARTIFACT_TAG", "timestamp": at(1)}
    stream = [
        {**tag, "timestamp": at(0)},
        {**tag, "timestamp": at(0)},
        removed,
        {**tag, "timestamp": at(2)},
    ]
    assert [f.timestamp for f in fire([a], stream)] == [T0, T0 + timedelta(seconds=2)]


def test_a_registry_automation_does_not_see_the_projects_alias_and_the_dry_run_says_so() -> None:
    a = registry_automation({"type": "ADD_ARTIFACT_ALIAS"})
    evaluation = Evaluator([a]).evaluate(events(alias(3, 0, project="team/churn")), explain=True)
    assert evaluation.firings == []
    [skip] = evaluation.skips
    assert skip.subject == "team/churn/churn:v3 (production)"
    assert skip.reason == (
        "the event happened in project 'team/churn', not in collection 'churn' of registry "
        "'models': a registry automation sees only events in the registry (link the version "
        "into registry 'models', or scope the automation to the project)"
    )


def test_a_project_automation_does_not_see_registry_events() -> None:
    a = registry_automation({"type": "ADD_ARTIFACT_ALIAS"}, project="team/churn")
    assert fire([a], [alias(3, 0)]) == []
    assert [f.version for f in fire([a], [alias(3, 0, project="team/churn")])] == [3]


def test_collection_regex_scopes() -> None:
    a = registry_automation({"type": "CREATE_ARTIFACT"}, project="team", collection_regex="^churn-")
    created = [
        {
            "type": "CREATE_ARTIFACT",
            "project": "team",
            "collection": c,
            "version": 0,
            "timestamp": at(i),
        }
        for i, c in enumerate(["churn-a", "xchurn-b", "churn-c"])
    ]
    assert [f.collection for f in fire([a], created)] == ["churn-a", "churn-c"]


# 10. No surprise backfill: --since ---------------------------------------------------------------


def test_since_skips_triggers_before_it_but_they_still_fill_windows(ramp: list[dict]) -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=5, operator=">", threshold=0)
    firings = fire([a], ramp, since=T0 + timedelta(seconds=7))
    assert [f.step for f in firings] == [7, 8, 9]
    assert firings[0].metric_values == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])


def test_since_applies_to_states_and_artifacts() -> None:
    stream = [state("r1", "failed", 0), alias(1, 0), state("r2", "failed", 10), alias(2, 10)]
    automations = [run_state("failed"), registry_automation({"type": "ADD_ARTIFACT_ALIAS"})]
    firings = fire(automations, stream, since=T0 + timedelta(seconds=5))
    assert [(f.run_id, f.version) for f in firings] == [("r2", None), (None, 2)]


# 11. Deterministic -------------------------------------------------------------------------------


def test_the_same_events_give_the_same_firing_ids(ramp: list[dict]) -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=2, operator=">", threshold=0.5)
    first = [f.firing_id for f in fire([a], ramp)]
    again = [f.firing_id for f in fire([a], ramp)]
    assert first == again
    assert len(set(first)) == len(first) == 5  # steps 5..9


def test_firings_come_in_arrival_order_then_file_order_of_automations() -> None:
    b = automation("b", **{**THRESHOLD, "window": 1})
    a = automation("a", type="RUN_STATE", states=["running"])
    stream = [state("r1", "running", 5), metric("r1", 0, 0.9, 0)]
    assert [f.automation for f in fire([b, a], stream)] == ["a", "b"]


# §8. Holds for K points, rearm -----------------------------------------------------------------

HIGH = {**THRESHOLD, "window": 1}


def one_at_a_time(automations: list[Automation], dicts: list[dict]) -> list:
    """Each event a batch of its own, the state kept between them."""
    evaluator = Evaluator(automations)
    return [f for d in dicts for f in evaluator.evaluate(events(d)).firings]


def points(values: list[float], run: str = "r1") -> list[dict]:
    return [metric(run, step, value, 60 * step) for step, value in enumerate(values)]


def test_for_points_fires_once_the_condition_held_that_many_points_in_a_row() -> None:
    a = automation(**HIGH, for_points=3, cooldown="1d")
    stream = points([0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9])
    assert fired_at(fire([a], stream)) == [("r1", 5)]  # 3, 4, 5 in a row; 0, 1 were broken
    assert fired_at(one_at_a_time([a], stream)) == [("r1", 5)]


def test_a_streak_broken_by_one_point_starts_again() -> None:
    a = automation(**HIGH, for_points=3)
    assert fire([a], points([0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9])) == []


def test_streaks_are_per_run_and_only_trigger_points_count() -> None:
    a = automation(**HIGH, for_points=2)
    stream = [
        metric("r1", 0, 0.9, 0),
        metric("r2", 0, 0.9, 1),  # another run: not part of r1's streak
        metric("r1", 0, 0.1, 2),  # a re-delivery of step 0: changes nothing
        metric("r1", 1, 0.9, 3),
    ]
    assert fired_at(fire([a], stream)) == [("r1", 1)]


def test_without_rearm_a_run_whose_condition_still_holds_fires_again_after_the_cooldown() -> None:
    a = automation(**HIGH, for_points=2, cooldown="5m")
    stream = points([0.9] * 12)  # one a minute
    assert fired_at(fire([a], stream)) == [("r1", 1), ("r1", 6), ("r1", 11)]


def test_rearm_fires_once_while_the_condition_holds_and_again_after_it_stopped() -> None:
    a = automation(**HIGH, rearm=True, cooldown="1d")  # (the cooldown is not used)
    stream = [*points([0.9, 0.9, 0.9, 0.1, 0.9, 0.9]), metric("r1", 6, 0.9, 3 * 86400)]
    assert fired_at(fire([a], stream)) == [("r1", 0), ("r1", 4)]
    assert fired_at(one_at_a_time([a], stream)) == [("r1", 0), ("r1", 4)]


def test_rearm_with_for_points_needs_a_new_streak_after_each_firing() -> None:
    a = automation(**HIGH, rearm=True, for_points=2)
    stream = points([0.9, 0.9, 0.9, 0.1, 0.9, 0.1, 0.9, 0.9])
    assert fired_at(fire([a], stream)) == [("r1", 1), ("r1", 7)]


def test_a_run_the_filters_refuse_stays_armed() -> None:
    a = automation(**HIGH, rearm=True, filters={"run_name": "^sweep"})
    stream = [
        metric("r1", 0, 0.9, 0, run_name="baseline"),
        metric("r1", 1, 0.9, 60, run_name="sweep-1"),  # renamed: now it may fire
        metric("r1", 2, 0.9, 120),
    ]
    assert fired_at(fire([a], stream)) == [("r1", 1)]


def test_streaks_survive_the_store_between_cycles() -> None:
    from prefect_ml_automations.evaluator.rows import rows_of, state_from_rows

    a = automation(**HIGH, rearm=True, for_points=2)
    evaluator = Evaluator([a])
    first = evaluator.evaluate(events(*points([0.9, 0.9, 0.9]))).firings
    restored = Evaluator([a], state_from_rows(rows_of(evaluator.state)))
    later = restored.evaluate(events(*[metric("r1", s, 0.9, 60 * s) for s in (3, 4)])).firings
    assert (fired_at(first), fired_at(later)) == ([("r1", 1)], [])


def test_explain_says_why_a_streak_or_a_rearm_kept_a_run_from_firing() -> None:
    streak = automation("streak", **HIGH, for_points=3)
    rearm = automation("rearm", **HIGH, rearm=True)
    evaluation = Evaluator([streak, rearm]).evaluate(events(*points([0.9, 0.9, 0.9])), explain=True)
    assert [(f.automation, f.step) for f in evaluation.firings] == [("rearm", 0), ("streak", 2)]
    reasons = {(s.automation, s.reason, s.count) for s in evaluation.skips}
    assert reasons == {
        ("streak", "average(acc, 1) > 0.5 had not yet held at 3 points in a row", 2),
        (
            "rearm",
            "already fired since the condition last stopped holding (rearm: fires again once "
            "it stops holding and holds again)",
            2,
        ),
    }
    assert evaluation.firings[1].metric_filter == "average(acc, 1) > 0.5 at 3 points in a row"


def test_a_streak_counted_before_for_points_was_turned_off_is_not_carried_on() -> None:
    counting, plain = automation(**HIGH, for_points=3), automation(**HIGH, cooldown="1d")
    state = Evaluator([counting]).state
    Evaluator([counting], state).evaluate(events(*points([0.9, 0.9])))  # 2 in a row
    later = [metric("r1", s, v, 60 * s) for s, v in [(2, 0.1), (3, 0.1), (4, 0.9)]]
    Evaluator([plain], state).evaluate(events(*later[:2]))  # not counted: for_points off
    assert Evaluator([counting], state).evaluate(events(later[2])).firings == []


def test_a_longer_for_points_counts_the_whole_streak_so_far() -> None:
    short, long = automation(**HIGH, for_points=2), automation(**HIGH, for_points=5)
    evaluator = Evaluator([short])
    evaluator.evaluate(events(*points([0.9] * 10)))
    later = Evaluator([long], evaluator.state).evaluate(events(metric("r1", 10, 0.9, 600)))
    assert fired_at(later.firings) == [("r1", 10)]  # 11 points in a row: at least 5


def test_a_rearm_firing_starts_the_cooldown_it_would_use_without_rearm() -> None:
    rearm, plain = automation(**HIGH, rearm=True), automation(**HIGH, cooldown="1d")
    evaluator = Evaluator([rearm])
    assert fired_at(evaluator.evaluate(events(*points([0.9]))).firings) == [("r1", 0)]
    after = Evaluator([plain], evaluator.state).evaluate(events(metric("r1", 1, 0.9, 120)))
    assert after.firings == []


@pytest.mark.parametrize(
    ("for_points", "message"),
    [(0, "greater than 0"), (1_000_001, "at most 1000000 points")],
)
def test_for_points_is_a_positive_bounded_count(for_points: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        automation(**HIGH, for_points=for_points)


# §8. Robust z-scores: a minimum baseline and a σ floor -------------------------------------------


def scored(value: float) -> dict:
    return metric("x", 0, value, 100, run_created_at=at(9999))


def test_a_nearly_flat_baseline_makes_a_wiggle_an_outlier_unless_sigma_has_a_floor() -> None:
    flat = finished_runs([1.0, 1.0001, 0.9999, 1.0])  # std ≈ 0.00008
    wiggle = scored(1.01)  # z ≈ 120 against that baseline
    assert [f.run_id for f in fire([zscore(threshold=3)], [*flat, wiggle])] == ["x"]
    assert fire([zscore(threshold=3, sigma_floor=0.05)], [*flat, wiggle]) == []
    [jump] = fire([zscore(threshold=3, sigma_floor=0.05)], [*flat, scored(1.5)])
    assert jump.value == pytest.approx(0.5 / 0.05)


def test_a_flat_baseline_stays_flat_though_runs_came_and_went_around_it() -> None:
    """The running sums are kept around the metric's first value (0.1): r2's 0.7 entering and
    leaving leaves a rounding crumb of 1e-17 in them, which is no spread (it made r2 a
    38-million-σ outlier against 0.1 and 0.1)."""
    finished = [state(r, "finished", 0) for r in ("r0", "r1", "r2")]
    stream = [*finished, metric("r0", 0, 0.1, 1), metric("r1", 0, 0.1, 2)]
    stream += [metric("r2", 0, 0.7, 3), metric("r2", 1, 0.2, 4)]
    for baseline in ("all", "finished"):
        assert fire([zscore(threshold=3, window=2, baseline=baseline)], stream) == []


def test_a_sigma_floor_never_replaces_a_spread_larger_than_it() -> None:
    # The first value the project logged (0) is far from the baseline's (~1000): the spread of
    # 0.02 must still be measured as such, not as "none", and divided by instead of the floor.
    first = metric("r-first", 0, 0.0, 0, run_created_at=at(-600))
    spread = finished_runs([1000.0, 1000.02, 999.98], start=10)
    stream = [first, *spread, scored(1000.03)]  # z = 1.5 against the last 3 runs
    assert fire([zscore(threshold=3, window=3, sigma_floor=0.001)], stream) == []


def test_with_a_sigma_floor_a_perfectly_flat_baseline_is_judged() -> None:
    flat = finished_runs([10, 10, 10])
    assert fire([zscore(threshold=3)], [*flat, scored(11)]) == []  # no spread: undefined
    [firing] = fire([zscore(threshold=3, sigma_floor=0.25)], [*flat, scored(11)])
    assert firing.value == pytest.approx(4.0)


def test_median_mad_is_not_moved_by_one_wild_run_in_the_baseline() -> None:
    baseline = finished_runs([10.0, 10.5, 9.5, 10.0, 1000.0])  # one run logged a wild value
    stream = [*baseline, scored(12.0)]

    def of_x(automation: Automation) -> list:
        return [f for f in fire([automation], stream) if f.run_id == "x"]

    assert of_x(zscore(threshold=2.5, window=5)) == []  # the wild run swamps the std
    [firing] = of_x(zscore(threshold=2.5, window=5, method="median_mad"))
    # median 10, MAD 0.5: z = (12 - 10) / (0.5 / 0.6745)
    assert firing.value == pytest.approx(2 / (0.5 / 0.6745))
    assert sorted(firing.metric_values) == [9.5, 10.0, 10.0, 10.5, 1000.0]


def test_median_mad_needs_a_spread_of_more_than_half_the_baseline_or_a_floor() -> None:
    stream = [*finished_runs([10.0, 10.0, 10.0, 11.0]), scored(12.0)]
    evaluation = Evaluator([zscore(threshold=1, window=4, method="median_mad")]).evaluate(
        events(*stream), explain=True
    )
    assert evaluation.firings == []
    assert any("MAD 0" in s.reason for s in evaluation.skips)
    floored = zscore(threshold=1, window=4, method="median_mad", sigma_floor=1)
    [firing] = [f for f in fire([floored], stream) if f.run_id == "x"]
    assert firing.value == pytest.approx(2.0)  # (12 - 10) / the floor


def test_min_baseline_waits_for_enough_runs_and_explain_says_so() -> None:
    a = zscore(threshold=3, min_baseline=4)
    few = [*finished_runs([8, 10, 12]), scored(100)]
    evaluation = Evaluator([a]).evaluate(events(*few), explain=True)
    assert evaluation.firings == []
    assert any("fewer than 4 other runs" in s.reason for s in evaluation.skips)
    assert [f.run_id for f in fire([a], [*finished_runs([8, 10, 12, 10]), scored(100)])] == ["x"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_baseline": 1}, "between 2 .* and the window"),
        ({"min_baseline": 31}, r"between 2 .* and the window \(30\), not 31"),
        ({"sigma_floor": -1}, "must be 0 .* or more"),
        ({"method": "median"}, "mean_std.*median_mad"),
    ],
)
def test_robust_zscore_settings_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        zscore(**settings)
