"""The dry run's fast file reader (`event_files.read_batch`) reads exactly what `read_events`
reads: the same batch from a good file, the same problems (file, line, field) from a bad one —
on hypothesis-made files mixing canonical metric points with every kind of near miss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_ml_automations import event_files
from prefect_ml_automations.errors import EventError
from prefect_ml_automations.evaluator.batch import EventBatch
from prefect_ml_automations.event_files import read_batch
from prefect_ml_automations.events import read_events

from .conftest import metric, state

CANONICAL = st.builds(
    lambda second, fraction, zone: f"2026-01-01T10:00:{second:02d}{fraction}{zone}",
    st.integers(0, 59),
    st.sampled_from(["", ".5", ".123456", ".000001"]),
    st.sampled_from(["Z", ""]),
)


#: Times of the canonical shape that are no time, or not one this tool takes.
ODD_CANONICAL = [
    "1899-12-31T23:59:59Z",
    "1900-01-01T00:00:00Z",
    "2199-12-31T23:59:59.999999Z",
    "2200-01-01T00:00:00Z",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999Z",
    "2026-02-30T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2026-13-01T10:00:00Z",
    "2026-00-10T10:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T23:60:00Z",
    "2026-01-01T23:59:60Z",
]
#: Other formats (some good, some not): left to pydantic.
OTHER_FORMATS = [
    "2026-01-01T10:00:05+05:30",
    "2026-01-01T10:00:05-23:59",
    "2026-01-01T10:00:05+24:00",
    "2026-01-01 10:00:05",
    "2026-01-01t10:00:05z",
    "2026-01-01T10:00:05.1234567Z",
    "2026-01-01T10:00:05.Z",
    "2026-01-01T10:00:05ZZ",
    "2026-01-01",
    "2026-01-01T10:00",
    "20260101T100005Z",
    "\uff12\uff10\uff12\uff16-01-01T10:00:05Z",
    "soon",
    "",
    1767258000,
    1767258000.5,
    None,
]
odd_times = st.sampled_from(ODD_CANONICAL + OTHER_FORMATS)


names = st.sampled_from(["", "a\x00b", "x" * 1025, "é", "x" * 1024])

#: One way a line may differ from a plain point (its field, and a strategy for the value).
MISSES: list[tuple[str, Any]] = [
    ("timestamp", odd_times),
    ("run_created_at", odd_times),
    ("run_created_at", CANONICAL),
    ("step", st.sampled_from([None, 2**53, -(2**53) + 1, 1.0, True, "7"])),
    ("value", st.sampled_from([10**400, 1e300, 1e151, -1e150, True, None, "0.5", [1], {"a": 1}])),
    ("value", st.integers(-(10**20), 10**20)),
    ("metric", st.sampled_from(["system/cpu", "system.gpu", *["", "a\x00b"]])),
    ("project", names),
    ("run_id", names),
    ("run_name", st.one_of(st.none(), names)),
    ("user", st.one_of(st.none(), names)),
    ("extra", st.just(1)),
    ("type", st.sampled_from(["metric", "RUN_STATE"])),
]


#: Those that leave the line a good event.
GOOD_MISSES = [MISSES[i] for i in (2, 4, 5, 6)] + [
    ("run_name", st.none()),
    ("run_created_at", st.sampled_from(["1900-01-01T00:00:00Z", "2199-12-31T23:59:59.999999"])),
    ("timestamp", st.sampled_from(["2026-01-01T10:00:05+05:30", "2026-01-01 10:00:05"])),
]


@st.composite
def metric_lines(draw: st.DrawFn, misses: list[tuple[str, Any]] = MISSES) -> str:
    """A plain metric point, or (one time in three) one with one field amiss."""
    record: dict[str, Any] = metric(
        draw(st.sampled_from(["r1", "r2", "r3"])),
        draw(st.integers(-3, 50)),
        draw(st.floats(allow_nan=False, allow_infinity=False)),
        0,
        project=draw(st.sampled_from(["p", "p", "q"])),
        run_name=draw(st.sampled_from(["sweep-1", "sweep-2"])),
    )
    record["timestamp"] = draw(CANONICAL)
    if draw(st.integers(0, 2)) == 0:
        field, values = draw(st.sampled_from(misses))
        record[field] = draw(values)
        if draw(st.booleans()) and record.get(field) is None:
            del record[field]
    return json.dumps(record, ensure_ascii=draw(st.booleans()))


POINT = json.dumps(metric("r1", 1, 0.5, 0))
GARBAGE = [
    "",
    "   ",
    "{",
    "[]",
    "null",
    '{"type": "METRIC"}',
    "NaN",
    '"\\u0000"',
    f"{POINT} {POINT}",  # two values on one line
    f"{POINT}\r{POINT}",  # (an old Mac's line end: one line here, as for read_events)
    json.dumps(metric("r1", 1, 0.5, 0), indent=1),  # one value over several lines
    "\t",
]
STATE = json.dumps(state("r1", "failed", 5))
ALIAS = json.dumps(
    {
        "type": "ADD_ARTIFACT_ALIAS",
        "registry": "models",
        "collection": "churn",
        "version": 4,
        "alias": "production",
        "timestamp": "2026-01-02T08:00:00Z",
    }
)


@st.composite
def any_line(draw: st.DrawFn, good: bool) -> str:
    """Mostly metric points; now and then a run state, an alias, a blank line (or garbage)."""
    kind = draw(st.integers(0, 19))
    if kind < 16:
        return draw(metric_lines(GOOD_MISSES if good else MISSES))
    if kind == 16:
        return STATE
    if kind == 17:
        return ALIAS
    return draw(st.sampled_from(GARBAGE[:2] if good else GARBAGE))


#: Files with every line good (their batches are compared), and files with some not (their
#: problems are).
files = st.one_of(
    st.lists(any_line(good=True), max_size=40), st.lists(any_line(good=False), max_size=30)
)


def batch_equal(one: EventBatch, other: EventBatch) -> None:
    assert (one.runs, one.metrics, one.names, one.users) == (
        other.runs,
        other.metrics,
        other.names,
        other.users,
    )
    assert np.array_equal(one.created, other.created)
    for name in ("arrival", "run", "name", "user", "ts", "metric", "order"):
        assert np.array_equal(getattr(one.columns, name), getattr(other.columns, name)), name
    assert np.array_equal(one.columns.value, other.columns.value, equal_nan=True)
    assert one.states == other.states
    assert one.artifacts == other.artifacts


def read_alike(path: Path) -> None:
    """The fast reader and `read_events` give the same batch, or the same problems."""
    reference, fast = read_both(path)
    if isinstance(reference, list):
        assert fast == reference
    else:
        assert not isinstance(fast, list), fast
        batch_equal(fast, reference)


def read_both(path: Path) -> tuple[Any, Any]:
    def attempt(read: Any) -> Any:
        try:
            return read(path)
        except EventError as exc:
            return exc.problems

    return attempt(lambda p: EventBatch.from_events(read_events(p))), attempt(read_batch)


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(metric("r1", 1, 0.5, 0), indent=2).encode() + b"\n",
        f"{POINT} {POINT}\n\n{POINT}\n".encode(),
        f"{POINT} {POINT}\n{POINT}\n".encode(),
        f"{POINT}\r{POINT}\n".encode(),
        f"{POINT}\r\n{POINT}\r\n".encode(),
        f"{POINT}\n{POINT}".encode(),  # no final newline
        POINT.replace('"r1"', '"r\xff"').encode("latin-1") + b"\n",  # not UTF-8
        POINT.replace("0.5", "[" * 250 + "]" * 250).encode() + b"\n",  # nested too deeply
        POINT.replace("0.5", "[" * 5000 + "]" * 5000).encode() + b"\n",
        POINT.replace("0.5", "[[1]]").encode() + b"\n",
    ],
    ids=[
        "pretty-printed",
        "two-values-and-a-blank",
        "two-values",
        "bare-cr",
        "crlf",
        "no-final-newline",
        "latin-1",
        "nested-250",
        "nested-5000",
        "nested-2",
    ],
)
def test_what_the_fast_path_must_not_misread(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    read_alike(path)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files, st.sampled_from([1, 200, 2**20]))
def test_the_fast_reader_reads_what_read_events_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: list[str], block: int
) -> None:
    monkeypatch.setattr(event_files, "BLOCK_BYTES", block)  # (blocks of one line, a few, all)
    path = tmp_path / "events.jsonl"
    end = "\r\n" if len(content) % 3 == 0 else "\n"  # (and a file of one line in five has
    last = "" if len(content) % 5 == 1 else end  # no final line end)
    path.write_bytes((end.join(content) + last).encode("utf-8"))
    read_alike(path)


def test_a_file_of_canonical_points_takes_the_fast_path_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(metric(f"r{i % 3}", i, i / 10, i, run_created_at="2026-01-01T09:00:00Z"))
            for i in range(50)
        )
    )
    monkeypatch.setattr(
        event_files, "parse_event", lambda line: pytest.fail(f"validated slowly: {line!r}")
    )
    batch = read_batch(path)
    assert len(batch.columns) == 50
    assert batch.runs == [("p", "r0"), ("p", "r1"), ("p", "r2")]


def test_an_unreadable_file_is_an_event_error(tmp_path: Path) -> None:
    with pytest.raises(EventError, match=r"missing\.jsonl"):
        read_batch(tmp_path / "missing.jsonl")
