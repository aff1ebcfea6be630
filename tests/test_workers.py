"""Scaling out: two Prefect workers running sensor cycles on one PostgreSQL store fire each
firing once (the sensor deployed to a process work pool, as prefect.yaml does)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect_ml_automations.config import load_config
from prefect_ml_automations.store import StateStore

from .conftest import events, flow_runs

ROOT = Path(__file__).parent.parent


def test_two_workers_on_one_postgres_store_fire_each_firing_once(
    tmp_path: Path, postgres_url: str, prefect_api: str, deployments: dict[str, Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from prefect_ml_automations.flows.sensor import sensor_cycle

    config_file = tmp_path / "automations.yaml"
    config_file.write_text(
        f"store: {postgres_url}\n"
        "automations:\n"
        "  - name: deploy\n"
        "    scope: {registry: models, collection: churn}\n"
        "    event: {type: ADD_ARTIFACT_ALIAS}\n"
        "    action: {type: run_deployment, deployment: deploy-model/staging, parameters: {model_version: '${artifact_version_string}'}}\n"
    )
    store = StateStore(load_config(config_file).store)
    aliases = [
        {
            "type": "ADD_ARTIFACT_ALIAS",
            "registry": "models",
            "collection": "churn",
            "version": v,
            "alias": f"candidate-{v}",
            "timestamp": f"2026-01-01T10:00:{v:02d}Z",
        }
        for v in range(20)
    ]
    store.put_events(events(*aliases), origin="push")
    store.put_events(events(*aliases), origin="ingest")  # every change twice

    async def deploy() -> list[Any]:
        async with get_client() as client:
            await client.create_work_pool(
                WorkPoolCreate(name="ml-automations-test", type="process")
            )
            flow_id = await client.create_flow(sensor_cycle)
            deployment = await client.create_deployment(
                flow_id=flow_id,
                name="sensor-test",
                work_pool_name="ml-automations-test",
                entrypoint="prefect_ml_automations/flows/sensor.py:sensor_cycle",
                path=str(ROOT),
                parameters={"config_file": str(config_file)},
            )
            return [await client.create_flow_run_from_deployment(deployment) for _ in range(6)]

    cycles = asyncio.run(deploy())
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    workers = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prefect"),
                "worker",
                "start",
                "--pool",
                "ml-automations-test",
                "--name",
                f"worker-{i}",
                "--limit",
                "2",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]

    async def states() -> list[str]:
        async with get_client() as client:
            return [(await client.read_flow_run(run.id)).state_name or "" for run in cycles]

    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(
            s in ("Completed", "Failed", "Crashed") for s in asyncio.run(states())
        ):
            time.sleep(1)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)

    assert asyncio.run(states()) == ["Completed"] * 6
    history = store.history()
    assert [r.status for r in history] == ["finished"] * 20
    runs = flow_runs(deployments["deploy-model/staging"])
    mine = [
        r for r in runs if str(r.parameters.get("model_version", "")).startswith("models/churn:")
    ]
    assert sorted(r.parameters["model_version"] for r in mine) == sorted(
        f"models/churn:v{v}" for v in range(20)
    )
