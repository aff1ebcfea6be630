"""The metric-frame tasks (SPEC §9): the evaluator's numbers at every point, as DataFrame columns.

- named scenarios with exact numbers (SPEC §3 rules 3–6 as the columns show them);
- every point of random frames against a plain-Python reading of the spec written here;
- where the columns meet an automation's condition is exactly where the evaluator fires;
- `evaluate_automations` is the dry run; bad frames and arguments get a clear error;
- the example flow runs as written.
"""

from __future__ import annotations

import json
import math
import operator
import runpy
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_ml_automations.config import load_config
from prefect_ml_automations.dry_run import dry_run
from prefect_ml_automations.errors import BadInputError
from prefect_ml_automations.evaluator import Evaluator, engine
from prefect_ml_automations.events import read_events
from prefect_ml_automations.tasks.evaluation import (
    DECISION_COLUMNS,
    FIRING_COLUMNS,
    evaluate_automations,
)
from prefect_ml_automations.tasks.metrics import (
    METRIC_FRAME_COLUMNS,
    cross_run_zscore,
    events_to_frame,
    rolling_aggregate,
    validate_metric_frame,
    window_change,
)

from .conftest import at, automation, events, metric

ROOT = Path(__file__).parent.parent
NAN = float("nan")


def frame_of(*points: dict[str, Any]) -> pd.DataFrame:
    """A metric frame of `conftest.metric(...)` points, in the order given."""
    return events_to_frame(events(*points))


def numbers(column: pd.Series) -> list[float | None]:
    """A column as a list to compare: NaN as None, floats to 12 places."""
    return [None if math.isnan(v) else round(float(v), 12) for v in column]


# -- rolling_aggregate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("average", [None, None, 2.0, 3.0, 4.0]),
        ("min", [None, None, 1, 2, 3]),
        ("max", [None, None, 3, 4, 5]),
    ],
)
def test_the_window_ends_at_every_point_and_is_nan_until_full(
    aggregation: str, expected: list[float | None]
) -> None:
    frame = frame_of(*(metric("r1", step, step + 1.0, step) for step in range(5)))
    out = rolling_aggregate.fn(frame, "acc", window=3, aggregation=aggregation)
    assert numbers(out["aggregate"]) == expected


def test_interleaved_runs_are_each_windowed_on_their_own_values() -> None:
    stream = []
    for step in range(3):
        stream += [metric("r1", step, 1.0, 2 * step), metric("r2", step, 0.0, 2 * step + 1)]
    out = rolling_aggregate.fn(frame_of(*stream), "acc", window=2)
    assert numbers(out["aggregate"]) == [None, None, 1.0, 0.0, 1.0, 0.0]


def test_a_late_point_joins_later_windows_but_is_not_a_trigger_point() -> None:
    frame = frame_of(
        metric("r1", 0, 1.0, 0),
        metric("r1", 2, 3.0, 1),
        metric("r1", 1, 5.0, 2),  # late: step 1 after step 2
        metric("r1", 3, 7.0, 3),
    )
    out = rolling_aggregate.fn(frame, "acc", window=3)
    # At step 3 the window is steps 1..3 = 5, 3, 7 (without the late point it would be 1, 3, 7).
    assert numbers(out["aggregate"]) == [None, None, None, 5.0]


def test_a_redelivered_step_changes_nothing() -> None:
    frame = frame_of(
        metric("r1", 0, 1.0, 0),
        metric("r1", 1, 3.0, 1),
        metric(
            "r1", 1, 100.0, 2
        ),  # the same (run, metric, step): a re-delivery, whatever its value
        metric("r1", 2, 5.0, 3),
    )
    out = rolling_aggregate.fn(frame, "acc", window=2)
    assert numbers(out["aggregate"]) == [None, 2.0, None, 4.0]


@pytest.mark.parametrize(
    "bad",
    [NAN, float("inf"), float("-inf"), True, "0.9", None, {"_type": "histogram"}],
    ids=["nan", "inf", "-inf", "boolean", "string", "null", "histogram"],
)
def test_values_that_are_not_finite_numbers_are_not_counted(bad: object) -> None:
    frame = frame_of(
        metric("r1", 0, 1.0, 0),
        metric("r1", 1, bad, 1),
        metric("r1", 1, 3.0, 2),  # ...nor do they take the step: a real value there still counts
    )
    out = rolling_aggregate.fn(frame, "acc", window=2)
    assert numbers(out["aggregate"]) == [None, None, 2.0]


