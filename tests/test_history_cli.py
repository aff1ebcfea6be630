"""A history a person can act on (issue 11 §4): `history` fits the terminal with a short id per
firing, `retry` and `history --firing` take the id's first characters, `retry` says what became
of the action, and `evaluate --explain-json` names every firing as a decision too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from prefect_ml_automations.automations import Webhook
from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import HistoryRow, StateStore, utcnow

from .conftest import events, metric, piped_into_head, state

EXAMPLES = Path(__file__).parent.parent / "examples"
HOOK = "https://hooks.example.invalid/x"

CONFIG = """
store: sqlite:///{tmp}/store.db
automations:
  - name: page-the-on-call-engineer-when-a-training-run-fails
    scope: {{project: p}}
    event: {{type: RUN_STATE, states: [failed]}}
    action: {{type: webhook, url: "{hook}"}}
  - name: good-accuracy
    scope: {{project: p}}
    event: {{type: RUN_METRIC, metric: acc, window: 1, operator: ">", threshold: 0.5}}
    cooldown: 0
    action: {{type: no_op}}
"""
PAGE = "page-the-on-call-engineer-when-a-training-run-fails"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path, hook=HOOK))
    return path


@pytest.fixture
def store(config_file: Path) -> StateStore:
    return StateStore(load_config(config_file, env={}).store)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Webhook, "retry_delays", (0.0,))


@pytest.fixture
def hook() -> Any:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(HOOK)
        route.mock(return_value=httpx.Response(500, text="down"))
        yield route


def fire(config_file: Path, *dicts: dict[str, Any]) -> None:
    """Put the events into the store and run one sensor cycle over them."""
    sensor = Sensor(load_config(config_file, env={}))
    sensor.store.put_events(events(*dicts), origin="test")
    sensor.run_once()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def row_of(store: StateStore, automation: str) -> HistoryRow:
    [row] = store.history(automation=automation)
    return row


def record_firings(store: StateStore, *ids: str) -> None:
    """Firings with chosen ids, recorded as a sensor cycle records them."""
    with store.cycle() as cycle:
        cycle.record(
            [
                Firing(
                    firing_id=firing_id,
                    automation="good-accuracy",
                    event_type="RUN_METRIC",
                    timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                    run_id=f"r{n}",
                )
                for n, firing_id in enumerate(ids)
            ]
        )


# -- 1. the table -------------------------------------------------------------------------------


def test_the_table_fits_80_columns_with_one_line_and_a_short_id_per_firing(
    config_file: Path,
    store: StateStore,
    hook: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long_run = "a-sweep-run-whose-name-nobody-will-ever-read-to-the-end-" + "x" * 40
    fire(
        config_file,
        state("r1", "failed", 0),
        metric(long_run, 1, 0.9, 1, run_name="sweep " * 30),
        metric("r2", 1, 0.9, 2),
    )
    rows = store.history()
    assert len(rows) == 3
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "history", str(config_file))
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert len(lines) == 1 + len(rows), out  # a header, then one line per firing
    for row in rows:
        [line] = [line for line in lines if row.firing_id[:8] in line]
        assert line.startswith(row.firing_id[:8])
        assert row.firing_id not in line
    [failed] = [line for line in lines if line.startswith(row_of(store, PAGE).firing_id[:8])]
    assert "pending" in failed
    assert "next try" in failed
    assert "…" in failed  # the automation's long name is cut, not wrapped
    assert "event" not in lines[0]  # no room for the low-value columns


def test_a_wide_terminal_also_shows_the_event_and_the_attempts(
    config_file: Path,
    store: StateStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fire(config_file, metric("r2", 1, 0.9, 2))
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(capsys, "history", str(config_file))
    assert code == 0
    header, *_, line = out.splitlines()
    assert header.split() == [
        "id",
        "when",
        "(UTC)",
        "automation",
        "event",
        "subject",
        "status",
        "tries",
        "detail",
    ]
    assert line.split()[4:] == ["RUN_METRIC", "run", "'r2'", "finished", "1", "done"]


def test_a_pending_firing_says_when_it_is_tried_next(
    config_file: Path, store: StateStore, hook: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = utcnow()
    fire(config_file, state("r1", "failed", 0), metric("r2", 1, 0.9, 2))
    pending = row_of(store, PAGE)
    assert pending.status == "pending"
    assert pending.retry_at is not None
    assert pending.retry_at > before
    code, out, _ = run(capsys, "history", str(config_file), "--json")
    assert code == 0
    records = {r["automation"]: r for r in map(json.loads, out.splitlines())}
    assert datetime.fromisoformat(records[PAGE]["retry_at"]) == pending.retry_at
    assert "retry_at" not in records["good-accuracy"]


# -- 2. ids by their first characters -----------------------------------------------------------


def test_history_firing_takes_the_ids_first_characters(
    config_file: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    fire(config_file, metric("r1", 1, 0.9, 1), metric("r2", 1, 0.9, 2))
    first, second = store.history()
    code, out, _ = run(
        capsys, "history", str(config_file), "--firing", second.firing_id[:6], "--json"
    )
    assert code == 0
    assert [json.loads(line)["firing_id"] for line in out.splitlines()] == [second.firing_id]
    code, out, _ = run(capsys, "history", str(config_file), "--firing", first.firing_id[:4])
    assert code == 0
    assert f"firing     {first.firing_id}" in out.splitlines()
    assert second.firing_id[:8] not in out


@pytest.mark.parametrize("command", ["retry", "history"])
def test_an_id_nothing_starts_with_exits_2_saying_where_ids_are_listed(
    command: str, config_file: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    record_firings(store, "abcd" + "0" * 28)
    argv = (
        [str(config_file), "abce"] if command == "retry" else [str(config_file), "--firing", "abce"]
    )
    code, out, err = run(capsys, command, *argv)
    assert (code, out) == (2, "")
    assert err == (
        f"error: No firing id starts with 'abce'; `ml-automations history {config_file}` "
        "lists them.\n"
    )


def test_like_wildcards_in_an_id_match_nothing(
    config_file: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    record_firings(store, "abcd" + "0" * 28)
    assert store.firing_ids_starting("%%%%") == []
    assert store.firing_ids_starting("ab_d") == []
    code, _, err = run(capsys, "retry", str(config_file), "____")
    assert code == 2
    assert "No firing id starts with '____'" in err


def test_an_id_several_firings_start_with_exits_2_listing_five_of_them(
    config_file: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"abcd{n:028d}" for n in range(7)]
    record_firings(store, *ids, "abce" + "0" * 28)
    assert store.firing_ids_starting("abcd") == ids
    code, out, err = run(capsys, "retry", str(config_file), "ABCD")
    assert (code, out) == (2, "")
    assert err == (
        f"error: Several firing ids start with 'abcd' ({', '.join(ids[:5])}, …); "
        "give more of the id.\n"
    )


def test_fewer_than_4_characters_are_refused(
    config_file: Path, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    record_firings(store, "abcd" + "0" * 28)
    code, _, err = run(capsys, "retry", str(config_file), "abc")
    assert code == 2
    assert err.startswith("error: Firing id 'abc' is too short; give at least its first 4")


# -- 3. what retry says -------------------------------------------------------------------------


def test_a_retry_that_fails_again_says_when_it_is_tried_next_and_exits_1(
    config_file: Path, store: StateStore, hook: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fire(config_file, state("r1", "failed", 0))
    firing_id = row_of(store, PAGE).firing_id
    code, out, err = run(capsys, "retry", str(config_file), firing_id[:5])
    row = row_of(store, PAGE)
    assert (code, out, row.status, row.attempts) == (1, "", "pending", 1)
    assert row.retry_at is not None
    assert err == (
        f"error: Firing {firing_id} failed again (The webhook {HOOK} answered HTTP 500: 'down', "
        f"after retries); the sensor tries it again after {row.retry_at:%H:%M:%S} UTC.\n"
    )


def test_a_retry_refused_for_good_says_it_is_not_tried_again_and_exits_1(
    config_file: Path, store: StateStore, hook: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fire(config_file, state("r1", "failed", 0))
    firing_id = row_of(store, PAGE).firing_id
    hook.mock(return_value=httpx.Response(404, text="no such hook"))
    code, _, err = run(capsys, "retry", str(config_file), firing_id[:8])
    assert code == 1
    assert row_of(store, PAGE).status == "failed"
    assert err.startswith(f"error: Firing {firing_id} failed again (")
    assert err.endswith(
        "it is not tried again by itself: fix the cause, then "
        f"`ml-automations retry {config_file} {firing_id[:8]}`.\n"
    )


def test_a_retry_that_succeeds_says_finished_and_exits_0(
    config_file: Path, store: StateStore, hook: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fire(config_file, state("r1", "failed", 0))
    firing_id = row_of(store, PAGE).firing_id
    hook.mock(return_value=httpx.Response(200))
    code, out, err = run(capsys, "retry", str(config_file), firing_id[:4])
    assert (code, err) == (0, "")
    assert out == f"Firing {firing_id} finished: http_status 200.\n"
    row = row_of(store, PAGE)
    assert (row.status, row.retry_at) == ("finished", None)


# -- 4. evaluate --explain-json -----------------------------------------------------------------


def test_explain_json_names_each_firing_as_a_fired_decision_in_firing_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys,
        "evaluate",
        str(EXAMPLES / "automations.yaml"),
        str(EXAMPLES / "events.jsonl"),
        "--explain-json",
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    firings = [r for r in records if "decision" not in r]
    assert len(firings) == 7
    assert records[: len(firings)] == firings  # the firing lines come first
    fired = records[len(firings) : 2 * len(firings)]
    assert fired == [
        {
            "decision": "fired",
            "automation": f["automation"],
            "subject": Firing.model_validate(f).subject,
            "firing_id": f["firing_id"],
        }
        for f in firings
    ]
    rest = records[2 * len(firings) :]
    assert rest
    assert all(r["decision"] == "not_fired" for r in rest)


def test_an_empty_history_is_a_header_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "automations.yaml"
    file.write_text("automations: []\n")
    assert main(["history", str(file)]) == 0
    assert capsys.readouterr().out.split() == [
        "id",
        "when",
        "(UTC)",
        "automation",
        "subject",
        "status",
        "detail",
    ]


@pytest.mark.parametrize("table", [False, True], ids=["--json", "table"])
def test_history_into_a_pipe_closed_early_ends_quietly(
    config_file: Path, store: StateStore, table: bool
) -> None:
    import uuid

    record_firings(store, *(uuid.uuid4().hex for _ in range(5000)))
    done = piped_into_head("history", str(config_file), *([] if table else ["--json"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("id " if table else '{"firing_id": ')
    assert done.stderr == ""
