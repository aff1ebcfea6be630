"""Blocks hold everything a sensor needs (SPEC §9): `apply` saves a config's automations,
trackers, receiver and store, and a sensor started without a file runs from them — against a
real Prefect test server and a real MLflow store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block

import prefect_ml_automations.blocks as blocks
from prefect_ml_automations.blocks import (
    AutomationBlock,
    MLflowTrackerBlock,
    ReceiverBlock,
    StateStoreBlock,
    WandbTrackerBlock,
    load_saved_config,
)
from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.flows import sensor_cycle
from prefect_ml_automations.store import StateStore

from .conftest import events, state

BLOCK_TYPES = [
    obj for obj in vars(blocks).values() if isinstance(obj, type) and issubclass(obj, Block)
]


def test_blocks_register_through_the_prefect_collections_entry_point() -> None:
    [entry] = [
        e for e in entry_points(group="prefect.collections") if e.name == "prefect_ml_automations"
    ]
    assert entry.value == "prefect_ml_automations.blocks"
    assert {b.get_block_type_slug() for b in BLOCK_TYPES} == {
        "ml-automation",
        "ml-automations-mlflow",
        "ml-automations-wandb",
        "ml-automations-receiver",
        "ml-automations-state-store",
    }


@pytest.mark.parametrize("block_type", BLOCK_TYPES, ids=lambda b: b.get_block_type_slug())
def test_every_block_type_says_what_it_is_and_where_it_is_documented(
    block_type: type[Block],
) -> None:
    assert block_type._description
    assert str(block_type._documentation_url).startswith("https://")
    assert block_type._logo_url
    assert '.load("' in (block_type.__doc__ or "")
    undocumented = [n for n, f in block_type.model_fields.items() if not f.description]
    assert undocumented == []


def test_the_wandb_tracker_keeps_its_api_key_secret() -> None:
    block = WandbTrackerBlock(entity="team", api_key="wandb-key-123")  # type: ignore[arg-type]
    assert "wandb-key-123" not in repr(block)
    assert block.source_settings("team").api_key.get_secret_value() == "wandb-key-123"  # type: ignore[union-attr]


# -- apply, and a sensor from the blocks alone ---------------------------------------------------


@pytest.fixture
def no_saved_blocks(prefect_api: str) -> Iterator[None]:
    """The test server is shared by the session: each test starts and ends without our blocks."""

    async def clear() -> None:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        async with get_client() as client:
            for block_type in BLOCK_TYPES:
                try:
                    documents = await client.read_block_documents_by_type(
                        block_type.get_block_type_slug(), offset=0, limit=1000
                    )
                except ObjectNotFound:
                    continue
                for document in documents:
                    await client.delete_block_document(document.id)

    asyncio.run(clear())
    yield
    asyncio.run(clear())


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_text(f"store: sqlite:///{tmp_path}/store.db\n{body}")
    return path


def test_apply_saves_automations_sources_receiver_and_store(
    tmp_path: Path, no_saved_blocks: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(
        tmp_path,
        "receiver: {token: tok-123, secret: sec-456}\n"
        "sources:\n"
        "  - {name: local, type: mlflow, tracking_uri: 'sqlite:///mlflow.db', registry: models}\n"
        "  - {name: team, type: wandb, entity: acme, api_key: key-789}\n"
        "automations:\n"
        "  - name: Page On Failure\n"
        "    source: local\n"
        "    scope: {project: p}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: no_op}\n",
    )
    assert main(["apply", str(config_file)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "saved source 'local' as block ml-automations-mlflow/local",
        "saved source 'team' as block ml-automations-wandb/team",
        "saved automation 'Page On Failure' as block ml-automation/page-on-failure",
        "saved the receiver's credentials as block ml-automations-receiver/ml-automations-receiver",
        "saved the state store as block ml-automations-state-store/ml-automations-store",
    ]
    saved = asyncio.run(load_saved_config())
    original = load_config(config_file)
    assert saved.problems == []
    assert saved.config.automations == original.automations
    assert saved.config.sources == original.sources  # the W&B key included (SecretStr compares)
    assert saved.config.receiver == original.receiver
    assert saved.config.store == original.store
    assert set(saved.block_ids) == {"Page On Failure"}
    assert "store.db" not in repr(StateStoreBlock.load("ml-automations-store"))  # a secret
    assert "tok-123" not in repr(ReceiverBlock.load("ml-automations-receiver"))


def test_a_source_whose_name_can_not_be_a_block_name_is_refused_by_apply(
    tmp_path: Path, no_saved_blocks: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(
        tmp_path,
        "sources: [{name: Local Store, type: mlflow, tracking_uri: 'sqlite:///m.db'}]\n",
    )
    assert main(["apply", str(config_file)]) == 2
    assert "rename it 'local-store'" in capsys.readouterr().err


def test_a_sensor_started_from_the_blocks_alone_polls_the_tracker_and_fires(
    tmp_path: Path, tracking_uri: str, no_saved_blocks: None
) -> None:
    import mlflow

    project = f"team/blocks-{uuid.uuid4().hex[:8]}"
    config_file = write_config(
        tmp_path,
        f"sources: [{{name: local, type: mlflow, tracking_uri: '{tracking_uri}'}}]\n"
        "automations:\n"
        "  - name: page-on-failure\n"
        f"    scope: {{project: {project}}}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: no_op}\n",
    )
    assert main(["apply", str(config_file)]) == 0
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment(project)
    assert asyncio.run(sensor_cycle())["fired"] == 0  # the first cycle starts watching
    run = client.create_run(experiment, run_name="sweep-1")
    client.set_terminated(run.info.run_id, "FAILED")
    counts = asyncio.run(sensor_cycle())  # no config file: everything comes from the blocks
    assert counts == {"events": 1, "fired": 1, "finished": 1, "failed": 0}
    [row] = StateStore(load_config(config_file).store).history()
    assert (row.firing.automation, row.firing.run_name, row.status) == (
        "page-on-failure",
        "sweep-1",
        "finished",
    )


def test_a_bad_block_is_named_and_the_other_automations_still_run(
    tmp_path: Path, no_saved_blocks: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(
        tmp_path,
        "automations:\n"
        "  - name: page-on-failure\n"
        "    scope: {project: p}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: no_op}\n",
    )
    assert main(["apply", str(config_file)]) == 0
    broken = AutomationBlock.from_automation(load_config(config_file).automations[0])
    broken.save("broken", overwrite=True)
    asyncio.run(_break_block("broken"))  # as a hand edit through the API would leave it

    saved = asyncio.run(load_saved_config())
    assert [a.name for a in saved.config.automations] == ["page-on-failure"]
    [problem] = saved.problems
    assert problem.startswith("block ml-automation/broken is not a valid automation (")
    assert problem.endswith("It is left out; the others run.")

    StateStore(load_config(config_file).store).put_events(
        events(state("r1", "failed", 0)), origin="push"
    )
    final = asyncio.run(sensor_cycle(return_state=True))  # type: ignore[call-overload]
    assert final.is_failed()
    assert "block ml-automation/broken is not a valid automation" in final.message
    [row] = StateStore(load_config(config_file).store).history()
    assert (row.firing.automation, row.status) == ("page-on-failure", "finished")


async def _break_block(name: str) -> None:
    """Replace a saved automation block's data with an automation whose event has no type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentUpdate

    data: dict[str, Any] = {
        "automation": {
            "name": "broken",
            "scope": {"project": "p"},
            "event": {"states": ["failed"]},
            "action": {"type": "no_op"},
        }
    }
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            name, AutomationBlock.get_block_type_slug()
        )
        await client.update_block_document(
            document.id, BlockDocumentUpdate(data=data, merge_existing_data=False)
        )


def test_the_sensor_deployment_runs_a_cycle_on_a_schedule(tmp_path: Path) -> None:
    from prefect_ml_automations.flows.sensor import sensor_deployment

    config_file = tmp_path / "automations.yaml"
    config_file.write_text("automations: []\n")
    deployment = sensor_deployment(config_file, interval=45, name="sensor")
    assert deployment.name == "sensor"
    assert deployment.parameters == {"config_file": str(config_file.resolve())}
    [schedule] = deployment.schedules
    assert schedule.schedule.interval.total_seconds() == 45
    described = deployment._parameter_openapi_schema.properties
    assert "read the saved blocks" in described["config_file"]["description"]
    assert described["sensor"]["type"] == "string"


def test_the_tracker_blocks_build_their_clients(tracking_uri: str) -> None:
    client = MLflowTrackerBlock(tracking_uri=tracking_uri).get_client()
    assert client.search_experiments(max_results=1) is not None
    api = WandbTrackerBlock(entity="acme", api_key="k").get_client()  # type: ignore[arg-type]
    assert api.where == "W&B at https://api.wandb.ai"
