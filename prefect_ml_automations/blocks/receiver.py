"""The receiver block: how the push receiver authenticates requests (SPEC §6)."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_ml_automations.blocks._common import DOCS, LOGO, PlainForm
from prefect_ml_automations.config import ReceiverSettings

#: The name `ml-automations apply` gives the receiver block.
RECEIVER_BLOCK = "ml-automations-receiver"


class ReceiverBlock(PlainForm, Block):
    """The push receiver's credentials: a bearer token, and the secret W&B and MLflow sign with.

    Example:
        ```python
        from prefect_ml_automations.blocks import ReceiverBlock
        settings = ReceiverBlock.load("ml-automations-receiver").settings()
        ```
    """

    _block_type_name: ClassVar[str] = "ML Automations Receiver"
    _block_type_slug: ClassVar[str] = "ml-automations-receiver"
    _description: ClassVar[str] = "How the push receiver authenticates pushed events and webhooks."
    _logo_url: ClassVar[Any] = LOGO
    _documentation_url: ClassVar[Any] = DOCS

    token: SecretStr | None = Field(
        default=None,
        description="Requests must send 'Authorization: Bearer <token>' (POST /events and others).",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="W&B and MLflow webhooks sign their bodies with this secret (/wandb, /mlflow).",
    )

    @classmethod
    def from_settings(cls, settings: ReceiverSettings) -> ReceiverBlock:
        return cls(token=settings.token, secret=settings.secret)

    def settings(self) -> ReceiverSettings:
        return ReceiverSettings(token=self.token, secret=self.secret)
