"""Sources: trackers the sensor polls, each turning what changed into normalized events.

A source is polled outside the store's lock, from the cursor it left last time; the cycle's
transaction keeps the poll only if that cursor is still the stored one, so the cursor advances
exactly when the events it found are evaluated and recorded. A source with
no cursor starts watching *now*: what the tracker already holds is read only to fill windows and
baselines (`Poll.filling`), never to fire (SPEC §3.10).

`read_history` is that first look on its own: what a tracker holds, for `fetch_metric_history`
and the backtest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from prefect_ml_automations.events import Event

logger = logging.getLogger("prefect_ml_automations")


@dataclass
class Poll:
    """What one poll found: new events, history that only fills windows, the next cursor."""

    events: list[Event] = field(default_factory=list)
    filling: list[Event] = field(default_factory=list)
    cursor: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    #: On a first poll: the artifact versions the tracker already held, each as its arrival
    #: event stamped with the time the tracker dates it by (MLflow's model versions and logged
    #: models, W&B's project artifact versions). A sensor never fires them (they are what it
    #: found when it started watching); a backtest replays them.
    versions: list[Event] = field(default_factory=list)


class Source(Protocol):
    """A tracker the sensor polls."""

    name: str

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        """Events since `cursor` (None: the first poll, which starts watching now)."""


class Cursor(BaseModel):
    """Where a source left off: a typed, versioned model per tracker, stored as JSON.

    A cursor that can not be read — damaged, or written by an older version of its model — is
    dropped with a logged notice, and the source starts watching from now: a restart never
    backfills (SPEC §3.10).
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def load(cls, raw: dict[str, Any] | None, source: str) -> Self | None:
        if raw is None:
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError:
            logger.warning(
                "Source %r: its saved cursor is unreadable or from an older version; it starts "
                "watching from now (nothing it missed is backfilled).",
                source,
            )
            return None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass
class TrackerHistory:
    """What a tracker already holds, as a source's first poll reads it."""

    source: str
    #: Metric points and run states (each run's current state, at the time the tracker gives
    #: it), in the order they were logged.
    events: list[Event]
    #: Artifact versions the tracker dates (`Poll.versions`).
    versions: list[Event]
    calls: int = 0


def read_history(source: Source, now: datetime) -> TrackerHistory:
    """Everything `source` watches that its tracker already holds: the source's first poll
    (`poll(None, now)`), which a sensor reads only to fill windows and baselines.

    Raises `SourceError` when the tracker can not be read.
    """
    poll = source.poll(None, now)
    return TrackerHistory(source.name, [*poll.filling, *poll.events], poll.versions, poll.calls)