def test_system_metrics_without_a_step_are_ordered_by_time() -> None:
    frame = frame_of(
        metric("r1", None, 10.0, 0, metric="system.gpu"),
        metric("r1", None, 30.0, 2, metric="system.gpu"),
        metric("r1", None, 20.0, 1, metric="system.gpu"),  # logged at t=1, arrives after t=2
        metric("r1", None, 40.0, 3, metric="system.gpu"),
    )
    out = rolling_aggregate.fn(frame, "system.gpu", window=2, aggregation="max")
    assert numbers(out["aggregate"]) == [None, 30.0, None, 40.0]


def test_the_rows_of_the_metric_come_back_with_their_index_and_every_column() -> None:
    frame = frame_of(
        metric("r1", 0, 1.0, 0),
        metric("r1", 0, 9.0, 0, metric="loss"),
        metric("r1", 1, 3.0, 1, run_name="sweep-1"),
    )
    frame.index = pd.Index(["a", "b", "c"])
    out = rolling_aggregate.fn(frame, "acc", window=2)
    assert list(out.index) == ["a", "c"]
    assert list(out.columns) == [*METRIC_FRAME_COLUMNS, "aggregate"]
    assert out["run_name"].tolist() == [None, "sweep-1"]
    assert numbers(out["aggregate"]) == [None, 2.0]
    assert "aggregate" not in frame.columns  # the caller's frame is left alone


def test_a_metric_the_frame_does_not_hold_gives_no_rows() -> None:
    out = rolling_aggregate.fn(frame_of(metric("r1", 0, 1.0, 0)), "loss", window=2)
    assert out.empty
    assert list(out.columns) == [*METRIC_FRAME_COLUMNS, "aggregate"]


def test_a_frame_built_by_hand_with_text_times_and_float_steps_reads_the_same() -> None:
    by_hand = pd.DataFrame(
        {
            "project": ["p", "p", "p", "p"],
            "run_id": ["r1", "r1", "r1", "r1"],
            "metric": ["acc", "system.gpu", "acc", "acc"],
            "step": [0.0, NAN, 1.0, 2.0],
            "value": [1.0, 50, 2.0, 3.0],
            "timestamp": [at(0), at(1), "2026-01-01T10:00:02", at(3)],  # naive means UTC
        }
    )
    assert validate_metric_frame(by_hand) is by_hand
    out = rolling_aggregate.fn(by_hand, "acc", window=2)
    assert numbers(out["aggregate"]) == [None, 1.5, 2.5]


def test_a_window_over_16_values_is_summed_by_prefix_sums_to_the_same_averages() -> None:
    values = [((7 * step) % 13 - 6) / 4 for step in range(30)]
    frame = frame_of(*(metric("r1", step, v, step) for step, v in enumerate(values)))
    out = rolling_aggregate.fn(frame, "acc", window=20)
    expected = [None] * 19 + [sum(values[end - 19 : end + 1]) / 20 for end in range(19, 30)]
    assert numbers(out["aggregate"]) == expected


# -- window_change -------------------------------------------------------------------------------


def test_a_run_that_plateaus_shows_its_change_falling_to_zero() -> None:
    frame = frame_of(
        *(metric("r1", s, v, s) for s, v in enumerate([0.25, 0.5, 1.0, 1.0, 1.0, 1.0]))
    )
    out = window_change.fn(frame, "acc", current_window=2, prior_window=2, change_type="absolute")
    assert numbers(out["prior"]) == [None, None, None, 0.375, 0.75, 1.0]
    assert numbers(out["current"]) == [None, None, None, 1.0, 1.0, 1.0]
    assert numbers(out["change"]) == [None, None, None, 0.625, 0.25, 0.0]
    relative = window_change.fn(frame, "acc", current_window=2, prior_window=2)
    assert numbers(relative["change"]) == [
        None,
        None,
        None,
        round(0.625 / 0.375, 12),
        round(0.25 / 0.75, 12),
        0.0,
    ]


