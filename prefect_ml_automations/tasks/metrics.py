"""The metric frame, and the metric windows of SPEC §3 as Prefect tasks over it.

A *metric frame* is a long-format pandas DataFrame of metric points, one row per point, its row
order the order in which the points arrived (SPEC §3, rule 2):

============== ===================================================================== =========
column         what it holds                                                         required
============== ===================================================================== =========
project        the project the run is in                                             yes
run_id         the run (a run is a `(project, run_id)` pair)                         yes
run_name       the run's display name                                                no
user           who started the run                                                   no
run_created_at when the run was created (NaT: unknown)                               no
metric         the metric's name; system metrics are named `system.*` / `system/*`   yes
step           the step (an integer; may be missing for system metrics only)         yes
value          what was logged: only finite numbers count (not booleans)             yes
timestamp      when the point was logged (naive means UTC)                           yes
============== ===================================================================== =========

`events_to_frame` turns normalized `METRIC` events into one; `validate_metric_frame` checks one a
user built. A frame may leave out the three optional columns (then nothing is known of them).

The tasks return the rows of one metric, in arrival order and with their index and every column
kept, plus the columns they compute — the very numbers the evaluator judges automations on:

- `rolling_aggregate` adds `aggregate` (a `RUN_METRIC`'s measure),
- `window_change` adds `current`, `prior` and `change` (a `RUN_METRIC_CHANGE`'s),
- `cross_run_zscore` adds `z` (a `RUN_METRIC_ZSCORE`'s).

Points follow SPEC §3 rules 3 and 4 as the evaluator applies them: per run, ordered by step
(system metrics without a step by time); a point with a `(project, run_id, metric, step)` seen
before is a re-delivery and changes nothing; values that are not finite numbers are not counted;
a late point (a step below the run's newest one) joins the series for later windows but is not
itself a trigger point. The added columns hold a number only on *trigger points* — the counted
points that extend their run's series — whose window is full (and, for a relative change or a
z-score, defined). Every other row holds NaN: rows that are not counted, re-deliveries, late
points, and trigger points whose window is not full yet.

The windows are the evaluator's own (`prefect_ml_automations.evaluator`): the frame's columns are
handed to its vectorized core, never recomputed by a second algorithm, and read as the evaluator
reads a stream of these points (in slices of 1M, from a fresh state). So for any frame
`rolling_aggregate(...)["aggregate"] > 0.6` holds exactly where a `RUN_METRIC` automation
`average(metric, 5) > 0.6` with no cooldown fires on the same points, number for number — the
evaluator's own choices included (a z-score baseline whose spread is below its rounding floor
counts as having none). A task costs about what the evaluator costs on the same points
(benchmarks/frame_tasks.py).

>>> import pandas as pd
>>> frame = pd.DataFrame({
...     "project": "p", "run_id": "r1", "metric": "acc",
...     "step": [0, 1, 2, 1, 3],
...     "value": [0.2, 0.4, float("nan"), 0.9, 0.6],
...     "timestamp": pd.date_range("2026-01-01", periods=5, freq="s", tz="UTC"),
... })
>>> rolling_aggregate.fn(frame, "acc", window=2)[["step", "value", "aggregate"]]
   step  value  aggregate
0     0    0.2        NaN
1     1    0.4        0.3
2     2    NaN        NaN
3     1    0.9        NaN
4     3    0.6        0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from prefect_ml_automations.automations import (
    MetricTrigger,
    MetricWindows,
    RunMetric,
    RunMetricChange,
    RunMetricZScore,
)
from prefect_ml_automations.errors import BadInputError
from prefect_ml_automations.evaluator.batch import NO_TIME, EventBatch, RunColumns
from prefect_ml_automations.evaluator.engine import metric_windows
from prefect_ml_automations.events import MAX_VALUE, Event, MetricEvent, is_system_metric

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Codes = npt.NDArray[np.signedinteger[Any]]
Bool = npt.NDArray[np.bool_]

METRIC_FRAME_COLUMNS = (
    "project",
    "run_id",
    "run_name",
    "user",
    "run_created_at",
    "metric",
    "step",
    "value",
    "timestamp",
)
"""The columns of a metric frame, in order."""

REQUIRED_COLUMNS = ("project", "run_id", "metric", "step", "value", "timestamp")
"""The columns a metric frame must have; `run_name`, `user` and `run_created_at` may be absent."""


# -- frames in ---------------------------------------------------------------------------------


def events_to_frame(events: Iterable[Event]) -> pd.DataFrame:
    """The `METRIC` events among `events` as a metric frame, in their order.

    Run states and artifact events have no place in a metric frame and are left out. `value`
    holds floats when every value is a number, else what was logged (so a boolean or an image
    stays visible, and does not count); `step` is a nullable integer (missing for system
    metrics logged without one); times are UTC.

    >>> from prefect_ml_automations.events import event_from_dict
    >>> frame = events_to_frame([event_from_dict({
    ...     "type": "METRIC", "project": "p", "run_id": "r1", "metric": "acc", "step": 0,
    ...     "value": 0.5, "timestamp": "2026-01-01T10:00:00Z"})])
    >>> frame[["run_id", "step", "value"]]
      run_id  step  value
    0     r1     0    0.5
    """
    points = [e for e in events if isinstance(e, MetricEvent)]
    values: list[Any] = [e.value for e in points]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return pd.DataFrame(
        {
            "project": pd.Series([e.project for e in points], dtype=object),
            "run_id": pd.Series([e.run_id for e in points], dtype=object),
            "run_name": pd.Series([e.run_name for e in points], dtype=object),
            "user": pd.Series([e.user for e in points], dtype=object),
            "run_created_at": pd.to_datetime(
                pd.Series([e.run_created_at for e in points], dtype=object), utc=True
            ),
            "metric": pd.Series([e.metric for e in points], dtype=object),
            "step": pd.array([e.step for e in points], dtype="Int64"),
            "value": pd.Series(values, dtype=float if numeric else object),
            "timestamp": pd.to_datetime(
                pd.Series([e.timestamp for e in points], dtype=object), utc=True
            ),
        },
        columns=list(METRIC_FRAME_COLUMNS),
    )


def validate_metric_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` itself if it is a usable metric frame; else `BadInputError` saying what to fix.

    Checks the required columns, that `project`, `run_id`, `metric` and `timestamp` are never
    missing, that times parse, and that steps are integers, missing only for system metrics.

    >>> import pandas as pd
    >>> validate_metric_frame(pd.DataFrame({"project": ["p"], "run_id": ["r1"]}))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prefect_ml_automations.errors.BadInputError: The metric frame has no column 'metric', ...
    """
    _FrameColumns(frame).check()
    return frame


