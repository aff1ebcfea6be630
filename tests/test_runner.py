"""The long-running sensor loop: a push wakes it, so a pushed event fires at once."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_ml_automations.config import AutomationsConfig, parse_config
from prefect_ml_automations.runner import sensor_loop
from prefect_ml_automations.sensor import Sensor

from .conftest import events, state


def on_failed_runs(tmp_path: Path, name: str) -> AutomationsConfig:
    """One automation, a no-op on every failed run of project p, with a SQLite store."""
    return parse_config(
        {
            "store": f"sqlite:///{tmp_path}/store.db",
            "automations": [
                {
                    "name": name,
                    "scope": {"project": "p"},
                    "event": {"type": "RUN_STATE", "states": ["failed"]},
                    "action": {"type": "no_op"},
                }
            ],
        },
        env={},
    )


def test_a_push_wakes_the_idle_loop(tmp_path: Path, prefect_api: str) -> None:
    config = on_failed_runs(tmp_path, "a")
    sensor = Sensor(config)

    async def scenario() -> float:
        wake = asyncio.Event()
        loop = asyncio.create_task(sensor_loop(sensor, interval=600, wake=wake, cycles=2))
        await asyncio.sleep(0.5)  # the first cycle found nothing: the loop now idles for 600 s
        pushed = time.perf_counter()
        await asyncio.to_thread(
            sensor.store.put_events, events(state("r1", "failed", 0)), origin="push"
        )
        wake.set()
        await asyncio.wait_for(loop, timeout=10)
        return time.perf_counter() - pushed

    elapsed = asyncio.run(scenario())
    [row] = sensor.store.history()
    assert row.status == "finished"
    assert elapsed < 5  # woken, not waiting out the 600 s interval


def test_the_service_says_what_it_does_one_line_per_firing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = on_failed_runs(tmp_path, "page-on-failure")
    sensor = Sensor(config, name="talks")
    sensor.store.put_events(events(state("r1", "failed", 0)), origin="push")
    logger = logging.getLogger("prefect_ml_automations")
    # (Prefect's logging config may stop it from reaching the root, where caplog listens.)
    attach = not logger.propagate
    if attach:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="prefect_ml_automations")
    try:
        asyncio.run(sensor_loop(sensor, interval=600, cycles=1))
    finally:
        if attach:
            logger.removeHandler(caplog.handler)
    lines = [record.getMessage() for record in caplog.records]
    firing_id = sensor.store.history()[0].firing_id
    assert lines[0] == (
        f"sensor talks: started — 1 automation, store sqlite:///{tmp_path}/store.db, "
        "sources: none (pushed and ingested events); polls every 600 s"
    )
    assert lines[1] == "sensor talks: 1 event(s) evaluated, 1 firing(s)"
    assert lines[2] == (
        f"sensor talks: Firing {firing_id[:8]} of 'page-on-failure' (run 'r1'): done (ok)."
    )


def test_sigterm_and_ctrl_c_stop_the_service_cleanly(tmp_path: Path, prefect_api: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    file = tmp_path / "automations.yaml"
    file.write_text(
        "automations:\n  - {name: f, scope: {project: p}, event: {type: RUN_STATE, states: [failed]},"
        " action: {type: no_op}}\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    command = [sys.executable, "-m", "prefect_ml_automations.cli", "run", str(file)]
    for sig in (signal.SIGTERM, signal.SIGINT):
        service = subprocess.Popen(
            [*command, "--interval", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert service.stdout is not None
        for line in service.stdout:  # wait until it says it started
            if "started —" in line:
                break
        service.send_signal(sig)
        rest = service.stdout.read()
        assert service.wait(timeout=60) == 0, rest
        assert f"sensor default: stopped ({sig.name})." in rest
        assert rest.rstrip().endswith("stopped.") or "stopped.\n" in rest
        assert "Traceback" not in rest
        assert "Crash detected" not in rest


def test_with_prefects_own_temporary_server_no_telemetry_error_and_events_are_sent(
    tmp_path: Path,
) -> None:
    """No PREFECT_API_URL: Prefect starts a temporary server for the run; the run prints no
    'Failed to send telemetry' ERROR, and a firing's Prefect event goes to that server."""
    import json
    import os

    from prefect_ml_automations.cli import main

    file = tmp_path / "automations.yaml"
    file.write_text(
        "automations:\n  - {name: page-on-failure, scope: {project: p}, "
        "event: {type: RUN_STATE, states: [failed]}, action: {type: emit_event}}\n"
    )
    inbox = tmp_path / "events.jsonl"
    inbox.write_text(json.dumps(state("r1", "failed", 0)) + "\n")
    assert main(["ingest", str(file), str(inbox)]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # Prefect's temporary server, offline
    done = run_once(file, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"events": 1, "fired": 1, "finished": 1, "failed": 0}
    assert "telemetry" not in (done.stdout + done.stderr).lower()
    assert "was not sent" not in done.stderr


def run_once(file: Path, env: dict[str, str], *options: str) -> Any:
    """`ml-automations run FILE --once [OPTIONS]` as its own process."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "prefect_ml_automations.cli", "run", str(file), "--once"]
    return subprocess.run(
        [*command, *options], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "--verbose"])
def test_an_expected_failure_is_one_sentence_not_a_traceback(
    tmp_path: Path, prefect_api: str, verbose: bool
) -> None:
    """A webhook that can not be reached is an expected failure: `run --once` says so in its
    ERROR lines and exits 1, without Prefect's engine repeating it as a traceback (or the
    "NoneType: None" of a returned Failed state); `--verbose` shows Prefect's lines as they are."""
    import json
    import os
    import socket

    from prefect_ml_automations.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    file = tmp_path / "automations.yaml"
    file.write_text(
        "automations:\n  - {name: page-on-failure, scope: {project: p}, event: {type: RUN_STATE,"
        f' states: [failed]}}, action: {{type: webhook, url: "http://127.0.0.1:{closed}/hook"}}}}\n'
    )
    inbox = tmp_path / "events.jsonl"
    inbox.write_text(json.dumps(state("r1", "failed", 0)) + "\n")
    assert main(["ingest", str(file), str(inbox)]) == 0
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    done = run_once(file, env, *(["--verbose"] if verbose else []))
    assert done.returncode == 1, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"events": 1, "fired": 1, "finished": 0, "failed": 1}
    assert "of 'page-on-failure' (run 'r1'): its action failed (attempt 1 of 3" in done.stderr
    assert (
        "1 event(s) evaluated, 1 firing(s), 0 action(s) done, 1 failed (1 to be tried again)"
        in done.stderr
    )
    assert done.stderr.count("\nerror: 1 problem(s) in this cycle: Firing ") == 1
    if verbose:
        assert "Task run failed with state" in done.stderr
        assert "NoneType: None" in done.stderr
    else:
        assert "Task run failed with state" not in done.stderr
        assert "NoneType" not in done.stderr
        assert "Traceback" not in done.stderr


