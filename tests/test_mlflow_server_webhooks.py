"""A real `mlflow server` on loopback sending its registry webhooks to `ml-automations receive`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_ml_automations.config import load_config
from prefect_ml_automations.store import StateStore

mlflow = pytest.importorskip("mlflow", reason="the MLflow source needs the [mlflow] extra")

SECRET = "whsec-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, Any]]:
    mlflow_port, receiver_port = free_port(), free_port()
    # The server refuses http and loopback webhook targets unless told otherwise.
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    }
    tracking = f"http://127.0.0.1:{mlflow_port}"
    config = tmp_path / "automations.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path}/store.db\n"
        f"receiver: {{secret: {SECRET}}}\n"
        f"sources: [{{name: server, type: mlflow, tracking_uri: '{tracking}'}}]\n"
        "automations: []\n"
    )
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{tmp_path}/mlflow.db",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=tmp_path,  # the server keeps artifacts under its working directory
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect_ml_automations.cli",
                "receive",
                str(config),
                "--port",
                str(receiver_port),
                "--no-sensor",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_for(f"{tracking}/health", 180)
        wait_for(f"http://127.0.0.1:{receiver_port}/health", 60)
        yield {
            "tracking": tracking,
            "receiver": f"http://127.0.0.1:{receiver_port}",
            "config": config,
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def test_an_alias_set_on_the_server_arrives_signed_in_the_inbox(servers: dict[str, Any]) -> None:
    client = mlflow.MlflowClient(servers["tracking"])
    client.create_webhook(
        name="ml-automations",
        url=f"{servers['receiver']}/mlflow?source=server",
        events=["model_version.created", "model_version_alias.created", "model_version_tag.set"],
        secret=SECRET,
    )
    client.create_registered_model("churn")
    client.create_model_version("churn", source="s3://m/1")
    client.set_registered_model_alias("churn", "production", "1")
    store = StateStore(load_config(servers["config"]).store)
    deadline = time.monotonic() + 30
    while store.inbox_size() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    with store.cycle() as cycle:
        events = cycle.take_inbox()
    assert [(e.type, e.registry, e.collection, e.version, e.alias) for e in events] == [
        ("LINK_ARTIFACT", "models", "churn", 1, None),
        ("ADD_ARTIFACT_ALIAS", "models", "churn", 1, "production"),
    ]