def batch_from_frame(frame: pd.DataFrame) -> EventBatch:
    """The frame as the evaluator's columns: one run event per row, arrival = row position.

    This is what `Evaluator.evaluate` takes; `BadInputError` if the frame is not usable.
    """
    return _FrameColumns(frame).batch()


# -- the tasks -----------------------------------------------------------------------------------


@task(name="rolling-aggregate", cache_policy=NO_CACHE)
def rolling_aggregate(
    frame: pd.DataFrame, metric: str, window: int = 5, aggregation: str = "average"
) -> pd.DataFrame:
    """The rows of `metric` with `aggregate`: `aggregation` (`average`, `min` or `max`) of the
    `window` values of the run ending at each point — what a `RUN_METRIC` automation compares
    with its threshold. NaN until the window is full, and on rows that are not trigger points.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "project": "p", "run_id": "r1", "metric": "loss", "step": range(4),
    ...     "value": [4.0, 3.0, 2.0, 2.0],
    ...     "timestamp": pd.date_range("2026-01-01", periods=4, freq="s", tz="UTC"),
    ... })
    >>> rolling_aggregate.fn(frame, "loss", window=3, aggregation="max")["aggregate"].tolist()
    [nan, nan, 4.0, 3.0]
    """
    trigger = _trigger(
        RunMetric,
        type="RUN_METRIC",
        metric=metric,
        window=window,
        aggregation=aggregation,
        operator=">",
        threshold=0,
    )
    return _with_windows(
        frame,
        [trigger],
        lambda windows: {"aggregate": trigger.measure(windows).value},
        ("aggregate",),
    )


