"""What evaluation decides: a `Firing` (recorded, then acted on) or a `Skip` (why not).

A firing's id is derived from what fired — automation, event type, subject and the triggering
point or event — so the same events give the same ids in every run, and the state store's unique
constraint turns a re-delivered event into the same firing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

FiringStatus = Literal["pending", "finished", "failed", "skipped"]


def firing_id(*parts: object) -> str:
    """A deterministic id: 32 hex characters of SHA-256 over the parts.

    >>> len(firing_id("good-accuracy", "RUN_METRIC", "team/vision", "r1", "accuracy", 12))
    32
    """
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Firing(BaseModel):
    """A firing, as recorded in the history and printed by the dry run (SPEC §4)."""

    model_config = ConfigDict(frozen=True)

    firing_id: str
    automation: str
    event_type: str
    timestamp: datetime
    project: str | None = None
    registry: str | None = None
    collection: str | None = None
    version: int | None = None
    alias: str | None = None
    tag: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    state: str | None = None
    metric: str | None = None
    step: int | None = None
    value: float | None = None
    metric_values: list[float] | None = None
    status: FiringStatus = "pending"
    #: Not part of the record, but of what templates can use.
    user: str | None = Field(default=None, exclude=True)
    metric_filter: str | None = Field(default=None, exclude=True)
    metadata: dict[str, Any] | None = Field(default=None, exclude=True)
    #: Where the triggering event stood in its batch (orders a batch's firings).
    arrival: int = Field(default=0, exclude=True)

    @field_serializer("timestamp")
    def _iso(self, value: datetime) -> str:
        return value.astimezone(UTC).isoformat()

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


@dataclass(frozen=True)
class Skip:
    """Why an automation did not fire for a subject (`count` times, for the same reason)."""

    automation: str
    subject: str
    reason: str
    count: int = 1

    def to_record(self) -> dict[str, Any]:
        return {
            "decision": "not_fired",
            "automation": self.automation,
            "subject": self.subject,
            "reason": self.reason,
            "count": self.count,
        }

    def describe(self) -> str:
        times = f" ({self.count}×)" if self.count > 1 else ""
        return f"{self.automation} · {self.subject}: not fired: {self.reason}{times}"