def test_a_relative_change_from_a_prior_of_zero_is_undefined() -> None:
    frame = frame_of(*(metric("r1", s, v, s) for s, v in enumerate([-1.0, 1.0, 5.0])))
    out = window_change.fn(frame, "acc", current_window=1, prior_window=2)
    assert numbers(out["prior"]) == [None, None, 0.0]
    assert numbers(out["current"]) == [None, None, 5.0]
    assert numbers(out["change"]) == [None, None, None]
    absolute = window_change.fn(
        frame, "acc", current_window=1, prior_window=2, change_type="absolute"
    )
    assert numbers(absolute["change"]) == [None, None, 5.0]


def test_the_two_windows_are_consecutive_and_use_the_aggregation() -> None:
    frame = frame_of(*(metric("r1", s, v, s) for s, v in enumerate([4.0, 1.0, 3.0, 2.0, 8.0])))
    out = window_change.fn(
        frame, "acc", current_window=2, prior_window=3, aggregation="max", change_type="absolute"
    )
    # prior = max(4, 1, 3), current = max(2, 8): the windows do not overlap.
    assert numbers(out["prior"]) == [None, None, None, None, 4.0]
    assert numbers(out["current"]) == [None, None, None, None, 8.0]
    assert numbers(out["change"]) == [None, None, None, None, 4.0]


# -- cross_run_zscore ----------------------------------------------------------------------------


def test_a_run_logged_before_its_baseline_has_no_z_until_two_other_runs_have_logged() -> None:
    frame = frame_of(
        metric("r1", 0, 0.5, 0),  # no other run yet
        metric("r2", 0, 0.7, 1),  # one other run: no standard deviation
        metric("r3", 0, 0.9, 2),  # against r1, r2: (0.9 - 0.6) / 0.1414
        metric("r1", 1, 0.6, 3),  # its own earlier value is not its baseline: r2, r3
    )
    out = cross_run_zscore.fn(frame, "acc", window=30)
    assert numbers(out["z"]) == [
        None,
        None,
        round(0.3 / math.sqrt(0.02), 12),
        round(-0.2 / math.sqrt(0.02), 12),
    ]


def test_the_baseline_is_the_most_recently_created_runs_by_run_created_at() -> None:
    def point(run: str, value: float, t: float, created: float) -> dict[str, Any]:
        return metric(run, 0, value, t, run_created_at=at(created))

    frame = frame_of(
        point("a", 1.0, 0, -300),
        point("b", 2.0, 1, -200),
        point("old", 10.0, 2, -900),  # logs after a and b, but was created before them
        point("c", 3.0, 3, -100),
    )
    out = cross_run_zscore.fn(frame, "acc", window=2)
    # c against b and a (the two most recently created others), not against old and b.
    assert numbers(out["z"])[3] == round(1.5 / math.sqrt(0.5), 12)


def test_without_run_created_at_a_run_is_created_at_its_first_row_of_any_metric() -> None:
    frame = frame_of(
        metric("early", 0, 0.0, 0, metric="loss"),  # early's first row: created at t=0
        metric("a", 0, 1.0, 1),
        metric("b", 0, 2.0, 2),
        metric("early", 0, 10.0, 3),
        metric("c", 0, 3.0, 4),
    )
    out = cross_run_zscore.fn(frame, "acc", window=2)
    assert numbers(out["z"])[-1] == round(1.5 / math.sqrt(0.5), 12)  # against b and a


def test_runs_created_at_the_same_time_rank_by_run_id() -> None:
    same = at(-100)
    frame = frame_of(
        metric("a", 0, 100.0, 0, run_created_at=same),
        metric("b", 0, 1.0, 1, run_created_at=same),
        metric("c", 0, 3.0, 2, run_created_at=same),
        metric("d", 0, 4.0, 3, run_created_at=at(-50)),
    )
    out = cross_run_zscore.fn(frame, "acc", window=2)
    assert numbers(out["z"])[-1] == round(2.0 / math.sqrt(2.0), 12)  # c and b, not a


