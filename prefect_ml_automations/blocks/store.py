"""The state store block: where the sensor keeps its inbox, state and firing history."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_ml_automations.blocks._common import DOCS, LOGO, PlainForm

#: The name `ml-automations apply` gives the state store block.
STORE_BLOCK = "ml-automations-store"


class StateStoreBlock(PlainForm, Block):
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
    _logo_url: ClassVar[Any] = LOGO
    _documentation_url: ClassVar[Any] = DOCS

    url: SecretStr = Field(
        description="SQLAlchemy URL: sqlite:///ml-automations.db or postgresql://user:pw@host/db."
    )

    def get_store(self) -> Any:
        """The `StateStore` this block points at."""
        from prefect_ml_automations.store import StateStore

        return StateStore(self.url.get_secret_value())
