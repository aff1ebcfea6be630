"""A kill switch (issue 13 §4): `ml-automations pause FILE NAME` stops an automation firing from
the next cycle on, on every sensor of the store, without losing what the evaluator remembers of
it; `resume` undoes it. A paused automation is judged as before — its windows, streaks and
baselines advance — and its matches are in the history as skipped, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.decisions import Skip
from prefect_ml_automations.evaluator import Evaluator
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
