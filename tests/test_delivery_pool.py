"""The long-running service's deliveries (issue 12 §6): a pool beside the cycles, so that a slow
action holds back neither the next cycle nor the firings behind it, and a retry falls due on
its own. Exactly once holds as for a cycle's deliveries (claims and leases are the same)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prefect_ml_automations import sensor as sensor_module
from prefect_ml_automations.automations.actions import Webhook
from prefect_ml_automations.config import parse_config
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.sensor import Delivery, DeliveryPool, Sensor

from .conftest import events, state


def config(tmp_path: Path, action: dict[str, Any]) -> Any:
    return parse_config(
        {
            "store": f"sqlite:///{tmp_path}/store.db",
            "automations": [
                {
                    "name": "on-failure",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": action,
                }
            ],
        },
        env={},
    )


def failed_runs(sensor: Sensor, *runs: str) -> None:
    """Failed runs pushed and committed: one pending firing each."""
    failures = (state(run, "failed", i) for i, run in enumerate(runs))
    sensor.store.put_events(events(*failures), origin="push")
    sensor.evaluate()


def test_a_slow_action_holds_back_neither_the_next_cycle_nor_the_firings_behind_it(
    tmp_path: Path,
) -> None:
    sensor = Sensor(config(tmp_path, {"type": "no_op"}))
    gate = asyncio.Event()
    plain = sensor.deliver_one

    async def deliver(firing: Firing, attempt: int) -> Delivery:
        if firing.run_id == "slow":
            await gate.wait()  # an action that hangs until the test lets it go
        return await plain(firing, attempt)

    sensor.deliver_one = deliver  # type: ignore[method-assign]
    done: list[str] = []

    async def scenario() -> None:
        async with DeliveryPool(
            sensor, concurrency=2, on_delivery=lambda d: done.append(d.firing.run_id)
        ) as pool:
            failed_runs(sensor, "slow", "quick")
            pool.wake()
            await wait_for(lambda: done == ["quick"])
            # A later cycle's firing goes out while the slow one still runs.
            failed_runs(sensor, "later")
            pool.wake()
            await wait_for(lambda: done == ["quick", "later"])
            gate.set()
            await pool.settle()

    asyncio.run(scenario())
    assert done == ["quick", "later", "slow"]
    assert {row.status for row in sensor.store.history()} == {"finished"}


def test_a_retry_falls_due_without_a_new_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook whose receiver is down: tried three times by the pool alone, then `failed`."""
    monkeypatch.setattr(Webhook, "retry_delays", (0.0,))  # (the action's own quick retries)
    monkeypatch.setattr(sensor_module, "POOL_IDLE_CHECK", 0.05)
    monkeypatch.setattr(sensor_module, "BACKOFF", (sensor_module.timedelta(seconds=0.1),) * 3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    sensor = Sensor(config(tmp_path, {"type": "webhook", "url": f"http://127.0.0.1:{closed}/"}))
    failed_runs(sensor, "r1")
    seen: list[Delivery] = []

    async def scenario() -> None:
        async with DeliveryPool(sensor, on_delivery=seen.append):
            await wait_for(lambda: len(seen) == 3, timeout=30)

    asyncio.run(scenario())
    assert [(d.attempt, d.status) for d in seen] == [(1, "pending"), (2, "pending"), (3, "failed")]
    [row] = sensor.store.history()
    assert (row.status, row.attempts) == ("failed", 3)


def test_two_pools_on_one_store_deliver_each_firing_once(tmp_path: Path) -> None:
    first = Sensor(config(tmp_path, {"type": "no_op"}))
    second = Sensor(config(tmp_path, {"type": "no_op"}))
    failed_runs(first, *(f"r{i}" for i in range(60)))
    delivered: Counter[str] = Counter()

    def count(delivery: Delivery) -> None:
        delivered[delivery.firing.firing_id] += 1

    async def scenario() -> None:
        async with (
            DeliveryPool(first, concurrency=4, on_delivery=count) as one,
            DeliveryPool(second, concurrency=4, on_delivery=count) as other,
        ):
            await asyncio.gather(one.settle(), other.settle())

    asyncio.run(scenario())
    assert len(delivered) == 60
    assert set(delivered.values()) == {1}


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)
