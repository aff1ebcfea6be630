"""The sensor end to end: inbox → evaluation → ledger → action, on a real SQLite store and a
real Prefect API — including a crash between recording and acting, and a target that is down."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from prefect_ml_automations import sensor as sensor_module
from prefect_ml_automations.automations import Webhook
from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore, utcnow

from .conftest import events, flow_runs, metric, state

CONFIG = """
store: sqlite:///{tmp}/store.db
automations:
  - name: deploy-on-production
    scope: {{registry: models, collection: churn}}
    event: {{type: ADD_ARTIFACT_ALIAS, alias: "^production$"}}
    action:
      type: run_deployment
      deployment: deploy-model/production
      parameters: {{model_version: "${{artifact_version_string}}"}}
  - name: page-on-failure
    scope: {{project: p}}
    event: {{type: RUN_STATE, states: [failed]}}
    action: {{type: webhook, url: "https://hooks.example.invalid/page", payload: {{text: "${{run_id}} failed"}}}}
  - name: good-accuracy
    scope: {{project: p}}
    event: {{type: RUN_METRIC, metric: acc, window: 1, operator: ">", threshold: 0.5}}
    action: {{type: no_op}}
"""


def alias(version: int, t: str) -> dict[str, Any]:
    return {
        "type": "ADD_ARTIFACT_ALIAS",
        "registry": "models",
        "collection": "churn",
        "version": version,
        "alias": "production",
        "timestamp": t,
    }


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return path


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Webhook, "retry_delays", (0.0,))
    monkeypatch.setattr(sensor_module, "BACKOFF", (timedelta(0),) * 3)


@pytest.fixture
def hooks() -> Any:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()  # Prefect's own API
        yield mock


def sensor(config_file: Path) -> Sensor:
    return Sensor(load_config(config_file, env={}))


def test_an_alias_on_production_starts_the_deployment_once(
    config_file: Path, deployments: dict[str, Any], hooks: Any
) -> None:
    s = sensor(config_file)
    s.store.put_events(events(alias(4, "2026-01-02T08:00:00Z")), origin="push")
    report = s.run_once()
    assert len(report.fired) == 1
    [delivery] = report.deliveries
    assert delivery.status == "finished"
    run_id = delivery.result["flow_run_id"]  # type: ignore[index]
    run = next(r for r in flow_runs(deployments["deploy-model/production"]) if str(r.id) == run_id)
    assert run.parameters == {"model_version": "models/churn:v4"}
    [row] = s.store.history(automation="deploy-on-production")
    assert row.to_record()["flow_run_id"] == run_id
    assert row.to_record()["status"] == "finished"
    # Nothing new: an idle cycle does nothing at all.
    assert s.run_once().idle


def test_a_crash_between_recording_and_acting_is_completed_by_the_next_cycle(
    config_file: Path, deployments: dict[str, Any], hooks: Any
) -> None:
    before = len(flow_runs(deployments["deploy-model/production"]))
    first = sensor(config_file)
    first.store.put_events(events(alias(7, "2026-01-03T08:00:00Z")), origin="push")
    [firing] = first.evaluate().fired  # recorded, then the process "dies" before acting
    assert first.store.history()[0].status == "pending"
    # It had even started the deployment before dying: the idempotency key keeps it one run.
    asyncio.run(first.automations["deploy-on-production"].action.deliver(firing))
    restarted = sensor(config_file)
    [delivery] = restarted.run_once().deliveries
    assert delivery.status == "finished"
    assert len(flow_runs(deployments["deploy-model/production"])) == before + 1


def test_the_same_event_pushed_and_ingested_twice_fires_once(
    config_file: Path,
    tmp_path: Path,
    prefect_api: str,
    hooks: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hooks.post("https://hooks.example.invalid/page").mock(return_value=httpx.Response(200))
    failed = state("r1", "failed", 0)
    s = sensor(config_file)
    s.store.put_events(events(failed), origin="push")
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps(failed) + "\n")
    assert main(["ingest", str(config_file), str(file)]) == 0
    assert main(["ingest", str(config_file), str(file)]) == 0
    s.run_once()
    s.store.put_events(events(failed), origin="push")  # and once more, in a later cycle
    s.run_once()
    capsys.readouterr()
    assert main(["history", str(config_file), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["automation"], r["run_id"], r["status"]) for r in records] == [
        ("page-on-failure", "r1", "finished")
    ]


def test_a_target_that_is_down_fails_with_its_error_and_retry_completes_it(
    config_file: Path, prefect_api: str, hooks: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = hooks.post("https://hooks.example.invalid/page")
    hook.mock(return_value=httpx.Response(503, text="down"))
    s = sensor(config_file)
    s.store.put_events(events(state("r9", "failed", 0)), origin="push")
    s.run_once()
    for _ in range(sensor_module.MAX_ATTEMPTS):  # each later cycle retries what is due
        asyncio.run(s.deliver(utcnow() + timedelta(hours=1)))
    [row] = s.store.history(automation="page-on-failure", status="failed")
    assert row.attempts == sensor_module.MAX_ATTEMPTS
    assert (
        row.error
        == "The webhook https://hooks.example.invalid/page answered HTTP 503: 'down', after retries."
    )
    hook.mock(return_value=httpx.Response(200))
    assert main(["retry", str(config_file), row.firing_id]) == 0
    assert capsys.readouterr().out == f"Firing {row.firing_id} finished: http_status 200.\n"
    assert s.store.history(automation="page-on-failure")[0].status == "finished"


def test_held_back_matches_are_in_the_history_as_skipped(
    config_file: Path, prefect_api: str, hooks: Any
) -> None:
    s = sensor(config_file)
    s.store.put_events(events(*[metric("r1", step, 0.9, step) for step in range(4)]), origin="push")
    s.run_once()
    statuses = [(r.status, r.count) for r in s.store.history(automation="good-accuracy")]
    assert statuses == [("finished", 1), ("skipped", 3)]


def test_run_once_is_a_flow_run_that_leaves_a_table_artifact(
    config_file: Path, prefect_api: str, hooks: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client

    StateStore(load_config(config_file, env={}).store).put_events(
        events(metric("r5", 0, 0.9, 0)), origin="push"
    )
    assert main(["run", str(config_file), "--once"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "events": 1,
        "fired": 1,
        "finished": 1,
        "failed": 0,
    }

    async def latest(key: str) -> Any:
        async with get_client() as client:
            # (the 3.8 client sends nulls this server version refuses: ask the API directly)
            response = await client._client.post(
                "/artifacts/filter",
                json={
                    "artifacts": {"key": {"any_": [key]}},
                    "sort": "CREATED_DESC",
                    "limit": 1,
                    "offset": 0,
                },
            )
        return response.json()[0]

    artifact = asyncio.run(latest("ml-automations-sensor"))
    rows = json.loads(artifact["data"])
    assert [(r["automation"], r["status"]) for r in rows] == [("good-accuracy", "finished")]
    assert artifact["flow_run_id"] is not None
    report = asyncio.run(latest("ml-automations-report"))
    assert report["type"] == "markdown"
    assert "## good-accuracy · RUN_METRIC · run 'r5'" in report["data"]
    assert "data:image/svg+xml;base64," in report["data"]
