"""The sensor cycle as a flow of tasks (SPEC §9): a task run per poll, one for the commit, one per
delivery; a failed action fails its task run and the cycle; firing events a Prefect user can
follow — against a real Prefect test server and a real MLflow store."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_ml_automations.blocks import AutomationBlock
from prefect_ml_automations.config import parse_config
from prefect_ml_automations.flows import sensor_cycle
from prefect_ml_automations.sensor import DELIVERY_CONCURRENCY, Polled, Sensor
from prefect_ml_automations.sources import Poll
from prefect_ml_automations.store import StateStore, utcnow

from .conftest import events, state


def config_file(tmp_path: Path, tracking_uri: str, project: str) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path}/store.db\n"
        f"sources: [{{name: local, type: mlflow, tracking_uri: '{tracking_uri}'}}]\n"
        "automations:\n"
        "  - name: record-failure\n"
        f"    scope: {{project: {project}}}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: no_op}\n"
        "  - name: deploy-the-fix\n"
        f"    scope: {{project: {project}}}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: run_deployment, deployment: no-such-flow/nowhere}\n"
    )
    return path


async def flow_run_details(flow_run_id: Any) -> tuple[list[Any], list[Any]]:
    """The task runs and the log lines of a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort, TaskRunSort

    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            sort=LogSort.TIMESTAMP_ASC,
            limit=200,
        )
    return task_runs, logs


def test_a_cycle_is_task_runs_and_a_failed_action_fails_it(
    tmp_path: Path, tracking_uri: str, prefect_api: str
) -> None:
    import mlflow

    project = f"team/flow-{uuid.uuid4().hex[:8]}"
    path = config_file(tmp_path, tracking_uri, project)
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment(project)
    asyncio.run(sensor_cycle(str(path)))  # starts watching
    run = client.create_run(experiment, run_name="sweep-1")
    client.set_terminated(run.info.run_id, "FAILED")

    final: Any = asyncio.run(sensor_cycle(str(path), return_state=True))  # type: ignore[call-overload]

    assert final.is_failed()
    assert "Deployment 'no-such-flow/nowhere' does not exist" in final.message
    flow_run_id = final.state_details.flow_run_id
    task_runs, logs = asyncio.run(flow_run_details(flow_run_id))
    deadline = time.monotonic() + 20  # log lines reach the API in batches, every few seconds
    while not any(log.level >= 40 for log in logs) and time.monotonic() < deadline:
        time.sleep(0.5)
        task_runs, logs = asyncio.run(flow_run_details(flow_run_id))
    by_name = {t.name: t for t in task_runs}
    assert by_name["poll local"].state.is_completed()
    assert by_name["commit default"].state.is_completed()
    assert by_name["publish default"].state.is_completed()
    assert "Traceback" not in "".join(log.message for log in logs)  # a failed action is news
    deliveries = {n: t for n, t in by_name.items() if "RUN_STATE" in n}
    subject = f"RUN_STATE · run '{run.info.run_id}' (sweep-1)"
    assert sorted(deliveries) == [f"deploy-the-fix · {subject}", f"record-failure · {subject}"]
    assert deliveries[f"deploy-the-fix · {subject}"].state.is_failed()
    assert deliveries[f"record-failure · {subject}"].state.is_completed()
    errors = [log.message for log in logs if log.level >= 40 and log.message.startswith("Firing ")]
    assert len(errors) == 1  # the sensor's own line: the firing and the error
    assert "'deploy-the-fix'" in errors[0]
    assert "does not exist; create it" in errors[0]
    statuses = {
        r.firing.automation: r.status
        for r in StateStore(f"sqlite:///{tmp_path}/store.db").history()
    }
    assert statuses == {"deploy-the-fix": "failed", "record-failure": "finished"}


def test_the_cli_s_one_cycle_exits_1_when_an_action_failed(
    tmp_path: Path, tracking_uri: str, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect_ml_automations.cli import main

    project = f"team/cli-{uuid.uuid4().hex[:8]}"
    path = config_file(tmp_path, tracking_uri, project)
    StateStore(f"sqlite:///{tmp_path}/store.db").put_events(
        events(state("r1", "failed", 0, project=project)), origin="push"
    )
    assert main(["run", str(path), "--once"]) == 1
    captured = capsys.readouterr()
    assert '"fired": 2' in captured.out
    assert "Deployment 'no-such-flow/nowhere' does not exist" in captured.err


# -- compare and swap: a poll that raced a concurrent change is dropped -----------------------


class Counting:
    """A source that finds one new failed run per poll."""

    name = "counting"

    def __init__(self) -> None:
        self.polls = 0

    def poll(self, cursor: dict[str, Any] | None, now: Any) -> Poll:
        self.polls += 1
        seen = (cursor or {}).get("seen", 0)
        found = events(state(f"r{seen + 1}", "failed", seen))
        return Poll(events=found, cursor={"seen": seen + 1})


def test_a_poll_whose_cursor_moved_meanwhile_is_dropped_not_counted_twice(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": f"sqlite:///{tmp_path}/store.db",
            "automations": [
                {
                    "name": "page",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "no_op"},
                }
            ],
        },
        env={},
    )
    source = Counting()
    one, other = Sensor(config, sources=[source]), Sensor(config, sources=[source])
    now = utcnow()
    slow = one.poll(source, one.read_cursors()["counting"], now)  # starts from no cursor
    fast = other.poll(source, other.read_cursors()["counting"], now)  # the same, meanwhile
    assert len(other.commit([fast]).fired) == 1  # the other sensor commits first
    late = one.commit([slow])
    assert (late.fired, late.dropped_polls) == ([], ["counting"])  # r1 is not fired twice
    again = one.commit([one.poll(source, one.read_cursors()["counting"], now)])
    assert [f.run_id for f in again.fired] == ["r2"]  # the next poll goes on from their cursor


