"""Z-scores against the latest values of the most recently created other runs (SPEC §3.6).

For a trigger point of run r at arrival a, the baseline is the latest value of the `window` most
recently created runs other than r that have logged the metric by a. Call U the `window + 1`
most recently created runs that have logged by a, and T the `window` of them: the baseline is
U without r when r is in U, else T.

A run's membership of "the k most recently created runs that have logged" is one interval of
arrival time: it enters with its first value (if fewer than k more recent runs have logged) and
leaves for good when the k-th more recent run logs its first value. So the sum, the sum of
squares and the size of U and T as of every point are cumulative sums over the batch — a value
replacing its run's previous value while the run is a member, plus one leave per entering run —
and the z-score of every trigger point is a handful of array operations. Only the entries
(a run's first value) are walked in Python: a batch has at most one per run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from prefect_ml_automations.evaluator.series import stable_argsort

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

_NEVER = np.iinfo(np.int64).max
#: How many baseline values `robust_zscores` gathers at a time (memory stays bounded).
_GATHERED_AT_ONCE = 1 << 20
#: Below this fraction of the mean square (around the shift), a baseline's variance is rounding
#: noise of the running sums: the baseline counts as having no spread.
_RELATIVE_VARIANCE_FLOOR = 1e-9

RankKey = Callable[[int], Any]


@dataclass
class Membership:
    """When each run is among the k most recently created runs that have logged the metric."""

    entry: dict[int, int]
    leave: dict[int, int]
    after: list[int]

    @classmethod
    def walk(
        cls, members: list[int], entering: list[tuple[int, int]], k: int, rank: RankKey
    ) -> Membership:
        """`members` (most recent first) before the batch; `entering` (arrival, run) in order."""
        order = list(members)
        keys = [rank(m) for m in order]
        entry = dict.fromkeys(order, -1)
        leave: dict[int, int] = {}
        for arrival, run in entering:
            key = rank(run)
            if len(order) == k and key <= keys[-1]:
                continue  # k more recent runs have logged: never a member
            at = next((i for i, other in enumerate(keys) if key > other), len(keys))
            order.insert(at, run)
            keys.insert(at, key)
            entry[run] = arrival
            if len(order) > k:
                keys.pop()
                leave[order.pop()] = arrival
        return cls(entry, leave, order)

    @cached_property
    def _intervals(self) -> tuple[I64, I64, I64]:
        """(runs, entry, leave) as arrays, for looking up the members at many arrivals."""
        runs = np.fromiter(self.entry, np.int64, len(self.entry))
        entry = np.fromiter(self.entry.values(), np.int64, len(self.entry))
        leave = np.array([self.leave.get(r, _NEVER) for r in self.entry], np.int64)
        return runs, entry, leave

    def at(self, arrival: int) -> list[int]:
        """The members just after `arrival`."""
        runs, entry, leave = self._intervals
        return [int(r) for r in runs[(entry <= arrival) & (arrival < leave)]]


@dataclass
class ZScoreBatch:
    """The trigger points of one (project, metric) in arrival order, for z-scores."""

    run: I64
    value: F64
    arrival: I64
    #: The run's latest value before each point (NaN: the run had logged nothing).
    prev: F64
    #: Latest value before the batch of the runs in the member lists.
    latest_before: dict[int, float]
    #: Values are shifted by this before summing squares (they are near it, so sums stay small).
    shift: float

    def __post_init__(self) -> None:
        first = np.isnan(self.prev)
        self.entering = list(
            zip(self.arrival[first].tolist(), self.run[first].tolist(), strict=True)
        )
        self._memberships: dict[int, Membership] = {}
        self._shifted = self.value - self.shift
        self._prev_shifted = np.where(first, 0.0, self.prev - self.shift)
        self._by_run: tuple[I64, I64] | None = None

    def membership(self, members: list[int], k: int, rank: RankKey) -> Membership:
        """Membership of the k most recent runs over the batch, from `members` before it."""
        if k not in self._memberships:
            self._memberships[k] = Membership.walk(members, self.entering, k, rank)
        return self._memberships[k]

    def _sorted_by_run(self) -> tuple[I64, I64, int]:
        """The points sorted by (run, arrival), as one int64 key run · span + arrival each
        (searched for a run's latest point before an arrival): the order, the keys, the span."""
        span = int(self.arrival[-1]) + 2
        if self._by_run is None:
            order = stable_argsort(self.run)  # arrivals are sorted already
            self._by_run = (order, self.run[order] * span + self.arrival[order])
        order, keys = self._by_run
        return order, keys, span

    def latest_as_of(self, runs: list[int], arrivals: list[int]) -> F64:
        """Each run's latest value strictly before the matching arrival."""
        if not runs:
            return np.zeros(0)
        order, keys, span = self._sorted_by_run()
        run_a = np.asarray(runs, np.int64)
        at = np.searchsorted(keys, run_a * span + np.asarray(arrivals, np.int64)) - 1
        found = at >= 0
        found[found] = self.run[order[at[found]]] == run_a[found]
        result = np.array([self.latest_before.get(r, np.nan) for r in runs])
        result[found] = self.value[order[at[found]]]
        return result

    def _sums(
        self, membership: Membership, members_before: list[int]
    ) -> tuple[F64, F64, I64, Bool]:
        """Size, sum and sum of squares of the member set as of each point (shifted values),
        and whether the point's own run is a member.

        Only members' points change the sums, and members are few (k of perhaps thousands of
        runs): the running sums are taken over those points alone, then spread to every point.
        """
        n = len(self.run)
        if membership.entry:
            runs = np.fromiter(membership.entry, np.int64, len(membership.entry))
            table = np.full(int(max(runs.max(), self.run.max(initial=0))) + 1, _NEVER, np.int64)
            table[runs] = list(membership.entry.values())
            entry = table[self.run]
            table[:] = _NEVER
            if membership.leave:
                table[np.fromiter(membership.leave, np.int64)] = list(membership.leave.values())
            member = (entry <= self.arrival) & (self.arrival < table[self.run])
        else:
            entry = np.full(n, _NEVER, np.int64)
            member = np.zeros(n, bool)
        at = np.flatnonzero(member)
        was = entry[at] < self.arrival[at]
        v = self._shifted[at]
        p = np.where(was, self._prev_shifted[at], 0.0)
        d1, d2, dc = v - p, v * v - p * p, (~was).astype(np.int64)
        if membership.leave:
            # A run leaves when another enters: at that entering point, itself a member point.
            gone_runs, gone_at = list(membership.leave), list(membership.leave.values())
            where = np.searchsorted(at, np.searchsorted(self.arrival, gone_at))
            gone = self.latest_as_of(gone_runs, gone_at) - self.shift
            np.subtract.at(d1, where, gone)
            np.subtract.at(d2, where, gone * gone)
            np.subtract.at(dc, where, 1)
        start = [self.latest_before[m] - self.shift for m in members_before]
        zero = np.zeros(1)
        c1 = np.concatenate([zero, np.cumsum(d1)]) + sum(start)
        c2 = np.concatenate([zero, np.cumsum(d2)]) + sum(x * x for x in start)
        cn = np.concatenate([[0], np.cumsum(dc)]) + len(members_before)
        changes = np.cumsum(member)  # member points up to and including each point
        return c1[changes], c2[changes], cn[changes], member

    def zscores(
        self,
        window: int,
        members: dict[int, list[int]],
        rank: RankKey,
        min_baseline: int = 2,
        sigma_floor: float = 0.0,
    ) -> F64:
        """z of every point against its `window` baseline (NaN where undefined: fewer than
        `min_baseline` runs, or no spread and no `sigma_floor`).

        `members[k]` lists the k most recently created runs that had logged before the batch.
        """
        t1, t2, tn, _ = self._sums(self.membership(members[window], window, rank), members[window])
        u1, u2, un, in_u = self._sums(
            self.membership(members[window + 1], window + 1, rank), members[window + 1]
        )
        v = self._shifted
        n = np.where(in_u, un - 1, tn)
        s1 = np.where(in_u, u1 - v, t1)
        s2 = np.where(in_u, u2 - v * v, t2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n
            variance = (s2 - s1 * mean) / (n - 1)
            spread = variance > _RELATIVE_VARIANCE_FLOOR * (s2 / n)
            if sigma_floor > 0:  # (the spread as measured, however small: at least the floor)
                sd = np.maximum(np.sqrt(np.maximum(variance, 0.0)), sigma_floor)
                defined = n >= min_baseline
            else:
                sd = np.sqrt(np.where(spread, variance, 1.0))
                defined = (n >= min_baseline) & spread
            z: F64 = np.where(defined, (v - mean) / sd, np.nan)
        return z

    def robust_zscores(
        self,
        window: int,
        members: dict[int, list[int]],
        rank: RankKey,
        min_baseline: int = 2,
        sigma_floor: float = 0.0,
    ) -> F64:
        """z = (value − median) / max(MAD / 0.6745, `sigma_floor`) of every point against the
        baseline `zscores` reads (NaN where undefined).

        A median needs the baseline's values, not running sums: they are gathered for a block
        of points at a time, per stretch of points over which the `window + 1` most recent
        runs stay the same (they change only where a run logs its first value). The baseline
        is those runs without the point's own run, else without the least recent of them.
        """
        n = len(self.run)
        z = np.full(n, np.nan)
        if not n:
            return z
        inside = self.membership(members[window + 1], window + 1, rank)
        _, entry, leave = inside._intervals
        changes = np.union1d(entry[entry >= 0], leave[leave != _NEVER])
        starts = np.union1d([0], np.searchsorted(self.arrival, changes))
        for start, end in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
            if start >= end:
                continue
            runs = sorted(inside.at(int(self.arrival[start])), key=rank, reverse=True)
            if not runs:
                continue
            block = max(1, _GATHERED_AT_ONCE // len(runs))
            for lo in range(start, end, block):
                points = np.arange(lo, min(end, lo + block))
                z[points] = self._robust_block(
                    points, np.array(runs, np.int64), window, min_baseline, sigma_floor
                )
        return z

    def _robust_block(
        self, points: I64, runs: I64, window: int, min_baseline: int, sigma_floor: float
    ) -> F64:
        """`robust_zscores` at `points`, whose `window + 1` most recent runs are `runs`
        (most recent first)."""
        values = self._latest_matrix(runs, self.arrival[points])
        own = runs[None, :] == self.run[points][:, None]
        scored_in = own.any(axis=1)
        left_out = own.copy()
        if len(runs) == window + 1:  # else the baseline is every one of them
            left_out[~scored_in, -1] = True  # (the least recent)
        values[left_out] = np.nan
        count = np.count_nonzero(~np.isnan(values), axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # (a row with no values: NaN)
            median = np.nanmedian(values, axis=1)
            mad = np.nanmedian(np.abs(values - median[:, None]), axis=1)
        sd = np.maximum(mad / 0.6745, sigma_floor)
        defined = (count >= min_baseline) & (sd > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z: F64 = np.where(defined, (self.value[points] - median) / sd, np.nan)
        return z

    def _latest_matrix(self, runs: I64, arrivals: I64) -> F64:
        """Each run's latest value strictly before each arrival: (len(arrivals), len(runs))."""
        order, keys, span = self._sorted_by_run()
        at = np.searchsorted(keys, runs[None, :] * span + arrivals[:, None]) - 1
        found = at >= 0
        found[found] = self.run[order[at[found]]] == np.broadcast_to(runs, at.shape)[found]
        before = np.array([self.latest_before.get(int(r), np.nan) for r in runs])
        values = np.broadcast_to(before, at.shape).copy()
        values[found] = self.value[order[at[found]]]
        return values

    def baselines(
        self, points: list[int], window: int, members: dict[int, list[int]], rank: RankKey
    ) -> list[list[float]]:
        """The baseline values of each point of `points` (for the firing records), most recent
        run first; the values of all of them are looked up at once."""
        inside = self.membership(members[window + 1], window + 1, rank)
        outside = self.membership(members[window], window, rank)
        chosen: list[list[int]] = []
        for i in points:
            arrival, run = int(self.arrival[i]), int(self.run[i])
            in_u = inside.at(arrival)
            runs = [m for m in in_u if m != run] if run in in_u else outside.at(arrival)
            runs.sort(key=rank, reverse=True)
            chosen.append(runs)
        sizes = [len(runs) for runs in chosen]
        arrivals = np.repeat(self.arrival[np.asarray(points, np.int64)], sizes).tolist()
        values = self.latest_as_of([m for runs in chosen for m in runs], arrivals).tolist()
        out, at = [], 0
        for runs in chosen:
            out.append(values[at : at + len(runs)])
            at += len(runs)
        return out
