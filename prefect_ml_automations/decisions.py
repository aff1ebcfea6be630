"""What evaluation decides: a `Firing` (recorded, then acted on) or a `Skip` (why not).

A firing's id is derived from what fired — automation, event type, subject and the triggering
point or event — so the same events give the same ids in every run, and the state store's unique
constraint turns a re-delivered event into the same firing.
"""

from __future__ import annotations

import hashlib
import json
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
    text = "\x1f".join(["" if p is None else str(p) for p in parts])
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
    #: A stalled run's last sign of life (`RUN_STALLED`).
    quiet_since: datetime | None = None
    status: FiringStatus = "pending"
    #: Not part of the record, but of what templates can use.
    user: str | None = Field(default=None, exclude=True)
    metric_filter: str | None = Field(default=None, exclude=True)
    metadata: dict[str, Any] | None = Field(default=None, exclude=True)
    #: Where the triggering event stood in its batch (orders a batch's firings).
    arrival: int = Field(default=0, exclude=True)

    @field_serializer("timestamp", "quiet_since")
    def _iso(self, value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat()

    def to_json(self) -> str:
        """The SPEC §4 record, as one JSON line."""
        return self.model_dump_json(exclude_none=True)

    def to_stored(self) -> str:
        """Everything, including what templates need beyond the record (for the ledger)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data.update(user=self.user, metric_filter=self.metric_filter, metadata=self.metadata)
        return json.dumps({k: v for k, v in data.items() if v is not None})

    @classmethod
    def from_stored(cls, text: str) -> Firing:
        # `json.loads`, not pydantic's parser: a record holds what `json.dumps` wrote, lone
        # surrogates (from a tracker's JSON) included, which pydantic's parser refuses — and a
        # firing that can not be read back would stop every delivery behind it.
        import json

        return cls.model_validate(json.loads(text))

    @property
    def subject(self) -> str:
        """The run or artifact version it is about, in words."""
        if self.run_id is not None:
            return run_subject(self.run_id, self.run_name)
        change = self.alias or self.tag
        place = self.registry if self.registry is not None else self.project
        return f"{place}/{self.collection}:v{self.version}" + (f" ({change})" if change else "")


def run_subject(run_id: str, name: str | None) -> str:
    """A run in words: `run 'r1' (sweep-1)`."""
    return f"run {run_id!r}" + (f" ({name})" if name and name != run_id else "")


@dataclass(frozen=True)
class Skip:
    """Why an automation did not fire for a subject (`count` times, for the same reason)."""

    automation: str
    subject: str
    reason: str
    count: int = 1
    #: Matched, but held back by the cooldown: recorded in the history as `skipped`.
    held_back: bool = False

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


def merged_skips(skips: list[Skip]) -> list[Skip]:
    """Skips for the same automation, subject and reason (from several slices or cycles) as one,
    counting their matches."""
    merged: dict[tuple[str, str, str], Skip] = {}
    for skip in skips:
        key = (skip.automation, skip.subject, skip.reason)
        if (before := merged.get(key)) is None:
            merged[key] = skip
        else:
            merged[key] = Skip(
                *key, before.count + skip.count, held_back=before.held_back or skip.held_back
            )
    return list(merged.values())
