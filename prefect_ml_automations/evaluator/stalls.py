"""Stalled runs (`RUN_STALLED`): when a running run's quiet time — no metric point, heartbeat
or state since its last sign of life — reached an automation's `after`.

A stall is judged on the clock, in one of two ways, whichever comes first:

- **a late sign of life**: the run's next event (in arrival order) is `after` or more later than
  its last sign of life, and the run was running meanwhile — it was stalled, and that is known
  as soon as the event arrives, whatever the batching (`QuietSpells`);
- **the clock**: the evaluator is told `now`, and a running run's last sign of life is `after`
  or more before it (`due`).

Either way the stall's time is the moment its quiet time reached `after` (the last sign of life
+ `after`), so both ways give the same firing, and a stall — the quiet time after one sign of
life — is judged once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from prefect_ml_automations.evaluator.batch import NO_TIME
from prefect_ml_automations.evaluator.series import stable_argsort

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Bool = npt.NDArray[np.bool_]


@dataclass
class QuietSpells:
    """The run events of a batch, grouped by run (arrival order within), each with the run's
    last sign of life before it and whether the run was running then.

    >>> spells = QuietSpells.of(
    ...     runs=np.array([0, 0, 0]), ts=np.array([0, 10, 40]), active=np.array([NO_TIME]),
    ...     running=np.array([False]), sets=np.array([1, -1, -1], np.int8))
    >>> spells.before.tolist(), spells.running.tolist()
    ([-9223372036854775808, 0, 10], [False, True, True])
    >>> spells.ended(after_ns=30, judged=np.array([NO_TIME]), watched=np.array([True])).tolist()
    [2]
    """

    #: Positions of the events in the batch's run columns, grouped by run.
    rows: I64
    runs: I64
    ts: I64
    #: The run's last sign of life before the event (NO_TIME: none).
    before: I64
    #: Whether the run's state just before the event was `running`.
    running: Bool

    @classmethod
    def of(
        cls,
        *,
        runs: I64,
        ts: I64,
        active: I64,
        running: Bool,
        sets: I8,
        rows: I64 | None = None,
        local: npt.NDArray[np.integer[Any]] | None = None,
    ) -> QuietSpells:
        """`runs` (run codes) and `ts` per event in arrival order; `active` and `running` per
        run code as they stood before the batch; `sets` per event: 1 if it is a state event
        that made the run running, 0 if one that made it anything else, -1 otherwise. `rows`:
        only these events (positions; None: all); `local`: small codes that group the events
        as `runs` does (a faster sort)."""
        rows = np.arange(len(runs)) if rows is None else rows
        order = rows[stable_argsort(runs[rows] if local is None else local[rows])]
        r, t, s = runs[order], ts[order], sets[order]
        n = len(order)
        start = np.ones(n, bool)
        start[1:] = r[1:] != r[:-1]
        # Each run's newest time up to each event (inclusive), then shifted to "before it".
        newest = pd.Series(t).groupby(r, sort=False).cummax().to_numpy(np.int64)
        before = np.empty(n, np.int64)
        before[1:] = newest[:-1]
        before[start] = NO_TIME
        before = np.maximum(before, active[r])
        # The state each event leaves the run in (state events), carried forward per run.
        group_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
        last_set = np.maximum.accumulate(np.where(s >= 0, np.arange(n), -1))
        after_event = np.where(last_set >= group_start, s[np.maximum(last_set, 0)] == 1, running[r])
        running_before = np.empty(n, bool)
        running_before[1:] = after_event[:-1]
        running_before[start] = running[r[start]]
        return cls(order, r, t, before, running_before)

    def ended(self, *, after_ns: int, judged: I64, watched: Bool) -> I64:
        """Positions (in `rows`' order) of the events that ended a stall of at least `after_ns`
        not judged yet (`judged`: per run code, the sign of life whose stall was judged;
        `watched`: per run code, whether the automation watches the run's project)."""
        known = self.before != NO_TIME
        quiet = np.where(known, self.ts - np.where(known, self.before, 0), 0)
        return np.flatnonzero(
            known
            & self.running
            & watched[self.runs]
            & (quiet >= after_ns)
            & (self.before > judged[self.runs])
        )


def due(
    *, active: I64, running: Bool, judged: I64, watched: Bool, after_ns: int, now_ns: int
) -> I64:
    """The run codes whose stall of `after_ns` is due by `now_ns` and not judged yet."""
    known = active != NO_TIME
    return np.flatnonzero(
        known
        & running
        & watched
        & (active > judged)
        & (np.where(known, active, now_ns) <= now_ns - after_ns)
    )
