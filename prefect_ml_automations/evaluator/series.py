"""Per (run, metric) series: the bounded tail the windows need, and batches laid out for windows.

A `SeriesTable` keeps, for every run of one (project, metric), the last `capacity` values in step
order in a ring buffer (values and their steps), so a batch costs what the batch holds, however
long the history. `SeriesTable.ingest` applies SPEC §3.3-4 to a batch of points — re-deliveries
dropped, late points joining the series without triggering — and lays the result out as one flat
array of *segments*: the tail as it stood, then the new points that extend it. Every window the
triggers read is then a slice of that array ending at a trigger point, computed for all trigger
points at once with prefix sums (averages) or a sliding extreme (min/max).

Runs whose points arrive in step order (nearly all) take the vectorized path; a run with a late
or repeated point is walked in Python, cut into segments at each late point, and joins the same
flat layout.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


def stable_argsort(codes: npt.NDArray[np.integer[Any]]) -> I64:
    """A stable argsort of non-negative integer codes (radix sort when they fit 16 bits)."""
    if len(codes) and int(codes.max()) < 2**16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    return np.argsort(codes, kind="stable")


#: The order (step) of no point: an empty series' newest.
NO_ORDER = np.iinfo(np.int64).min
_NO_ORDER = NO_ORDER
#: Averages over windows up to this size are summed directly; longer ones by prefix sums.
DIRECT_SUM_MAX = 16
#: How many window values firings' records gather at a time.
WINDOW_VALUES_AT_ONCE = 1 << 20


Array = TypeVar("Array", bound=npt.NDArray[Any])


def _grown(array: Array, size: int, fill: object) -> Array:
    """`array` with room for at least `size` rows (doubling), new rows set to `fill`."""
    if len(array) >= size:
        return array
    new = np.full((max(size, 2 * len(array), 16), *array.shape[1:]), fill, array.dtype)
    new[: len(array)] = array
    return cast(Array, new)


class SeriesTable:
    """Ring buffers of the last `capacity` (step, value) pairs per run, in step order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows = 0
        self.row_of_run: I64 = np.full(0, -1, np.int64)
        self.run: I64 = np.zeros(0, np.int64)
        self.values: F64 = np.zeros((0, capacity), np.float64)
        self.orders: I64 = np.zeros((0, capacity), np.int64)
        self.start: I64 = np.zeros(0, np.int64)
        self.length: I64 = np.zeros(0, np.int64)
        #: Values ever accepted; more than `capacity` means the tail is not the whole history.
        self.count: I64 = np.zeros(0, np.int64)

    # -- rows ---------------------------------------------------------------------------------

    def rows_for(self, runs: I64) -> I64:
        """Row per run code, creating rows for runs not seen before."""
        if len(runs) == 0:
            return np.zeros(0, np.int64)
        self.row_of_run = _grown(self.row_of_run, int(runs.max()) + 1, -1)
        rows = self.row_of_run[runs]
        missing = rows < 0
        if missing.any():
            new_runs = np.unique(runs[missing])
            first = self.rows
            self.rows += len(new_runs)
            self.row_of_run[new_runs] = np.arange(first, self.rows)
            for name in ("run", "start", "length", "count"):
                setattr(self, name, _grown(getattr(self, name), self.rows, 0))
            self.values = _grown(self.values, self.rows, 0.0)
            self.orders = _grown(self.orders, self.rows, 0)
            self.run[first : self.rows] = new_runs
            rows = self.row_of_run[runs]
        return rows

    def row(self, run: int) -> int:
        return int(self.row_of_run[run]) if run < len(self.row_of_run) else -1

    # -- reading --------------------------------------------------------------------------------

    def latest(self, rows: I64) -> tuple[F64, I64]:
        """The value and step at the newest step of each row (NaN / no step when empty)."""
        last = (self.start[rows] + self.length[rows] - 1) % self.capacity
        empty = self.length[rows] == 0
        value = np.where(empty, np.nan, self.values[rows, last])
        order = np.where(empty, _NO_ORDER, self.orders[rows, last])
        return value, order

    def tails(self, rows: I64) -> tuple[F64, I64]:
        """The tails right-aligned in a (len(rows), capacity) matrix, and their lengths."""
        k = self.capacity
        length = self.length[rows]
        slot = np.arange(k) - (k - length)[:, None]
        index = (self.start[rows, None] + slot) % k
        matrix = self.values[rows[:, None], index]
        matrix[slot < 0] = 0.0
        return matrix, length

    def tail_list(self, row: int) -> list[tuple[int, float]]:
        k = self.capacity
        index = (self.start[row] + np.arange(self.length[row])) % k
        return list(
            zip(self.orders[row, index].tolist(), self.values[row, index].tolist(), strict=True)
        )

    # -- writing --------------------------------------------------------------------------------

    def _append(self, rows: I64, group_start: I64, sizes: I64, orders: I64, values: F64) -> None:
        """Append each group's points (in step order, all newer than the tail) to its row."""
        k = self.capacity
        group = np.repeat(np.arange(len(rows)), sizes)
        within = np.arange(len(orders)) - group_start[group]
        keep = within >= (sizes - k)[group]  # only the last k of a group survive
        g = group[keep]
        end = self.start[rows] + self.length[rows]
        at = rows[g] * k + (end[g] + within[keep]) % k  # into the flattened (rows, k) buffers
        np.put(self.values, at, values[keep])
        np.put(self.orders, at, orders[keep])
        total = self.length[rows] + sizes
        new_length = np.minimum(total, k)
        self.start[rows] = (self.start[rows] + total - new_length) % k
        self.length[rows] = new_length
        self.count[rows] += sizes

    def _set_tail(self, row: int, tail: list[tuple[int, float]], count: int) -> None:
        tail = tail[-self.capacity :]
        self.start[row] = 0
        self.length[row] = len(tail)
        self.count[row] = count
        if tail:
            orders, values = zip(*tail, strict=True)
            self.orders[row, : len(tail)] = orders
            self.values[row, : len(tail)] = values

    # -- a batch --------------------------------------------------------------------------------

    def ingest(self, runs: I64, orders: I64, values: F64) -> Segments:
        """Apply a batch of points (arrival order) and lay it out for window computations.

        Returns the trigger points — the points that extend their run's series — as indices
        into the batch, with their place in the flat layout. Re-deliveries and late points are
        not trigger points; late points still join the windows that come after them.
        """
        n = len(runs)
        k = self.capacity
        rows = self.rows_for(runs)
        perm = stable_argsort(rows)
        r, o = rows[perm], orders[perm]
        boundary = np.ones(n, bool)
        boundary[1:] = r[1:] != r[:-1]
        gstart = np.flatnonzero(boundary)
        grow = r[gstart]
        gsize = np.diff(np.append(gstart, n))
        _, newest = self.latest(grow)
        rising = np.ones(n, bool)
        rising[1:] = o[1:] > o[:-1]
        rising[gstart] = o[gstart] > newest
        clean = np.logical_and.reduceat(rising, gstart) if n else np.zeros(0, bool)

        # Vectorized groups: one segment each, the tail then every new point.
        fast_rows = grow[clean]
        fast_point = np.repeat(clean, gsize)
        ctx, ctx_len = self.tails(fast_rows)
        seg_ctx = [ctx]
        seg_ctx_len = [ctx_len]
        seg_of_point = [np.repeat(np.arange(len(fast_rows)), gsize[clean])]
        trig_perm = [perm[fast_point]]
        nseg = len(fast_rows)

        # Groups with a late or repeated point: walk them, cutting a segment at each late point.
        slow_groups = np.flatnonzero(~clean)
        if len(slow_groups):
            ctx_rows: list[list[float]] = []
            seg_points: list[int] = []
            seg_ids: list[int] = []
            for g in slow_groups.tolist():
                row = int(grow[g])
                members = perm[gstart[g] : gstart[g] + gsize[g]]
                for segment_ctx, points in self._walk(row, members, orders, values):
                    ctx_rows.append(segment_ctx)
                    seg_points.extend(points)
                    seg_ids.extend([nseg] * len(points))
                    nseg += 1
            matrix = np.zeros((len(ctx_rows), k))
            lengths = np.array([len(c) for c in ctx_rows], np.int64)
            for i, c in enumerate(ctx_rows):
                if c:
                    matrix[i, k - len(c) :] = c
            seg_ctx.append(matrix)
            seg_ctx_len.append(lengths)
            seg_of_point.append(np.array(seg_ids, np.int64))
            trig_perm.append(np.array(seg_points, np.int64))

        # The fast groups' tails are advanced after their context was read.
        fast_g = np.flatnonzero(clean)
        if len(fast_g):
            order_fast = perm[fast_point]
            starts = np.cumsum(np.concatenate([[0], gsize[clean][:-1]]))
            self._append(fast_rows, starts, gsize[clean], orders[order_fast], values[order_fast])

        return Segments.build(
            capacity=k,
            ctx=np.concatenate(seg_ctx),
            ctx_len=np.concatenate(seg_ctx_len),
            seg_of_point=np.concatenate(seg_of_point),
            points=np.concatenate(trig_perm),
            values=values,
        )

    def _walk(
        self, row: int, members: I64, orders: I64, values: F64
    ) -> list[tuple[list[float], list[int]]]:
        """Sequential SPEC §3.3-4 for one run: returns segments (context values, new points)."""
        k = self.capacity
        tail = self.tail_list(row)
        count = int(self.count[row])
        steps = [step for step, _ in tail]
        segments: list[tuple[list[float], list[int]]] = []
        current: list[int] | None = None
        for i in members.tolist():
            step, value = int(orders[i]), float(values[i])
            if steps and step <= steps[-1]:
                at = bisect.bisect_left(steps, step)
                truncated = count > len(steps)
                if (at < len(steps) and steps[at] == step) or (truncated and at == 0):
                    continue  # a re-delivery (or older than anything a window can still reach)
                tail.insert(at, (step, value))
                steps.insert(at, step)
                current = None  # windows after a late point see it: start a new segment
            else:
                if current is None:
                    current = []
                    segments.append(([v for _, v in tail[-k:]], current))
                current.append(i)
                tail.append((step, value))
                steps.append(step)
            count += 1
            if len(tail) > k:
                del tail[: len(tail) - k]
                del steps[: len(steps) - k]
        self._set_tail(row, tail, count)
        return segments