@task(name="window-change", cache_policy=NO_CACHE)
def window_change(
    frame: pd.DataFrame,
    metric: str,
    current_window: int = 10,
    prior_window: int = 50,
    aggregation: str = "average",
    change_type: str = "relative",
) -> pd.DataFrame:
    """The rows of `metric` with `current` (`aggregation` of the run's last `current_window`
    values), `prior` (of the `prior_window` values just before them) and `change` — what a
    `RUN_METRIC_CHANGE` automation compares with its amount.

    `change` is `current - prior` (`change_type="absolute"`) or `(current - prior) / |prior|`
    (`"relative"`, NaN when `prior` is 0). All three are NaN until the run has logged
    `current_window + prior_window` values, and on rows that are not trigger points.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "project": "p", "run_id": "r1", "metric": "acc", "step": range(4),
    ...     "value": [0.5, 0.5, 0.6, 0.9],
    ...     "timestamp": pd.date_range("2026-01-01", periods=4, freq="s", tz="UTC"),
    ... })
    >>> out = window_change.fn(frame, "acc", current_window=1, prior_window=2)
    >>> out[["current", "prior", "change"]].round(3).values.tolist()[2:]
    [[0.6, 0.5, 0.2], [0.9, 0.55, 0.636]]
    """
    trigger = _trigger(
        RunMetricChange,
        type="RUN_METRIC_CHANGE",
        metric=metric,
        current_window=current_window,
        prior_window=prior_window,
        aggregation=aggregation,
        change_type=change_type,
        direction="any",
        amount=1,
    )

    def columns(windows: MetricWindows) -> dict[str, F64]:
        change = trigger.measure(windows).value
        # The two windows `measure` just read (computed once: see `_Once`); the current one is
        # shown only where the prior one is full too, as the trigger needs both.
        current = windows.aggregate(trigger.aggregation, trigger.current_window, 0)
        prior = windows.aggregate(trigger.aggregation, trigger.prior_window, trigger.current_window)
        return {
            "current": np.where(np.isnan(prior), np.nan, current),
            "prior": prior,
            "change": change,
        }

    return _with_windows(frame, [trigger], columns, ("current", "prior", "change"))


@task(name="cross-run-zscore", cache_policy=NO_CACHE)
def cross_run_zscore(frame: pd.DataFrame, metric: str, window: int = 30) -> pd.DataFrame:
    """The rows of `metric` with `z`: the point's value as a z-score against the latest values
    of the `window` most recently created *other* runs of the project that have logged the
    metric by then (SPEC §3, rule 6) — what a `RUN_METRIC_ZSCORE` automation compares with its
    threshold.

    A run's creation time is the `run_created_at` of its first row in the frame, else that row's
    `timestamp` (rows of any metric count); ties go by run id. z uses the sample standard
    deviation (ddof = 1); it is NaN with fewer than 2 baseline runs or no spread among them, and
    on rows that are not trigger points.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "project": "p", "run_id": ["r1", "r2", "r3", "r1"], "metric": "acc",
    ...     "step": [0, 0, 0, 1], "value": [0.5, 0.7, 0.9, 0.6],
    ...     "timestamp": pd.date_range("2026-01-01", periods=4, freq="s", tz="UTC"),
    ... })
    >>> cross_run_zscore.fn(frame, "acc", window=30)["z"].round(3).tolist()
    [nan, nan, 2.121, -1.414]
    """
    trigger = _trigger(
        RunMetricZScore, type="RUN_METRIC_ZSCORE", metric=metric, window=window, threshold=1
    )
    return _with_windows(
        frame, [trigger], lambda windows: {"z": trigger.measure(windows).value}, ("z",)
    )


