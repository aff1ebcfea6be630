"""Normalized events (SPEC §5): what sources produce, the receiver accepts and the dry run reads.

One JSON object per event, `type` and `timestamp` always (ISO 8601; naive means UTC):

>>> parse_event('{"type": "RUN_STATE", "project": "p", "run_id": "r1", "state": "Finished",'
...             ' "timestamp": "2026-01-01T11:00:00"}').state
'finished'
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from prefect_ml_automations.errors import EventError

#: Errors reported per file before the rest are only counted.
MAX_REPORTED_PROBLEMS = 20


# -- what evaluation can take ---------------------------------------------------------------
# The evaluator holds times as int64 nanoseconds and steps as int64, and the store keeps names in
# text columns that PostgreSQL refuses NUL in. An event outside these bounds is refused at the
# door (a 422, exit 2) rather than accepted and then failing every cycle behind it.

#: Times an event may carry: well inside what int64 nanoseconds hold (1677–2262), with room for
#: a cooldown of a year on either side.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
#: Steps and version numbers: integers JSON numbers carry exactly (±(2^53 − 1)).
LARGEST_INT = 2**53 - 1
#: Names (projects, runs, metrics, collections, aliases, …) are at most this long.
MAX_NAME = 1024
#: Metric values that count lie within ±1e150: a z-score squares them, and the squares of
#: larger ones overflow a float (1e160 would silently end every baseline). Beyond, a value is
#: not counted, as infinities are not.
MAX_VALUE = 1e150


def _utc(value: datetime, info: ValidationInfo) -> datetime:
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the calendar's start in UTC
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(
            f"field {info.field_name!r}: {value.isoformat()} is outside the times this tool "
            f"takes ({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}); send the event's real time"
        )
    return utc


Timestamp = Annotated[datetime, AfterValidator(_utc)]
"""An ISO 8601 time between 1900 and 2200; a naive time is read as UTC."""
# Checked by pydantic-core itself (no Python call per field: a dry run reads millions of events);
# `describe_problem` turns its errors into sentences.
_NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=_NO_NUL)]
"""A non-empty name with no NUL character, at most `MAX_NAME` characters."""
OptionalName = Annotated[str, StringConstraints(max_length=MAX_NAME, pattern=_NO_NUL)] | None
Step = Annotated[StrictInt, Field(ge=-LARGEST_INT, le=LARGEST_INT)]
Version = Annotated[StrictInt, Field(ge=0, le=LARGEST_INT)]

SYSTEM_METRIC_PREFIXES = ("system.", "system/")


def is_system_metric(name: str) -> bool:
    """System metrics (`system.*` in W&B, `system/*` in MLflow) have no step."""
    return name.startswith(SYSTEM_METRIC_PREFIXES)


def counted(value: Any) -> float | None:
    """A metric value as the evaluator counts it: a finite int or float (not a boolean) within
    ±`MAX_VALUE`, as a float; anything else (text, images, NaN, ±inf, 10**400) None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float (10**400) counts as much as inf
        return None
    return number if abs(number) <= MAX_VALUE else None  # (NaN and ±inf fail this too)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: Timestamp


class _RunEvent(_Event):
    project: Name
    run_id: Name
    run_name: OptionalName = None
    user: OptionalName = None
    run_created_at: Timestamp | None = None


class MetricEvent(_RunEvent):
    """A metric point `(run, metric, step, value, timestamp)`; any JSON value, only finite
    numbers count."""

    type: Literal["METRIC"]
    metric: Name
    step: Step | None = None
    value: JsonValue

    @model_validator(mode="after")
    def _step_unless_system(self) -> MetricEvent:
        if self.step is None and not is_system_metric(self.metric):
            raise ValueError(
                f"field 'step' is required for metric {self.metric!r} "
                "(only system metrics, named system.* or system/*, may leave it out)"
            )
        return self

    @property
    def number(self) -> float | None:
        """The value if it counts (a finite int or float, not a boolean), else None."""
        return counted(self.value)


class RunStateEvent(_RunEvent):
    """A run's state as the tracker reports it (lower-cased: running, finished, crashed, …)."""

    type: Literal["RUN_STATE"]
    state: Annotated[
        str,
        StringConstraints(min_length=1, max_length=64, pattern=_NO_NUL),
        AfterValidator(str.lower),
    ]


class RunHeartbeatEvent(_RunEvent):
    """A sign that a run is alive at `timestamp`, without a metric point: W&B's `heartbeatAt`, or
    a training loop's own ping. It only keeps a run from counting as stalled (`RUN_STALLED`)."""

    type: Literal["RUN_HEARTBEAT"]


