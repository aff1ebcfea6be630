"""The state store: migrations, the inbox, the ledger's unique firing ids, leases, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from prefect_ml_automations.decisions import Firing, Skip
from prefect_ml_automations.errors import MLAutomationsError, StateError
from prefect_ml_automations.evaluator import EvaluatorState
from prefect_ml_automations.evaluator.rows import StateKeys
from prefect_ml_automations.store import StateStore

from .conftest import events, state

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def firing(n: int = 1) -> Firing:
    return Firing(
        firing_id=f"f{n}",
        automation="a",
        event_type="RUN_STATE",
        timestamp=NOW,
        project="p",
        run_id=f"r{n}",
        state="failed",
        user="alice",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        return StateStore(f"sqlite:///{tmp_path}/store.db")
    return StateStore(request.getfixturevalue("postgres_url"))


def test_opening_a_store_twice_migrates_once(store: StateStore) -> None:
    again = StateStore(store.url)
    with again.engine.connect() as connection:
        versions = connection.execute(
            sa.text("SELECT version_num FROM ml_automations_alembic_version")
        ).all()
    assert [v for (v,) in versions] == ["0008"]


def test_inbox_events_are_taken_once_in_arrival_order(store: StateStore) -> None:
    store.put_events(events(state("r1", "running", 0), state("r1", "failed", 1)), origin="push")
    store.put_events(events(state("r2", "failed", 2)), origin="ingest")
    with store.cycle() as cycle:
        taken = cycle.take_inbox()
    assert [(e.run_id, e.state) for e in taken] == [
        ("r1", "running"),
        ("r1", "failed"),
        ("r2", "failed"),
    ]  # type: ignore[union-attr]
    with store.cycle() as cycle:
        assert cycle.take_inbox() == []


def test_a_cycle_that_fails_gives_everything_back(store: StateStore) -> None:
    store.put_events(events(state("r1", "failed", 0)), origin="push")

    def crashing_cycle() -> None:
        with store.cycle() as cycle:
            cycle.take_inbox()
            cycle.record([firing()])
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crashing_cycle()
    assert store.inbox_size() == 1
    assert store.history() == []


def test_state_round_trips_and_a_firing_is_recorded_once(store: StateStore) -> None:
    with store.cycle() as cycle:
        assert cycle.record([firing(1), firing(2)]) == [firing(1), firing(2)]
        cycle.save(EvaluatorState())
    with store.cycle() as cycle:
        assert cycle.record([firing(2), firing(3)]) == [firing(3)]
        assert cycle.state(StateKeys()).runs.keys == []
    assert [r.firing_id for r in store.history()] == ["f1", "f2", "f3"]
    record = store.history()[0].to_record()
    assert record["status"] == "pending"
    assert record["attempts"] == 0


def test_a_claim_is_a_lease(store: StateStore) -> None:
    with store.cycle() as cycle:
        cycle.record([firing()])
    assert store.claim("f1", NOW, timedelta(minutes=5)) == 1
    assert store.claim("f1", NOW + timedelta(minutes=1), timedelta(minutes=5)) is None
    assert store.due(NOW + timedelta(minutes=1)) == []
    # A sensor that died holding it: the lease runs out and another may take it.
    assert store.claim("f1", NOW + timedelta(minutes=6), timedelta(minutes=5)) == 2


def test_failed_with_retry_is_pending_until_then_and_reset_retries(store: StateStore) -> None:
    with store.cycle() as cycle:
        cycle.record([firing()])
    store.claim("f1", NOW, timedelta(minutes=5))
    store.fail("f1", "webhook answered HTTP 503", retry_at=NOW + timedelta(seconds=10))
    assert store.due(NOW) == []
    assert [f.firing_id for f in store.due(NOW + timedelta(seconds=11))] == ["f1"]
    store.claim("f1", NOW + timedelta(seconds=11), timedelta(minutes=5))
    store.fail("f1", "webhook answered HTTP 503", retry_at=None)
    [row] = store.history(status="failed")
    assert (row.attempts, row.error) == (2, "webhook answered HTTP 503")
    store.reset("f1")
    [row] = store.history(status="pending")
    assert row.attempts == 0


def test_held_back_matches_accumulate_in_one_skipped_entry(store: StateStore) -> None:
    skip = Skip("a", "run 'r1'", "held back by the cooldown (24h)", 3, held_back=True)
    with store.cycle() as cycle:
        cycle.record([], [skip])
    with store.cycle() as cycle:
        cycle.record([], [skip])
    [row] = store.history(status="skipped")
    assert row.to_record() == {
        "firing_id": row.firing_id,
        "automation": "a",
        "subject": "run 'r1'",
        "status": "skipped",
        "reason": "held back by the cooldown (24h)",
        "count": 6,
    }


def test_reset_explains_unknown_and_finished_firings(store: StateStore) -> None:
    with store.cycle() as cycle:
        cycle.record([firing()])
    store.finish("f1", {"http_status": 200})
    with pytest.raises(MLAutomationsError, match="Firing 'f1' is finished, not failed"):
        store.reset("f1")
    with pytest.raises(MLAutomationsError, match="No firing has the id 'nope'"):
        store.reset("nope")


def test_an_unreachable_store_is_a_clear_error() -> None:
    with pytest.raises(
        StateError,
        match=r"The state store 'postgresql://127.0.0.1:1/x' can not be opened: nothing answers",
    ):
        StateStore("postgresql://u:secret@127.0.0.1:1/x")