def test_only_expected_failures_lose_their_traceback() -> None:
    from prefect_ml_automations.cli import _expected_failures
    from prefect_ml_automations.errors import SourceError

    def record(message: str, error: BaseException | None) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error else (None, None, None)
        return logging.LogRecord("prefect.task_runs", logging.ERROR, "", 0, message, (), exc_info)

    returned = record("Task run failed with state: Failed(...)", None)
    assert _expected_failures(returned) is False
    ours = record("Task run failed with exception: SourceError(...)", SourceError("down"))
    assert _expected_failures(ours) is True
    assert ours.exc_info is None
    bug = record("Task run failed with exception: KeyError(...)", KeyError("x"))
    assert _expected_failures(bug) is True
    assert bug.exc_info is not None
    assert isinstance(bug.exc_info[1], KeyError)


def test_the_services_artifact_shows_its_firings_as_their_actions_ended(
    tmp_path: Path, prefect_api: str
) -> None:
    """Busy cycles and deliveries make one artifact per second (at most), on the service's flow
    run: a firing and what its action did are one row."""
    import json
    import uuid

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context

    name = f"page-{uuid.uuid4().hex[:8]}"
    sensor = Sensor(on_failed_runs(tmp_path, name))
    sensor.store.put_events(events(state("r1", "failed", 0)), origin="push")

    @flow(name="service-under-test")
    async def service() -> str:
        await sensor_loop(sensor, interval=600, cycles=1)
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]

    flow_run_id = asyncio.run(service())

    async def artifact() -> Any:
        async with get_client() as client:
            response = await client._client.post(
                "/artifacts/filter",
                json={
                    "artifacts": {"key": {"any_": ["ml-automations-sensor"]}},
                    "flow_runs": {"id": {"any_": [flow_run_id]}},
                    "sort": "CREATED_DESC",
                    "limit": 5,
                    "offset": 0,
                },
            )
        return response.json()

    # One artifact when the action ended within the second (a slow machine may write the
    # firing, then its delivery: the latest one has the firing's outcome either way).
    latest, *_ = asyncio.run(artifact())
    rows = json.loads(latest["data"])
    assert [(r["automation"], r["status"]) for r in rows] == [(name, "finished")]
    assert latest["description"].endswith(" 1 action(s) done, 0 failed.")


def test_merged_cycles_count_a_held_back_match_once_per_reason() -> None:
    """The service's artifact merges cycles: the same held-back match twice is one row, (2×)."""
    from prefect_ml_automations.decisions import Skip
    from prefect_ml_automations.sensor import CycleReport, summary

    held = Skip("hook", "run 'r2'", "held back by the cooldown (24h)", held_back=True)
    merged = CycleReport(events=1, held_back=[held]).merged(CycleReport(events=2, held_back=[held]))
    assert merged.held_back == [
        Skip("hook", "run 'r2'", "held back by the cooldown (24h)", 2, held_back=True)
    ]
    assert summary(merged, delivered=False) == "3 event(s) evaluated, 0 firing(s) (2 held back)"


def test_the_loop_takes_up_automations_saved_anew_before_each_poll(tmp_path: Path) -> None:
    """The service on the saved blocks reads them again every poll: an automation disabled in
    the Prefect UI stops firing at the next cycle, without a restart and without its state; a
    read that fails leaves the loop on the config it had."""
    config = on_failed_runs(tmp_path, "page-on-failure")
    disabled = config.model_copy(
        update={"automations": [config.automations[0].model_copy(update={"enabled": False})]}
    )
    sensor = Sensor(config)
    saved = [config, disabled]

    async def refresh() -> AutomationsConfig:
        if not saved:
            raise ConnectionError("the Prefect API is down")
        return saved.pop(0)

    def cycle(run: str) -> None:
        sensor.store.put_events(events(state(run, "failed", 0)), origin="push")
        asyncio.run(sensor_loop(sensor, interval=0, cycles=1, refresh=refresh))

    cycle("r1")  # as saved when it started: fires
    cycle("r2")  # disabled in the UI meanwhile: judged, fires nothing
    cycle("r3")  # the blocks can not be read: it goes on disabled
    assert [row.subject for row in sensor.store.history()] == ["run 'r1'"]
    assert not sensor.automations["page-on-failure"].enabled
