"""How long a run's condition has held: `for_points` (fire once it held K points in a row) and
`rearm` (after a firing, fire again only once it stopped holding), for all trigger points at once.

A run's trigger points come side by side and in arrival order (the layout of `series`). The
streak at a point is the number of points in a row, ending there, at which the condition held —
continuing the streak the run had before the batch. A *spell* is a stretch of such points
between two points where the condition did not hold; spell 0 is the one the run was in before
the batch. With `rearm`, a run fires at most once per spell.

>>> runs, holds = np.array([0, 0, 0, 0, 1]), np.array([True, True, False, True, True])
>>> walk = StreakWalk.of(runs, holds, np.array([2, 0]), np.array([True, False]))
>>> walk.streak.tolist(), walk.spell.tolist()
([3, 4, 0, 1, 1], [0, 0, 1, 1, 0])
>>> walk.rearmed(np.array([0, 1, 3, 4])).tolist()  # run 0 fired in spell 0 before the batch
[False, False, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class StreakWalk:
    """Streaks and spells at every trigger point of a batch (`runs` side by side)."""

    runs: I64
    holds: Bool
    #: Points in a row at which the condition held, ending at each point (0 where it did not).
    streak: I64
    #: Each point's spell within its run (0: the spell the run was in before the batch).
    spell: I64
    #: Per run code: whether the run fired during its spell before the batch.
    spent_before: Bool

    @classmethod
    def of(cls, runs: I64, holds: Bool, streak_before: I64, spent_before: Bool) -> StreakWalk:
        n = len(runs)
        index = np.arange(n)
        first = np.ones(n, bool)
        first[1:] = runs[1:] != runs[:-1]
        run_start = np.maximum.accumulate(np.where(first, index, 0))
        broken = ~holds
        last_break = np.maximum.accumulate(np.where(broken, index, -1))
        unbroken = last_break < run_start  # held at every point of the run so far in the batch
        streak = np.where(
            holds,
            np.where(unbroken, index - run_start + 1 + streak_before[runs], index - last_break),
            0,
        )
        breaks = np.cumsum(broken)
        spell: I64 = breaks - (breaks[run_start] - broken[run_start])
        return cls(runs, holds, streak, spell, spent_before)

    def rearmed(self, candidates: I64) -> Bool:
        """Which candidates (ascending point indices) fire with `rearm`: the first of each
        spell, unless the run already fired in the spell it was in before the batch."""
        runs, spell = self.runs[candidates], self.spell[candidates]
        first = np.ones(len(candidates), bool)
        first[1:] = (runs[1:] != runs[:-1]) | (spell[1:] != spell[:-1])
        spent: Bool = (spell == 0) & self.spent_before[runs]
        return first & ~spent

    def remember(
        self, fired: I64, orders: I64, streak: I64, spent: Bool, counted_to: I64, cap: int
    ) -> None:
        """Write each run's streak after the batch (capped at `cap`), whether it fired during
        its last spell and the order (step) of its last trigger point into `streak`, `spent`
        and `counted_to` (by run code); `fired` are the points that fired, `orders` every
        point's order."""
        if not len(self.runs):
            return
        last = np.ones(len(self.runs), bool)
        last[:-1] = self.runs[1:] != self.runs[:-1]
        runs = self.runs[last]
        final_spell = np.zeros(int(runs.max()) + 1, np.int64)
        final_spell[runs] = self.spell[last]
        fired_in_final = np.zeros(len(final_spell), bool)
        in_final = self.spell[fired] == final_spell[self.runs[fired]]
        fired_in_final[self.runs[fired][in_final]] = True
        carried = (final_spell[runs] == 0) & spent[runs]  # still in the spell of before
        ends_held = self.holds[last]
        spent[runs] = ends_held & (fired_in_final[runs] | carried)
        streak[runs] = np.minimum(self.streak[last], cap)
        counted_to[runs] = orders[last]