# -- the work ------------------------------------------------------------------------------------


Trigger = TypeVar("Trigger", bound=MetricTrigger)


def _trigger(model: type[Trigger], **fields: Any) -> Trigger:
    """The evaluator's trigger model for a task's arguments: its checks are theirs."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise BadInputError(
            f"{name}={fields.get(name)!r} can not be used: {message[0].lower()}{message[1:]}."
        ) from None


def _with_windows(
    frame: pd.DataFrame,
    triggers: list[MetricTrigger],
    compute: Callable[[MetricWindows], Mapping[str, F64]],
    names: tuple[str, ...],
) -> pd.DataFrame:
    """The rows of the triggers' metric with the columns `names`, read by `compute` off the
    evaluator's windows at each trigger point (NaN on every other row)."""
    columns = _FrameColumns(frame)
    metric = triggers[0].metric
    rows = columns.rows_of(metric)
    out = {name: np.full(len(frame), np.nan) for name in names}
    zscore = any(isinstance(t, RunMetricZScore) for t in triggers)
    for project, batch in columns.metric_batches(metric, rows, creation=zscore):
        for arrival, windows in metric_windows(batch, project, triggers, stream_size=len(frame)):
            for name, values in compute(_Once(windows)).items():
                out[name][arrival] = values
    every = len(rows) == len(frame)
    kept = frame if every else frame.iloc[rows]
    # New arrays of ours: the frame may hold them as they are (pandas would copy an ndarray).
    added = {
        name: pd.Series(out[name] if every else out[name][rows], index=kept.index, copy=False)
        for name in names
    }
    return kept.assign(**added)


class _Once:
    """The evaluator's windows, each computed once: a task reads the windows a trigger's
    `measure` read, and gets the very arrays it computed from."""

    def __init__(self, windows: MetricWindows) -> None:
        self.windows = windows
        self.computed: dict[tuple[str, int, int], F64] = {}

    def aggregate(self, aggregation: str, size: int, lag: int = 0) -> F64:
        key = (aggregation, size, lag)
        if key not in self.computed:
            self.computed[key] = self.windows.aggregate(aggregation, size, lag)
        return self.computed[key]

    def zscores(self, trigger: RunMetricZScore) -> F64:
        return self.windows.zscores(trigger)

    def values_at(self, points: I64, size: int) -> list[list[float]]:
        return self.windows.values_at(points, size)

    def baseline_at(self, points: I64, trigger: RunMetricZScore) -> list[list[float]]:
        return self.windows.baseline_at(points, trigger)


