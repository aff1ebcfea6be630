"""What a collection held when a tracker was last looked at, and the events between two looks.

Neither tracker stamps a time on an alias or a tag change (nor, in W&B, on a link), so changes
are found by comparing what a poll sees with the snapshot the last poll (or webhook) left. The
same snapshot takes the changes that trackers push (MLflow's registry webhooks, W&B's webhook
calls), so a change gives one event however it arrives — polled first, pushed first, or both:

>>> snapshot = {4: VersionSnapshot()}
>>> event = event_from_dict({"type": "ADD_ARTIFACT_ALIAS", "registry": "models",
...     "collection": "churn", "version": 4, "alias": "production", "timestamp": "2026-01-02"})
>>> apply_change(snapshot, event), apply_change(snapshot, event)
(True, False)
>>> snapshot[4].aliases
['production']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from prefect_ml_automations.events import Event, event_from_dict


class VersionSnapshot(BaseModel):
    """The aliases and tags one version held (sorted, so snapshots compare and serialize stably)."""

    model_config = ConfigDict(extra="ignore")

    aliases: list[str] = []
    tags: list[str] = []


#: A collection's versions by number.
CollectionSnapshot = dict[int, VersionSnapshot]


@dataclass(frozen=True)
class SeenVersion:
    """One version as a poll saw it, with what its arrival event needs."""

    aliases: frozenset[str]
    tags: frozenset[str]
    created: str
    user: str | None = None

    def snapshot(self) -> VersionSnapshot:
        return VersionSnapshot(aliases=sorted(self.aliases), tags=sorted(self.tags))


def collection_changes(
    place: Mapping[str, Any],
    before: CollectionSnapshot | None,
    seen: Mapping[int, SeenVersion],
    *,
    arrival: str,
    unlinks: bool,
    now: str,
) -> tuple[list[Event], CollectionSnapshot]:
    """The events between a collection's snapshot and what a poll saw, and the new snapshot.

    `place` holds the fields every event carries (`registry` or `project`, `collection`, …);
    `arrival` is the event of a version not in the snapshot (`LINK_ARTIFACT` in a registry,
    `CREATE_ARTIFACT` in a project), stamped with its creation time; a version gone from the
    collection is `UNLINK_ARTIFACT` when `unlinks` (only a link can be undone). Alias and tag
    changes take `now`: the trackers keep no time for them.
    """
    before = before or {}
    events: list[Event] = []
    for number in sorted(seen):
        version = seen[number]
        common = {**place, "version": number}
        old = before.get(number)
        if old is None:
            extra = {"user": version.user} if version.user else {}
            events.append(
                event_from_dict({**common, **extra, "type": arrival, "timestamp": version.created})
            )
            old = VersionSnapshot()
        for kind, key, names in (
            ("ADD_ARTIFACT_ALIAS", "alias", version.aliases - set(old.aliases)),
            ("ADD_ARTIFACT_TAG", "tag", version.tags - set(old.tags)),
            ("REMOVE_ARTIFACT_TAG", "tag", set(old.tags) - version.tags),
        ):
            events.extend(
                event_from_dict({**common, "type": kind, key: name, "timestamp": now})
                for name in sorted(names)
            )
    if unlinks:
        events.extend(
            event_from_dict(
                {**place, "version": number, "type": "UNLINK_ARTIFACT", "timestamp": now}
            )
            for number in sorted(set(before) - set(seen))
        )
    return events, {number: version.snapshot() for number, version in seen.items()}


def apply_change(snapshot: CollectionSnapshot, event: Event) -> bool:
    """Apply one pushed change to a collection's snapshot; True when the snapshot did not have it
    yet (so it is an event), False when a poll or an earlier push already reported it."""
    number = getattr(event, "version", None)
    if number is None:
        return True
    held = snapshot.get(number)
    if event.type in ("LINK_ARTIFACT", "CREATE_ARTIFACT"):
        if held is not None:
            return False
        snapshot[number] = VersionSnapshot()
        return True
    if event.type == "UNLINK_ARTIFACT":
        return snapshot.pop(number, None) is not None
    held = snapshot.setdefault(number, VersionSnapshot())
    alias, tag = getattr(event, "alias", None), getattr(event, "tag", None)
    if event.type == "ADD_ARTIFACT_ALIAS" and alias is not None:
        if alias in held.aliases:
            return False
        remove_alias(snapshot, alias)  # one version holds an alias at a time
        held.aliases = sorted({*held.aliases, alias})
        return True
    if event.type == "ADD_ARTIFACT_TAG" and tag is not None:
        if tag in held.tags:
            return False
        held.tags = sorted({*held.tags, tag})
        return True
    if event.type == "REMOVE_ARTIFACT_TAG" and tag is not None:
        if tag not in held.tags:
            return False
        held.tags = [t for t in held.tags if t != tag]
        return True
    return True


def remove_alias(snapshot: CollectionSnapshot, alias: str) -> None:
    """Forget which version held `alias` (it was deleted, or it moved)."""
    for version in snapshot.values():
        if alias in version.aliases:
            version.aliases = [a for a in version.aliases if a != alias]
