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
