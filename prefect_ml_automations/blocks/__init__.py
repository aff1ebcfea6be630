"""Prefect blocks: automations and the state store, editable in the Prefect UI.

Registered through the `prefect.collections` entry point, so this module stays light: pydantic
models only, no pandas or numpy at import.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_ml_automations.automations import Automation

_LOGO = "https://raw.githubusercontent.com/PrefectHQ/prefect/main/docs/images/logos/prefect-logo-mark-solid-white-500.png"


class AutomationBlock(Block):
    """One W&B-style automation: scope + event (+ run filters) + action.

    Saved by `ml-automations apply FILE`, edited in the Prefect UI, read by the sensor.

    Example:
        ```python
        from prefect_ml_automations.blocks import AutomationBlock
        automation = AutomationBlock.load("deploy-on-production").automation
        ```
    """

    _block_type_name: ClassVar[str] = "ML Automation"
    _block_type_slug: ClassVar[str] = "ml-automation"
    _description: ClassVar[str] = (
        "When a model gets an alias, a run fails or a metric crosses a line, run a deployment."
    )
    _logo_url: ClassVar[Any] = _LOGO

    automation: Automation = Field(description="The automation, as in the YAML config.")


class StateStoreBlock(Block):
    """Where the sensor keeps its inbox, state and firing history: a SQLAlchemy URL.

    Example:
        ```python
        from prefect_ml_automations.blocks import StateStoreBlock
        store = StateStoreBlock.load("ml-automations-store").get_store()
        ```
    """

    _block_type_name: ClassVar[str] = "ML Automations State Store"
    _block_type_slug: ClassVar[str] = "ml-automations-state-store"
    _description: ClassVar[str] = "The sensor's state store (SQLite file or PostgreSQL URL)."
    _logo_url: ClassVar[Any] = _LOGO

    url: SecretStr = Field(
        description="SQLAlchemy URL: sqlite:///ml-automations.db or postgresql://user:pw@host/db."
    )

    def get_store(self) -> Any:
        """The `StateStore` this block points at."""
        from prefect_ml_automations.store import StateStore

        return StateStore(self.url.get_secret_value())


#: The name `ml-automations apply` gives the state store block.
STORE_BLOCK = "ml-automations-store"


async def load_config_from_blocks(store_block: str = STORE_BLOCK) -> Any:
    """An `AutomationsConfig` made of every saved automation block and the state store block."""
    from prefect.client.orchestration import get_client

    from prefect_ml_automations.config import AutomationsConfig

    store: StateStoreBlock = await StateStoreBlock.aload(store_block)
    async with get_client() as client:
        documents = await client.read_block_documents_by_type(
            AutomationBlock.get_block_type_slug(), offset=0, limit=10_000
        )
    automations = [AutomationBlock.model_validate(d.data).automation for d in documents]
    automations.sort(key=lambda a: a.name)
    return AutomationsConfig(store=store.url.get_secret_value(), automations=automations)


__all__ = ["STORE_BLOCK", "AutomationBlock", "StateStoreBlock", "load_config_from_blocks"]
