"""Events an automation reacts to: one pydantic model per kind, discriminated by `type`.

Each model carries its own behaviour — which scopes it may use, how it describes itself, whether
an artifact event or a run state matches it, and for metric triggers how its condition is measured
over the windows the evaluator provides — so neither the evaluator nor the command line ever
switches on a type string.

>>> RunMetric(type="RUN_METRIC", metric="accuracy", operator="above", threshold=0.6).describe()
'average(accuracy, 5) > 0.6'
"""

from __future__ import annotations

import operator as _op
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BeforeValidator, Field, PositiveInt, field_validator, model_validator

from prefect_ml_automations.automations._types import (
    Duration,
    Number,
    Regex,
    StrictModel,
    compiled,
    duration_text,
    shown,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    BoolArray = npt.NDArray[np.bool_]
    IntArray = npt.NDArray[np.int64]

Aggregation = Literal["average", "min", "max"]

#: The most values a RUN_METRIC window, or a RUN_METRIC_CHANGE's two windows together, may span.
#: The evaluator keeps each run's latest `values_needed` values per metric in memory (and in its
#: saved state), 16 bytes a value: 1000 values are 16 kB per run and metric, a window of 10^9
#: would ask for gigabytes per run before anything is evaluated.
MAX_WINDOW_VALUES = 1000
#: The most runs a RUN_METRIC_ZSCORE baseline may span: the evaluator keeps lists of the latest
#: `window` + 1 runs per metric (in memory and in its saved state), walks them for every new run,
#: and each firing records the whole baseline as its `metric_values`.
MAX_ZSCORE_RUNS = 1000
#: The most trigger points in a row `for_points` may ask for (the evaluator keeps only a count).
MAX_FOR_POINTS = 1_000_000
_WHY_VALUES = "the evaluator keeps that many of each run's latest values per metric in memory"
_WHY_RUNS = (
    "the evaluator keeps a list of that many runs per metric in memory, and each firing records "
    "the whole baseline"
)

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">": _op.gt,
    ">=": _op.ge,
    "<": _op.lt,
    "<=": _op.le,
    "==": _op.eq,
    "!=": _op.ne,
}
_OPERATOR_SPELLINGS = {
    **{symbol: symbol for symbol in _OPERATORS},
    "above": ">",
    "above_or_equal": ">=",
    "below": "<",
    "below_or_equal": "<=",
    "equal": "==",
    "not_equal": "!=",
    "$gt": ">",
    "$gte": ">=",
    "$lt": "<",
    "$lte": "<=",
    "$eq": "==",
    "$ne": "!=",
}


