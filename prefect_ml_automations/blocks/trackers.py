"""Tracker blocks: an MLflow tracking server or store, a W&B entity — with their credentials.

`ml-automations apply` saves one per source of the config, named as the source, so a sensor
started from the Prefect UI (no config file) polls the same trackers. Each builds its client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_ml_automations.blocks._common import DOCS, LOGO, PlainForm
from prefect_ml_automations.config import MLflowSourceSettings, WandbSourceSettings

if TYPE_CHECKING:
    from prefect_ml_automations.sources.wandb import WandbAPI


class MLflowTrackerBlock(PlainForm, Block):
    """An MLflow tracking server or store whose runs, metrics and model registry are watched.

    Example:
        ```python
        from prefect_ml_automations.blocks import MLflowTrackerBlock
        client = MLflowTrackerBlock.load("local").get_client()  # an mlflow.MlflowClient
        ```
    """

    _block_type_name: ClassVar[str] = "ML Automations MLflow Tracker"
    _block_type_slug: ClassVar[str] = "ml-automations-mlflow"
    _description: ClassVar[str] = "An MLflow tracking server or store the sensor watches."
    _logo_url: ClassVar[Any] = LOGO
    _documentation_url: ClassVar[Any] = DOCS

    tracking_uri: str = Field(
        min_length=1,
        title="Tracking URI",
        description="MLflow's tracking URI: sqlite:///mlflow.db, or http://host:5000 for a server.",
    )
    registry: str = Field(
        default="models",
        min_length=1,
        description=(
            "The name automations give this server's model registry ({registry: models}); "
            "'models' when left empty."
        ),
    )

    @classmethod
    def from_settings(cls, settings: MLflowSourceSettings) -> MLflowTrackerBlock:
        return cls(tracking_uri=settings.tracking_uri, registry=settings.registry)

    def source_settings(self, name: str) -> MLflowSourceSettings:
        """The source this block describes, as the config file would name it."""
        return MLflowSourceSettings(
            name=name, type="mlflow", tracking_uri=self.tracking_uri, registry=self.registry
        )

    def get_client(self) -> Any:
        """An `mlflow.MlflowClient` for this tracker (needs the `[mlflow]` extra)."""
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)


class WandbTrackerBlock(PlainForm, Block):
    """A Weights & Biases entity (cloud or self-managed) whose projects and registries are watched.

    Example:
        ```python
        from prefect_ml_automations.blocks import WandbTrackerBlock
        api = WandbTrackerBlock.load("team").get_client()
        api.query("query { viewer { username } }")
        ```
    """

    _block_type_name: ClassVar[str] = "ML Automations Weights and Biases Tracker"
    _block_type_slug: ClassVar[str] = "ml-automations-wandb"
    _description: ClassVar[str] = "A Weights & Biases entity the sensor watches, with its API key."
    _logo_url: ClassVar[Any] = LOGO
    _documentation_url: ClassVar[Any] = DOCS

    entity: str = Field(
        min_length=1, description="The team (or user) entity whose projects are watched."
    )
    org_entity: str | None = Field(
        default=None,
        title="Organization entity",
        description=(
            "The organization's entity, which holds the registries (wandb-registry-<name>); "
            "found from the team entity when left empty."
        ),
    )
    base_url: str = Field(
        default="https://api.wandb.ai",
        title="Base URL",
        description="W&B's API: your host when self-managed; https://api.wandb.ai when left empty.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        title="API key",
        description="A W&B API key (wandb.ai/authorize); when empty, $WANDB_API_KEY is used.",
    )

    @classmethod
    def from_settings(cls, settings: WandbSourceSettings) -> WandbTrackerBlock:
        return cls(
            entity=settings.entity,
            org_entity=settings.org_entity,
            base_url=settings.base_url,
            api_key=settings.api_key,
        )

    def source_settings(self, name: str) -> WandbSourceSettings:
        """The source this block describes, as the config file would name it."""
        return WandbSourceSettings(
            name=name,
            type="wandb",
            entity=self.entity,
            org_entity=self.org_entity,
            base_url=self.base_url,
            api_key=self.api_key,
        )

    def get_client(self) -> WandbAPI:
        """W&B's GraphQL API with this block's key (`.query(document, **variables)`)."""
        from prefect_ml_automations.sources.wandb import WandbSource

        return WandbSource(self.source_settings("wandb"), projects=set(), registries=set()).api


def tracker_block(
    settings: MLflowSourceSettings | WandbSourceSettings,
) -> MLflowTrackerBlock | WandbTrackerBlock:
    """The block that holds a source's settings."""
    if isinstance(settings, MLflowSourceSettings):
        return MLflowTrackerBlock.from_settings(settings)
    return WandbTrackerBlock.from_settings(settings)


#: The tracker block type of each source type.
TRACKER_BLOCKS: dict[str, type[MLflowTrackerBlock] | type[WandbTrackerBlock]] = {
    "mlflow": MLflowTrackerBlock,
    "wandb": WandbTrackerBlock,
}
