"""Blocks: `apply` saves a config's automations so the sensor can run from the Prefect UI's copy."""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from prefect_ml_automations.blocks import AutomationBlock, StateStoreBlock, load_config_from_blocks
from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.flows import sensor_cycle
from prefect_ml_automations.store import StateStore

from .conftest import events, state


def test_blocks_register_through_the_prefect_collections_entry_point() -> None:
    [entry] = [
        e for e in entry_points(group="prefect.collections") if e.name == "prefect_ml_automations"
    ]
    assert entry.value == "prefect_ml_automations.blocks"
    assert AutomationBlock.get_block_type_slug() == "ml-automation"
    assert StateStoreBlock._description


def test_apply_saves_blocks_and_the_sensor_runs_from_them(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(
        f"store: sqlite:///{tmp_path}/store.db\n"
        "automations:\n"
        "  - name: Page On Failure\n"
        "    scope: {project: p}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: no_op}\n"
    )
    assert main(["apply", str(config_file)]) == 0
    assert (
        "saved automation 'Page On Failure' as block ml-automation/page-on-failure"
        in capsys.readouterr().out
    )
    loaded = asyncio.run(load_config_from_blocks())
    assert [a.name for a in loaded.automations if a.name == "Page On Failure"] == [
        "Page On Failure"
    ]
    assert loaded.store == f"sqlite:///{tmp_path}/store.db"
    assert "store.db" not in repr(StateStoreBlock.load("ml-automations-store"))  # a secret
    StateStore(load_config(config_file).store).put_events(
        events(state("r1", "failed", 0)), origin="push"
    )
    result = asyncio.run(sensor_cycle())
    assert json.dumps(result) == json.dumps({"events": 1, "fired": 1, "finished": 1, "failed": 0})


def test_the_sensor_deployment_runs_a_cycle_on_a_schedule(tmp_path: Path) -> None:
    from prefect_ml_automations.flows.sensor import sensor_deployment

    config_file = tmp_path / "automations.yaml"
    config_file.write_text("automations: []\n")
    deployment = sensor_deployment(config_file, interval=45, name="sensor")
    assert deployment.name == "sensor"
    assert deployment.parameters == {"config_file": str(config_file.resolve())}
    [schedule] = deployment.schedules
    assert schedule.schedule.interval.total_seconds() == 45
