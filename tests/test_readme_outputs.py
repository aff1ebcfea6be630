"""Every example output in the README is what the program prints (issue 11 §6).

Each ```console block of the README is run as it is written — `$ ` lines are commands, run by
bash in a scratch folder (or the repository, for paths into it), the lines after them what a
person sees — and compared with what the program really printed, ignoring what changes from run
to run: ids, times, flow run names, ports and the scratch folder's path (`/tmp/scratch` in the
README). `…` on a line of its own stands for any lines (Prefect's own, or the rest of a long
output), `…` inside a line for any text, and `^C` is the person pressing Ctrl-C.

A block no scenario below knows fails the test: a new example needs its set-up here.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore, inbox, utcnow

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


# -- the README's blocks ------------------------------------------------------------------------


@dataclass
class Example:
    """One ```console block: the commands, and the lines a person sees (`^C` included)."""

    line: int
    commands: list[str]
    expected: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.commands[0]


def examples() -> list[Example]:
    text = README.read_text()
    found = []
    for match in re.finditer(r"```console\n(.*?)```", text, re.S):
        example: Example | None = None
        for raw in match[1].splitlines():
            if raw.startswith("$ "):
                if example is None:
                    line = text[: match.start()].count("\n") + 1
                    example = Example(line, [])
                assert not example.expected, "one command per block, then its output"
                example.commands.append(raw[2:])
            else:
                assert example is not None, f"a console block must start with '$ ': {raw!r}"
                example.expected.append(raw)
        assert example is not None
        found.append(example)
    return found


# -- what varies from run to run ----------------------------------------------------------------

SCRATCH = "/tmp/scratch"
_VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b\d\d-\d\d \d\d:\d\d\b"), "<time>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?:[0-9a-f]{32}|[0-9a-f]{8})\b"), "<id>"),
    (re.compile(r"Flow run '[a-z]+-[a-z]+'"), "Flow run '<name>'"),
    (re.compile(r"127\.0\.0\.1:\d{4,5}"), "127.0.0.1:<port>"),
]


def normalize(line: str, scratch: Path | None = None) -> str:
    if scratch is not None:
        line = line.replace(str(scratch), SCRATCH)
    for pattern, placeholder in _VARYING:
        line = pattern.sub(placeholder, line)
    return line.rstrip()


def _pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in normalize(expected).split("…")))


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` is `expected`, `…` lines standing for any lines (none included)."""
    patterns = [None if line.strip() == "…" else _pattern(line) for line in expected]

    def from_(e: int, a: int) -> bool:
        if e == len(patterns):
            return a == len(actual)
        pattern = patterns[e]
        if pattern is None:
            return any(from_(e + 1, skip) for skip in range(a, len(actual) + 1))
        return a < len(actual) and bool(pattern.fullmatch(actual[a])) and from_(e + 1, a + 1)

    return from_(0, 0)


# -- running a block ----------------------------------------------------------------------------

BIN = Path(sys.executable).parent  # ml-automations, prefect: this environment's


def shell(command: str, port: int | None) -> str:
    """The README's command for bash here: `bash scripts/dev.sh X` is X in this environment (it
    would only reinstall the package first); curl, where the machine has none, is httpx."""
    command = re.sub(r"^bash scripts/dev\.sh ", "", command)
    if port is not None:
        command = command.replace("127.0.0.1:8765", f"127.0.0.1:{port}")
        command = command.replace("--port 8765", f"--port {port}")
    if shutil.which("curl") is None:
        command = (
            "curl() { python -c 'import sys, httpx; "
            'print(httpx.get(sys.argv[-1]).text, end="")\' "$@"; }; ' + command
        )
    return command


def environment(prefect_api: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONUNBUFFERED="1", COLUMNS="80")
    if prefect_api is not None:
        env["PREFECT_API_URL"] = prefect_api
    return env


def run_block(example: Example, cwd: Path, env: dict[str, str], port: int | None) -> list[str]:
    """Run the block's command; at `^C`, once the lines before it were printed, press Ctrl-C.
    Returns what it printed (stdout and stderr as a terminal interleaves them)."""
    [command] = example.commands
    expected = example.expected
    interrupt_at = expected.index("^C") if "^C" in expected else None
    process = subprocess.Popen(
        ["bash", "-c", f"exec {shell(command, port)}" if interrupt_at else shell(command, port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    printed: list[str] = []
    waiting_for = None
    if interrupt_at is not None:
        waiting_for = _pattern([e for e in expected[:interrupt_at] if e.strip() != "…"][-1])
    deadline = time.monotonic() + 240
    try:
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            printed.append(normalize(line, cwd))
            if waiting_for is not None and waiting_for.fullmatch(printed[-1]):
                waiting_for = None
                process.send_signal(signal.SIGINT)
                printed.append("^C")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return printed


# -- the scenarios: what each block needs around it ---------------------------------------------

PAGE_ON_FAILURE = (
    "automations:\n  - {name: page-on-failure, scope: {project: my-team/vision}, "
    "event: {type: RUN_STATE, states: [failed]}, action: {type: no_op}}\n"
)
QUARANTINED_BODY = (
    '{"type": "METRIC", "project": "my-team/vision", "run_id": "r1", "metric": "loss", '
    '"step": 9223372036854775808, "value": 1, "timestamp": "2026-01-02T08:00:00Z"}'
)


def a_failed_run_in_the_inbox(scratch: Path) -> None:
    (scratch / "automations.yaml").write_text(PAGE_ON_FAILURE)
    (scratch / "events.jsonl").write_text(
        '{"type": "RUN_STATE", "project": "my-team/vision", "run_id": "r7", "state": "failed", '
        '"timestamp": "2026-01-02T08:00:00Z"}\n'
    )
    assert main(["ingest", str(scratch / "automations.yaml"), str(scratch / "events.jsonl")]) == 0


def a_failed_run_and_a_receiver_token(scratch: Path) -> None:
    a_failed_run_in_the_inbox(scratch)
    config = scratch / "automations.yaml"
    config.write_text('receiver: {token: "a-token-for-the-readme"}\n' + config.read_text())


def a_deployment_to_start(scratch: Path) -> None:
    (scratch / "automations.yaml").write_text(
        "automations:\n  - name: deploy-on-production\n"
        "    scope: {registry: models, collection: churn-classifier}\n"
        '    event: {type: ADD_ARTIFACT_ALIAS, alias: "^production$"}\n'
        "    action: {type: run_deployment, deployment: deploy-model/release}\n"
    )


def a_source_and_an_automation(scratch: Path) -> None:
    (scratch / "automations.yaml").write_text(
        "sources:\n  - {name: local, type: mlflow, tracking_uri: 'sqlite:///mlflow.db'}\n"
        "automations:\n  - name: deploy-on-production\n"
        "    scope: {registry: models, collection: churn-classifier}\n"
        '    event: {type: ADD_ARTIFACT_ALIAS, alias: "^production$"}\n'
        "    action: {type: run_deployment, deployment: deploy-model/release}\n"
    )


def events_past_the_door(scratch: Path) -> None:
    (scratch / "automations.yaml").write_text(PAGE_ON_FAILURE)
    good = {"type": "RUN_STATE", "project": "my-team/vision", "run_id": "r1", "state": "failed"}
    (scratch / "events.jsonl").write_text(
        json.dumps({**good, "timestamp": "2026-01-02T08:00:00Z"})
        + "\n"
        + json.dumps(
            {
                "type": "METRIC",
                "project": "my-team/vision",
                "run_id": "r1",
                "metric": "loss",
                "step": 2**63,
                "value": 1,
                "timestamp": "2026-01-02T08:00:00Z",
            }
        )
        + "\n"
        + json.dumps({**good, "timestamp": "9999-12-31T00:00:00Z"})
        + "\n"
    )


def a_config_too_big_to_hold(scratch: Path) -> None:
    (scratch / "big.yaml").write_text(
        "automations:\n  - name: smooth-loss\n    scope: {project: my-team/vision}\n"
        "    event: {type: RUN_METRIC, metric: loss, window: 1000000000, operator: '<',"
        " threshold: 0.1}\n    cooldown: '1e20'\n    action: {type: no_op}\n"
    )


def an_event_in_the_quarantine(scratch: Path) -> None:
    """An event stored by an older version with a looser door, which a cycle then quarantined."""
    file = scratch / "automations.yaml"
    file.write_text('receiver: {token: "a-token-for-the-readme"}\n' + PAGE_ON_FAILURE)
    config = load_config(file)
    store = StateStore(config.store)
    with store.engine.begin() as connection:
        connection.execute(
            inbox.insert(), [{"received_at": utcnow(), "origin": "push", "body": QUARANTINED_BODY}]
        )
    assert Sensor(config, store).run_once().quarantined == 1


def a_month_of_runs_in_mlflow(scratch: Path) -> None:
    """The README's backtest: three runs of my-team/vision in a local MLflow store, as it holds
    them on 2026-02-01 — one from 45 days before, one whose loss sat at 0.25 from 31.5 days
    before, one that converged 3 days before and failed the day after."""
    from datetime import UTC, datetime, timedelta

    mlflow = pytest.importorskip("mlflow", reason="the backtest example reads an MLflow store")
    from mlflow.entities import Metric

    (scratch / "automations.yaml").write_text(
        "sources:\n  - {name: local, type: mlflow, tracking_uri: 'sqlite:///mlflow.db'}\n"
        "automations:\n"
        "  - name: low-loss\n    scope: {project: my-team/vision}\n"
        "    event: {type: RUN_METRIC, metric: loss, window: 3, operator: '<', threshold: 0.3}\n"
        "    action: {type: run_deployment, deployment: evaluate-model/default}\n"
        "  - name: page-on-failure\n    scope: {project: my-team/vision}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n    action: {type: no_op}\n"
        "  - name: deploy-on-production\n"
        "    scope: {registry: models, collection: churn-classifier}\n"
        '    event: {type: ADD_ARTIFACT_ALIAS, alias: "^production$"}\n'
        "    action: {type: run_deployment, deployment: deploy-model/production}\n"
    )
    now, day, hour = datetime(2026, 2, 1, tzinfo=UTC), timedelta(days=1), timedelta(hours=1)
    client = mlflow.MlflowClient(f"sqlite:///{scratch / 'mlflow.db'}")
    experiment = client.create_experiment("my-team/vision")
    for name, start, every, losses, end in (
        ("sweep-1", now - 45 * day, day, [0.9, 0.2, 0.2, 0.2], ("FAILED", now - 41 * day)),
        (
            "sweep-2",
            now - 31.5 * day,
            day,
            [0.25, 0.25, 0.25, 0.9, 0.1],
            ("FINISHED", now - 26 * day),
        ),
        ("sweep-3", now - 3 * day, hour, [0.5, 0.3, 0.2, 0.1, 0.1], ("FAILED", now - 2 * day)),
    ):
        ms = int(start.timestamp() * 1000)
        run_id = client.create_run(experiment, run_name=name, start_time=ms).info.run_id
        client.log_batch(
            run_id,
            metrics=[
                Metric("loss", loss, ms + int(step * every.total_seconds() * 1000), step)
                for step, loss in enumerate(losses)
            ],
        )
        client.set_terminated(run_id, end[0], end_time=int(end[1].timestamp() * 1000))


@dataclass
class Scenario:
    set_up: Callable[[Path], None] | None = None
    in_repository: bool = False  # the command's paths are the repository's examples
    prefect: bool = False  # the command needs the Prefect API (the session's test server)
    receiver: bool = False  # `receive` runs beside it, on a free port
    listens: bool = False  # the command listens itself: on a free port, not the README's


SCENARIOS: dict[str, Scenario] = {
    "bash scripts/dev.sh ml-automations validate examples/automations.yaml": Scenario(
        in_repository=True
    ),
    "bash scripts/dev.sh ml-automations evaluate examples/automations.yaml examples/events.jsonl": (
        Scenario(in_repository=True)
    ),
    "bash scripts/dev.sh ml-automations evaluate examples/automations.yaml examples/events.jsonl"
    " --explain": Scenario(in_repository=True),
    "ml-automations run automations.yaml --interval 5": Scenario(
        a_failed_run_in_the_inbox, prefect=True
    ),
    "ml-automations receive automations.yaml --port 8765": Scenario(
        a_failed_run_and_a_receiver_token, prefect=True, listens=True
    ),
    "ml-automations check automations.yaml": Scenario(a_deployment_to_start, prefect=True),
    "ml-automations apply automations.yaml": Scenario(a_source_and_an_automation, prefect=True),
    "ml-automations ingest automations.yaml events.jsonl": Scenario(events_past_the_door),
    "ml-automations validate big.yaml": Scenario(a_config_too_big_to_hold),
    "ml-automations backtest automations.yaml --since 30d --now 2026-02-01T00:00:00Z": Scenario(
        a_month_of_runs_in_mlflow
    ),
    "ml-automations quarantine automations.yaml": Scenario(an_event_in_the_quarantine),
    "curl -s http://127.0.0.1:8765/health": Scenario(
        an_event_in_the_quarantine, prefect=True, receiver=True
    ),
}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def receiving(scratch: Path, env: dict[str, str]) -> Iterator[int]:
    """`ml-automations receive` in the scratch folder, until its sensor has done a cycle."""
    port = _free_port()
    service = subprocess.Popen(
        ["ml-automations", "receive", "automations.yaml", "--port", str(port)],
        cwd=scratch,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                if health.get("sensor", {}).get("last_cycle_at"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the receiver's sensor did not do a cycle within 120 s")
        yield port
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()


# -- the tests ----------------------------------------------------------------------------------


def test_every_console_block_of_the_readme_has_a_scenario() -> None:
    unknown = [f"README.md:{e.line}: {e.key}" for e in examples() if e.key not in SCENARIOS]
    assert not unknown, "add a scenario for: " + "; ".join(unknown)
    assert len(examples()) == len(SCENARIOS)  # and no scenario for an example that is gone


@pytest.mark.parametrize("example", examples(), ids=lambda e: f"README.md:{e.line}")
def test_the_readme_shows_what_the_program_prints(
    example: Example, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scenario = SCENARIOS.get(example.key)
    assert scenario is not None, f"no scenario for {example.key!r}"
    prefect_api = request.getfixturevalue("prefect_api") if scenario.prefect else None
    env = environment(prefect_api)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if scenario.set_up is not None:
        scenario.set_up(scratch)
    cwd = ROOT if scenario.in_repository else scratch
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(receiving(scratch, env)) if scenario.receiver else None
        port = _free_port() if scenario.listens else port
        printed = run_block(example, cwd, env, port)
    assert matches(example.expected, printed), (
        f"README.md:{example.line}: `{example.key}` printed:\n" + "\n".join(printed)
    )


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        (["a", "…", "b"], ["a", "x", "y", "b"], True),
        (["a", "…", "b"], ["a", "b"], True),
        (["a", "b"], ["a", "x", "b"], False),
        (["a…c"], ["abbbc"], True),
        (["a…c"], ["abbbd"], False),
        (["id 3f2a9c1b at 07:32:59.717"], ["id 0d1e2f3a at 10:00:00.001"], True),
        (["1 event"], ["2 events"], False),
    ],
)
def test_what_the_comparison_ignores_and_what_it_does_not(
    expected: list[str], actual: list[str], same: bool
) -> None:
    assert matches(expected, [normalize(line) for line in actual]) is same


def test_the_readmes_wandb_import_example_is_what_import_wandb_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The saved W&B answer in the README, and the YAML it says `import-wandb` prints for it."""
    text = README.read_text()
    intro = text.index("For this saved answer\n(`wandb-automations.json`):")
    answer = re.search(r"```json\n(.*?)```", text[intro:], re.S)
    written = re.search(r"```yaml\n(.*?)```", text[intro:], re.S)
    assert answer is not None
    assert written is not None
    saved = tmp_path / "wandb-automations.json"
    saved.write_text(answer[1])
    assert main(["import-wandb", str(saved), "--entity", "my-team"]) == 0
    assert capsys.readouterr().out == written[1]
