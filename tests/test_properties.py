"""The algebraic rules, for any events hypothesis can think of (SPEC §3.4, §3.3, §3.11):

- the same events in one batch, one at a time or in any chunking give the same firings;
- re-delivering any event changes nothing;
- firing ids are stable;
- and the evaluator agrees with an independent, naive reading of the spec (tests/reference.py).

Values are multiples of 1/4 so that sums are exact in binary: the properties are about events,
not about the last bit of a float.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.evaluator import Evaluator, EvaluatorState
from prefect_ml_automations.store import StateStore

from .conftest import at, events
from .reference import Reference

RUNS = ["r0", "r1", "r2", "r3"]


def _automation(name: str, event: dict[str, Any], **extra: Any) -> Automation:
    scope = extra.pop("scope", {"project": "p"})
    return Automation.model_validate(
        {"name": name, "scope": scope, "event": event, "action": {"type": "no_op"}, **extra}
    )


AUTOMATIONS = [
    _automation(
        "avg",
        {"type": "RUN_METRIC", "metric": "acc", "window": 2, "operator": ">", "threshold": 0.5},
        cooldown=0,
    ),
    _automation(
        "min",
        {
            "type": "RUN_METRIC",
            "metric": "loss",
            "window": 3,
            "aggregation": "min",
            "operator": "<=",
            "threshold": -1,
        },
        cooldown="30s",
    ),
    _automation(
        "max-eq",
        {
            "type": "RUN_METRIC",
            "metric": "acc",
            "window": 1,
            "aggregation": "max",
            "operator": "==",
            "threshold": 1,
        },
        cooldown="15s",
        filters={"run_name": "^sweep-[01]"},
    ),
    _automation(
        "change-abs",
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "acc",
            "current_window": 1,
            "prior_window": 2,
            "change_type": "absolute",
            "direction": "any",
            "amount": 1,
        },
        cooldown=0,
    ),
    _automation(
        "change-rel",
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "loss",
            "current_window": 2,
            "prior_window": 2,
            "direction": "increase",
            "amount": 0.5,
        },
        cooldown="20s",
    ),
    _automation(
        "z2",
        {"type": "RUN_METRIC_ZSCORE", "metric": "acc", "window": 2, "threshold": 1},
        cooldown=0,
    ),
    _automation(
        "z4",
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "loss",
            "window": 4,
            "threshold": 0.5,
            "direction": "above",
        },
        cooldown="10s",
        filters={"user": "alice"},
    ),
    _automation(
        "gpu",
        {
            "type": "RUN_METRIC",
            "metric": "system.gpu",
            "window": 2,
            "aggregation": "max",
            "operator": ">",
            "threshold": 1,
        },
        cooldown=0,
    ),
    _automation(
        "avg-for-3",
        {
            "type": "RUN_METRIC",
            "metric": "acc",
            "window": 1,
            "operator": ">",
            "threshold": 0,
            "for_points": 3,
        },
        cooldown="20s",
    ),
    _automation(
        "change-rearm",
        {
            "type": "RUN_METRIC_CHANGE",
            "metric": "loss",
            "current_window": 1,
            "prior_window": 1,
            "change_type": "absolute",
            "direction": "decrease",
            "amount": 0.25,
            "for_points": 2,
            "rearm": True,
        },
        filters={"run_name": "^sweep-[01]"},
    ),
    _automation(
        "z-robust",
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "loss",
            "window": 3,
            "threshold": 2,
            "min_baseline": 3,
            "sigma_floor": 0.5,
        },
        cooldown=0,
    ),
    _automation(
        "z-mad",
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "acc",
            "window": 3,
            "threshold": 1,
            "method": "median_mad",
        },
        cooldown=0,
    ),
    _automation(
        "z-mad-floor",
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "loss",
            "window": 2,
            "threshold": 1.5,
            "method": "median_mad",
            "sigma_floor": 0.25,
            "direction": "below",
        },
        cooldown="10s",
    ),
    _automation(
        "z-finished",
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "acc",
            "window": 2,
            "threshold": 1,
            "baseline": "finished",
        },
        cooldown=0,
    ),
    _automation(
        "z-finished-mad",
        {
            "type": "RUN_METRIC_ZSCORE",
            "metric": "loss",
            "window": 3,
            "threshold": 1,
            "method": "median_mad",
            "baseline": "finished",
            "sigma_floor": 0.25,
        },
        cooldown="10s",
    ),
    _automation(
        "z-rearm",
        {"type": "RUN_METRIC_ZSCORE", "metric": "acc", "window": 2, "threshold": 1, "rearm": True},
    ),
    _automation("state", {"type": "RUN_STATE", "states": ["failed", "finished"]}, cooldown="60s"),
    _automation("stalled", {"type": "RUN_STALLED", "after": "20s"}, cooldown=0),
    _automation(
        "stalled-alice",
        {"type": "RUN_STALLED", "after": "45s"},
        cooldown="60s",
        filters={"user": "alice"},
    ),
    _automation(
        "other-project",
        {"type": "RUN_METRIC", "metric": "acc", "window": 1, "operator": ">", "threshold": 0},
        cooldown=0,
        scope={"project": "q"},
    ),
    _automation(
        "alias", {"type": "ADD_ARTIFACT_ALIAS", "alias": "^prod"}, scope={"registry": "models"}
    ),
    _automation("tag", {"type": "REMOVE_ARTIFACT_TAG"}, scope={"project": "p", "collection": "c0"}),
]

values = st.one_of(
    st.integers(-8, 8).map(lambda q: q / 4),
    st.sampled_from([float("nan"), float("inf"), "x", True, None]),
)


#: Run states, `finished` thrice: a baseline of finished runs needs some.
STATES = [
    *["running", "running", "finished", "finished", "finished"],
    *["failed", "crashed", "killed", "pending"],
]


@st.composite
def run_event(draw: st.DrawFn, t: int) -> dict[str, Any]:
    run = draw(st.sampled_from(RUNS))
    project = draw(st.sampled_from(["p", "p", "p", "q"]))
    base: dict[str, Any] = {
        "project": project,
        "run_id": run,
        "run_name": f"sweep-{run[1]}",
        "user": "alice" if run in ("r0", "r2") else "bob",
        "timestamp": at(t),
    }
    if draw(st.booleans()):
        base["run_created_at"] = at(-100 * (RUNS.index(run) % 3))
    kind = draw(
        st.sampled_from(["acc", "acc", "loss", "loss", "system.gpu", *["state"] * 3, "beat"])
    )
    if kind == "beat":
        return {**base, "type": "RUN_HEARTBEAT"}
    if kind == "state":
        return {
            **base,
            "type": "RUN_STATE",
            "state": draw(st.sampled_from(STATES)),
        }
    event = {**base, "type": "METRIC", "metric": kind, "value": draw(values)}
    if kind != "system.gpu":
        event["step"] = draw(st.integers(0, 12))
    return event


@st.composite
def artifact_event(draw: st.DrawFn, t: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["ADD_ARTIFACT_ALIAS", "ADD_ARTIFACT_TAG", "REMOVE_ARTIFACT_TAG"]))
    place = draw(st.sampled_from([{"registry": "models"}, {"project": "p"}]))
    event = {
        "type": kind,
        **place,
        "collection": draw(st.sampled_from(["c0", "c1"])),
        "version": draw(st.integers(0, 2)),
        "timestamp": at(draw(st.sampled_from([t, 0]))),
    }
    event["alias" if kind == "ADD_ARTIFACT_ALIAS" else "tag"] = draw(
        st.sampled_from(["production", "staging", "gold"])
    )
    return event


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 60))
    out = []
    t = 0
    for _ in range(n):
        t += draw(st.integers(0, 12))
        maker = artifact_event if draw(st.integers(0, 9)) == 0 else run_event
        out.append(draw(maker(t)))
    return out


def ids(firings: list[Any]) -> list[str]:
    return [f.firing_id for f in firings]


#: One store for every example; each example is a sensor of its own (its rows are its alone).
STORE = StateStore("sqlite://")


def in_chunks(
    stream: list[dict[str, Any]],
    cuts: list[int],
    *,
    persist: str,
    now: datetime | None = None,
) -> list[Any]:
    """Evaluate the stream chunk by chunk, the state kept in memory, saved and read back as one
    blob, or saved in a store as rows and read back as just the rows each chunk touches (and,
    with the clock, the runs quiet long enough to have stalled, as a sensor's cycle finds them).
    The clock `now` is told with the last chunk."""
    state = EvaluatorState()
    firings: list[Any] = []
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    sensor = uuid.uuid4().hex
    for lo, hi in pairwise(bounds):
        chunk = events(*stream[lo:hi])
        clock = now if hi == len(stream) else None
        if persist == "store":
            with STORE.cycle(sensor) as cycle:
                keys = Evaluator(AUTOMATIONS).reads(chunk, now=clock)
                cycle.take_inbox(quiet_before=keys.quiet_before)  # (the partitions to judge)
                state = cycle.state(keys)
                firings += Evaluator(AUTOMATIONS, state).evaluate(chunk, now=clock).firings
                cycle.save(state)
            continue
        if persist == "bytes":
            state = EvaluatorState.from_bytes(state.to_bytes())
        firings += Evaluator(AUTOMATIONS, state).evaluate(chunk, now=clock).firings
    return firings


#: The clock at the end of a stream: none, or some seconds after its last event.
clocks = st.one_of(st.none(), st.integers(0, 90))


def clock_after(stream: list[dict[str, Any]], seconds: int | None) -> datetime | None:
    if seconds is None:
        return None
    latest = max((e["timestamp"] for e in stream), default=at(0))
    return datetime.fromisoformat(latest.replace("Z", "+00:00")) + timedelta(seconds=seconds)


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    streams(),
    st.lists(st.integers(0, 100), max_size=8),
    st.sampled_from(["memory", "bytes", "store"]),
    clocks,
)
def test_any_chunking_gives_the_same_firings(
    stream: list[dict[str, Any]], cuts: list[int], persist: str, seconds: int | None
) -> None:
    now = clock_after(stream, seconds)
    whole = Evaluator(AUTOMATIONS).evaluate(events(*stream), now=now).firings
    assert ids(in_chunks(stream, cuts, persist=persist, now=now)) == ids(whole)


@PROPERTY
@given(streams(), clocks)
def test_one_event_at_a_time_gives_the_same_firings(
    stream: list[dict[str, Any]], seconds: int | None
) -> None:
    now = clock_after(stream, seconds)
    whole = Evaluator(AUTOMATIONS).evaluate(events(*stream), now=now).firings
    one_by_one = in_chunks(stream, list(range(len(stream))), persist="memory", now=now)
    assert ids(one_by_one) == ids(whole)


@PROPERTY
@given(streams(), clocks)
def test_one_event_at_a_time_through_the_store_gives_the_same_firings(
    stream: list[dict[str, Any]], seconds: int | None
) -> None:
    """Each event a cycle of its own, which loads only the rows that event touches (and, with
    the clock, the runs that may have stalled)."""
    now = clock_after(stream, seconds)
    whole = Evaluator(AUTOMATIONS).evaluate(events(*stream), now=now).firings
    one_by_one = in_chunks(stream, list(range(len(stream))), persist="store", now=now)
    assert ids(one_by_one) == ids(whole)


@PROPERTY
@given(streams(), st.data())
def test_redelivering_an_event_changes_nothing(
    stream: list[dict[str, Any]], data: st.DataObject
) -> None:
    if not stream:
        return
    original = data.draw(st.integers(0, len(stream) - 1))
    later = data.draw(st.integers(original + 1, len(stream)))
    redelivered = [*stream[:later], stream[original], *stream[later:]]
    assert ids(Evaluator(AUTOMATIONS).evaluate(events(*redelivered)).firings) == ids(
        Evaluator(AUTOMATIONS).evaluate(events(*stream)).firings
    )


@PROPERTY
@given(streams(), clocks)
def test_the_evaluator_agrees_with_the_naive_reference(
    stream: list[dict[str, Any]], seconds: int | None
) -> None:
    now = clock_after(stream, seconds)
    firings = Evaluator(AUTOMATIONS).evaluate(events(*stream), now=now).firings
    expected = Reference(AUTOMATIONS).feed(stream, now=None if now is None else now.timestamp())
    assert [(f.automation, f.run_id) for f in firings] == [
        (r.automation, r.run_id) for r in expected
    ]
    for f, r in zip(firings, expected, strict=True):
        if r.value is not None:
            assert abs(f.value - r.value) <= 1e-9 * max(1.0, abs(r.value)), (f, r)
