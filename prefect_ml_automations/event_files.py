"""Reading a JSON-lines file of events straight into an `EventBatch`, not a model per line.

The dry run reads files of millions of metric points. Validating each line as a pydantic model
and then copying it into columns costs ten times what parsing the JSON does, so metric points
take a fast path: a block of lines is decoded by msgspec into typed structs that hold the checks
a `MetricEvent` makes, in C (types, unknown fields, name lengths, step bounds), and
the rest is checked column-wise over a whole block of lines (times, the step a metric needs, NUL
characters). A line the fast path is not sure of — another event type, an unusual time format,
anything it refuses — is validated as `parse_event` validates it, so the events, and the errors
naming file, line and field, are exactly those of `read_events` (`tests/test_event_files.py`
checks that on hypothesis-made files).

Example:

    batch = read_batch("events.jsonl")  # EventError names every malformed line
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import ValidationError

from prefect_ml_automations.errors import EventError
from prefect_ml_automations.evaluator.batch import NO_TIME, BatchBuilder, EventBatch, Points
from prefect_ml_automations.events import (
    EARLIEST,
    LARGEST_INT,
    LATEST,
    MAX_NAME,
    MAX_REPORTED_PROBLEMS,
    MAX_VALUE,
    counted,
    describe_problem,
    is_system_metric,
    parse_event,
)

#: Lines read and checked at a time (memory stays bounded, progress is reported per block).
BLOCK_BYTES = 32 * 2**20

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
_OptionalName = Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None
_Step = Annotated[int, msgspec.Meta(ge=-LARGEST_INT, le=LARGEST_INT)]


class _MetricLine(msgspec.Struct, forbid_unknown_fields=True):
    """A METRIC line as `MetricEvent` takes it; its times are checked column-wise after."""

    type: Literal["METRIC"]
    timestamp: str
    project: _Name
    run_id: _Name
    metric: _Name
    value: Any
    step: _Step | None = None
    run_name: _OptionalName = None
    user: _OptionalName = None
    run_created_at: str | None = None


_DECODE = msgspec.json.Decoder(_MetricLine).decode
_DECODE_ARRAY = msgspec.json.Decoder(list[_MetricLine]).decode
#: What msgspec raises for a line it does not take (bad UTF-8 is a ValueError; nesting deeper
#: than it recurses, a RecursionError): `parse_event` says what is wrong with it.
_REFUSED = (msgspec.MsgspecError, ValueError, RecursionError)
#: The one time format the fast path reads (digits as 9): what trackers send. Any other is
#: left to `parse_event`, which knows them all.
_TIME_SHAPES = frozenset(
    f"9999-99-99T99:99:99{fraction}{zone}"
    for fraction in ["", *("." + "9" * n for n in range(1, 7))]
    for zone in ("", "Z")
)
_SHAPE = str.maketrans("0123456789", "9999999999")
_LATEST = pd.Timestamp(LATEST)
_EARLIEST = pd.Timestamp(EARLIEST)


def read_batch(path: str | Path, *, progress: Callable[[int], None] | None = None) -> EventBatch:
    """Every event of a JSON-lines file, in file order, as a batch; `EventError` lists the
    malformed lines (the first 20, then a count), as `read_events` does."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise EventError.unreadable(path, str(exc.strerror)) from None
    builder = BatchBuilder()
    problems: list[str] = []
    bad = 0
    first_line = 1
    arrival = 0
    with handle:
        # Blocks of whole lines: BLOCK_BYTES, then the rest of the line it ends in.
        while block := handle.read(BLOCK_BYTES) + handle.readline():
            lines, taken, failures = _read_block(block, first_line, arrival, builder)
            for number, problem in failures:
                bad += 1
                if len(problems) < MAX_REPORTED_PROBLEMS:
                    problems.append(f"{path}:{number}: {problem}")
            first_line += lines
            arrival += taken
            if progress is not None:
                progress(arrival)
    if problems:
        if bad > len(problems):
            problems.append(f"… and {bad - len(problems)} more malformed lines")
        raise EventError(problems, source=str(path))
    return builder.build()


def _read_block(
    block: bytes, first_line: int, arrival: int, builder: BatchBuilder
) -> tuple[int, int, list[tuple[int, str]]]:
    """Add the events of a block of whole lines to `builder` from arrival index `arrival` on;
    returns how many lines and events it held, and its malformed lines (number, problem)."""
    lines, at, fast, slow = _decode(block)
    count = len(lines)
    ts, ts_unsure = _times(_field(fast, "timestamp"), repeated=False)
    created, created_unsure = _times(_field(fast, "run_created_at"), repeated=True)
    steps = np.array(_field(fast, "step"), dtype=object)
    no_step = pd.isna(steps)
    order = np.where(no_step, ts, np.where(no_step, 0, steps).astype(np.int64))
    values, nested = _values(_field(fast, "value"))
    unsure = ts_unsure | created_unsure | nested
    for i in np.flatnonzero(no_step).tolist():  # (a step is needed, but by system metrics)
        unsure[i] |= not is_system_metric(fast[i].metric)
    if unsure.any():
        slow = sorted(slow + at[unsure].tolist())
        sure = np.flatnonzero(~unsure)
        fast = [fast[i] for i in sure.tolist()]
        at, ts, created, order, values = (
            at[sure],
            ts[sure],
            created[sure],
            order[sure],
            values[sure],
        )
    blank = [p for p in slow if not lines[p].strip()]  # (blank lines hold no event)
    positions = np.arange(count)
    index = arrival + positions - np.searchsorted(blank, positions)
    if fast:
        builder.add_points(
            Points(
                arrival=index[at],
                project=_field(fast, "project"),
                run_id=_field(fast, "run_id"),
                run_name=_field(fast, "run_name"),
                user=_field(fast, "user"),
                created=created,
                metric=_field(fast, "metric"),
                order=order,
                ts=ts,
                value=values,
            )
        )
    failures: list[tuple[int, str]] = []
    blanks = set(blank)
    for position in slow:
        if position in blanks:
            continue
        try:
            # (with its line end, as `read_events` reads it: the messages are the same)
            ended = position < count - 1 or block.endswith(b"\n")
            event = parse_event(lines[position] + b"\n" if ended else lines[position])
        except ValidationError as exc:
            failures.append((first_line + position, describe_problem(exc)))
            continue
        builder.add(event, at=int(index[position]))
    return count, count - len(blank), failures


