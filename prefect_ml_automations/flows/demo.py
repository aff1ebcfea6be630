"""`ml-automations demo`: the whole loop on the embedded default, no account and no network.

A local MLflow store (SQLite) and a local Prefect — the one `PREFECT_API_URL` names if it
answers, else a server the demo starts (and stops) itself. It serves two downstream deployments
(`train-model/demo`, `deploy-model/demo`), runs the sensor against MLflow, and plays a story:
a sweep of training runs (one diverges, one fails, one is an outlier), a model version given
`production`, then the alias moved to a better version. Each firing is shown as it happens, with
the flow run it started; the stores stay in the demo folder for `ml-automations history`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from prefect_ml_automations.config import load_config
from prefect_ml_automations.errors import MLAutomationsError
from prefect_ml_automations.sensor import CycleReport, Sensor

EXPERIMENT = "demo/churn"
MODEL = "churn-classifier"

CONFIG = """\
# Written by `ml-automations demo`: the automations it plays with.
store: sqlite:///{dir}/ml-automations.db
sources:
  - {{name: local, type: mlflow, tracking_uri: "sqlite:///{dir}/mlflow.db", registry: models}}
automations:
  - name: deploy-on-production
    description: A model version gets the alias production -> deploy it.
    scope: {{registry: models, collection: {model}}}
    event: {{type: ADD_ARTIFACT_ALIAS, alias: "^production$"}}
    action:
      type: run_deployment
      deployment: deploy-model/demo
      parameters: {{model_version: "${{artifact_version_string}}"}}
  - name: retrain-on-divergence
    description: The loss of the last 3 steps is 50 % above the 5 before -> retrain.
    scope: {{project: {experiment}}}
    event: {{type: RUN_METRIC_CHANGE, metric: loss, current_window: 3, prior_window: 5,
            direction: increase, amount: 0.5}}
    action:
      type: run_deployment
      deployment: train-model/demo
      parameters: {{reason: "${{metric_filter}}", run_name: "${{run_name}}"}}
  - name: page-on-failure
    description: A run failed -> a Prefect event that Prefect automations can page on.
    scope: {{project: {experiment}}}
    event: {{type: RUN_STATE, states: [failed]}}
    action: {{type: emit_event, payload: {{run: "${{run_name}}"}}}}
  - name: promote-outlier
    description: A run's accuracy is 2 sigma above the other runs' -> train the candidate.
    scope: {{project: {experiment}}}
    event: {{type: RUN_METRIC_ZSCORE, metric: accuracy, window: 30, threshold: 2, direction: above}}
    action:
      type: run_deployment
      deployment: train-model/demo
      parameters: {{reason: "outlier: ${{metric_filter}}", run_name: "${{run_name}}"}}
"""


def run_demo(directory: Path, console: Console | None = None) -> list[dict[str, Any]]:
    """Play the demo in `directory`; returns the firings with their flow runs' final states."""
    console = console or Console(stderr=True)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("mlflow.db", "ml-automations.db"):
        (directory / stale).unlink(missing_ok=True)
    config_file = directory / "automations.yaml"
    config_file.write_text(CONFIG.format(dir=directory, model=MODEL, experiment=EXPERIMENT))
    started = time.monotonic()
    with _prefect(directory, console) as api_url, _served(api_url, console):
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api_url}):
            rows = _story(config_file, console)
            _wait_for_flow_runs(rows, console)
        _summary(rows, console, api_url, config_file, time.monotonic() - started)
    return rows