class _FrameColumns:
    """A metric frame's columns as the evaluator's arrays (codes, int64 nanoseconds, floats).

    Conversions take `rows` (positions), None meaning every row, so that a task reads only the
    rows of its metric.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise BadInputError(
                f"A metric frame must be a pandas DataFrame, not {type(frame).__name__}; "
                "build one with pd.DataFrame(...) or events_to_frame(events)."
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            names = ", ".join(repr(c) for c in missing)
            raise BadInputError(
                f"The metric frame has no column {names}; a metric frame has the columns "
                f"{', '.join(METRIC_FRAME_COLUMNS)} (run_name, user and run_created_at may be "
                "left out): add them, or rename yours (df.rename(columns={...}))."
            )
        self.frame = frame
        self._times: dict[str, I64] = {}

    # -- the whole frame -----------------------------------------------------------------------

    def batch(self) -> EventBatch:
        """Every row as a run event, arrival = position (what `batch_from_frame` returns)."""
        n = len(self.frame)
        run, keys, _, _ = self.runs(None)
        metric, metrics = self.labels("metric", None)
        system = np.array([is_system_metric(m) for m in metrics], bool)
        ts = self.times("timestamp", None)
        order = self.order(None, system[metric] if n else np.zeros(0, bool), ts)
        names, name_codes = self.optional_labels("run_name")
        users, user_codes = self.optional_labels("user")
        created = self.times("run_created_at", _first_rows(run, len(keys)))
        return EventBatch(
            runs=keys,
            created=created,
            metrics=metrics,
            names=names,
            users=users,
            columns=RunColumns(
                arrival=np.arange(n, dtype=np.int64),
                run=run.astype(np.int32, copy=False),
                name=name_codes.astype(np.int32),
                user=user_codes.astype(np.int32),
                ts=ts,
                metric=metric.astype(np.int32),
                order=order,
                value=self.numbers(None),
            ),
        )

    # -- one metric ----------------------------------------------------------------------------

    def rows_of(self, metric: str) -> I64:
        """Positions of the rows of `metric`, in arrival order."""
        mask = (self.frame["metric"] == metric).to_numpy(dtype=bool, na_value=False)
        if mask.all():
            return np.arange(len(mask), dtype=np.int64)
        return np.flatnonzero(mask)

    def metric_batches(
        self, metric: str, rows: I64, *, creation: bool
    ) -> list[tuple[str, EventBatch]]:
        """Per project, its rows of `metric` as a batch, arrival = position in the frame.

        `creation`: fill in each run's creation time (z-scores rank runs by it) — from the
        run's first row of any metric, so the whole frame's runs are read then.
        """
        every = len(rows) == len(self.frame)
        if creation and not every:
            run_all, keys, project_all, projects = self.runs(None)
            run, project = run_all[rows], project_all[rows]
        else:
            run, keys, project, projects = self.runs(None if every else rows)
            run_all = run
        if creation:
            first = _first_rows(run_all, len(keys))
            created = self.times("run_created_at", first)  # only the first rows are read
            created = np.where(created != NO_TIME, created, self.times("timestamp", first))
        else:
            created = np.full(len(keys), NO_TIME, np.int64)  # windows do not read it
        at = None if every else rows
        ts = self.times("timestamp", at)
        order = self.order(at, np.full(len(rows), is_system_metric(metric)), ts)
        value = self.numbers(at)
        groups: list[tuple[int, I64 | None]]
        if len(projects) <= 1:
            groups = [(0, None)] if len(rows) else []
        else:
            by_project = np.argsort(project, kind="stable")
            bounds = np.searchsorted(project[by_project], np.arange(len(projects) + 1))
            groups = [(p, by_project[bounds[p] : bounds[p + 1]]) for p in range(len(projects))]
        out = []
        for p, members in groups:
            if members is None:  # one project: the batch is every row of the metric
                keys_p, created_p, run_p = keys, created, run
                arrival, ts_p, order_p, value_p = rows, ts, order, value
            elif not len(members):
                continue
            else:  # a project's own run table, so no pass reads the other projects' runs
                used, run_p = np.unique(run[members], return_inverse=True)
                keys_p = [keys[i] for i in used.tolist()]
                created_p = created[used]
                arrival, ts_p = rows[members], ts[members]
                order_p, value_p = order[members], value[members]
            # Windows read no run names or users: one placeholder for all spares the evaluator
            # filling them in as of every row.
            placeholder = np.zeros(len(arrival), np.int32)
            batch = EventBatch(
                runs=keys_p,
                created=created_p,
                metrics=[metric],
                names=[""],
                users=[""],
                columns=RunColumns(
                    arrival=arrival,
                    run=run_p.astype(np.int32, copy=False),
                    name=placeholder,
                    user=placeholder,
                    ts=ts_p,
                    metric=np.zeros(len(arrival), np.int32),
                    order=order_p,
                    value=value_p,
                ),
            )
            out.append((projects[p], batch))
        return out

    # -- columns -------------------------------------------------------------------------------

    def check(self) -> None:
        """Convert every column of every row once, so that any problem is reported now."""
        self.batch()
        self.times("run_created_at", None)

    def column(self, name: str, rows: I64 | None) -> pd.Series:
        column = self.frame[name]
        return column if rows is None else column.iloc[rows]

    def where(self, rows: I64 | None, position: int) -> str:
        """A row in words, for error messages."""
        at = position if rows is None else int(rows[position])
        return f"row {at} (index {self.frame.index[at]!r})"

    def labels(self, name: str, rows: I64 | None) -> tuple[Codes, list[str]]:
        """Dense codes in first-seen order, and the strings they stand for; never missing."""
        column = self.column(name, rows)
        if name == "project" and len(column) and _constant(column):
            return np.zeros(len(column), np.int64), [str(column.iloc[0])]  # one project: common
        encoded = _arrow_labels(column)
        if encoded is not None:
            return encoded
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        if len(codes) and codes.min() < 0:
            bad = int(np.argmax(codes < 0))
            raise BadInputError(
                f"The metric frame's column {name!r} is missing at {self.where(rows, bad)}; "
                f"every point needs its {name} (drop or fill such rows first)."
            )
        return np.asarray(codes, np.int64), [str(u) for u in uniques.tolist()]

    def optional_labels(self, name: str) -> tuple[list[str], I64]:
        if name not in self.frame.columns:
            return [], np.full(len(self.frame), -1, np.int64)
        codes, uniques = pd.factorize(self.frame[name], use_na_sentinel=True)
        return [str(u) for u in uniques.tolist()], np.asarray(codes, np.int64)

    def runs(self, rows: I64 | None) -> tuple[Codes, list[tuple[str, str]], Codes, list[str]]:
        """Run codes, their (project, run_id) keys, project codes and the projects."""
        project, projects = self.labels("project", rows)
        run_id, run_ids = self.labels("run_id", rows)
        if len(projects) <= 1:
            return run_id, [(p, r) for p in projects for r in run_ids], project, projects
        codes, uniques = pd.factorize(project.astype(np.int64) * len(run_ids) + run_id)
        keys = [(projects[u // len(run_ids)], run_ids[u % len(run_ids)]) for u in uniques.tolist()]
        return np.asarray(codes, np.int64), keys, project, projects

    def times(self, name: str, rows: I64 | None) -> I64:
        """Integer nanoseconds since the epoch at microsecond precision (as the evaluator keeps
        event times); NO_TIME where missing, which only `run_created_at` may be."""
        if name not in self.frame.columns:
            return np.full(len(self.frame) if rows is None else len(rows), NO_TIME, np.int64)
        if rows is None and name in self._times:
            return self._times[name]
        column = self.column(name, rows)
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            column = column.dt.tz_convert(None)  # UTC, without the zone
        elif not pd.api.types.is_datetime64_dtype(column.dtype):  # naive times are UTC already
            try:
                column = pd.to_datetime(column, utc=True, format="ISO8601").dt.tz_convert(None)
            except (ValueError, TypeError, OverflowError) as exc:
                raise BadInputError(
                    f"The metric frame's column {name!r} must hold times (datetimes, or "
                    f"ISO 8601 text such as 2026-01-01T10:00:00Z): {exc}."
                ) from None
        values = column.to_numpy()
        ticks = values.view(np.int64)
        missing = ticks == NO_TIME  # NaT
        if name == "timestamp" and missing.any():
            raise BadInputError(
                f"The metric frame's column 'timestamp' is missing at "
                f"{self.where(rows, int(np.argmax(missing)))}; every point needs the time it "
                "was logged."
            )
        unit, _ = np.datetime_data(values.dtype)
        if unit == "ns":
            ns = ticks // 1000 * 1000
        else:
            ns = ticks * {"us": 1000, "ms": 1_000_000, "s": 1_000_000_000}[unit]
        times: I64 = np.where(missing, NO_TIME, ns) if missing.any() else ns
        if rows is None:
            self._times[name] = times
        return times

    def numbers(self, rows: I64 | None) -> F64:
        """The values that count (finite numbers, not booleans); NaN for every other value."""
        column = self.column("value", rows)
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            return np.full(len(column), np.nan)
        if dtype == np.float64:
            values = column.to_numpy()
        elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:  # values of any kind (as trackers log images under metric keys): one by one
            values = np.fromiter(map(_number, column.to_numpy(object)), np.float64, len(column))
        with np.errstate(invalid="ignore"):  # (NaN compared)
            counted: F64 = np.where(np.abs(values) <= MAX_VALUE, values, np.nan)
        return counted

    def order(self, rows: I64 | None, system: Bool, ts: I64) -> I64:
        """Where each point stands in its run's series: the step, or the time for a system
        metric logged without one."""
        column = self.column("step", rows)
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            raise BadInputError(
                "The metric frame's column 'step' holds booleans; steps are integers."
            )
        if pd.api.types.is_integer_dtype(dtype) and not column.hasnans:
            return column.to_numpy(np.int64)
        numeric = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        present = ~np.isnan(numeric)
        given = column.notna().to_numpy()
        bad = given & ~(
            present & (np.mod(numeric, 1, where=present, out=np.ones_like(numeric)) == 0)
        )
        bad |= present & (np.abs(numeric) >= 2.0**63)
        if bad.any():
            at = int(np.argmax(bad))
            raise BadInputError(
                f"The metric frame's column 'step' holds {column.to_numpy(object)[at]!r} at "
                f"{self.where(rows, at)}; steps are integers."
            )
        unstepped = ~present & ~system
        if unstepped.any():
            at = int(np.argmax(unstepped))
            metric = self.column("metric", rows).iloc[at]
            raise BadInputError(
                f"The metric frame has no step at {self.where(rows, at)} (metric {metric!r}); "
                "only system metrics (named system.* or system/*) may leave it out."
            )
        steps = np.where(present, numeric, 0).astype(np.int64)
        order: I64 = np.where(present, steps, ts)
        return order


def _number(value: object) -> float:
    """The value if it counts (a finite int or float, not a boolean), else NaN."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    ):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float (10**400)
            return math.nan
        return number if abs(number) <= MAX_VALUE else math.nan
    return math.nan