@dataclass
class Segments:
    """A batch laid out for windows: per segment `capacity` context slots, then its new points.

    `points` are the trigger points as indices into the batch (grouped by segment, in arrival
    order within a segment); `pos` their index in `flat`; `avail` how many values of the series
    end at that position (context included), which decides whether a window is full.
    """

    flat: F64
    points: I64
    pos: I64
    avail: I64
    _prefix: F64 | None = None

    @classmethod
    def build(
        cls,
        *,
        capacity: int,
        ctx: F64,
        ctx_len: I64,
        seg_of_point: I64,
        points: I64,
        values: F64,
    ) -> Segments:
        k = capacity
        nseg = len(ctx)
        sizes = np.bincount(seg_of_point, minlength=nseg) if nseg else np.zeros(0, np.int64)
        offsets = np.zeros(nseg + 1, np.int64)
        np.cumsum(sizes + k, out=offsets[1:])
        flat = np.empty(offsets[-1], np.float64)
        ctx_pos = offsets[:-1, None] + np.arange(k)
        flat[ctx_pos.ravel()] = ctx.ravel()
        seg_first = offsets[:-1] - k * np.arange(nseg)  # index of each segment's first point
        within = np.arange(len(points)) - seg_first[seg_of_point]
        pos = offsets[seg_of_point] + k + within
        flat[pos] = values[points]
        avail = ctx_len[seg_of_point] + within + 1
        return cls(flat=flat, points=points, pos=pos, avail=avail)

    @property
    def prefix(self) -> F64:
        """Prefix sums of `flat` with a leading 0: a window's sum is a difference of two."""
        if self._prefix is None:
            self._prefix = np.zeros(len(self.flat) + 1)
            np.cumsum(self.flat, out=self._prefix[1:])
        return self._prefix

    def window(self, aggregation: str, size: int, lag: int = 0) -> F64:
        """`aggregation` over the `size` values ending `lag` before each trigger point
        (NaN where the series does not have `size + lag` values yet)."""
        full = self.avail >= size + lag
        end = np.where(full, self.pos - lag, size - 1)  # a harmless index where not full
        if aggregation == "average":
            if size <= DIRECT_SUM_MAX:
                # Oldest to newest, as sum(window) would: an average of equal values is that
                # value, and the result does not depend on how the batch was laid out.
                total = _direct_sums(self.flat, end, size)
            else:
                prefix = self.prefix
                total = prefix[end + 1] - prefix[end + 1 - size]
            result = total / size
        else:
            reduce = np.minimum if aggregation == "min" else np.maximum
            result = _sliding_extreme(self.flat, end, size, reduce)
        result[~full] = np.nan
        return np.asarray(result, np.float64)

    def window_values(self, points: I64, size: int) -> list[list[float]]:
        """The `size` values ending at each of the trigger points `points`, oldest first."""
        out: list[list[float]] = []
        block = max(1, WINDOW_VALUES_AT_ONCE // size)  # gathered a block of windows at a time
        for lo in range(0, len(points), block):
            ends = self.pos[points[lo : lo + block]]
            out += self.flat[ends[:, None] + np.arange(1 - size, 1)].tolist()
        return out


def _direct_sums(flat: F64, end: I64, size: int) -> F64:
    """flat[e-size+1] + … + flat[e] (in that order) for each e in `end`."""
    if len(end) * 4 < len(flat):  # few windows: gather each term
        total = flat[end - (size - 1)]
        for back in range(size - 2, -1, -1):
            total = total + flat[end - back]
        return total
    sums = flat[: len(flat) - size + 1].copy()  # many: slide over the whole array once
    for offset in range(1, size):
        sums += flat[offset : len(flat) - size + 1 + offset]
    return sums[end - (size - 1)]


def _sliding_extreme(flat: F64, end: I64, size: int, ufunc: np.ufunc) -> F64:
    """min/max of flat[e-size+1 : e+1] for each e in `end`.

    Few windows: gather them. Many: van Herk/Gil-Werman over the whole array, O(len(flat)).
    """
    if size == 1:
        return flat[end].copy()
    if len(end) * size <= 2 * len(flat):
        return ufunc.reduce(flat[end[:, None] - np.arange(size)], axis=1)  # type: ignore[no-any-return]
    n = len(flat)
    blocks = -(-n // size)
    padded = np.full(blocks * size, flat[-1])
    padded[:n] = flat
    grid = padded.reshape(blocks, size)
    forward = ufunc.accumulate(grid, axis=1).ravel()
    backward = ufunc.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    return ufunc(backward[end - size + 1], forward[end])  # type: ignore[no-any-return]
