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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
LongArray = npt.NDArray[np.floating[Any]]

_NEVER = np.iinfo(np.int64).max
#: Below this fraction of the mean square, a baseline's variance is rounding noise: std 0.
_RELATIVE_VARIANCE_FLOOR = 1e-12

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


@dataclass
class ZScoreBatch:
    """The trigger points of one (project, metric) in arrival order, for z-scores."""

    run: I64
    value: F64
    arrival: I64
    #: The run's latest value before each point (NaN: the run had logged nothing).
    prev: F64
    #: Latest value before the batch of runs in the members' lists.
    latest_before: dict[int, float]
    #: Values are shifted by this before summing squares (they are near it, so sums stay small).
    shift: float

    def __post_init__(self) -> None:
        self._runs, self._local = np.unique(self.run, return_inverse=True)
        first = np.isnan(self.prev)
        self.entering = list(
            zip(self.arrival[first].tolist(), self.run[first].tolist(), strict=True)
        )
        self._by_run = np.argsort(self._local, kind="stable")
        self._bounds = np.searchsorted(self._local[self._by_run], np.arange(len(self._runs) + 1))

    def _interval(self, membership: Membership) -> tuple[I64, I64]:
        entry = np.full(len(self._runs), _NEVER, np.int64)
        leave = np.full(len(self._runs), _NEVER, np.int64)
        where = {run: i for i, run in enumerate(self._runs.tolist())}
        for run, arrival in membership.entry.items():
            if run in where:
                entry[where[run]] = arrival
        for run, arrival in membership.leave.items():
            if run in where:
                leave[where[run]] = arrival
        return entry[self._local], leave[self._local]

    def latest_as_of(self, run: int, arrival: int) -> float:
        """The run's latest value strictly before `arrival`."""
        local = int(np.searchsorted(self._runs, run))
        if local < len(self._runs) and self._runs[local] == run:
            idx = self._by_run[self._bounds[local] : self._bounds[local + 1]]
            before = idx[self.arrival[idx] < arrival]
            if len(before):
                return float(self.value[before[-1]])
        return self.latest_before[run]

    def sums(
        self, membership: Membership, members_before: list[int]
    ) -> tuple[LongArray, LongArray, I64, npt.NDArray[np.bool_]]:
        """Size, sum and sum of squares of the member set as of each point (shifted values),
        and whether the point's own run is a member."""
        entry, leave = self._interval(membership)
        member = (entry <= self.arrival) & (self.arrival < leave)
        was = entry < self.arrival
        v = self.value - self.shift
        p = np.where(was, self.prev - self.shift, 0.0)
        d1 = np.where(member, v - p, 0.0).astype(np.longdouble)
        d2 = np.where(member, v * v - p * p, 0.0).astype(np.longdouble)
        dc = (member & ~was).astype(np.int64)
        for run, arrival in membership.leave.items():
            # A run leaves when another enters: at that entering point (arrivals are sorted).
            i = int(np.searchsorted(self.arrival, arrival))
            gone = self.latest_as_of(run, arrival) - self.shift
            d1[i] -= gone
            d2[i] -= gone * gone
            dc[i] -= 1
        start = [self.latest_before[m] - self.shift for m in members_before]
        s1 = np.cumsum(d1) + np.longdouble(sum(start))
        s2 = np.cumsum(d2) + np.longdouble(sum(x * x for x in start))
        count = np.cumsum(dc) + len(members_before)
        return s1, s2, count, member

    def zscores(
        self, window: int, members: dict[int, list[int]], rank: RankKey
    ) -> tuple[F64, dict[int, list[int]]]:
        """z of every point against the `window` baseline; and the member lists after the batch.

        `members[k]` lists the k most recently created runs that had logged before the batch.
        """
        after: dict[int, list[int]] = {}
        result = []
        for k in (window, window + 1):
            membership = Membership.walk(members.get(k, []), self.entering, k, rank)
            after[k] = membership.after
            result.append(self.sums(membership, members.get(k, [])))
        (t1, t2, tn, _), (u1, u2, un, in_u) = result
        v = (self.value - self.shift).astype(np.longdouble)
        n = np.where(in_u, un - 1, tn)
        s1 = np.where(in_u, u1 - v, t1)
        s2 = np.where(in_u, u2 - v * v, t2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n
            variance = (s2 - s1 * mean) / (n - 1)
            defined = (n >= 2) & (variance > _RELATIVE_VARIANCE_FLOOR * (s2 / n))
            z = np.where(defined, (v - mean) / np.sqrt(np.where(defined, variance, 1)), np.nan)
        return z.astype(np.float64), after

    def baseline(
        self, i: int, window: int, members: dict[int, list[int]], rank: RankKey
    ) -> list[float]:
        """The baseline values of point `i` (for the firing record), most recent run first."""
        arrival, run = int(self.arrival[i]), int(self.run[i])
        found = []
        for k in (window + 1, window):
            membership = Membership.walk(
                members.get(k, []), [e for e in self.entering if e[0] <= arrival], k, rank
            )
            found.append(membership.after)
        in_u, in_t = found
        chosen = [m for m in in_u if m != run] if run in in_u else in_t
        return [self.latest_as_of(m, arrival) for m in chosen]
