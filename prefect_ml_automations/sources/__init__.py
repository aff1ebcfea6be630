"""Sources: trackers the sensor polls, each turning what changed into normalized events.

A source is polled inside the sensor's cycle transaction with the cursor it left last time, so
its cursor advances exactly when the events it found are evaluated and recorded. A source with
no cursor starts watching *now*: what the tracker already holds is read only to fill windows and
baselines (`Poll.filling`), never to fire (SPEC §3.10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prefect_ml_automations.events import Event


@dataclass
class Poll:
    """What one poll found: new events, history that only fills windows, the next cursor."""

    events: list[Event] = field(default_factory=list)
    filling: list[Event] = field(default_factory=list)
    cursor: dict[str, Any] = field(default_factory=dict)
    calls: int = 0


class Source(Protocol):
    """A tracker the sensor polls."""

    name: str

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        """Events since `cursor` (None: the first poll, which starts watching now)."""
