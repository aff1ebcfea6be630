"""From a pushed event to the flow run it starts: latency through the real pieces.

    python benchmarks/push_latency.py [--events 1000] [--gap 0.05]

Starts a local Prefect server (the test harness), a deployment `deploy-model/production`, and
`ml-automations receive` as its own process (receiver + sensor, SQLite store). Then POSTs
`--events` alias events one after another, `--gap` seconds apart, each moving `production` to a
new version, and measures for each the time from sending the POST to the creation of its flow
run (the flow run's `created` time on the server; same machine, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        deployment = asyncio.run(create_deployment())
        config = Path(tmp, "automations.yaml")
        config.write_text(CONFIG.format(tmp=tmp))
        port = free_port()
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
        receiver = subprocess.Popen(
            [
                sys.executable,
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
                sent: dict[int, float] = {}
                for version in range(1, args.events + 1):
                    event = {
                        "type": "ADD_ARTIFACT_ALIAS",
                        "registry": "models",
                        "collection": "churn",
                        "version": version,
                        "alias": "production",
                        "timestamp": f"2026-01-01T00:00:00.{version:06d}Z",
                    }
                    sent[version] = time.time()
                    response = client.post("/events", content=json.dumps(event))
                    response.raise_for_status()
                    time.sleep(args.gap)
            deadline = time.time() + 120
            while True:
                runs = asyncio.run(runs_of(deployment))
                if len(runs) >= args.events or time.time() > deadline:
                    break
                time.sleep(1)
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)

    from datetime import datetime

    def latency(run: dict[str, Any]) -> float:
        created = datetime.fromisoformat(str(run["created"])).timestamp()
        return created - sent[int(run["parameters"]["model_version"])]

    latencies = sorted(latency(run) for run in runs)
    if not latencies:
        print("no flow runs were started")
        return
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(
        f"{len(latencies):,} of {args.events:,} pushed events started their flow run; "
        f"push → flow run created: p50 {statistics.median(latencies) * 1e3:.0f} ms, "
        f"p99 {p(0.99) * 1e3:.0f} ms, max {latencies[-1] * 1e3:.0f} ms "
        f"(one push every {args.gap * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
