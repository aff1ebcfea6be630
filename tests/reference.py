"""An independent, deliberately naive reading of SPEC §3: one event at a time, whole histories.

This is what a user would hand-write: per run and metric a dict of every point, windows taken by
sorting the history at each point, the z-score baseline recomputed from scratch. It shares no
code with the evaluator (only the automation models, to read configs), so agreement between the
two is evidence, not tautology. The benchmark times it as the "naive loop".
"""

from __future__ import annotations

import math
import operator
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect_ml_automations.automations import (
    Automation,
    RunMetric,
    RunMetricChange,
    RunMetricZScore,
    RunStalled,
    RunState,
)

OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
AGG = {"average": lambda xs: math.fsum(xs) / len(xs), "min": min, "max": max}


@dataclass
class RefRun:
    created: float
    name: str | None = None
    user: str | None = None
    state: str | None = None
    #: The last sign of life (the newest time of any of its events).
    active: float | None = None
    #: Whether it was ever seen finished (a baseline of finished runs takes it for good).
    finished: bool = False
    # metric -> {order: value}
    points: dict[str, dict[float, float]] = field(default_factory=dict)


@dataclass
class RefFiring:
    automation: str
    run_id: str | None
    key: Any  # step / timestamp / artifact identity
    value: float | None


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Reference:
    def __init__(self, automations: list[Automation]) -> None:
        self.automations = [a for a in automations if a.enabled]
        self.runs: dict[tuple[str, str], RefRun] = {}
        self.last_fired: dict[tuple[str, tuple[str, str]], float] = {}
        #: Per (automation, run): trigger points in a row where the condition held, and whether
        #: the run fired since it last did not hold (for_points, rearm).
        self.streak: dict[tuple[str, tuple[str, str]], int] = {}
        self.spent: dict[tuple[str, tuple[str, str]], bool] = {}
        self.seen: set[tuple[Any, ...]] = set()
        #: Per (stall automation, run): the sign of life whose stall was judged.
        self.judged: dict[tuple[str, tuple[str, str]], float] = {}
        self.rank = {a.name: i for i, a in enumerate(self.automations)}

    def feed(
        self,
        events: list[dict[str, Any]],
        since: float | None = None,
        now: float | None = None,
    ) -> list[RefFiring]:
        out: list[RefFiring] = []
        for e in events:
            kind = e["type"]
            if kind in ("METRIC", "RUN_STATE", "RUN_HEARTBEAT"):
                mine: list[RefFiring] = []
                self._run_event(e, since, mine)
                out += sorted(mine, key=lambda f: self.rank[f.automation])
            else:
                self._artifact(e, since, out)
        if now is not None:
            for a in self.automations:
                if isinstance(a.event, RunStalled):
                    after = a.event.after.total_seconds()
                    for key, run in sorted(self.runs.items(), key=lambda kv: (kv[1].active, kv[0])):
                        if run.active is not None and run.active + after <= now:
                            self._stall(a, key, run, since, out)
        return out

    def _stall(self, a: Automation, key: tuple[str, str], run: RefRun, since, out) -> None:  # type: ignore[no-untyped-def]
        """A stall of `run` after its last sign of life, if it is running and not judged."""
        if a.scope.project != key[0] or run.state != "running" or run.active is None:
            return
        if run.active <= self.judged.get((a.name, key), -math.inf):
            return
        self.judged[(a.name, key)] = run.active
        at = run.active + a.event.after.total_seconds()  # type: ignore[union-attr]
        if (
            (since is None or at >= since)
            and self._admitted(a, run)
            and self._cooldown_ok(a, key, at)
        ):
            self.last_fired[(a.name, key)] = at
            out.append(RefFiring(a.name, key[1], ("stall", run.active), None))

    def _run_event(self, e: dict[str, Any], since: float | None, out: list[RefFiring]) -> None:
        key = (e["project"], e["run_id"])
        ts = _ts(e["timestamp"])
        run = self.runs.get(key)
        if run is None:
            created = _ts(e["run_created_at"]) if e.get("run_created_at") else ts
            run = self.runs[key] = RefRun(created)
        if e.get("run_name") is not None:
            run.name = e["run_name"]
        if e.get("user") is not None:
            run.user = e["user"]
        for a in self.automations:  # a sign of life `after` or more after the last one
            stalled = isinstance(a.event, RunStalled) and run.active is not None
            if stalled and ts - run.active >= a.event.after.total_seconds():  # type: ignore[union-attr,operator]
                self._stall(a, key, run, since, out)
        if e["type"] == "RUN_STATE":
            self._state(key, run, e, ts, since, out)
        elif e["type"] == "METRIC":
            self._metric(key, run, e, ts, since, out)
        run.active = ts if run.active is None else max(run.active, ts)

    def _admitted(self, a: Automation, run: RefRun) -> bool:
        f = a.filters
        if f is None:
            return True
        import re

        if f.user is not None and run.user != f.user:
            return False
        return not (f.run_name is not None and not re.search(f.run_name, run.name or ""))

    def _cooldown_ok(self, a: Automation, key: tuple[str, str], ts: float) -> bool:
        last = self.last_fired.get((a.name, key))
        return last is None or ts >= last + a.cooldown.total_seconds()

    def _state(self, key, run, e, ts, since, out) -> None:  # type: ignore[no-untyped-def]
        ident = ("state", key, e["state"].lower(), ts)
        if ident in self.seen:
            return
        self.seen.add(ident)
        state = {"crashed": "failed"}.get(e["state"].lower(), e["state"].lower())
        run.finished = run.finished or state == "finished"
        entered = state != run.state
        run.state = state
        for a in self.automations:
            if not isinstance(a.event, RunState) or a.scope.project != key[0]:
                continue
            fires = entered and state in a.event.states and (since is None or ts >= since)
            if fires and self._admitted(a, run) and self._cooldown_ok(a, key, ts):
                self.last_fired[(a.name, key)] = ts
                out.append(RefFiring(a.name, key[1], ("state", state, ts), None))

    def _metric(self, key, run, e, ts, since, out) -> None:  # type: ignore[no-untyped-def]
        value = e["value"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or abs(value) > 1e150  # (squares of larger values overflow: they do not count)
        ):
            return
        metric = e["metric"]
        order = e["step"] if e.get("step") is not None else ts
        series = run.points.setdefault(metric, {})
        if order in series:
            return
        late = bool(series) and order < max(series)
        series[order] = float(value)
        if late:
            return
        timely = since is None or ts >= since
        history = [series[o] for o in sorted(series)]
        for a in self.automations:
            trigger = a.event
            if getattr(trigger, "metric", None) != metric or a.scope.project != key[0]:
                continue
            measured = self._measure(trigger, key, history)
            mine = (a.name, key)
            # The streak counts every trigger point, timely or not (like the windows).
            self.streak[mine] = self.streak.get(mine, 0) + 1 if measured is not None else 0
            if measured is None:
                self.spent[mine] = False
            if (
                measured is None
                or not timely
                or self.streak[mine] < trigger.for_points
                or not self._admitted(a, run)
            ):
                continue
            if trigger.rearm:
                if self.spent.get(mine, False):
                    continue
            elif not self._cooldown_ok(a, key, ts):
                continue
            self.spent[mine] = True
            self.last_fired[mine] = ts
            out.append(RefFiring(a.name, key[1], order, measured))

    def _measure(self, t: Any, key: tuple[str, str], history: list[float]) -> float | None:
        if isinstance(t, RunMetric):
            if len(history) < t.window:
                return None
            v = AGG[t.aggregation](history[-t.window :])
            return v if OPS[t.operator](v, t.threshold) else None
        if isinstance(t, RunMetricChange):
            n = t.current_window + t.prior_window
            if len(history) < n:
                return None
            window = history[-n:]
            prior = AGG[t.aggregation](window[: t.prior_window])
            current = AGG[t.aggregation](window[t.prior_window :])
            if t.change_type == "relative":
                if prior == 0:
                    return None
                change = (current - prior) / abs(prior)
            else:
                change = current - prior
            hit = {
                "increase": change >= t.amount,
                "decrease": change <= -t.amount,
                "any": abs(change) >= t.amount,
            }[t.direction]
            return change if hit else None
        if isinstance(t, RunMetricZScore):
            project, run_id = key
            others = [
                (r.created, rid, r.points[t.metric])
                for (p, rid), r in self.runs.items()
                if p == project
                and rid != run_id
                and r.points.get(t.metric)
                and (t.baseline == "all" or r.finished)
            ]
            others.sort(reverse=True)
            baseline = [pts[max(pts)] for _, _, pts in others[: t.window]]
            if len(baseline) < t.min_baseline:
                return None
            if t.method == "median_mad":
                center = statistics.median(baseline)
                mad = statistics.median([abs(b - center) for b in baseline])
                sd = max(mad / 0.6745, t.sigma_floor)
            else:
                center = statistics.fmean(baseline)
                sd = max(statistics.stdev(baseline), t.sigma_floor)
            if sd == 0:
                return None
            z = (history[-1] - center) / sd
            hit = {
                "above": z >= t.threshold,
                "below": z <= -t.threshold,
                "either": abs(z) >= t.threshold,
            }[t.direction]
            return z if hit else None
        raise TypeError(t)

    def _artifact(self, e: dict[str, Any], since: float | None, out: list[RefFiring]) -> None:
        ident = (
            e["type"],
            e.get("registry"),
            e.get("project"),
            e["collection"],
            e["version"],
            e.get("alias"),
            e.get("tag"),
            _ts(e["timestamp"]),
        )
        repeated = ident in self.seen
        self.seen.add(ident)
        import re

        for a in self.automations:
            t = a.event
            if t.type != e["type"] or repeated:
                continue
            scope = a.scope
            if hasattr(scope, "registry"):
                if e.get("registry") != scope.registry:
                    continue
                if scope.collection is not None and scope.collection != e["collection"]:
                    continue
            else:
                if e.get("project") != scope.project:
                    continue
                if scope.collection is not None and scope.collection != e["collection"]:
                    continue
                if scope.collection_regex is not None and not re.search(
                    scope.collection_regex, e["collection"]
                ):
                    continue
            pattern = (
                getattr(t, "alias", None)
                if e["type"] == "ADD_ARTIFACT_ALIAS"
                else getattr(t, "tag", None)
            )
            change = e.get("alias") or e.get("tag") or ""
            if pattern is not None and not re.search(pattern, change):
                continue
            if since is not None and _ts(e["timestamp"]) < since:
                continue
            out.append(RefFiring(a.name, None, ident, None))
