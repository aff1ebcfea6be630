"""Exactly once (SPEC §4) when two sensor processes share one PostgreSQL store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect_ml_automations.config import load_config
from prefect_ml_automations.store import StateStore

from .conftest import events, flow_runs, metric

CONFIG = """
store: {store}
automations:
  - name: retrain-on-new-data
    scope: {{registry: datasets}}
    event: {{type: LINK_ARTIFACT}}
    action: {{type: run_deployment, deployment: train-model/nightly, parameters: {{reason: "${{artifact_version_string}}"}}}}
  - name: good-accuracy
    scope: {{project: p}}
    event: {{type: RUN_METRIC, metric: acc, window: 2, operator: ">", threshold: 0.5}}
    cooldown: 0
    action: {{type: no_op}}
"""


def test_two_sensor_processes_on_one_postgres_store_fire_each_firing_once(
    tmp_path: Path, postgres_url: str, prefect_api: str, deployments: dict[str, Any]
) -> None:
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(CONFIG.format(store=postgres_url))
    store = StateStore(load_config(config_file).store)
    links = [
        {
            "type": "LINK_ARTIFACT",
            "registry": "datasets",
            "collection": "clicks",
            "version": v,
            "timestamp": f"2026-01-01T10:{v // 60:02d}:{v % 60:02d}Z",
        }
        for v in range(40)
    ]
    points = [metric(f"r{r}", s, 0.75, 100 + s * 3 + r) for s in range(10) for r in range(3)]
    # The same events pushed twice, interleaved: re-deliveries must change nothing.
    store.put_events(events(*links[:20], *points, *links[20:]), origin="push")
    store.put_events(events(*links, *points), origin="ingest")

    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.sensor_worker", str(config_file)],
            env=env,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(2)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]

    history = store.history()
    fired = [(r.automation, r.status) for r in history if r.status != "skipped"]
    assert fired.count(("retrain-on-new-data", "finished")) == 40
    assert fired.count(("good-accuracy", "finished")) == 27  # steps 1..9 of 3 runs
    assert len(fired) == 67
    assert len({r.firing_id for r in history}) == len(history)
    runs = flow_runs(deployments["train-model/nightly"])
    assert len(runs) == 40
    assert sorted(r.parameters["reason"] for r in runs) == sorted(
        f"datasets/clicks:v{v}" for v in range(40)
    )
    assert store.inbox_size() == 0
