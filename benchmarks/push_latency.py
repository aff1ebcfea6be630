"""From a pushed event to the flow run it starts: latency through the real pieces.

    python benchmarks/push_latency.py [--events 1000] [--gap 0.05] [--api URL] [--bare]

Starts a local Prefect server (the test harness, on SQLite) — or uses the one `--api` names
(say, `prefect server start` on PostgreSQL) —, a deployment `deploy-model/production`, and
`ml-automations receive` as its own process (receiver + sensor, SQLite store). Then POSTs
`--events` alias events one after another, `--gap` seconds apart, each moving `production` to a
new version, and measures for each the time from sending the POST to the creation of its flow
run (the flow run's `created` time on the server; same machine, same clock).

`--bare` measures the server's own bound instead: the same stream as bare `run_deployment`
calls (idempotency key, `timeout=0`), one started every `--gap` seconds, no ml-automations at
all; each call's time until the server answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

CONFIG = """
store: sqlite:///{tmp}/store.db
automations:
  - name: deploy-on-production
    scope: {{registry: models, collection: churn}}
    event: {{type: ADD_ARTIFACT_ALIAS, alias: "^production$"}}
    action:
      type: run_deployment
      deployment: deploy-model/production
      parameters: {{model_version: "${{artifact_version_index}}"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def create_deployment() -> object:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="deploy-model")
    def deploy_model(model_version: int = 0) -> None: ...

    async with get_client() as client:
        flow_id = await client.create_flow(deploy_model)
        return await client.create_deployment(flow_id=flow_id, name="production")


async def runs_of(deployment_id: object) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    found: list[dict[str, Any]] = []
    async with get_client() as client:
        while True:
            response = await client._client.post(
                "/flow_runs/filter",
                json={
                    "deployments": {"id": {"any_": [str(deployment_id)]}},
                    "sort": "ID_DESC",
                    "limit": 200,
                    "offset": len(found),
                },
            )
            page = response.json()
            found += page
            if len(page) < 200:
                return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--api", help="a running Prefect server's API URL (default: start one)")
    parser.add_argument("--profile", help="run the receiver under cProfile, writing this file")
    parser.add_argument(
        "--bare", action="store_true", help="bare run_deployment calls: the server's own bound"
    )
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with contextlib.ExitStack() as stack:
        if args.api:
            stack.enter_context(temporary_settings({PREFECT_API_URL: args.api}))
        else:
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        where = args.api or "a temporary Prefect server (SQLite)"
        deployment = asyncio.run(create_deployment())
        if args.bare:
            latencies = asyncio.run(bare(args.events, args.gap))
            report("bare run_deployment calls answered", latencies, args, where, "call")
            return
        sent, runs = pushed(deployment, args)

    def latency(run: dict[str, Any]) -> float:
        created = datetime.fromisoformat(str(run["created"])).timestamp()
        return created - sent[int(run["parameters"]["model_version"])]

    report("pushed events started their flow run", [latency(run) for run in runs], args, where)


def report(
    what: str, latencies: list[float], args: argparse.Namespace, where: str, measure: str = "push"
) -> None:
    latencies = sorted(latencies)
    if not latencies:
        print("no flow runs were started")
        return
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(
        f"{len(latencies):,} of {args.events:,} {what}; "
        f"{measure} → flow run created: p50 {statistics.median(latencies) * 1e3:.0f} ms, "
        f"p99 {p(0.99) * 1e3:.0f} ms, max {latencies[-1] * 1e3:.0f} ms "
        f"(one every {args.gap * 1e3:.0f} ms; {where})"
    )


async def bare(events: int, gap: float) -> list[float]:
    """Each call's time, for the calls the server answered (failures are counted and said)."""
    from prefect.deployments import run_deployment

    latencies: list[float] = []
    failed: list[str] = []

    async def one(version: int) -> None:
        start = time.perf_counter()
        try:
            await run_deployment(
                "deploy-model/production",
                parameters={"model_version": version},
                timeout=0,
                idempotency_key=f"bare-{version}-{start}",
                as_subflow=False,
            )
        except Exception as exc:
            failed.append(type(exc).__name__)
            return
        latencies.append(time.perf_counter() - start)

    calls = []
    for version in range(1, events + 1):
        calls.append(asyncio.create_task(one(version)))
        await asyncio.sleep(gap)
    await asyncio.gather(*calls)
    if failed:
        print(f"{len(failed)} call(s) failed: {', '.join(sorted(set(failed)))}")
    return latencies


def pushed(deployment: Any, args: argparse.Namespace) -> tuple[dict[int, float], list[Any]]:
    """Push the events through `ml-automations receive`; (send times, the flow runs)."""
    from prefect.settings import PREFECT_API_URL

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "automations.yaml")
        config.write_text(CONFIG.format(tmp=tmp))
        port = free_port()
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
        receiver = subprocess.Popen(
            [
                sys.executable,
                *(["-m", "cProfile", "-o", args.profile] if args.profile else []),
                "-m",
                "prefect_ml_automations.cli",
                "receive",
                str(config),
                "--port",
                str(port),
                "--insecure",
                "--interval",
                "60",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=10) as client:
                for _ in range(600):
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                time.sleep(3)  # the sensor service's flow run starts beside the receiver
                first = time.time()
                sent: dict[int, float] = {}
                # Events of this run only: a firing's id (and its flow run's idempotency key)
                # comes from the event, so a second run against the same server must not
                # repeat the first one's events.
                epoch = datetime.now(UTC)
                start = time.monotonic()
                for version in range(1, args.events + 1):
                    event = {
                        "type": "ADD_ARTIFACT_ALIAS",
                        "registry": "models",
                        "collection": "churn",
                        "version": version,
                        "alias": "production",
                        "timestamp": (epoch + timedelta(microseconds=version)).isoformat(),
                    }
                    sent[version] = time.time()
                    response = client.post("/events", content=json.dumps(event))
                    response.raise_for_status()
                    # One every `gap` seconds on the clock, whatever a POST took.
                    time.sleep(max(0.0, start + version * args.gap - time.monotonic()))
            deadline = time.time() + 120
            while True:
                runs = [
                    run
                    for run in asyncio.run(runs_of(deployment))
                    if datetime.fromisoformat(str(run["created"])).timestamp() >= first
                ]
                if len(runs) >= args.events or time.time() > deadline:
                    break
                time.sleep(1)
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)

    return sent, runs


if __name__ == "__main__":
    main()