def test_a_baseline_without_spread_gives_no_z() -> None:
    frame = frame_of(metric("a", 0, 1.0, 0), metric("b", 0, 1.0, 1), metric("c", 0, 5.0, 2))
    assert numbers(cross_run_zscore.fn(frame, "acc", window=30)["z"]) == [None, None, None]


def test_baselines_are_per_project() -> None:
    frame = frame_of(
        metric("a", 0, 1.0, 0),
        metric("b", 0, 2.0, 1),
        metric("x", 0, 500.0, 2, project="q"),
        metric("y", 0, -500.0, 3, project="q"),
        metric("c", 0, 3.0, 4),
        metric("z", 0, 0.0, 5, project="q"),
    )
    out = cross_run_zscore.fn(frame, "acc", window=30)
    assert numbers(out["z"]) == [None, None, None, None, round(1.5 / math.sqrt(0.5), 12), 0.0]


# -- every point, random frames, against a plain reading of the spec -----------------------------

RUNS = ["r0", "r1", "r2", "r3"]
QUARTERS = st.integers(-8, 8).map(lambda q: q / 4)  # exact in binary: sums are exact too
VALUES = st.one_of(
    QUARTERS, QUARTERS, st.sampled_from([NAN, float("inf"), -math.inf, True, False, "x", None])
)
AGG = {"average": lambda xs: sum(xs) / len(xs), "min": min, "max": max}


@st.composite
def point_dicts(
    draw: st.DrawFn,
    projects: tuple[str, ...] = ("p", "p", "q"),
    max_rows: int = 60,
    max_step: int = 10,
    metrics: tuple[str, ...] = ("acc", "acc", "loss", "system.gpu"),
    runs: tuple[str, ...] = tuple(RUNS),
    min_rows: int = 0,
    rising: bool | None = None,
) -> list[dict[str, Any]]:
    """Metric points of several runs and projects, interleaved, with re-deliveries, late
    points, values that do not count, system metrics and (sometimes) creation times; steps
    drawn at random, or `rising` as a tracker logs them (mostly the next one)."""
    if rising is None:
        rising = draw(st.booleans())
    rows = []
    last: dict[str, int] = {}
    t = 0
    for _ in range(draw(st.integers(min_rows, max_rows))):
        t += draw(st.integers(0, 4))
        run = draw(st.sampled_from(runs))
        name = draw(st.sampled_from(metrics))
        row: dict[str, Any] = {
            "type": "METRIC",
            "project": draw(st.sampled_from(projects)),
            "run_id": run,
            "metric": name,
            "value": draw(VALUES),
            "timestamp": at(t),
        }
        if name != "system.gpu" or draw(st.integers(0, 4)) == 0:
            if rising:  # as trackers log: mostly the next step, now and then an older one
                step = last.get(run, 0) + draw(st.sampled_from([1, 1, 1, 1, 2, 0, -2]))
                last[run] = row["step"] = max(0, step)
            else:
                row["step"] = draw(st.integers(0, max_step))
        if draw(st.booleans()):
            row["run_created_at"] = at(-100 * (RUNS.index(run) % 3))
        rows.append(row)
    return rows