def _arrow_labels(column: pd.Series) -> tuple[Codes, list[str]] | None:
    """Codes and strings by pyarrow's own dictionary encoding, when pyarrow holds the strings
    (pandas' default string dtype, when pyarrow is installed): about twice as fast as
    `pd.factorize`, which widens and copies the codes. None: use `pd.factorize`."""
    dtype = column.dtype
    held = (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow") or (
        isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype) in ("string", "large_string")
    )
    if not held:
        return None
    import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]

    encoded = pa.chunked_array(column.array.__arrow_array__()).dictionary_encode()
    encoded = encoded.combine_chunks()
    if encoded.null_count:
        return None  # pd.factorize says where the missing value is
    codes: Codes = np.asarray(encoded.indices)
    return codes, [str(u) for u in encoded.dictionary.to_pylist()]


def _constant(column: pd.Series) -> bool:
    """Whether every value is the first one (cheaper than factorizing a one-value column)."""
    return bool((column == column.iloc[0]).to_numpy(dtype=bool, na_value=False).all())


def _first_rows(run: Codes, runs: int) -> I64:
    """The position of each run's first row."""
    first = np.full(runs, -1, np.int64)
    first[run[::-1]] = np.arange(len(run) - 1, -1, -1)  # written last to first: the first wins
    return first
