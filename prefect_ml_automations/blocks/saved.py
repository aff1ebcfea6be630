"""A whole config as Prefect blocks: what `apply` saves, and what a sensor without a file reads.

Saved: one `ml-automation` block per automation, one tracker block per source (named as the
source), the receiver's credentials and the state store. Read back: every block of those types.
A block that no longer validates (edited by hand, or saved by an older version) is named in a
problem and left out; the other automations still run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import SecretStr, ValidationError

from prefect_ml_automations.blocks.automation import AutomationBlock
from prefect_ml_automations.blocks.receiver import RECEIVER_BLOCK, ReceiverBlock
from prefect_ml_automations.blocks.store import STORE_BLOCK, StateStoreBlock
from prefect_ml_automations.blocks.trackers import TRACKER_BLOCKS, tracker_block
from prefect_ml_automations.config import AutomationsConfig, ReceiverSettings
from prefect_ml_automations.errors import ConfigError

_BLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def block_name(name: str) -> str:
    """A block document name from an automation name (lower case, letters, digits, dashes).

    >>> block_name("Page On Failure!")
    'page-on-failure'
    """
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "automation"


@dataclass
class SavedConfig:
    """A config read from blocks, with the problems of the blocks that were left out."""

    config: AutomationsConfig
    #: One sentence per block that could not be used, naming it and the fix.
    problems: list[str] = field(default_factory=list)
    #: Automation name -> the id of the block document that holds it.
    block_ids: dict[str, UUID] = field(default_factory=dict)


def save_config(config: AutomationsConfig, say: Callable[[str], None] = print) -> None:
    """Save every part of `config` as blocks (overwriting blocks of the same names)."""
    bad = [s.name for s in config.sources if not _BLOCK_NAME.match(s.name)]
    if bad:
        raise ConfigError(
            [
                f"source {name!r}: a source saved as a block is named as the block, and Prefect "
                "block names are lower-case letters, digits and dashes; rename it "
                f"{block_name(name)!r} (and the automations' 'source' with it)."
                for name in bad
            ]
        )
    for settings in config.sources:
        tracker = tracker_block(settings)
        tracker.save(settings.name, overwrite=True)
        slug = tracker.get_block_type_slug()
        say(f"saved source {settings.name!r} as block {slug}/{settings.name}")
    for automation in config.automations:
        name = block_name(automation.name)
        AutomationBlock.from_automation(automation).save(name, overwrite=True)
        say(f"saved automation {automation.name!r} as block ml-automation/{name}")
    if config.receiver.token is not None or config.receiver.secret is not None:
        ReceiverBlock.from_settings(config.receiver).save(RECEIVER_BLOCK, overwrite=True)
        say(f"saved the receiver's credentials as block ml-automations-receiver/{RECEIVER_BLOCK}")
    StateStoreBlock(url=SecretStr(config.store)).save(STORE_BLOCK, overwrite=True)
    say(f"saved the state store as block ml-automations-state-store/{STORE_BLOCK}")


async def load_saved_config(store_block: str = STORE_BLOCK) -> SavedConfig:
    """The config the saved blocks make up; blocks that do not validate become `problems`."""
    from prefect.client.orchestration import get_client

    try:
        store: StateStoreBlock = await StateStoreBlock.aload(store_block)
    except ValueError:
        raise ConfigError(
            [
                f"there is no state store block {store_block!r}; save one with "
                "`ml-automations apply FILE` (or in the Prefect UI: Blocks → ML Automations State "
                "Store), or give the sensor a config file."
            ],
            source="the Prefect blocks",
        ) from None
    problems: list[str] = []
    sources: list[Any] = []
    async with get_client() as client:
        for kind, block_type in TRACKER_BLOCKS.items():
            for document in await _documents(client, block_type.get_block_type_slug()):
                label = f"block {block_type.get_block_type_slug()}/{document.name}"
                try:
                    block = block_type.model_validate(document.data)
                    sources.append(block.source_settings(str(document.name)))
                except (ValidationError, ValueError) as exc:
                    problems.append(_problem(label, exc, f"{kind} tracker"))
        receiver = ReceiverSettings()
        for document in await _documents(client, ReceiverBlock.get_block_type_slug()):
            if document.name == RECEIVER_BLOCK:
                try:
                    receiver = ReceiverBlock.model_validate(document.data).settings()
                except (ValidationError, ValueError) as exc:
                    problems.append(
                        _problem(f"block ml-automations-receiver/{document.name}", exc, "receiver")
                    )
        automations = []
        block_ids: dict[str, UUID] = {}
        source_names = {s.name for s in sources}
        for document in await _documents(client, AutomationBlock.get_block_type_slug()):
            label = f"block ml-automation/{document.name}"
            try:
                automation = AutomationBlock.model_validate(document.data).to_automation()
            except (ValidationError, ValueError) as exc:
                problems.append(_problem(label, exc, "automation"))
                continue
            if automation.name in block_ids:
                problems.append(
                    f"{label}: another automation block is also named {automation.name!r}; "
                    "rename one of them (names are unique). This one is left out."
                )
                continue
            if automation.source is not None and automation.source not in source_names:
                known = ", ".join(sorted(source_names)) or "none is saved"
                problems.append(
                    f"{label}: its source {automation.source!r} is not a saved tracker block "
                    f"(saved: {known}); save the source with `ml-automations apply` or fix the "
                    "automation's source. It is left out."
                )
                continue
            if automation.source is None and len(source_names) > 1:
                problems.append(
                    f"{label}: there are {len(source_names)} tracker blocks, so name the one this "
                    "automation watches in its 'source'. It is left out."
                )
                continue
            automations.append(automation)
            block_ids[automation.name] = document.id
    automations.sort(key=lambda a: a.name)
    sources.sort(key=lambda s: s.name)
    config = AutomationsConfig(
        store=store.url.get_secret_value(),
        receiver=receiver,
        sources=sources,
        automations=automations,
    )
    return SavedConfig(config, problems, block_ids)


async def _documents(client: Any, slug: str) -> list[Any]:
    from prefect.exceptions import ObjectNotFound

    try:
        return list(
            await client.read_block_documents_by_type(
                slug, offset=0, limit=10_000, include_secrets=True
            )
        )
    except ObjectNotFound:  # the block type was never registered: no such blocks
        return []


def _problem(label: str, exc: Exception, what: str) -> str:
    if isinstance(exc, ValidationError):
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the block'}: {e['msg']}" for e in exc.errors()
        )
    else:
        details = str(exc)
    return (
        f"{label} is not a valid {what} ({details}); fix it in the Prefect UI (Blocks) or save it "
        "again with `ml-automations apply`. It is left out; the others run."
    )


async def automation_block_ids(names: list[str]) -> dict[str, UUID]:
    """The ids of the saved blocks that hold automations of these names (none when there is no
    Prefect API or no such block: the ids only enrich the firing events)."""
    from prefect.client.orchestration import get_client

    wanted = set(names)
    found: dict[str, UUID] = {}
    try:
        async with get_client() as client:
            documents = await _documents(client, AutomationBlock.get_block_type_slug())
    except Exception:  # no API reachable: the events go out without the block
        return found
    for document in documents:
        try:
            name = AutomationBlock.model_validate(document.data).to_automation().name
        except (ValidationError, ValueError):
            continue
        if name in wanted:
            found[name] = document.id
    return found
