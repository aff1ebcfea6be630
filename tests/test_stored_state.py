"""The evaluator state in the store as rows (issue 12 §4): a cycle loads the rows its batch
reads, and writes back the rows that changed — and fires what one evaluator kept in memory fires.

(tests/test_properties.py checks the same against hypothesis' streams, one cycle per event.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from prefect_ml_automations import stored_state
from prefect_ml_automations.automations import Automation
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.evaluator import Evaluator, EvaluatorState
from prefect_ml_automations.evaluator.rows import StateRows, rows_of, state_from_rows
from prefect_ml_automations.store import StateStore, sensor_state

from .conftest import T0, at, automation, events, metric, state

PLAIN = automation("plain", type="RUN_METRIC", metric="acc", window=1, operator="<", threshold=-100)
Z2 = automation("z", type="RUN_METRIC_ZSCORE", metric="acc", window=2, threshold=3)
CHANGE = automation(
    "change",
    type="RUN_METRIC_CHANGE",
    metric="acc",
    current_window=2,
    prior_window=2,
    change_type="absolute",
    direction="any",
    amount=1,
)
FAILED = automation("failed", type="RUN_STATE", states=["failed"], cooldown="1h")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        return StateStore(f"sqlite:///{tmp_path}/store.db")
    return StateStore(request.getfixturevalue("postgres_url"))


def cycle(store: StateStore, automations: list[Automation], *dicts: Any) -> list[Firing]:
    """One sensor transaction over these events: load, evaluate, record nothing, save."""
    batch = events(*dicts)
    with store.intake():
        pass  # (as a sensor's commit does first: an earlier version's blob becomes rows here)
    with store.cycle() as one:
        state = one.state(Evaluator(automations).reads(batch))
        firings = Evaluator(automations, state).evaluate(batch).firings
        one.save(state)
    return firings


def stream(runs: int, steps: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        metric(f"r{r}", s, (s * 7 + r * 3) % 5, s * 10 + r, run_created_at=at(r), run_name=f"n{r}")
        for s in range(start, start + steps)
        for r in range(runs)
    ]


def table_sizes(store: StateStore) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {
            table.name: connection.execute(
                sa.select(sa.func.count()).select_from(table)
            ).scalar_one()
            for table in stored_state.metadata.sorted_tables
        }


def test_cycles_through_the_store_fire_what_one_evaluator_in_memory_fires(
    store: StateStore,
) -> None:
    automations = [CHANGE, Z2, FAILED]
    data = [*stream(4, 9), state("r1", "failed", 500), state("r1", "failed", 500)]
    whole = Evaluator(automations).evaluate(events(*data)).firings
    fired: list[Firing] = []
    for lo in range(0, len(data), 5):
        fired += cycle(store, automations, *data[lo : lo + 5])
    assert [f.firing_id for f in fired] == [f.firing_id for f in whole]
    assert {f.automation for f in fired} == {"change", "z", "failed"}


def test_a_zscore_automation_added_later_takes_the_most_recently_created_runs_stored(
    store: StateStore,
) -> None:
    """Its baseline is found in the store once: the 2 most recently created runs that logged —
    "z" (created last), then of "x" and "y" (created at the same time) "y", ties going by run id
    as Python orders them, whatever the database's collation. "old" was created first."""
    cycle(
        store,
        [PLAIN],
        metric("old", 0, 100, 0, run_created_at=at(0)),
        metric("x", 0, 100, 1, run_created_at=at(10)),
        metric("y", 0, 10, 2, run_created_at=at(10)),
        metric("z", 0, 12, 3, run_created_at=at(11)),
    )
    [firing] = cycle(store, [PLAIN, Z2], metric("new", 0, 16, 100, run_created_at=at(100)))
    # Baseline y=10, z=12: mean 11, sample std √2.
    assert (firing.automation, round(firing.value, 4)) == ("z", round(5 / 2**0.5, 4))


def test_a_store_from_an_earlier_version_keeps_its_state(store: StateStore) -> None:
    """Before 0003 the state was one blob in the sensor's lock row; the first cycle turns it
    into rows, and the cycles after it fire as if nothing had happened."""
    automations = [CHANGE, Z2, FAILED]
    first, later = [*stream(3, 5), state("r0", "failed", 60)], stream(3, 5, start=5)
    whole = Evaluator(automations).evaluate(events(*first, *later)).firings
    before = Evaluator(automations)
    fired = before.evaluate(events(*first)).firings
    with store.engine.begin() as connection:
        connection.execute(
            sensor_state.insert().values(
                name="default", data=before.state.to_bytes(), cycles=1, updated_at=T0
            )
        )
    fired += cycle(store, automations, *later[:6], state("r0", "failed", 60))  # a re-delivery
    fired += cycle(store, automations, *later[6:])
    assert [f.firing_id for f in fired] == [f.firing_id for f in whole]
    with store.engine.connect() as connection:
        [(data, cycles)] = connection.execute(sa.select(sensor_state.c.data, sensor_state.c.cycles))
    assert (data, cycles) == (None, 3)
    assert table_sizes(store)["ml_state_runs"] == 3


def test_a_cycle_reads_and_writes_only_the_rows_its_batch_touches(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path}/store.db")
    automations = [CHANGE, Z2]
    tracked = Evaluator(automations)
    tracked.evaluate(events(*stream(300, 4)))
    with store.cycle() as one:
        one.save(tracked.state)
    sizes = table_sizes(store)
    assert sizes["ml_state_runs"] == sizes["ml_state_series"] == 300

    batch = events(*stream(5, 1, start=4))
    keys = Evaluator(automations).reads(batch)
    with store.cycle() as one:
        loaded = stored_state.load(one.connection, "default", keys)
        state = one.state(keys)
        Evaluator(automations, state).evaluate(batch)
        changed = rows_of(state).changed_since(loaded)
        one.save(state)
    # The batch's 5 runs and the z-score members (the 2 and 3 most recently created runs).
    assert sorted(run_id for _, run_id in loaded.runs) == [
        "r0",
        "r1",
        "r2",
        "r297",
        "r298",
        "r299",
        "r3",
        "r4",
    ]
    assert sorted(run_id for _, _, run_id in changed.series) == ["r0", "r1", "r2", "r3", "r4"]

    for step in range(5, 25):
        cycle(store, automations, *stream(5, 1, start=step))
    assert table_sizes(store) == sizes  # the store grows with the runs, not with the cycles


def test_a_partial_state_round_trips_through_rows() -> None:
    evaluator = Evaluator([CHANGE, Z2, FAILED])
    evaluator.evaluate(events(*stream(4, 6), state("r2", "failed", 70)))
    rows = rows_of(evaluator.state)
    assert rows_of(state_from_rows(rows)) == rows
    assert rows_of(EvaluatorState()).changed_since(rows) == StateRows()