def by_hand(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The points as a user might build a frame: text times, float steps, a mixed value column."""
    frame = pd.DataFrame(
        rows,
        columns=["project", "run_id", "metric", "step", "value", "timestamp", "run_created_at"],
    )
    frame["value"] = pd.Series([r["value"] for r in rows], dtype=object)
    return frame


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def reference(rows: list[dict[str, Any]], name: str, measure: Any) -> list[tuple[float, ...]]:
    """Per row of metric `name`, in order: `measure(history, run, series, created)` at trigger
    points, NaNs elsewhere — one point at a time, whole histories, no cleverness."""
    series: dict[tuple[str, str], dict[float, float]] = {}
    created: dict[tuple[str, str], tuple[float, str]] = {}
    out = []
    for row in rows:
        run = (row["project"], row["run_id"])
        ts = _seconds(row["timestamp"])
        if run not in created:  # a run is created as of its first row, of any metric
            when = row.get("run_created_at")
            created[run] = (_seconds(when) if when else ts, row["run_id"])
        if row["metric"] != name:
            continue
        value = row["value"]
        counted = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and abs(value) <= 1e150
        )
        order = row["step"] if row.get("step") is not None else ts
        points = series.setdefault(run, {})
        if not counted or order in points:  # not counted, or a re-delivery
            out.append(measure(None, run, series, created))
            continue
        late = bool(points) and order < max(points)
        points[order] = float(value)
        history = None if late else [points[o] for o in sorted(points)]
        out.append(measure(history, run, series, created))
    return out


def reference_aggregate(window: int, aggregation: str) -> Any:
    def measure(history: list[float] | None, *_: Any) -> tuple[float]:
        if history is None or len(history) < window:
            return (NAN,)
        return (AGG[aggregation](history[-window:]),)

    return measure


def reference_change(current_window: int, prior_window: int, aggregation: str, kind: str) -> Any:
    def measure(history: list[float] | None, *_: Any) -> tuple[float, float, float]:
        if history is None or len(history) < current_window + prior_window:
            return (NAN, NAN, NAN)
        window = history[-(current_window + prior_window) :]
        prior = AGG[aggregation](window[:prior_window])
        current = AGG[aggregation](window[prior_window:])
        if kind == "absolute":
            change = current - prior
        else:
            change = NAN if prior == 0 else (current - prior) / abs(prior)
        return (current, prior, change)

    return measure


def reference_zscore(window: int) -> Any:
    def measure(
        history: list[float] | None,
        run: tuple[str, str],
        series: dict[tuple[str, str], dict[float, float]],
        created: dict[tuple[str, str], tuple[float, str]],
    ) -> tuple[float]:
        if history is None:
            return (NAN,)
        others = [r for r, points in series.items() if r[0] == run[0] and r != run and points]
        others.sort(key=lambda r: created[r], reverse=True)
        baseline = [series[r][max(series[r])] for r in others[:window]]
        if len(baseline) < 2 or statistics.stdev(baseline) == 0:
            return (NAN,)
        return ((history[-1] - statistics.fmean(baseline)) / statistics.stdev(baseline),)

    return measure


def assert_columns_match(
    out: pd.DataFrame, names: list[str], expected: list[tuple[float, ...]]
) -> None:
    assert len(out) == len(expected)
    for i, name in enumerate(names):
        got = out[name].to_numpy()
        want = np.array([e[i] for e in expected], dtype=float)
        assert np.array_equal(np.isnan(got), np.isnan(want)), (name, got, want)
        assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-9, atol=1e-12), name


RANDOM = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RANDOM
@given(
    rows=point_dicts(),
    name=st.sampled_from(["acc", "system.gpu"]),
    window=st.integers(1, 4),
    aggregation=st.sampled_from(["average", "min", "max"]),
)
def test_rolling_aggregate_agrees_with_the_reference_at_every_point(
    rows: list[dict[str, Any]], name: str, window: int, aggregation: str
) -> None:
    out = rolling_aggregate.fn(by_hand(rows), name, window=window, aggregation=aggregation)
    expected = reference(rows, name, reference_aggregate(window, aggregation))
    assert_columns_match(out, ["aggregate"], expected)


@RANDOM
@given(
    rows=point_dicts(),
    current_window=st.integers(1, 3),
    prior_window=st.integers(1, 3),
    aggregation=st.sampled_from(["average", "min", "max"]),
    kind=st.sampled_from(["relative", "absolute"]),
)
def test_window_change_agrees_with_the_reference_at_every_point(
    rows: list[dict[str, Any]], current_window: int, prior_window: int, aggregation: str, kind: str
) -> None:
    out = window_change.fn(
        by_hand(rows),
        "acc",
        current_window,
        prior_window,
        aggregation=aggregation,
        change_type=kind,
    )
    expected = reference(
        rows, "acc", reference_change(current_window, prior_window, aggregation, kind)
    )
    assert_columns_match(out, ["current", "prior", "change"], expected)


@RANDOM
@given(rows=point_dicts(), window=st.integers(1, 4))
def test_cross_run_zscore_agrees_with_the_reference_at_every_point(
    rows: list[dict[str, Any]], window: int
) -> None:
    out = cross_run_zscore.fn(by_hand(rows), "acc", window=window)
    assert_columns_match(out, ["z"], reference(rows, "acc", reference_zscore(window)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=point_dicts(
        projects=("p",), metrics=("acc",), runs=("r0", "r1"), min_rows=40, max_rows=120, rising=True
    ),
    window=st.sampled_from([17, 20]),
)
def test_long_windows_summed_by_prefix_agree_with_the_reference(
    rows: list[dict[str, Any]], window: int
) -> None:
    out = rolling_aggregate.fn(by_hand(rows), "acc", window=window)
    assert_columns_match(
        out, ["aggregate"], reference(rows, "acc", reference_aggregate(window, "average"))
    )
    change = window_change.fn(by_hand(rows), "acc", current_window=3, prior_window=window)
    assert_columns_match(
        change,
        ["current", "prior", "change"],
        reference(rows, "acc", reference_change(3, window, "average", "relative")),
    )


# -- the columns meet a condition exactly where the evaluator fires ------------------------------

OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def _beyond(column: pd.Series, amount: float, direction: str) -> pd.Series:
    if direction in ("increase", "above"):
        return column >= amount
    if direction in ("decrease", "below"):
        return column <= -amount
    return column.abs() >= amount


@st.composite
def metric_automations(draw: st.DrawFn) -> tuple[dict[str, Any], Any, str]:
    """A metric automation's event, the task that measures it (as a call) and the column."""
    kind = draw(st.sampled_from(["RUN_METRIC", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE"]))
    name = draw(st.sampled_from(["acc", "acc", "system.gpu"]))
    aggregation = draw(st.sampled_from(["average", "min", "max"]))
    if kind == "RUN_METRIC":
        window = draw(st.integers(1, 4))
        op = draw(st.sampled_from(sorted(OPS)))
        threshold = draw(QUARTERS)
        event = {
            "type": kind,
            "metric": name,
            "window": window,
            "aggregation": aggregation,
            "operator": op,
            "threshold": threshold,
        }

        def holds(frame: pd.DataFrame) -> pd.DataFrame:
            out = rolling_aggregate.fn(frame, name, window=window, aggregation=aggregation)
            return out.assign(
                holds=OPS[op](out["aggregate"], threshold) & out["aggregate"].notna(),
                measured=out["aggregate"],
            )

    elif kind == "RUN_METRIC_CHANGE":
        current, prior = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        change_type = draw(st.sampled_from(["relative", "absolute"]))
        direction = draw(st.sampled_from(["increase", "decrease", "any"]))
        amount = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0]))
        event = {
            "type": kind,
            "metric": name,
            "current_window": current,
            "prior_window": prior,
            "aggregation": aggregation,
            "change_type": change_type,
            "direction": direction,
            "amount": amount,
        }

        def holds(frame: pd.DataFrame) -> pd.DataFrame:
            out = window_change.fn(frame, name, current, prior, aggregation, change_type)
            return out.assign(
                holds=_beyond(out["change"], amount, direction), measured=out["change"]
            )

    else:
        window = draw(st.integers(1, 4))
        threshold = draw(st.sampled_from([0.25, 0.5, 1.0, 1.5]))
        direction = draw(st.sampled_from(["above", "below", "either"]))
        event = {
            "type": kind,
            "metric": name,
            "window": window,
            "threshold": threshold,
            "direction": direction,
        }

        def holds(frame: pd.DataFrame) -> pd.DataFrame:
            out = cross_run_zscore.fn(frame, name, window=window)
            return out.assign(holds=_beyond(out["z"], threshold, direction), measured=out["z"])

    return event, holds, kind


@RANDOM
@given(rows=point_dicts(), measured=metric_automations(), chunk=st.sampled_from([None, 7]))
def test_the_columns_meet_the_condition_exactly_where_the_evaluator_fires(
    rows: list[dict[str, Any]], measured: tuple[dict[str, Any], Any, str], chunk: int | None
) -> None:
    event, holds, _ = measured
    stream = events(*rows)
    frame = events_to_frame(stream)
    # `chunk`: batches larger than this are judged in slices; the columns slice alike.
    with mock.patch.object(engine, "CHUNK_EVENTS", chunk or engine.CHUNK_EVENTS):
        firings = Evaluator([automation(**event)]).evaluate(stream).firings
        out = holds(frame)
    where = out[out["holds"] & (out["project"] == "p")]
    assert [f.arrival for f in firings] == where.index.tolist()
    assert [f.value for f in firings] == where["measured"].tolist()  # the very same numbers


# -- evaluate_automations is the dry run ---------------------------------------------------------

CONFIG = ROOT / "examples" / "automations.yaml"
EVENTS = ROOT / "examples" / "events.jsonl"


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The firing rows as the dry run's JSON records."""
    out = []
    for row in frame[frame["decision"] == "fired"][list(FIRING_COLUMNS)].to_dict("records"):
        record = {
            k: v
            for k, v in row.items()
            if v is not None
            and not (isinstance(v, float) and math.isnan(v))
            and v is not pd.NaT
            and v is not pd.NA
        }
        record["timestamp"] = record["timestamp"].isoformat()
        out.append(record)
    return out


def test_evaluate_automations_fires_what_the_dry_run_fires() -> None:
    config = load_config(CONFIG)
    expected = [json.loads(f.to_json()) for f in dry_run(config, EVENTS).firings]
    assert len(expected) == 7
    from_file = evaluate_automations.fn(EVENTS, config)
    from_events = evaluate_automations.fn(read_events(EVENTS), config.automations)
    assert list(from_file.columns) == list(DECISION_COLUMNS)
    assert records(from_file) == expected
    assert records(from_events) == expected
    assert (from_file["decision"] == "fired").all()
    assert from_file["reason"].tolist()[1] == "average(accuracy, 5) > 0.6"


def test_evaluate_automations_on_the_metric_frame_fires_the_metric_automations_alike() -> None:
    config = load_config(CONFIG)
    metric_firings = [
        json.loads(f.to_json()) for f in dry_run(config, EVENTS).firings if f.metric is not None
    ]
    frame = events_to_frame(read_events(EVENTS))  # metric points only
    assert records(evaluate_automations.fn(frame, config)) == metric_firings


def test_with_explain_the_reasons_for_every_no_follow_the_firings() -> None:
    config = load_config(CONFIG)
    evaluation = dry_run(config, EVENTS, explain=True)
    out = evaluate_automations.fn(EVENTS, config, explain=True)
    fired, not_fired = out[out["decision"] == "fired"], out[out["decision"] == "not_fired"]
    assert len(fired) == len(evaluation.firings)
    assert not_fired[["automation", "subject", "reason", "count"]].values.tolist() == [
        [s.automation, s.subject, s.reason, s.count] for s in evaluation.skips
    ]
    assert (
        "the event happened in project 'my-team/vision', not in collection 'churn-classifier' of registry 'models'"
        in " ".join(not_fired["reason"])
    )


def test_automations_may_be_given_as_the_dicts_written_in_yaml() -> None:
    frame = frame_of(*(metric("r1", s, 1.0, s) for s in range(3)))
    event = {"type": "RUN_METRIC", "metric": "acc", "window": 2, "operator": ">=", "threshold": 1}
    out = evaluate_automations.fn(
        frame,
        [{"name": "a", "scope": {"project": "p"}, "event": event, "action": {"type": "no_op"}}],
    )
    assert out[["automation", "run_id", "step", "value"]].values.tolist() == [["a", "r1", 1, 1.0]]
    assert out["timestamp"].tolist() == [pd.Timestamp(at(1))]


def test_no_firings_is_an_empty_frame_with_the_columns() -> None:
    out = evaluate_automations.fn(frame_of(metric("r1", 0, 1.0, 0)), [])
    assert out.empty
    assert list(out.columns) == list(DECISION_COLUMNS)


# -- bad input -----------------------------------------------------------------------------------


def good_frame() -> pd.DataFrame:
    return frame_of(metric("r1", 0, 1.0, 0), metric("r1", 1, 2.0, 1))


def test_a_frame_without_a_required_column_names_it_and_the_fix() -> None:
    with pytest.raises(BadInputError) as caught:
        rolling_aggregate.fn(good_frame().drop(columns=["timestamp"]), "acc")
    assert str(caught.value) == (
        "The metric frame has no column 'timestamp'; a metric frame has the columns project, "
        "run_id, run_name, user, run_created_at, metric, step, value, timestamp (run_name, user "
        "and run_created_at may be left out): add them, or rename yours "
        "(df.rename(columns={...}))."
    )


def test_the_optional_columns_may_be_left_out() -> None:
    frame = good_frame().drop(columns=["run_name", "user", "run_created_at"])
    assert numbers(rolling_aggregate.fn(frame, "acc", window=2)["aggregate"]) == [None, 1.5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.assign(project=["p", None]),
            "The metric frame's column 'project' is missing at row 1 (index 1); every point needs its project (drop or fill such rows first).",
        ),
        (
            lambda f: f.assign(timestamp=[f["timestamp"][0], pd.NaT]),
            "The metric frame's column 'timestamp' is missing at row 1 (index 1); every point needs the time it was logged.",
        ),
        (
            lambda f: f.assign(step=pd.array([0, None], dtype="Int64")),
            "The metric frame has no step at row 1 (index 1) (metric 'acc'); only system metrics (named system.* or system/*) may leave it out.",
        ),
        (
            lambda f: f.assign(step=[0, 1.5]),
            "The metric frame's column 'step' holds 1.5 at row 1 (index 1); steps are integers.",
        ),
        (
            lambda f: f.assign(step=[True, False]),
            "The metric frame's column 'step' holds booleans; steps are integers.",
        ),
    ],
    ids=["no-project", "no-timestamp", "no-step", "fractional-step", "boolean-step"],
)
def test_a_bad_frame_is_refused_with_the_row_and_the_fix(change: Any, message: str) -> None:
    with pytest.raises(BadInputError) as caught:
        validate_metric_frame(change(good_frame()))
    assert str(caught.value) == message