def test_a_poll_that_failed_leaves_the_cursor_and_reports_the_source(tmp_path: Path) -> None:
    config = parse_config({"store": f"sqlite:///{tmp_path}/store.db"}, env={})
    sensor = Sensor(config, sources=[])
    report = sensor.commit([Polled("team", {"seen": 1}, error="W&B could not be reached.")])
    assert report.source_errors == ["team: W&B could not be reached."]
    assert report.problems == ["source team: W&B could not be reached."]
    assert sensor.store.cursors(["team"]) == {"team": None}


# -- deliveries run side by side -----------------------------------------------------------


def test_a_burst_of_firings_is_delivered_side_by_side_up_to_the_bound(tmp_path: Path) -> None:
    import respx

    hook = "https://hooks.example.invalid/burst"
    config = parse_config(
        {
            "store": f"sqlite:///{tmp_path}/store.db",
            "automations": [
                {
                    "name": "page",
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "webhook", "url": hook},
                }
            ],
        },
        env={},
    )
    sensor = Sensor(config, sources=[])
    sensor.store.put_events(
        events(*(state(f"r{i}", "failed", i) for i in range(3 * DELIVERY_CONCURRENCY))),
        origin="push",
    )
    sensor.evaluate()
    in_flight, most = 0, 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.3)  # long enough for all sixteen to be in flight on a busy machine
        in_flight -= 1
        return httpx.Response(200)

    with respx.mock() as mock:
        mock.post(hook).mock(side_effect=answer)
        deliveries = asyncio.run(sensor.deliver())
    assert [d.status for d in deliveries] == ["finished"] * (3 * DELIVERY_CONCURRENCY)
    assert most == DELIVERY_CONCURRENCY


# -- firing events -----------------------------------------------------------------------------


def test_firing_events_happen_now_and_relate_to_the_block_deployment_and_flow_run(
    tmp_path: Path, prefect_api: str, deployments: dict[str, Any]
) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path}/store.db\n"
        "automations:\n"
        "  - name: deploy-on-failure-events\n"
        "    scope: {project: p}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        "    action: {type: run_deployment, deployment: deploy-model/staging}\n"
    )
    from prefect_ml_automations.config import load_config

    automation = load_config(path).automations[0]
    block_id = AutomationBlock.from_automation(automation).save(
        "deploy-on-failure-events", overwrite=True
    )
    StateStore(f"sqlite:///{tmp_path}/store.db").put_events(
        events(state("r1", "failed", 0)),
        origin="push",  # an event of January 2026
    )
    started = utcnow()
    counts = asyncio.run(sensor_cycle(str(path)))
    assert counts["finished"] == 1
    [row] = StateStore(f"sqlite:///{tmp_path}/store.db").history()
    flow_run_id = row.to_record()["flow_run_id"]

    block = f"prefect.block-document.{block_id}"
    event = _wait_for_event(
        prefect_api,  # the Event Feed filtered by the automation's block, firings only
        {"any_resource": {"id": [block]}, "event": {"prefix": ["ml.automation.firing."]}},
    )
    assert event["event"] == "ml.automation.firing.finished"
    assert _time(event["occurred"]) >= started - timedelta(seconds=1)  # now, not January
    assert event["payload"]["triggered_at"] == "2026-01-01T10:00:00+00:00"
    related = {(r["prefect.resource.role"], r["prefect.resource.id"]) for r in event["related"]}
    # (Prefect adds the sensor's own flow run too: the one started is among the related.)
    assert {
        ("block", block),
        ("block-type", "prefect.block-type.ml-automation"),
        ("automation", "ml-automations.automation.deploy-on-failure-events"),
        ("deployment", f"prefect.deployment.{deployments['deploy-model/staging']}"),
        ("flow-run", f"prefect.flow-run.{flow_run_id}"),
    } <= related


def _time(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _wait_for_event(api: str, where: dict[str, Any]) -> dict[str, Any]:
    """The latest event matching `where` (events reach the server a few seconds after emission)."""
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.post(f"{api}/events/filter", json={"filter": where, "limit": 10})
        answer.raise_for_status()
        found = answer.json()["events"]
        if found or time.monotonic() > deadline:
            assert found, f"no event matched {where} within 30 s"
            return dict(found[0])
        time.sleep(0.5)


def test_the_loop_does_not_import_the_flows_that_run_it() -> None:
    """flows → runner → sensor, never back: the service flow runs the loop, the loop knows no
    flow (a cycle of imports was how `publish` reached the loop before)."""
    import subprocess
    import sys

    code = (
        "import sys, prefect_ml_automations.runner, prefect_ml_automations.sensor;"
        "print(sorted(m for m in sys.modules if m.startswith('prefect_ml_automations.flows')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
