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

A baseline of finished runs only (`baseline: finished`) is the same with another entry: a run
enters when it has both logged the metric and been seen `finished`, at the later of the two —
often the state event that finished it, which is no point of the metric. Its value enters the
sums there, from the first point after it. A run seen finished stays finished (a resumed run is
not taken out): so membership is still one interval of arrival time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
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
#: A running sum of squares is off by at most about this fraction of the sizes of the squares
#: added and taken out to reach it: a baseline spread within that is none (a flat baseline
#: whose runs came and went around it would otherwise be a 10⁷σ outlier's).
_ROUNDING = 8 * float(np.finfo(np.float64).eps)

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
            if run in entry:
                continue  # (entered already: a run enters once)
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
class _Moved:
    """The sizes of the squares added to and taken out of a running sum of squares, summed up
    to each change (`cumulative`; `changes`: the changes up to each point): the sum of squares
    is off by at most about `_ROUNDING` times that."""

    cumulative: F64
    changes: I64

    @property
    def most(self) -> float:
        return float(self.cumulative[-1])

    def at(self, points: I64) -> F64:
        moved: F64 = self.cumulative[self.changes[points]]
        return moved


@dataclass
class _Changes:
    """Runs entering (sign +1) or leaving (−1) a member set between points: each counts from
    the first point after it (`position`), with the run's latest value then (shifted)."""

    position: I64
    latest: F64
    sign: F64

    @classmethod
    def of(cls, batch: ZScoreBatch, runs: I64, arrivals: I64, sign: F64) -> _Changes | None:
        position = np.searchsorted(batch.arrival, arrivals)
        seen = position < len(batch.arrival)  # (after the last point: no point sees it)
        if not seen.any():
            return None
        latest = batch.latest_as_of(runs[seen].tolist(), arrivals[seen].tolist())
        return cls(position[seen], latest - batch.shift, sign[seen])


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
    #: (arrival, run) in arrival order where runs enter a baseline of finished runs: each run
    #: not finished before the batch, at the later of its first value and its `finished` state.
    finishes: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        first = np.isnan(self.prev)
        self.entering = list(
            zip(self.arrival[first].tolist(), self.run[first].tolist(), strict=True)
        )
        self._memberships: dict[tuple[int, bool], Membership] = {}
        self._shifted = self.value - self.shift
        self._prev_shifted = np.where(first, 0.0, self.prev - self.shift)
        self._by_run: tuple[I64, I64] | None = None

    def membership(
        self, members: list[int], k: int, rank: RankKey, finished: bool = False
    ) -> Membership:
        """Membership of the k most recent runs (finished ones only, with `finished`) over the
        batch, from `members` before it."""
        key = (k, finished)
        if key not in self._memberships:
            entering = self.finishes if finished else self.entering
            self._memberships[key] = Membership.walk(members, entering, k, rank)
        return self._memberships[key]

    def _sorted_by_run(self) -> tuple[I64, I64, int]:
        """The points sorted by (run, arrival), as one int64 key run · span + arrival each
        (searched for a run's latest point before an arrival, at most one past the last
        point's): the order, the keys, the span."""
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
    ) -> tuple[F64, F64, I64, _Moved, Bool]:
        """Size, sum and sum of squares of the member set as of each point (shifted values),
        the squares moved through the sums to get there (`_Moved`), and whether the point's
        own run is a member.

        A member's point replaces its run's previous value in the sums, or adds it where the
        run enters at that very point. A run entering elsewhere (at the state event that
        finished it) adds its latest value there, and a leaving run takes its latest value out:
        those changes count from the first point after them.
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
        da = v * v + p * p
        entered_runs, entered_at, left_at = membership._intervals
        # The runs that leave at another's entry at its point: taken out at that member point.
        gone_runs, gone_at = entered_runs[left_at != _NEVER], left_at[left_at != _NEVER]
        where = np.searchsorted(self.arrival, gone_at)
        at_point = self._at_point(where, gone_at)
        if at_point.any():
            into = np.searchsorted(at, where[at_point])
            gone = self.latest_as_of(gone_runs[at_point].tolist(), gone_at[at_point].tolist())
            gone -= self.shift
            np.subtract.at(d1, into, gone)
            np.subtract.at(d2, into, gone * gone)
            np.subtract.at(dc, into, 1)
            np.add.at(da, into, gone * gone)
        # The rest happen between points (a run entering or leaving at a `finished` state).
        entering = entered_at >= 0
        entering[entering] = ~self._at_point(
            np.searchsorted(self.arrival, entered_at[entering]), entered_at[entering]
        )
        between = _Changes.of(
            self,
            np.concatenate([entered_runs[entering], gone_runs[~at_point]]),
            np.concatenate([entered_at[entering], gone_at[~at_point]]),
            np.concatenate([np.ones(int(entering.sum())), -np.ones(int((~at_point).sum()))]),
        )
        start = [self.latest_before[m] - self.shift for m in members_before]
        if between is None:
            changes = np.cumsum(member, dtype=np.int64)  # member points up to each point
        else:  # (merged with the member points' changes, in position order)
            position = np.concatenate([at, between.position])
            order = stable_argsort(position)
            d1 = np.concatenate([d1, between.sign * between.latest])[order]
            d2 = np.concatenate([d2, between.sign * between.latest**2])[order]
            dc = np.concatenate([dc, between.sign.astype(np.int64)])[order]
            da = np.concatenate([da, between.latest**2])[order]
            changes = np.cumsum(np.bincount(position, minlength=n))
        zero = np.zeros(1)
        squares = sum(x * x for x in start)
        c1 = np.concatenate([zero, np.cumsum(d1)]) + sum(start)
        c2 = np.concatenate([zero, np.cumsum(d2)]) + squares
        cn = np.concatenate([[0], np.cumsum(dc)]) + len(members_before)
        moved = _Moved(np.concatenate([zero, np.cumsum(da)]) + squares, changes)
        return c1[changes], c2[changes], cn[changes], moved, member

    def _at_point(self, where: I64, arrivals: I64) -> Bool:
        """Whether a point arrived at each of `arrivals` (`where`: their sorted positions)."""
        inside = where < len(self.arrival)
        found: Bool = inside.copy()
        found[inside] = self.arrival[where[inside]] == arrivals[inside]
        return found

    def zscores(
        self,
        window: int,
        members: dict[int, list[int]],
        rank: RankKey,
        min_baseline: int = 2,
        sigma_floor: float = 0.0,
        finished: bool = False,
    ) -> F64:
        """z of every point against its `window` baseline (NaN where undefined: fewer than
        `min_baseline` runs, or no spread and no `sigma_floor`); with `finished`, of finished
        runs only.

        `members[k]` lists the k most recently created runs (finished ones, with `finished`)
        that had logged before the batch.
        """
        k, k1 = window, window + 1
        t1, t2, tn, ta, _ = self._sums(self.membership(members[k], k, rank, finished), members[k])
        u1, u2, un, ua, in_u = self._sums(
            self.membership(members[k1], k1, rank, finished), members[k1]
        )
        v = self._shifted
        n = np.where(in_u, un - 1, tn)
        s1 = np.where(in_u, u1 - v, t1)
        s2 = np.where(in_u, u2 - v * v, t2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n
            centered = s2 - s1 * mean
            variance = centered / (n - 1)
            spread = variance > _RELATIVE_VARIANCE_FLOOR * (s2 / n)
            # Where the spread is within what rounding may have left in the sum of squares, it
            # is none. (Looked at only below the most it may have left anywhere: a few points.)
            most = _ROUNDING * (max(ta.most, ua.most) + float(np.max(v * v, initial=0.0)))
            near = np.flatnonzero(spread & (centered <= most))
            own = v[near] ** 2
            off = _ROUNDING * np.where(in_u[near], ua.at(near) + own, ta.at(near))
            spread[near] = centered[near] > off
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
        finished: bool = False,
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
        inside = self.membership(members[window + 1], window + 1, rank, finished)
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
        self,
        points: list[int],
        window: int,
        members: dict[int, list[int]],
        rank: RankKey,
        finished: bool = False,
    ) -> list[list[float]]:
        """The baseline values of each point of `points` (for the firing records), most recent
        run first; the values of all of them are looked up at once."""
        inside = self.membership(members[window + 1], window + 1, rank, finished)
        outside = self.membership(members[window], window, rank, finished)
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
