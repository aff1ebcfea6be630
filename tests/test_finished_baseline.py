"""Baselines of finished runs (issue 13 §2, `baseline: finished` on RUN_METRIC_ZSCORE): a run is
compared with the latest values of the `window` most recent other runs that were seen finished
— not with runs still on their way, whose values are half-trained. A run enters that baseline
when it has both logged the metric and been seen finished, at the later of the two, and stays
(a resumed run is not taken out). Batching, re-delivery and the store never change a firing
(tests/test_properties.py holds two such automations against tests/reference.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.evaluator import Evaluator, EvaluatorState
from prefect_ml_automations.store import StateStore

from .conftest import at, automation, events, metric, migrations, state

FINISHED = automation("z", type="RUN_METRIC_ZSCORE", metric="acc", threshold=2, baseline="finished")
ALL = automation("z-all", type="RUN_METRIC_ZSCORE", metric="acc", threshold=2)


def run(name: str, value: float, t: float, *, done: bool = True) -> list[dict[str, Any]]:
    """Run `name`, created at `t` seconds, logs `value` and (with `done`) finishes."""
    created = {"run_created_at": at(t)}
    logged = [metric(name, 0, value, t, **created)]
    return logged + ([state(name, "finished", t + 1, **created)] if done else [])


def scored(value: float, t: float = 1000, step: int = 0) -> dict[str, Any]:
    """A point of run x, created after every other run."""
    return metric("x", step, value, t, run_created_at=at(5000))


def of_x(firings: list[Any]) -> list[Any]:
    return [f for f in firings if f.run_id == "x"]


Phase = tuple[list[Automation], list[dict[str, Any]]]


def judged_in(
    phases: list[Phase], persist: str = "memory", store: StateStore | None = None
) -> list[list[Any]]:
    """The firings of each phase's batch judged by its automations, one phase after the other,
    the state kept in memory, saved and read back as one blob, or kept as rows in a SQLite
    store (each batch loads just the rows it reads, as a sensor's cycle does)."""
    state, out = EvaluatorState(), []
    store, sensor = store or StateStore("sqlite://"), uuid.uuid4().hex
    for automations, batch in phases:
        if persist == "store":
            with store.cycle(sensor) as cycle:
                state = cycle.state(Evaluator(automations).reads(events(*batch)))
                out.append(Evaluator(automations, state).evaluate(events(*batch)).firings)
                cycle.save(state)
            continue
        if persist == "bytes":
            state = EvaluatorState.from_bytes(state.to_bytes())
        out.append(Evaluator(automations, state).evaluate(events(*batch)).firings)
    return out


def judged(
    automations: list[Automation], *batches: list[dict[str, Any]], persist: str = "memory"
) -> list[Any]:
    """The firings of `batches` judged one after the other by `automations` (see `judged_in`)."""
    phases = [(automations, batch) for batch in batches]
    return [f for firings in judged_in(phases, persist) for f in firings]


def test_running_runs_are_left_out_of_a_finished_baseline() -> None:
    """Two runs still training (at 0.1 and 0.2) would make a good finished run look normal."""
    history = [*run("r0", 8, 0), *run("r1", 10, 60), *run("r2", 12, 120)]
    training = [*run("t0", 0.1, 180, done=False), *run("t1", 0.2, 240, done=False)]
    stream = [*history, *training, scored(16)]
    [firing] = of_x(judged([FINISHED], stream))
    assert (firing.value, sorted(firing.metric_values)) == (3.0, [8.0, 10.0, 12.0])
    assert firing.metric_filter == "|z|(acc, last 30 finished runs) ≥ 2"
    assert of_x(judged([ALL], stream)) == []


def test_a_run_enters_the_baseline_when_it_finishes_not_when_it_logs() -> None:
    history = [*run("r0", 8, 0), *run("r1", 12, 60)]
    late = run("r2", 100, 120)  # logs at 120 s, finishes at 121 s
    before, after = scored(16, 120.5), scored(16, 122, step=1)
    firings = of_x(judged([FINISHED], [*history, *late[:1], before, late[1], after]))
    # At step 0 the baseline is 8 and 12 (z = 2.83); at step 1 r2 has finished: 8, 12, 100.
    assert [(f.step, sorted(f.metric_values)) for f in firings] == [(0, [8.0, 12.0])]


def test_a_value_logged_after_the_run_finished_enters_when_it_is_logged() -> None:
    """An evaluation job logs a metric to a training run that finished long before."""
    history = [*run("r0", 8, 0), *run("r1", 12, 60)]
    finished_first = [state("r2", "finished", 100, run_created_at=at(90))]
    evaluated = [metric("r2", 0, 10, 200, run_created_at=at(90))]
    stream = [*history, *finished_first, scored(16, 150), *evaluated, scored(14, 250, step=1)]
    assert [sorted(f.metric_values) for f in of_x(judged([FINISHED], stream))] == [
        [8.0, 12.0],
        [8.0, 10.0, 12.0],
    ]


@pytest.mark.parametrize("persist", ["memory", "bytes", "store"])
def test_a_run_finished_in_a_batch_with_no_point_of_the_metric_enters_all_the_same(
    persist: str,
) -> None:
    """The finishing state event arrives alone (a sensor's poll caught the run's points in one
    cycle and its end in the next): the run enters the baseline there."""
    logged = [*run("r0", 8, 0), *run("r1", 12, 60), *run("r2", 100, 120, done=False)]
    finishes = [state("r2", "finished", 130, run_created_at=at(120))]
    firings = judged([FINISHED], logged, finishes, [scored(16)], persist=persist)
    assert of_x(firings) == []  # 16 against 8, 12 and 100: z = -0.46
    without = judged([FINISHED], logged, [scored(16)], persist=persist)
    assert [sorted(f.metric_values) for f in of_x(without)] == [[8.0, 12.0]]


@pytest.mark.parametrize("persist", ["memory", "bytes", "store"])
def test_a_resumed_run_stays_in_the_baseline(persist: str) -> None:
    history = [*run("r0", 8, 0), *run("r1", 12, 60)]
    resumed = [state("r1", "running", 200, run_created_at=at(60))]
    [firing] = judged([FINISHED], history, resumed, [scored(16)], persist=persist)
    assert sorted(firing.metric_values) == [8.0, 12.0]


@pytest.mark.parametrize("persist", ["memory", "store"])
def test_a_finished_baseline_added_later_starts_from_the_runs_seen_finished(
    persist: str,
) -> None:
    """An automation that watched nothing before finds its baseline among the runs the state
    (or the store) knows, finished ones only."""
    history = [*run("r0", 8, 0), *run("r1", 12, 60), *run("t", 0.1, 120, done=False)]
    plain = automation("plain", type="RUN_METRIC", metric="acc", operator=">", threshold=99)
    [firing] = judged_in([([plain], history), ([FINISHED], [scored(16)])], persist)[-1]
    assert sorted(firing.metric_values) == [8.0, 12.0]


def test_explain_names_the_finished_runs_it_waits_for() -> None:
    stream = [*run("r0", 8, 0), *run("t", 9, 60, done=False), scored(16)]
    evaluation = Evaluator([FINISHED]).evaluate(events(*stream), explain=True)
    assert evaluation.firings == []
    assert any(
        s.reason.startswith("the baseline has fewer than 2 other finished runs with this metric")
        for s in evaluation.skips
    )


def test_the_baseline_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="'all' or 'finished'"):
        automation(type="RUN_METRIC_ZSCORE", metric="acc", threshold=2, baseline="done")


