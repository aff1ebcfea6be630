"""`ml-automations serve`: the sensor as a scheduled deployment whose schedule stops with it —
run as a user runs it (a process, stopped with Ctrl-C) against a real Prefect server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

COMMAND = [sys.executable, "-m", "prefect_ml_automations.cli"]


async def read_deployment(name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            return await client.read_deployment_by_name(f"ml-automations-sensor/{name}")
        except ObjectNotFound:
            return None


def test_ctrl_c_stops_serving_and_pauses_the_schedule(tmp_path: Path, prefect_api: str) -> None:
    config = tmp_path / "automations.yaml"
    config.write_text(f"store: sqlite:///{tmp_path}/store.db\nautomations: []\n")
    name = f"sensor-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [*COMMAND, "serve", str(config), "--interval", "3600", "--name", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        deployment = None
        while time.monotonic() < deadline:
            deployment = asyncio.run(read_deployment(name))
            if deployment is not None and not deployment.paused:
                break
            time.sleep(0.5)
        assert deployment is not None, "serve did not create its deployment within a minute"
        assert not deployment.paused
        process.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert f"Serving ml-automations-sensor/{name}, a cycle every 3600 s" in output
    assert "Traceback" not in output
    assert output.rstrip().endswith(
        f"Stopped; the schedule of ml-automations-sensor/{name} is paused."
    )
    assert asyncio.run(read_deployment(name)).paused, output  # no late runs pile up