@contextlib.contextmanager
def _prefect(directory: Path, console: Console) -> Iterator[str]:
    """A Prefect API: the configured one if it answers, else a local server of our own."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured and _healthy(configured):
        console.print(f"Using the Prefect API at {configured}")
        yield configured
        return
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(directory / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).parent / "prefect"
    console.print(f"Starting a local Prefect server on 127.0.0.1:{port} (a few seconds)…")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: _healthy(url), 120, "the Prefect server did not start")
        yield url
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)


@contextlib.contextmanager
def _served(api_url: str, console: Console) -> Iterator[None]:
    """The example deployments, served by their own process while the demo runs."""
    console.print("Serving the downstream deployments train-model/demo and deploy-model/demo…")
    runner = subprocess.Popen(
        [sys.executable, "-m", "prefect_ml_automations.deployments.examples"],
        env={**os.environ, "PREFECT_API_URL": api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _deployments_exist(api_url), 90, "the example deployments were not served")
        yield
    finally:
        runner.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.wait(timeout=20)


def _story(config_file: Path, console: Console) -> list[dict[str, Any]]:
    import mlflow
    from mlflow.entities import Metric

    config = load_config(config_file)
    sensor = Sensor(config)
    client = mlflow.MlflowClient(config.sources[0].tracking_uri)  # type: ignore[union-attr]
    experiment = client.create_experiment(EXPERIMENT)
    client.create_registered_model(MODEL)
    sensor.run_once()  # the sensor starts watching MLflow now
    rows: list[dict[str, Any]] = []

    def cycle(step: str) -> None:
        report: CycleReport = asyncio.run(sensor.cycle())
        for delivery in report.deliveries:
            firing = delivery.firing
            row = {
                "automation": firing.automation,
                "event": firing.event_type,
                "subject": firing.run_name or firing.subject,
                "status": delivery.status,
                "flow_run_id": (delivery.result or {}).get("flow_run_id"),
                "error": delivery.error,
            }
            rows.append(row)
            console.print(
                f"  [bold green]fired[/] {firing.automation} · {firing.event_type} · "
                f"{row['subject']}"
                + (f" → flow run {row['flow_run_id']}" if row["flow_run_id"] else "")
                + (f" [red]{delivery.error}[/]" if delivery.error else "")
            )
        console.print(f"[dim]{step}[/]")

    console.print("\nA sweep of six training runs logs loss and accuracy…")
    runs = {}
    for i in range(6):
        runs[i] = client.create_run(experiment, run_name=f"sweep-{i + 1}").info.run_id
    base = int(time.time() * 1000)
    levels = [0.78, 0.74, 0.80, 0.76, 0.79, 0.93]  # sweep-6 stands out
    for step in range(12):
        for i, run_id in runs.items():
            loss = 1.0 * math.exp(-step / 6) + 0.02 * i
            if i == 2 and step >= 7:
                loss *= 2.5 ** (step - 6)  # sweep-3 diverges
            accuracy = levels[i] + 0.005 * step
            client.log_batch(
                run_id,
                metrics=[
                    Metric("loss", loss, base + step * 1000, step),
                    Metric("accuracy", accuracy, base + step * 1000, step),
                ],
            )
        if step in (5, 11):
            cycle(f"step {step} logged")
    client.set_terminated(runs[3], "FAILED")  # sweep-4 fails
    for i in (0, 1, 2, 4, 5):
        client.set_terminated(runs[i], "FINISHED")
    cycle("sweep over: one run failed")

    console.print("\nModel versions are registered; v1 gets the alias production…")
    for i in (0, 5):
        client.create_model_version(MODEL, source=f"runs:/{runs[i]}/model", run_id=runs[i])
    client.set_registered_model_alias(MODEL, "production", "1")
    cycle("v1 is production")
    console.print("\nThe outlier's version (v2) is better: production moves to v2…")
    client.set_registered_model_alias(MODEL, "production", "2")
    cycle("production moved to v2")
    return rows


def _wait_for_flow_runs(rows: list[dict[str, Any]], console: Console) -> None:
    from prefect.client.orchestration import get_client

    ids = [r["flow_run_id"] for r in rows if r["flow_run_id"]]
    console.print(f"\nWaiting for the {len(ids)} flow runs the firings started…")

    async def states() -> dict[str, str]:
        async with get_client() as client:
            return {i: (await client.read_flow_run(i)).state_name or "" for i in ids}

    deadline = time.monotonic() + 60
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = asyncio.run(states())
        if all(
            state in ("Completed", "Failed", "Crashed", "Cancelled") for state in found.values()
        ):
            break
        time.sleep(1)
    for row in rows:
        row["flow_run_state"] = found.get(row["flow_run_id"] or "", "")


def _summary(
    rows: list[dict[str, Any]], console: Console, api_url: str, config: Path, seconds: float
) -> None:
    table = Table(title=f"ml-automations demo: {len(rows)} firings in {seconds:.0f} s")
    for column in ("automation", "event", "subject", "action", "flow run"):
        table.add_column(column)
    for row in rows:
        action = row["status"] if not row["error"] else f"{row['status']}: {row['error']}"
        table.add_row(
            row["automation"], row["event"], row["subject"], action, row.get("flow_run_state") or ""
        )
    console.print(table)
    command = _typed_command("ml-automations")
    # Hints are printed whole (never wrapped into two lines) so that they can be copied.
    console.print(f"History: {command} history {_typed_path(config)}", markup=False, soft_wrap=True)
    if api_url == os.environ.get("PREFECT_API_URL"):
        console.print(
            f"Prefect UI: {api_url.removesuffix('/api')} — Runs (train-model, deploy-model), "
            "Artifacts, Events (ml.automation.*), Blocks."
        )
        return
    console.print(
        "The demo's Prefect server stops now. To see its runs, artifacts, events "
        "(ml.automation.*) and blocks later:\n"
        f"  PREFECT_HOME={_typed_path(config.parent / '.prefect')} {_typed_command('prefect')} "
        "server start\n  then open http://127.0.0.1:4200",
        markup=False,
        soft_wrap=True,
    )


def _typed_path(path: Path) -> str:
    """A path as the person who started the demo types it: relative to where they stand."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _typed_command(name: str) -> str:
    """A command of this environment as they can type it: through `scripts/dev.sh` if that is
    how they started the demo, else by name when it is on their PATH, else by its full path."""
    dev_sh = os.environ.get("ML_AUTOMATIONS_DEV_SH")
    if dev_sh:
        return f"bash {_typed_path(Path(dev_sh))} {name}"
    return name if shutil.which(name) else str(Path(sys.executable).parent / name)


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _deployments_exist(api_url: str) -> bool:
    try:
        with httpx.Client(base_url=api_url, timeout=5) as client:
            return all(
                client.get(f"/deployments/name/{name}").status_code == 200
                for name in ("train-model/demo", "deploy-model/demo")
            )
    except httpx.HTTPError:
        return False


def _wait(ready: Any, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise MLAutomationsError(f"The demo could not start: {failure} within {seconds:.0f} s.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
