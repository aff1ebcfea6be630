"""`ml-automations demo`: the whole loop, on a local MLflow and a Prefect server of its own."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from prefect_ml_automations.flows.demo import run_demo
from prefect_ml_automations.store import StateStore

pytest.importorskip("mlflow", reason="the demo needs the [mlflow] extra")


def test_the_demo_fires_its_story_and_the_flow_runs_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = io.StringIO()
    rows = run_demo(tmp_path, Console(file=out, width=200))
    fired = sorted((r["automation"], r["subject"], r.get("flow_run_state")) for r in rows)
    assert fired == [
        ("deploy-on-production", "models/churn-classifier:v1 (production)", "Completed"),
        ("deploy-on-production", "models/churn-classifier:v2 (production)", "Completed"),
        ("page-on-failure", "sweep-4", ""),
        ("promote-outlier", "sweep-6", "Completed"),
        ("retrain-on-divergence", "sweep-3", "Completed"),
    ]
    assert "ml-automations demo: 5 firings" in out.getvalue()
    history = StateStore(f"sqlite:///{tmp_path}/ml-automations.db").history()
    assert sorted(r.status for r in history if r.status != "skipped") == ["finished"] * 5
    hints_run_as_printed(out.getvalue())


def hints_run_as_printed(output: str) -> None:
    """The demo's closing hints, typed as printed: the history, and Prefect's UI later (on a
    free port here, chosen by Prefect's own setting, not by the command)."""
    import os
    import signal
    import socket
    import subprocess
    import time

    import httpx

    [history] = [line for line in output.splitlines() if line.startswith("History: ")]
    done = subprocess.run(
        ["bash", "-c", history.removeprefix("History: ")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("id ")
    assert done.stdout.count(" finished ") == 5  # the five firings, each on its line

    [start] = [line.strip() for line in output.splitlines() if "server start" in line]
    assert start.startswith("PREFECT_HOME=")
    assert "then open http://127.0.0.1:4200" in output
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_SERVER_API_PORT"] = str(port)
    server = subprocess.Popen(
        ["bash", "-c", start],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError("the Prefect server the hint starts did not answer in 120 s")
        names = {f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
        assert {"train-model", "deploy-model"} <= names  # the demo's runs are there
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # and the UI
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