def test_times_that_do_not_parse_are_refused() -> None:
    with pytest.raises(
        BadInputError, match=r"column 'timestamp' must hold times \(datetimes, or ISO 8601 text"
    ):
        cross_run_zscore.fn(good_frame().assign(timestamp=["yesterday", "today"]), "acc")


def test_something_else_than_a_frame_is_refused() -> None:
    with pytest.raises(BadInputError, match="A metric frame must be a pandas DataFrame, not list"):
        window_change.fn([{"metric": "acc"}], "acc")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda f: rolling_aggregate.fn(f, "acc", window=0),
            "window=0 can not be used: input should be greater than 0.",
        ),
        (
            lambda f: rolling_aggregate.fn(f, "acc", aggregation="median"),
            "aggregation='median' can not be used: input should be 'average', 'min' or 'max'.",
        ),
        (
            lambda f: window_change.fn(f, "acc", change_type="percent"),
            "change_type='percent' can not be used: input should be 'relative' or 'absolute'.",
        ),
        (
            lambda f: cross_run_zscore.fn(f, "acc", window=-3),
            "window=-3 can not be used: input should be greater than 0.",
        ),
    ],
    ids=["window", "aggregation", "change-type", "zscore-window"],
)
def test_task_arguments_are_checked_as_automations_are(call: Any, message: str) -> None:
    with pytest.raises(BadInputError) as caught:
        call(good_frame())
    assert str(caught.value) == message


# -- the example flow ----------------------------------------------------------------------------


def test_the_example_flow_runs_as_written(
    prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runpy.run_path(str(ROOT / "examples" / "metric_tasks_flow.py"), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == [
        "run_id  step  value  average_3  change      z",
        "    r1     5   0.61      0.607   0.058 -0.957",
        "    r2     5   0.67      0.640   0.156 -0.283",
        "    r3     5   0.86      0.807   0.222  5.185",
        "      automation run_id  step  value",
        "accuracy-outlier     r3     1  3.536",
        "   good-accuracy     r3     2  0.607",
        "   good-accuracy     r2     4  0.607",
        "   good-accuracy     r1     5  0.607",
    ]