def _operator(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in _OPERATOR_SPELLINGS:
        return _OPERATOR_SPELLINGS[value.strip().lower()]
    raise ValueError(
        f"{shown(value)} is not an operator; use one of > >= < <= == != "
        "(or above, above_or_equal, below, below_or_equal, equal, not_equal, $gt … $ne)"
    )


Operator = Annotated[Literal[">", ">=", "<", "<=", "==", "!="], BeforeValidator(_operator)]
"""A comparison; the words (`above`, …) and W&B's `$gt` … `$ne` are normalised to symbols."""


class ArtifactChange(Protocol):
    """What artifact triggers read of an artifact event."""

    @property
    def alias(self) -> str | None: ...
    @property
    def tag(self) -> str | None: ...


# --------------------------------------------------------------------------------------------
# Bases


class Trigger(StrictModel, ABC):
    """Common to every event kind."""

    type: str
    #: Scope kinds the event may be used with: "registry", "project" (with or without
    #: collections) or "plain_project" (a project with no collection selector: run events).
    allowed_scopes: ClassVar[tuple[str, ...]] = ("registry", "project")

    @abstractmethod
    def describe(self) -> str:
        """The condition in words, as shown in the dry run and in `metric_filter`."""


class ArtifactTrigger(Trigger):
    """Events on artifact versions: links, new versions, aliases and tags."""

    def matches(self, change: ArtifactChange) -> str | None:
        """None when an artifact event of this type matches the trigger, else why it does not."""
        return None

    def describe(self) -> str:
        return self.type


class RunTrigger(Trigger):
    """Events on runs: they take run filters and a cooldown, and need a plain project scope."""

    allowed_scopes: ClassVar[tuple[str, ...]] = ("plain_project",)


# --------------------------------------------------------------------------------------------
# Artifact events


class LinkArtifact(ArtifactTrigger):
    """A version is linked into a collection (in W&B: `LINK_MODEL`)."""

    type: Literal["LINK_ARTIFACT"]


class UnlinkArtifact(ArtifactTrigger):
    """A version is unlinked from a collection."""

    type: Literal["UNLINK_ARTIFACT"]


class CreateArtifact(ArtifactTrigger):
    """A new version of an artifact is created (in a project)."""

    type: Literal["CREATE_ARTIFACT"]
    allowed_scopes: ClassVar[tuple[str, ...]] = ("project",)


class AddArtifactAlias(ArtifactTrigger):
    """An alias (such as `production`) is added to a version; `alias` is a regex, default any."""

    type: Literal["ADD_ARTIFACT_ALIAS"]
    alias: Regex | None = Field(
        default=None,
        description="Only aliases that match this regex (searched: '^production$' for exactly "
        "production); leave it out for any alias.",
    )

    def matches(self, change: ArtifactChange) -> str | None:
        if self.alias is None or compiled(self.alias).search(change.alias or ""):
            return None
        return f"alias {change.alias!r} does not match {self.alias!r}"

    def describe(self) -> str:
        return f"alias matching {self.alias!r} added" if self.alias else "any alias added"


class _TagTrigger(ArtifactTrigger):
    tag: Regex | None = Field(
        default=None,
        description="Only tags that match this regex (searched; anchor with ^ and $); leave it "
        "out for any tag.",
    )

    def matches(self, change: ArtifactChange) -> str | None:
        if self.tag is None or compiled(self.tag).search(change.tag or ""):
            return None
        return f"tag {change.tag!r} does not match {self.tag!r}"


class AddArtifactTag(_TagTrigger):
    """A tag is added to a version; `tag` is a regex, default any."""

    type: Literal["ADD_ARTIFACT_TAG"]

    def describe(self) -> str:
        return f"tag matching {self.tag!r} added" if self.tag else "any tag added"


class RemoveArtifactTag(_TagTrigger):
    """A tag is removed from a version; `tag` is a regex, default any."""

    type: Literal["REMOVE_ARTIFACT_TAG"]

    def describe(self) -> str:
        return f"tag matching {self.tag!r} removed" if self.tag else "any tag removed"


# --------------------------------------------------------------------------------------------
# Run events

RUN_STATES = ("running", "finished", "failed")
#: How tracker states map onto the states an automation can choose; others never fire.
STATE_ALIASES = {"crashed": "failed"}


class RunState(RunTrigger):
    """A run enters one of `states` (`crashed` counts as `failed`; `killed` never fires)."""

    type: Literal["RUN_STATE"]
    states: list[Literal["running", "finished", "failed"]] = Field(
        min_length=1,
        description="The states that fire when a run enters them: running, finished, failed "
        "(a crashed run counts as failed; a killed run never fires).",
    )

    @field_validator("states", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value
        out = []
        for state in value:
            if isinstance(state, str):
                state = STATE_ALIASES.get(state.lower(), state.lower())
                if state == "killed":
                    raise ValueError(
                        "'killed' can not be chosen: a killed run never triggers (as in W&B); "
                        "choose from running, finished, failed"
                    )
                if state not in RUN_STATES:
                    raise ValueError(
                        f"{state!r} is not a run state; choose from running, finished, failed "
                        "(crashed counts as failed)"
                    )
            out.append(state)
        return out

    def enters(self, state: str) -> bool:
        """Whether entering the normalized `state` fires this trigger."""
        return state in self.states

    def describe(self) -> str:
        return "run enters " + " or ".join(self.states)


_POSITIVE_AFTER = "must be a positive duration such as '30m' (a run is never quiet for no time)"


class RunStalled(RunTrigger):
    """A running run has shown no sign of life — no metric point, no heartbeat, no state — for
    `after`: it fires once per stall, at the moment the quiet time reached `after`.

    It is judged on the clock, not on a new point: when the run's next sign of life arrives
    `after` or more after the last one, or when the evaluator is told that `now` has passed the
    run's deadline. Only a run whose last state seen is `running` can stall.
    """

    type: Literal["RUN_STALLED"]
    after: Duration = Field(
        description="How long a running run may show no sign of life (no metric point, no "
        "heartbeat) before it counts as stalled: '30m', '2h', …",
    )

    @field_validator("after", mode="before")
    @classmethod
    def _not_negative(cls, value: Any) -> Any:
        negative = isinstance(value, int | float) and not isinstance(value, bool) and value < 0
        if negative or (isinstance(value, str) and value.strip().startswith("-")):
            raise ValueError(_POSITIVE_AFTER)
        return value

    @field_validator("after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(_POSITIVE_AFTER)
        return value

    @property
    def after_ns(self) -> int:
        return int(self.after.total_seconds() * 1_000_000) * 1000

    def describe(self) -> str:
        return f"running run quiet for {duration_text(self.after)}"


# --------------------------------------------------------------------------------------------
# Metric events


class MetricWindows(Protocol):
    """What the evaluator offers metric triggers: for each trigger point of a batch, windows
    ending at that point (NaN where there are not enough values yet)."""

    def aggregate(self, aggregation: str, size: int, lag: int = 0) -> FloatArray:
        """`aggregation` over the `size` values that end `lag` values before the point."""

    def zscores(self, trigger: RunMetricZScore) -> FloatArray:
        """The point's value as a z-score against the latest values of the trigger's baseline:
        its `window` most recent other runs (finished ones, with `baseline: finished`) — NaN
        with fewer than `min_baseline` of them; the standard deviation is at least
        `sigma_floor`; `median_mad`: median and MAD / 0.6745 instead of mean and standard
        deviation."""

    def values_at(self, points: IntArray, size: int) -> list[list[float]]:
        """The `size` values of the series ending at each trigger point of `points`, oldest
        first."""

    def baseline_at(self, points: IntArray, trigger: RunMetricZScore) -> list[list[float]]:
        """The trigger's z-score baseline at each trigger point of `points`: the other runs'
        latest values."""


@dataclass(frozen=True)
class Measurement:
    """What a metric trigger measured at each trigger point, and where its condition holds."""

    value: FloatArray
    holds: BoolArray


def _beyond(value: FloatArray, amount: float, direction: str) -> BoolArray:
    """`value` ≥ amount upwards, ≤ -amount downwards, or |value| ≥ amount either way (NaN: no)."""
    if direction in ("increase", "above"):
        return value >= amount
    if direction in ("decrease", "below"):
        return value <= -amount
    return abs(value) >= amount


class MetricTrigger(RunTrigger):
    """Conditions on a run's metric values, checked at every new point of the run."""

    metric: str = Field(
        min_length=1,
        description="The metric's name as the run logs it (system metrics: W&B 'system.*', "
        "MLflow 'system/*').",
    )
    for_points: PositiveInt = Field(
        default=1,
        description="Fires only once the condition has held at this many of the run's trigger "
        "points in a row (Prometheus' `for`); 1: at the point itself.",
    )
    rearm: bool = Field(
        default=False,
        description="After a firing, the run fires again only once the condition has stopped "
        "holding and holds again, however long that takes (the cooldown is then not used): a "
        "metric that stays high fires once.",
    )

    @field_validator("for_points")
    @classmethod
    def _streak_fits(cls, value: int) -> int:
        if value > MAX_FOR_POINTS:
            raise ValueError(
                f"must be at most {MAX_FOR_POINTS} points, not {shown(value)}; for a condition "
                "that must hold longer, use a longer window"
            )
        return value

    @property
    def counts_streaks(self) -> bool:
        """Whether the evaluator keeps, per run, how long the condition has held."""
        return self.for_points > 1 or self.rearm

    def describe(self) -> str:
        held = f" at {self.for_points} points in a row" if self.for_points > 1 else ""
        return self.condition() + held + (", rearmed when it stops holding" if self.rearm else "")

    @abstractmethod
    def condition(self) -> str:
        """The condition at one trigger point, in words."""

    @property
    @abstractmethod
    def values_needed(self) -> int:
        """How many of a run's latest values the trigger reads (what the state must keep)."""

    @property
    def points_needed(self) -> int:
        """How many values a run must have logged before the condition can be judged."""
        return self.values_needed

    @abstractmethod
    def measure(self, windows: MetricWindows) -> Measurement:
        """The measured value at every trigger point, and where the condition holds."""

    @abstractmethod
    def undefined_reason(self) -> str:
        """Why the value can be undefined although enough values were logged."""

    def metric_values(self, windows: MetricWindows, points: IntArray) -> list[list[float]]:
        """What a firing at each trigger point of `points` reports as `metric_values`: the
        window."""
        return windows.values_at(points, self.values_needed)


class RunMetric(MetricTrigger):
    """`aggregation` of the last `window` values compared with `threshold`."""

    type: Literal["RUN_METRIC"]
    window: PositiveInt = Field(
        default=5, description="How many of the run's latest values are aggregated (at least 1)."
    )
    aggregation: Aggregation = Field(
        default="average", description="How the window's values are combined: average, min, max."
    )
    operator: Operator = Field(
        description="How the aggregate is compared with the threshold: > >= < <= == !=."
    )
    threshold: Number = Field(description="The value the aggregate is compared with.")

    @field_validator("window")
    @classmethod
    def _window_fits_in_memory(cls, value: int) -> int:
        if value > MAX_WINDOW_VALUES:
            raise ValueError(
                f"must be at most {MAX_WINDOW_VALUES} values, not {shown(value)}: {_WHY_VALUES}"
            )
        return value

    @property
    def values_needed(self) -> int:
        return self.window

    def measure(self, windows: MetricWindows) -> Measurement:
        value = windows.aggregate(self.aggregation, self.window)
        holds = _OPERATORS[self.operator](value, self.threshold) & (value == value)
        return Measurement(value, holds)

    def undefined_reason(self) -> str:
        return "the window holds a value that can not be aggregated"

    def condition(self) -> str:
        return (
            f"{self.aggregation}({self.metric}, {self.window}) {self.operator} {self.threshold:g}"
        )


class RunMetricChange(MetricTrigger):
    """The change between the `prior_window` values and the `current_window` values after them."""

    type: Literal["RUN_METRIC_CHANGE"]
    current_window: PositiveInt = Field(
        default=10, description="How many of the run's latest values form the current window."
    )
    prior_window: PositiveInt = Field(
        default=50,
        description="How many values before the current window form the prior window.",
    )
    aggregation: Aggregation = Field(
        default="average", description="How each window's values are combined: average, min, max."
    )
    change_type: Literal["relative", "absolute"] = Field(
        default="relative",
        description="relative: (current - prior) / |prior|; absolute: current - prior.",
    )
    direction: Literal["increase", "decrease", "any"] = Field(
        description="Which change fires: an increase, a decrease, or any change of at least "
        "the amount."
    )
    amount: Number = Field(
        description="The smallest change that fires, greater than 0; a fraction when relative "
        "(0.25 = 25 %)."
    )

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(
                f"must be greater than 0, not {value:g}; for a relative change it is a fraction "
                "(0.25 = 25 %)"
            )
        return value

    @model_validator(mode="after")
    def _windows_fit_in_memory(self) -> RunMetricChange:
        if self.values_needed > MAX_WINDOW_VALUES:
            raise ValueError(
                f"current_window + prior_window must be at most {MAX_WINDOW_VALUES} values "
                f"together, not {shown(self.current_window)} + {shown(self.prior_window)}: "
                f"{_WHY_VALUES}"
            )
        return self

    @property
    def values_needed(self) -> int:
        return self.current_window + self.prior_window

    def measure(self, windows: MetricWindows) -> Measurement:
        import numpy as np

        current = windows.aggregate(self.aggregation, self.current_window)
        prior = windows.aggregate(self.aggregation, self.prior_window, lag=self.current_window)
        change = current - prior
        if self.change_type == "relative":
            # With a prior of exactly 0 the relative change is undefined: NaN never fires.
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                change = np.where(prior == 0, np.nan, change / np.abs(prior))
        # A change too large for a float (a prior of 1e-300) is no number to report: NaN.
        change = np.where(np.isfinite(change), change, np.nan)
        return Measurement(change, _beyond(change, self.amount, self.direction))

    def undefined_reason(self) -> str:
        return f"the prior window's {self.aggregation} is 0, so a relative change is undefined"

    def condition(self) -> str:
        unit = f"{self.amount:.0%}" if self.change_type == "relative" else f"{self.amount:g}"
        word = {"increase": "increases", "decrease": "decreases", "any": "changes"}[self.direction]
        return (
            f"{self.aggregation}({self.metric}, last {self.current_window}) {word} by ≥ {unit} "
            f"against the {self.prior_window} before"
        )


class RunMetricZScore(MetricTrigger):
    """The run's latest value as a z-score against the latest values of the last `window` runs."""

    type: Literal["RUN_METRIC_ZSCORE"]
    window: PositiveInt = Field(
        default=30,
        description="How many of the project's most recent other runs form the baseline.",
    )
    threshold: Number = Field(
        description="How many standard deviations from the baseline's mean fire (greater than 0)."
    )
    direction: Literal["above", "below", "either"] = Field(
        default="either",
        description="Which side fires: above the mean, below it, or either.",
    )
    method: Literal["mean_std", "median_mad"] = Field(
        default="mean_std",
        description="mean_std: (value − mean) / standard deviation; median_mad: (value − "
        "median) / (MAD / 0.6745), which one wild run in the baseline does not move.",
    )
    min_baseline: int = Field(
        default=2,
        description="How many other runs the baseline needs before a z-score is judged (at "
        "least 2; 5 or more keeps a young project from firing on noise).",
    )
    sigma_floor: Number = Field(
        default=0,
        description="The smallest standard deviation divided by, in the metric's units: a "
        "flat baseline then does not turn every wiggle into a 40σ outlier (0: none).",
    )
    baseline: Literal["all", "finished"] = Field(
        default="all",
        description="Which runs form the baseline: all: every run that has logged the metric "
        "(running ones with their latest value so far); finished: only runs seen finished, "
        "from then on — a run resumed later stays in.",
    )

    @field_validator("threshold")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(
                f"must be greater than 0 (a number of standard deviations), not {value:g}"
            )
        return value

    @field_validator("sigma_floor")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be 0 (no floor) or more, not {value:g}")
        return value

    @model_validator(mode="after")
    def _baseline_can_be_reached(self) -> RunMetricZScore:
        if not 2 <= self.min_baseline <= max(self.window, 2):
            raise ValueError(
                f"min_baseline must be between 2 (a standard deviation needs two runs) and the "
                f"window ({self.window}), not {shown(self.min_baseline)}"
            )
        return self

    @field_validator("window")
    @classmethod
    def _baseline_fits_in_memory(cls, value: int) -> int:
        if value > MAX_ZSCORE_RUNS:
            raise ValueError(
                f"must be at most {MAX_ZSCORE_RUNS} runs, not {shown(value)}: {_WHY_RUNS}"
            )
        return value

    @property
    def values_needed(self) -> int:
        return 1

    def measure(self, windows: MetricWindows) -> Measurement:
        z = windows.zscores(self)
        return Measurement(z, _beyond(z, self.threshold, self.direction))

    def undefined_reason(self) -> str:
        runs = "finished runs" if self.baseline == "finished" else "runs"
        few = f"the baseline has fewer than {self.min_baseline} other {runs} with this metric"
        if self.sigma_floor:
            return few
        if self.method == "median_mad":
            return few + ", or half of them or more have the same value (MAD 0)"
        return few + ", or they all have the same value (standard deviation 0)"

    def metric_values(self, windows: MetricWindows, points: IntArray) -> list[list[float]]:
        return windows.baseline_at(points, self)

    def condition(self) -> str:
        side = {"above": "z", "below": "-z", "either": "|z|"}[self.direction]
        runs = "finished runs" if self.baseline == "finished" else "runs"
        robust = ", median/MAD" if self.method == "median_mad" else ""
        return f"{side}({self.metric}, last {self.window} {runs}{robust}) ≥ {self.threshold:g}"


EventTrigger = Annotated[
    LinkArtifact
    | UnlinkArtifact
    | CreateArtifact
    | AddArtifactAlias
    | AddArtifactTag
    | RemoveArtifactTag
    | RunState
    | RunStalled
    | RunMetric
    | RunMetricChange
    | RunMetricZScore,
    Field(discriminator="type"),
]
"""Any event an automation can react to, chosen by its `type`."""