class _ArtifactEvent(_Event):
    registry: OptionalName = None
    project: OptionalName = None
    collection: Name
    version: Version
    artifact_type: OptionalName = None
    user: OptionalName = None
    metadata: dict[str, JsonValue] | None = None

    @model_validator(mode="after")
    def _one_place(self) -> _ArtifactEvent:
        if (self.registry is None) == (self.project is None):
            raise ValueError(
                "an artifact event names exactly one of 'registry' or 'project' (where it happened)"
            )
        return self

    @property
    def alias(self) -> str | None:
        return None

    @property
    def tag(self) -> str | None:
        return None

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes two deliveries the very same event (SPEC §3.9)."""
        return (
            self.type,  # type: ignore[attr-defined]
            self.registry,
            self.project,
            self.collection,
            self.version,
            self.alias,
            self.tag,
            self.timestamp,
        )

    @property
    def place(self) -> str:
        return self.registry if self.registry is not None else str(self.project)

    @property
    def version_string(self) -> str:
        return f"{self.place}/{self.collection}:v{self.version}"


class LinkArtifactEvent(_ArtifactEvent):
    type: Literal["LINK_ARTIFACT"]
    source_project: OptionalName = None


class UnlinkArtifactEvent(_ArtifactEvent):
    type: Literal["UNLINK_ARTIFACT"]


class CreateArtifactEvent(_ArtifactEvent):
    type: Literal["CREATE_ARTIFACT"]


class AddArtifactAliasEvent(_ArtifactEvent):
    type: Literal["ADD_ARTIFACT_ALIAS"]
    alias_: Name = Field(alias="alias")

    @property
    def alias(self) -> str | None:
        return self.alias_


class _TagEvent(_ArtifactEvent):
    tag_: Name = Field(alias="tag")

    @property
    def tag(self) -> str | None:
        return self.tag_


class AddArtifactTagEvent(_TagEvent):
    type: Literal["ADD_ARTIFACT_TAG"]


class RemoveArtifactTagEvent(_TagEvent):
    type: Literal["REMOVE_ARTIFACT_TAG"]


ArtifactEvent = (
    LinkArtifactEvent
    | UnlinkArtifactEvent
    | CreateArtifactEvent
    | AddArtifactAliasEvent
    | AddArtifactTagEvent
    | RemoveArtifactTagEvent
)
RunEvent = MetricEvent | RunStateEvent | RunHeartbeatEvent
"""An event about a run."""
Event = Annotated[RunEvent | ArtifactEvent, Field(discriminator="type")]
"""Any normalized event, chosen by its `type`."""

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_EVENT_TYPES = (
    "METRIC, RUN_STATE, RUN_HEARTBEAT, LINK_ARTIFACT, UNLINK_ARTIFACT, CREATE_ARTIFACT, "
    "ADD_ARTIFACT_ALIAS, ADD_ARTIFACT_TAG, REMOVE_ARTIFACT_TAG"
)


def parse_event(line: str | bytes) -> Event:
    """One event from its JSON text; raises pydantic's `ValidationError` when malformed."""
    return _EVENT.validate_json(line)


def event_from_dict(data: Any) -> Event:
    """One event from parsed JSON; raises pydantic's `ValidationError` when malformed."""
    return _EVENT.validate_python(data)


def describe_problem(exc: ValidationError) -> str:
    """The first problem of a malformed event, naming the field and the fix."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"] if not str(part).isupper())
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":
        return f"not valid JSON ({ctx.get('error', error['msg'])})"
    if not field and kind not in {"value_error", "union_tag_invalid", "union_tag_not_found"}:
        return f"each event must be a JSON object, not {error['input']!r}"
    if kind == "union_tag_invalid":
        return f"field 'type': {ctx.get('tag')!r} is not an event type; use one of {_EVENT_TYPES}"
    if kind == "union_tag_not_found":
        return f"field 'type' is required (one of {_EVENT_TYPES})"
    if kind == "missing":
        return f"field {field!r} is required"
    if kind == "extra_forbidden":
        return f"field {field!r} is not a known field of this event type (a typo?)"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        return (
            f"field {field!r} contains a NUL character (\\u0000), which no store can keep in a "
            "name; remove it"
        )
    if kind == "string_too_long":
        return (
            f"field {field!r} is {len(error['input'])} characters long; it may have at most "
            f"{ctx.get('max_length', MAX_NAME)}"
        )
    if kind == "less_than_equal" or (kind == "greater_than_equal" and ctx.get("ge") != 0):
        return (
            f"field {field!r}: {error['input']} is too large; it must lie within "
            f"±{LARGEST_INT} (2^53 − 1, what a JSON number carries exactly)"
        )
    if field in {"timestamp", "run_created_at"}:
        return (
            f"field {field!r} must be an ISO 8601 time such as 2026-01-01T10:00:00Z "
            f"(got {error['input']!r})"
        )
    msg = error["msg"]
    return f"field {field!r}: {msg[0].lower()}{msg[1:]} (got {error['input']!r})"


def read_events(path: str | Path) -> list[Event]:
    """Every event of a JSON-lines file, in file order; `EventError` lists malformed lines.

    A malformed line is never skipped silently: the whole file is refused, naming each bad line.
    """
    events: list[Event] = []
    scan_events(path, events.append)
    return events


def scan_events(
    path: str | Path,
    sink: Callable[[Event], object],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Hand every event of a JSON-lines file to `sink`, in file order; returns how many.

    The whole file is checked: if any line is malformed, `EventError` names each bad line (the
    first 20) after the scan, so callers must treat what `sink` received as void then.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise EventError.unreadable(path, str(exc.strerror)) from None
    problems: list[str] = []
    bad = count = 0
    validate = _EVENT.validate_json
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                event = validate(line)
            except ValidationError as exc:
                bad += 1
                if len(problems) < MAX_REPORTED_PROBLEMS:
                    problems.append(f"{path}:{number}: {describe_problem(exc)}")
                continue
            if not bad:
                sink(event)
                count += 1
                if progress is not None and count % 50_000 == 0:
                    progress(count)
    if problems:
        if bad > len(problems):
            problems.append(f"… and {bad - len(problems)} more malformed lines")
        raise EventError(problems, source=str(path))
    return count
