"""Prefect blocks: the automations, the trackers they watch, the receiver and the state store —
everything a sensor needs, editable in the Prefect UI.

Registered through the `prefect.collections` entry point, so this package stays light: pydantic
models only, no pandas, numpy or mlflow at import.
"""

from prefect_ml_automations.blocks.automation import AutomationBlock
from prefect_ml_automations.blocks.receiver import RECEIVER_BLOCK, ReceiverBlock
from prefect_ml_automations.blocks.saved import (
    SavedConfig,
    block_name,
    load_saved_config,
    save_config,
)
from prefect_ml_automations.blocks.store import STORE_BLOCK, StateStoreBlock
from prefect_ml_automations.blocks.trackers import MLflowTrackerBlock, WandbTrackerBlock

__all__ = [  # noqa: RUF022 -- grouped by concept
    # the blocks
    "AutomationBlock",
    "MLflowTrackerBlock",
    "WandbTrackerBlock",
    "ReceiverBlock",
    "StateStoreBlock",
    # a whole config as blocks
    "RECEIVER_BLOCK",
    "STORE_BLOCK",
    "SavedConfig",
    "block_name",
    "load_saved_config",
    "save_config",
]
