"""A kill switch (issue 13 §4): `ml-automations pause FILE NAME` stops an automation firing from
the next cycle on, on every sensor of the store, without losing what the evaluator remembers of
it; `resume` undoes it. A paused automation is judged as before — its windows, streaks and
baselines advance — and its matches are in the history as skipped, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.decisions import Skip
from prefect_ml_automations.evaluator import Evaluator, engine
from prefect_ml_automations.evaluator.engine import PAUSED
from prefect_ml_automations.store import StateStore

from .conftest import automation, events, metric, state

CONFIG = """
store: sqlite:///{tmp}/store.db
automations:
  - name: good-accuracy
    scope: {{project: p}}
    event: {{type: RUN_METRIC, metric: acc, window: 2, operator: ">", threshold: 0.5}}
    cooldown: 1h
    action: {{type: no_op}}
  - name: failed
    scope: {{project: p}}
    event: {{type: RUN_STATE, states: [failed]}}
    action: {{type: no_op}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return path


def test_a_paused_automation_is_judged_but_fires_nothing_and_keeps_its_state() -> None:
    a = automation(type="RUN_METRIC", metric="acc", window=2, operator=">", threshold=0.5)
    evaluator = Evaluator([a], paused=frozenset({"a"}))
    paused = evaluator.evaluate(events(metric("r1", 0, 0.9, 0), metric("r1", 1, 0.9, 1)))
    assert paused.firings == []
    assert paused.skips == [Skip("a", "run 'r1'", PAUSED, 1, held_back=True)]
    # Resumed: the window holds the point seen while paused, and no cooldown was spent.
    resumed = Evaluator([a], evaluator.state).evaluate(events(metric("r1", 2, 0.2, 2)))
    assert [(f.step, f.value) for f in resumed.firings] == [(2, pytest.approx(0.55))]


def test_paused_run_state_and_artifact_automations_hold_back_their_matches() -> None:
    failed = automation("failed", type="RUN_STATE", states=["failed"])
    evaluation = Evaluator([failed], paused=frozenset({"failed"})).evaluate(
        events(state("r1", "failed", 0))
    )
    assert (evaluation.firings, [s.reason for s in evaluation.skips]) == ([], [PAUSED])


def run_once(config_file: Path, *dicts: dict) -> None:
    (config_file.parent / "events.jsonl").write_text(
        "".join(e.model_dump_json() + "\n" for e in events(*dicts))
    )
    assert main(["ingest", str(config_file), str(config_file.parent / "events.jsonl")]) == 0
    assert main(["run", str(config_file), "--once"]) == 0


def test_pause_and_resume_through_the_store_take_effect_on_the_next_cycle(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", str(config_file), "failed", "--reason", "on-call is asleep"]) == 0
    assert "Paused failed" in capsys.readouterr().out
    run_once(
        config_file, state("r1", "failed", 0), metric("r1", 0, 0.9, 1), metric("r1", 1, 0.9, 2)
    )
    store = StateStore(load_config(config_file, env={}).store)
    history = {(row.automation, row.status) for row in store.history()}
    assert history == {("failed", "skipped"), ("good-accuracy", "finished")}
    assert main(["paused", str(config_file)]) == 0
    listed = capsys.readouterr().out
    assert "failed: since" in listed
    assert "on-call is asleep" in listed

    assert main(["resume", str(config_file), "failed"]) == 0
    run_once(config_file, state("r2", "failed", 3))
    fired = [(row.automation, row.subject) for row in store.history() if row.status != "skipped"]
    assert ("failed", "run 'r2'") in fired
    assert ("failed", "run 'r1'") not in fired


def test_pausing_an_automation_the_config_does_not_have_exits_2_naming_them(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", str(config_file), "nope"]) == 2
    error = capsys.readouterr().err
    assert "has no automation named 'nope'" in error
    assert "good-accuracy, failed" in error


def test_pause_twice_and_resume_twice_say_so(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", str(config_file), "failed"]) == 0
    assert main(["pause", str(config_file), "failed"]) == 0
    assert "is paused already" in capsys.readouterr().out
    assert main(["resume", str(config_file), "failed"]) == 0
    assert main(["resume", str(config_file), "failed"]) == 0
    assert "was not paused" in capsys.readouterr().out


def test_an_automation_paused_then_removed_from_the_config_can_still_be_resumed(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", str(config_file), "failed"]) == 0
    config_file.write_text(config_file.read_text().replace("name: failed", "name: failures"))
    assert main(["paused", str(config_file)]) == 0
    assert "failed: since" in capsys.readouterr().out  # and says it is not in the config
    assert main(["resume", str(config_file), "failed"]) == 0
    assert "Resumed failed" in capsys.readouterr().out


# Budgets: at most N firings per period, then held back and paused ------------------------------

BUDGET = {"firings": 2, "per": "1h"}


def budgeted(firings: int = 2, **event: object) -> Automation:
    return Automation.model_validate(
        {
            "name": "b",
            "scope": {"project": "p"},
            "event": event,
            "cooldown": "1d",
            "budget": {**BUDGET, "firings": firings},
            "action": {"type": "no_op"},
        }
    )


@pytest.fixture(params=[None, 2], ids=["one-slice", "slices-of-2"])
def sliced(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Big batches are judged in slices: here, in one, or in slices of 2 events."""
    if request.param is not None:
        monkeypatch.setattr(engine, "CHUNK_EVENTS", request.param)


@pytest.mark.usefixtures("sliced")
def test_a_budget_hit_mid_batch_holds_back_the_rest_and_pauses() -> None:
    a = budgeted(type="RUN_METRIC", metric="acc", window=1, operator=">", threshold=0.5)
    stream = [metric(f"r{i}", 0, 0.9, i) for i in range(5)]
    evaluation = Evaluator([a]).evaluate(events(*stream))
    assert [f.run_id for f in evaluation.firings] == ["r0", "r1"]  # the first two, by arrival
    reason = f"over its budget of 2 firings per 1h: {PAUSED}"
    assert {(s.subject, s.reason, s.count) for s in evaluation.skips} == {
        (f"run 'r{i}'", reason, 1) for i in (2, 3, 4)
    }
    assert evaluation.exhausted == ["b"]


def test_a_match_over_budget_starts_no_cooldown() -> None:
    a = budgeted(type="RUN_STATE", states=["failed"])
    evaluator = Evaluator([a])
    evaluator.evaluate(events(*[state(f"r{i}", "failed", i) for i in range(3)]))
    # Budget renewed (an hour later, say): r2, held back before, fires; its cooldown was unspent.
    again = Evaluator([a], evaluator.state, budgets={"b": 2})
    later = again.evaluate(events(state("r2", "running", 10), state("r2", "failed", 11)))
    assert [f.run_id for f in later.firings] == ["r2"]


def test_budget_settings_are_checked() -> None:
    for budget, message in [
        ({"firings": 0, "per": "1h"}, "greater than 0"),
        ({"firings": 2, "per": "0"}, "a period such as '1h'"),
        ({"firings": 2}, "per"),
    ]:
        with pytest.raises(ValueError, match=message):
            Automation.model_validate(
                {
                    "name": "b",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "budget": budget,
                    "action": {"type": "no_op"},
                }
            )


def test_a_sensor_pauses_an_automation_over_its_budget_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(
        CONFIG.format(tmp=tmp_path).replace(
            "event: {type: RUN_STATE, states: [failed]}",
            "event: {type: RUN_STATE, states: [failed]}\n    budget: {firings: 2, per: 1h}",
        )
    )
    run_once(config_file, *[state(f"r{i}", "failed", i) for i in range(4)])
    store = StateStore(load_config(config_file, env={}).store)
    statuses = sorted(row.status for row in store.history() if row.automation == "failed")
    assert statuses == ["finished", "finished", "skipped", "skipped"]  # one entry a run
    skipped = [row for row in store.history() if row.status == "skipped"]
    assert {row.subject for row in skipped} == {"run 'r2'", "run 'r3'"}
    assert all("over its budget of 2 firings per 1h" in (row.error or "") for row in skipped)
    assert list(store.paused()) == ["failed"]
    run_once(config_file, state("r9", "failed", 9))  # paused now: held back
    assert [r.subject for r in store.history() if r.status == "finished"] == [
        "run 'r0'",
        "run 'r1'",
    ]


@pytest.mark.usefixtures("sliced")
def test_once_a_budget_is_spent_every_match_after_is_over_budget_however_sliced() -> None:
    a = budgeted(1, type="RUN_METRIC", metric="acc", window=1, operator=">", threshold=0.5)
    stream = [metric("r0", 0, 0.9, 0), metric("r1", 0, 0.9, 1), metric("r0", 1, 0.9, 2)]
    evaluation = Evaluator([a]).evaluate(events(*stream))
    assert [f.run_id for f in evaluation.firings] == ["r0"]
    assert sorted((s.subject, s.reason[:15], s.count) for s in evaluation.skips) == [
        ("run 'r0'", "over its budget", 1),  # (its cooldown held it too: the budget says first)
        ("run 'r1'", "over its budget", 1),
    ]


def test_explain_keeps_the_rearm_reason_when_a_budget_is_hit() -> None:
    event = {"type": "RUN_METRIC", "metric": "acc", "window": 1, "operator": ">", "threshold": 0.5}
    a = budgeted(1, **event, rearm=True)
    stream = [metric("r0", 0, 0.9, 0), metric("r0", 1, 0.9, 1), metric("r1", 0, 0.9, 2)]
    evaluation = Evaluator([a]).evaluate(events(*stream), explain=True)
    assert [f.run_id for f in evaluation.firings] == ["r0"]
    assert sorted((s.subject, s.reason[:22]) for s in evaluation.skips) == [
        ("run 'r0'", "already fired since th"),
        ("run 'r1'", "over its budget of 1 f"),
    ]
