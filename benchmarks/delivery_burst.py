"""A burst of firings whose action is `run_deployment`: how long until every flow run exists.

    python benchmarks/delivery_burst.py [--firings 1000] [--concurrency 16] [--api URL]

Starts a Prefect server of its own (a temporary one on SQLite, as the test suite does) — or
uses the one `--api` names (say, `prefect server start` on PostgreSQL) —, creates a deployment,
puts `--firings` failed runs into a store's inbox under a `RUN_STATE → run_deployment`
automation, and runs one sensor cycle in a flow — a task run per delivery, `--concurrency` at a
time — then prints the time until every flow run exists, the rate, and the same with deliveries
one after another (concurrency 1) on a burst a tenth the size, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from prefect_ml_automations.events import event_from_dict


def burst(count: int, prefix: str) -> list[Any]:
    return [
        event_from_dict(
            {
                "type": "RUN_STATE",
                "project": "bench",
                "run_id": f"{prefix}-{i:05d}",
                "state": "failed",
                "timestamp": "2026-01-05T00:00:00Z",
            }
        )
        for i in range(count)
    ]


def config(tmp: str, name: str) -> Path:
    path = Path(tmp) / f"{name}.yaml"
    path.write_text(
        f"store: sqlite:///{tmp}/{name}.db\n"
        "automations:\n"
        "  - name: retrain-on-failure\n"
        "    scope: {project: bench}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: run_deployment, deployment: train-model/bench,"
        " parameters: {reason: '${run_id}'}}\n"
    )
    return path


async def create_deployment() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="train-model")
    def train_model(reason: str = "") -> None: ...

    async with get_client() as client:
        flow_id = await client.create_flow(train_model)
        await client.create_deployment(flow_id=flow_id, name="bench")


def cycle(path: Path, count: int, prefix: str, concurrency: int) -> float:
    from prefect import flow

    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.flows.sensor import run_cycle
    from prefect_ml_automations.sensor import Sensor

    sensor = Sensor(load_config(path))
    sensor.store.put_events(burst(count, prefix), origin="push")

    @flow(name="ml-automations-sensor")
    async def one_cycle() -> int:
        report = await run_cycle(sensor, {}, concurrency=concurrency)
        return sum(d.status == "finished" for d in report.deliveries)

    start = time.perf_counter()
    finished = asyncio.run(one_cycle())
    elapsed = time.perf_counter() - start
    assert finished == count, finished
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--firings", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--api", help="a running Prefect server's API URL (default: start one)")
    args = parser.parse_args()

    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_LOGGING_LEVEL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp:
        settings: dict[Any, Any] = {
            PREFECT_HOME: tmp,
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            PREFECT_LOGGING_LEVEL: "WARNING",
        }
        if args.api:
            settings[PREFECT_API_URL] = args.api
        with temporary_settings(settings), contextlib.ExitStack() as stack:
            if not args.api:
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            asyncio.run(create_deployment())
            small = max(args.firings // 10, 1)
            tag = uuid.uuid4().hex[:6]  # (a shared server keeps the runs of earlier calls)
            serial = cycle(config(tmp, "serial"), small, f"serial-{tag}", 1)
            wide = cycle(config(tmp, "wide"), args.firings, f"wide-{tag}", args.concurrency)
    where = args.api or "a temporary Prefect server (SQLite)"
    print(f"Prefect server: {where}")
    print(
        f"{args.firings:,} run_deployment firings, {args.concurrency} at a time: every flow run "
        f"created in {wide:.1f} s ({args.firings / wide:,.0f} per second, one task run each)"
    )
    print(f"{small:,} firings one after another: {serial:.1f} s ({small / serial:,.0f} per second)")


if __name__ == "__main__":
    main()
