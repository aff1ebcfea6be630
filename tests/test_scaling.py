"""Scaling (issue 12): what a cycle costs follows the new points, not the number of runs.

Ratios measured side by side in one process — never a clock against a fixed figure, so a slow or
busy machine can not fail them and can not hide a quadratic path either (one would show as 10×
where the bar is 2.5×). The data and automations are `benchmarks/evaluate.py`'s: three metric
automations (average, change, z-score) on runs logging interleaved, as trackers do.
"""

from __future__ import annotations

import gc
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from prefect_ml_automations.evaluator import Evaluator, EvaluatorState, EventBatch
from prefect_ml_automations.store import StateStore

#: How much more a point (or a cycle) may cost at the larger size than at the smaller one.
BAR = 2.5


def _benchmark() -> ModuleType:
    path = Path(__file__).parent.parent / "benchmarks" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("benchmark_evaluate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _benchmark()


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The fastest of `repeat` runs: the cost of the work itself, not of what else ran."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def per_point(runs: int, steps: int) -> float:
    # Late steps, where most runs hold the threshold: after its firing, each run's later points
    # are held back by the cooldown — the bookkeeping that once scanned the batch per run.
    batch = bench.synthetic(runs, steps, first_step=1_000)
    seconds = best_of(3, lambda: Evaluator(bench.AUTOMATIONS).evaluate(batch))
    return seconds / len(batch.columns)


def per_cycle(tracked: int, new: int, cycles: int = 15) -> float:
    """The best cycle of `new` points over `new` runs, with `tracked` runs in the state."""
    state = EvaluatorState()
    evaluator = Evaluator(bench.AUTOMATIONS, state)
    evaluator.evaluate(bench.synthetic(tracked, 2))
    # The first `new` runs of the tracked ones, a point each (a batch names only its own runs).
    batches: list[EventBatch] = [bench.synthetic(new, 1, first_step=2 + i) for i in range(cycles)]
    # Each batch once (the state moves on with it); the best of those cycles.
    return min(best_of(1, lambda b=batch: evaluator.evaluate(b)) for batch in batches)


def test_a_point_costs_about_the_same_with_10k_runs_as_with_1k() -> None:
    """Same steps per run (20), 10× the runs: the per-point cost may not grow with the runs."""
    small, large = per_point(1_000, 20), per_point(10_000, 20)
    ratio = large / small
    print(f"per point: {small * 1e9:.0f} ns at 1k runs, {large * 1e9:.0f} ns at 10k: {ratio:.2f}×")
    assert ratio <= BAR, f"a point costs {ratio:.1f}× more with 10k runs than with 1k"


def test_a_cycle_of_100_points_costs_about_the_same_with_100k_tracked_runs_as_with_1k() -> None:
    """The evaluator's part of a cycle; the store's part (loading and saving the state) is the
    next test's."""
    small, large = per_cycle(1_000, 100), per_cycle(100_000, 100)
    ratio = large / small
    print(f"per cycle: {small * 1e3:.2f} ms at 1k runs, {large * 1e3:.2f} ms at 100k: {ratio:.2f}×")
    assert ratio <= BAR, f"a cycle costs {ratio:.1f}× more with 100k runs tracked than with 1k"


def stored_cycle(store: StateStore, batch: EventBatch) -> None:
    """A sensor's transaction: load what the batch reads, evaluate, save what changed."""
    with store.cycle() as cycle:
        state = cycle.state(Evaluator(bench.AUTOMATIONS).reads(batch))
        Evaluator(bench.AUTOMATIONS, state).evaluate(batch)
        cycle.save(state)


def per_stored_cycle(url: str, tracked: int, new: int = 100, cycles: int = 10) -> float:
    """The best cycle of `new` points through a store that tracks `tracked` runs."""
    store = StateStore(url)
    state = EvaluatorState()
    Evaluator(bench.AUTOMATIONS, state).evaluate(bench.synthetic(tracked, 2))
    with store.cycle() as cycle:
        cycle.save(state)
    batches = [bench.synthetic(new, 1, first_step=2 + i) for i in range(cycles)]
    best = min(best_of(1, lambda b=batch: stored_cycle(store, b)) for batch in batches)
    store.close()
    return best


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_cycle_through_the_store_costs_about_the_same_with_100k_tracked_runs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Loading and saving included: a cycle reads and writes the rows its batch touches."""

    def url(name: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path}/{name}.db"
        fixture = "postgres_url" if name == "small" else "another_postgres_url"
        return str(request.getfixturevalue(fixture))

    small, large = per_stored_cycle(url("small"), 1_000), per_stored_cycle(url("large"), 100_000)
    ratio = large / small
    print(f"stored cycle ({kind}): {small * 1e3:.1f} ms at 1k runs, {large * 1e3:.1f} ms at 100k")
    assert ratio <= BAR, f"a stored cycle costs {ratio:.1f}× more with 100k runs than with 1k"
