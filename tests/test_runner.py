"""The long-running sensor loop: a push wakes it, so a pushed event fires at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prefect_ml_automations.config import parse_config
from prefect_ml_automations.runner import sensor_loop
from prefect_ml_automations.sensor import Sensor

from .conftest import events, state


def test_a_push_wakes_the_idle_loop(tmp_path: Path, prefect_api: str) -> None:
    config = parse_config(
        {
            "store": f"sqlite:///{tmp_path}/store.db",
            "automations": [
                {
                    "name": "a",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "no_op"},
                }
            ],
        },
        env={},
    )
    sensor = Sensor(config)

    async def scenario() -> float:
        wake = asyncio.Event()
        loop = asyncio.create_task(sensor_loop(sensor, interval=600, wake=wake, cycles=2))
        await asyncio.sleep(0.5)  # the first cycle found nothing: the loop now idles for 600 s
        pushed = time.perf_counter()
        await asyncio.to_thread(
            sensor.store.put_events, events(state("r1", "failed", 0)), origin="push"
        )
        wake.set()
        await asyncio.wait_for(loop, timeout=10)
        return time.perf_counter() - pushed

    elapsed = asyncio.run(scenario())
    [row] = sensor.store.history()
    assert row.status == "finished"
    assert elapsed < 5  # woken, not waiting out the 600 s interval