def _field(points: list[_MetricLine], name: str) -> list[Any]:
    return list(map(attrgetter(name), points))


def _decode(
    block: bytes,
) -> tuple[list[bytes], npt.NDArray[np.int64], list[_MetricLine], list[int]]:
    """The block's lines (without their line ends), the positions of those msgspec reads as
    metric points, those points, and the positions of the others.

    A block of nothing but such lines is decoded in one call, as one JSON array of its lines: a
    line that holds two values, or a value over two lines, or a blank line, breaks the array,
    and the block is then decoded line by line."""
    parts = block.split(b"\n")
    if not parts[-1]:
        parts.pop()
    if b"\\u0000" not in block:  # (a NUL, which no name may hold: `parse_event` says where)
        try:
            fast = _DECODE_ARRAY(b"[" + b",".join(parts) + b"]")
        except _REFUSED:
            pass
        else:
            if len(fast) == len(parts):  # (always, but the count is what the rest relies on)
                return parts, np.arange(len(parts)), fast, []
    at: list[int] = []
    points: list[_MetricLine] = []
    slow: list[int] = []
    for position, line in enumerate(parts):
        try:
            point = _DECODE(line)
        except _REFUSED:
            slow.append(position)
            continue
        if b"\\u0000" in line:
            slow.append(position)
            continue
        at.append(position)
        points.append(point)
    return parts, np.array(at, np.int64), points, slow


def _times(
    values: list[str | None], *, repeated: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Times as int64 nanoseconds (NO_TIME for None), and where the fast path is not sure of
    one: another format than `_TIME_SHAPES`, no such date, or outside 1900–2200. `repeated`:
    the same times come again and again (a run's creation), so each is read once."""
    texts = np.array(values, dtype=object)
    if repeated:
        codes, uniques = pd.factorize(texts, use_na_sentinel=True)
        ns, unsure = _times(list(uniques), repeated=False)
        return np.append(ns, NO_TIME)[codes], np.append(unsure, False)[codes]
    given = ~pd.isna(texts)
    ns = np.full(len(texts), NO_TIME, np.int64)
    unsure = np.zeros(len(texts), bool)
    if not given.any():
        return ns, unsure
    present = texts[given]
    shaped = _canonical(present)
    parsed = pd.to_datetime(
        pd.Index(present, dtype=object).where(shaped, None),
        format="ISO8601",
        utc=True,
        errors="coerce",
    )
    fine = shaped & ~parsed.isna() & (parsed >= _EARLIEST) & (parsed < _LATEST)
    ns[given] = np.where(fine, parsed.as_unit("us").asi8 * 1000, NO_TIME)
    unsure[given] = ~fine
    return ns, unsure


def _canonical(texts: npt.NDArray[np.object_]) -> npt.NDArray[np.bool_]:
    """Which texts have one of `_TIME_SHAPES` (`2026-01-01T10:00:05`, with `.f` to `.ffffff`,
    with or without `Z`): checked on their bytes all at once."""
    try:
        raw = texts.astype("S28")  # (longer ones are cut, and then fail the length check)
    except (UnicodeEncodeError, TypeError, ValueError):  # (not ASCII, or not text)
        return np.array(
            [isinstance(t, str) and t.translate(_SHAPE) in _TIME_SHAPES for t in texts], bool
        )
    m = raw.view(np.uint8).reshape(len(raw), 28)
    digit = (m >= ord("0")) & (m <= ord("9"))
    length = np.count_nonzero(m, axis=1)  # (padded with NUL; a NUL inside never gets here)
    ok = digit[:, [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]].all(axis=1)
    for position, char in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")):
        ok &= m[:, position] == ord(char)
    rows = np.arange(len(m))
    fraction = np.cumprod(digit[:, 20:27], axis=1).sum(axis=1)  # digits after the dot
    zone_at = np.minimum(20 + fraction, 27)
    zoned = m[rows, zone_at] == ord("Z")
    whole = (length == 19) | ((length == 20) & (m[:, 19] == ord("Z")))
    fractional = (
        (m[:, 19] == ord("."))
        & (fraction >= 1)
        & (fraction <= 6)
        & ((length == 20 + fraction) | ((length == 21 + fraction) & zoned))
    )
    canonical: npt.NDArray[np.bool_] = ok & (length <= 27) & (whole | fractional)
    return canonical


def _values(values: list[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each value as the evaluator counts it (`counted`; NaN where it does not count), and
    which are lists or objects (images, histograms): pydantic limits how deeply those nest, so
    they go the slow way."""
    numbers = [v if type(v) is float else _counted_or_nan(v) for v in values]
    out = np.array(numbers, np.float64)
    nested = np.zeros(len(values), bool)
    if np.isnan(out).any():  # (only values that do not count can be lists or objects)
        for i in np.flatnonzero(np.isnan(out)).tolist():
            nested[i] = type(values[i]) in (list, dict)
    return np.where(np.abs(out) <= MAX_VALUE, out, np.nan), nested


def _counted_or_nan(value: Any) -> float:
    number = counted(value)
    return math.nan if number is None else number