def test_a_store_of_an_earlier_version_knows_its_finished_runs(tmp_path: Path) -> None:
    """Migration 0007 marks the runs whose last state is `finished` as seen finished."""
    url = f"sqlite:///{tmp_path}/store.db"
    store = StateStore(url)
    batch = events(*run("r0", 8, 0), *run("r1", 9, 60, done=False))
    with store.cycle("s") as cycle:
        state_ = cycle.state(Evaluator([ALL]).reads(batch))
        Evaluator([ALL], state_).evaluate(batch)
        cycle.save(state_)
    store.engine.dispose()
    with migrations(url) as (config, connection):
        command.downgrade(config, "0006")
        command.upgrade(config, "0007")
        rows = connection.execute(sa.text("SELECT run_id, finished FROM ml_state_runs"))
        assert sorted(rows) == [("r0", 1), ("r1", 0)]


@pytest.mark.parametrize("persist", ["memory", "store"])
def test_a_baseline_switched_away_and_back_starts_anew(persist: str) -> None:
    """While the automation compares with all runs, nothing keeps its list of finished runs up
    to date: switched back, it finds the finished runs anew (r2 and r3), not the list it left
    (r0 and r1, which would make x a 15σ outlier)."""

    def z(baseline: str) -> Automation:
        return automation(
            "z", type="RUN_METRIC_ZSCORE", metric="acc", threshold=1, window=2, baseline=baseline
        )

    phases = [
        ([z("finished")], [*run("r0", 0, 0), *run("r1", 1, 10)]),
        ([z("all")], [*run("r2", 10, 20), *run("r3", 12, 30)]),
        ([z("finished")], [scored(11)]),
    ]
    assert judged_in(phases, persist)[-1] == []  # 11 against 12 and 10: z = 0.71


def test_a_metric_whose_zscore_was_removed_keeps_its_cycles_working() -> None:
    """The store still holds the removed z-score's member lists: a cycle loads their runs and
    forgets the lists, instead of failing on runs it did not load."""
    plain = automation("plain", type="RUN_METRIC", metric="acc", operator=">", threshold=99)
    store = StateStore("sqlite://")
    phases: list[Phase] = [([ALL, plain], run("r0", 8, 0)), ([plain], run("r1", 9, 60))]
    judged_in(phases, "store", store)
    with store.engine.connect() as connection:
        members = connection.execute(sa.text("SELECT members FROM ml_state_metrics")).scalar()
    assert members == "{}"
