"""The cooldown (SPEC §3.8): a run fires at most once per automation per cooldown of event time.

After a firing at time t, the run's next firing needs a triggering time ≥ t + cooldown. The
candidates of a batch are walked in rounds, all runs at once: each round fires every run's first
eligible candidate and drops what came before it, so the work is the candidates times the
firings per run — not a Python loop over points.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from prefect_ml_automations.evaluator.batch import NO_TIME

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


def apply_cooldown(runs: I64, ts: I64, last_fired: I64, cooldown_ns: int) -> Bool:
    """Which candidates fire; updates `last_fired` (by run code) for those that do.

    `runs` and `ts` are the candidates grouped by run, in arrival order within a run.

    >>> last = np.full(2, NO_TIME)
    >>> apply_cooldown(np.array([0, 0, 0, 1]), np.array([0, 5, 10, 3]), last, 10).tolist()
    [True, False, True, True]
    >>> last.tolist()
    [10, 3]
    """
    n = len(runs)
    fired = np.zeros(n, bool)
    if n == 0:
        return fired
    boundary = np.ones(n, bool)
    boundary[1:] = runs[1:] != runs[:-1]
    group = np.cumsum(boundary) - 1
    group_run = runs[boundary]
    if cooldown_ns <= 0:
        fired[:] = True
    else:
        previous = last_fired[group_run]
        threshold = np.where(previous == NO_TIME, NO_TIME, previous + cooldown_ns)
        active = np.arange(n)
        while len(active):
            eligible = active[ts[active] >= threshold[group[active]]]
            if not len(eligible):
                break
            first = np.ones(len(eligible), bool)
            first[1:] = group[eligible][1:] != group[eligible][:-1]
            firing = eligible[first]
            fired[firing] = True
            threshold[group[firing]] = ts[firing] + cooldown_ns
            after = np.full(len(group_run), n, np.int64)
            after[group[firing]] = firing
            # Groups with no eligible candidate left are done; the rest go on after their firing.
            active = active[active > after[group[active]]]
    last_index = np.full(len(group_run), -1, np.int64)
    fired_idx = np.flatnonzero(fired)
    last_index[group[fired_idx]] = fired_idx  # the last write per group wins
    done = last_index >= 0
    last_fired[group_run[done]] = ts[last_index[done]]
    return fired
