"""The backtest: `ml-automations backtest CONFIG --since 30d` — what the automations would have
fired over what the trackers already hold, replayed in the order it would have arrived.

Against a real MLflow store (a fresh copy of an empty, migrated one per test) and the W&B-shaped
GraphQL fake at the httpx edge; what a backtest fires is checked against `ml-automations
evaluate` over the same events written to a file.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prefect_ml_automations import backtest
from prefect_ml_automations.backtest import arrivals
from prefect_ml_automations.cli import main
from prefect_ml_automations.evaluator.batch import EventBatch
from prefect_ml_automations.events import Event, event_from_dict
from prefect_ml_automations.sources import TrackerHistory, wandb

from .conftest import WANDB_API, piped_into_head
from .wandb_fake import MODELS, FakeRun, FakeWandb, stamp

mlflow = pytest.importorskip("mlflow", reason="the MLflow source needs the [mlflow] extra")

#: The backtests' "now" (their default 30 days start on 2026-01-02).
NOW = datetime(2026, 2, 1, tzinfo=UTC)
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fired(out: str) -> list[tuple[Any, ...]]:
    """(automation, run name, step or state, time) of each firing printed."""
    return [
        (r["automation"], r.get("run_name"), r.get("step", r.get("state")), r["timestamp"])
        for r in map(json.loads, out.splitlines())
    ]


# -- a real MLflow store per test -----------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow store with its tables made (that takes seconds), to copy."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracker(empty_store: Path, tmp_path: Path) -> str:
    """A fresh MLflow store of this test's own: its tracking URI."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def log_run(
    client: Any,
    experiment: str,
    name: str,
    start: datetime,
    losses: list[float],
    every: timedelta,
    *,
    ends: tuple[str, datetime] | None = None,
) -> str:
    """A run started at `start` that logs `losses` at steps 0, 1, … `every` apart (and ends)."""
    from mlflow.entities import Metric

    run_id: str = client.create_run(experiment, run_name=name, start_time=ms(start)).info.run_id
    points = [Metric("loss", v, ms(start + i * every), i) for i, v in enumerate(losses)]
    client.log_batch(run_id, metrics=points)
    if ends is not None:
        client.set_terminated(run_id, ends[0], end_time=ms(ends[1]))
    return run_id


def write_config(tmp_path: Path, sources: str, automations: str) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_text(f"sources:\n{sources}automations:\n{automations}")
    return path


LOW_LOSS = """\
  - name: low-loss
    scope: {project: team/vision}
    event: {type: RUN_METRIC, metric: loss, window: 3, operator: "<", threshold: 0.3}
    action: {type: no_op}
"""
PAGE_ON_FAILURE = """\
  - name: page-on-failure
    scope: {project: team/vision}
    event: {type: RUN_STATE, states: [failed]}
    action: {type: no_op}
"""


@pytest.fixture
def last_month(tracker: str, tmp_path: Path) -> dict[str, Any]:
    """Three runs of team/vision, as the tracker holds them on 2026-02-01:

    - `early` converged 45 days ago and failed 41 days ago: before the 30 days;
    - `straddling` logged 0.25 daily from 31.5 days ago: its third point, the first inside the
      30 days, has a full window of 0.25s — two of them logged before the window started;
    - `recent` converges 3 days ago (0.5, 0.3, 0.2, 0.1, 0.1 hourly: the average of 3 drops below
      0.3 at step 3, and again at step 4, an hour later: the cooldown of 24 h holds that back),
      logs one more point an hour after NOW (not there yet), and fails 2 days ago.
    """
    client = mlflow.MlflowClient(tracker)
    experiment = client.create_experiment("team/vision")
    ids = {
        "early": log_run(
            client,
            experiment,
            "early",
            NOW - 45 * DAY,
            [0.9, 0.2, 0.2, 0.2],
            DAY,
            ends=("FAILED", NOW - 41 * DAY),
        ),
        "straddling": log_run(
            client,
            experiment,
            "straddling",
            NOW - 31.5 * DAY,
            [0.25, 0.25, 0.25, 0.9, 0.1],
            DAY,
            ends=("FINISHED", NOW - 26 * DAY),
        ),
        "recent": log_run(
            client, experiment, "recent", NOW - 3 * DAY, [0.5, 0.3, 0.2, 0.1, 0.1], HOUR
        ),
    }
    from mlflow.entities import Metric

    client.log_batch(ids["recent"], metrics=[Metric("loss", 0.1, ms(NOW + HOUR), 5)])
    client.set_terminated(ids["recent"], "FAILED", end_time=ms(NOW - 2 * DAY))
    sources = f"  - {{name: local, type: mlflow, tracking_uri: '{tracker}'}}\n"
    return {"config": write_config(tmp_path, sources, LOW_LOSS + PAGE_ON_FAILURE), "ids": ids}


# -- what fires -----------------------------------------------------------------------------------


def test_only_what_happened_in_the_window_fires_and_older_points_fill_windows(
    last_month: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "backtest", str(last_month["config"]), "--now", iso(NOW))
    assert code == 0
    assert fired(out) == [
        ("low-loss", "straddling", 2, iso(NOW - 29.5 * DAY)),
        ("low-loss", "recent", 3, iso(NOW - 3 * DAY + 3 * HOUR)),
        ("page-on-failure", "recent", "failed", iso(NOW - 2 * DAY)),
    ]
    first = json.loads(out.splitlines()[0])
    assert first["metric_values"] == [0.25, 0.25, 0.25]  # two of them from before the window


def test_since_takes_a_duration_or_a_time(
    last_month: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(last_month["config"])
    _, week, _ = run(capsys, "backtest", config, "--now", iso(NOW), "--since", "7d")
    _, hours, _ = run(capsys, "backtest", config, "--now", iso(NOW), "--since", "168h")
    _, time, _ = run(capsys, "backtest", config, "--now", iso(NOW), "--since", "2026-01-25")
    assert [f[:3] for f in fired(week)] == [
        ("low-loss", "recent", 3),
        ("page-on-failure", "recent", "failed"),
    ]
    assert week == hours == time
    _, everything, _ = run(capsys, "backtest", config, "--now", iso(NOW), "--since", "60d")
    assert [f[:3] for f in fired(everything)] == [
        ("low-loss", "early", 3),
        ("page-on-failure", "early", "failed"),
        ("low-loss", "straddling", 2),
        ("low-loss", "recent", 3),
        ("page-on-failure", "recent", "failed"),
    ]


def test_a_count_per_automation_on_stderr(
    last_month: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "backtest", str(last_month["config"]), "--now", iso(NOW))
    assert code == 0
    assert err.splitlines() == [
        "Read source 'local': 15 metric points, 3 run states, 0 created versions.",
        "Left out 1 event dated after --now.",
        "Backtest from 2026-01-02T00:00:00Z to 2026-02-01T00:00:00Z, over 17 events:",
        "  automation       firings  held back",
        "  low-loss               2          1",
        "  page-on-failure        1          0",
        "3 firings (backtest: nothing was started).",
    ]
    # No state store was made: a backtest reads the trackers only.
    assert not (last_month["config"].parent / "ml-automations.db").exists()


def test_one_automation_and_a_disabled_one(
    last_month: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config: Path = last_month["config"]
    config.write_text(config.read_text() + "    enabled: false\n")  # page-on-failure
    _, out, err = run(capsys, "backtest", str(config), "--now", iso(NOW))
    assert {f[0] for f in fired(out)} == {"low-loss"}
    assert "page-on-failure" not in err
    _, out, err = run(
        capsys, "backtest", str(config), "--now", iso(NOW), "--automation", "page-on-failure"
    )
    assert fired(out) == [("page-on-failure", "recent", "failed", iso(NOW - 2 * DAY))]
    assert "  page-on-failure        1          0" in err.splitlines()
    assert "low-loss" not in err


def test_explain_says_why_a_run_did_not_fire(
    last_month: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    early, straddling, recent = (repr(last_month["ids"][name]) for name in last_month["ids"])
    _, _, err = run(capsys, "backtest", str(last_month["config"]), "--now", iso(NOW), "--explain")
    lines = err.splitlines()
    assert lines[
        : lines.index("Read source 'local': 15 metric points, 3 run states, 0 created versions.")
    ] == [
        "low-loss: average(loss, 3) < 0.3 in project 'team/vision'",
        f"  run {straddling} (straddling): fired 1× (step 2); not fired: before --since (2×); "
        "not fired: average(loss, 3) < 0.3 did not hold (2×)",
        f"  run {recent} (recent): fired 1× (step 3); not fired: held back by the cooldown "
        "(24h); not fired: the window is not full yet (it needs 3 values) (2×); not fired: "
        "average(loss, 3) < 0.3 did not hold",
        f"  run {early} (early): not fired: before --since (4×)",
        "page-on-failure: run enters failed in project 'team/vision'",
        f"  run {recent} (recent): fired 1× (2026-01-30T00:00:00+00:00)",
        f"  run {early} (early): not fired: before --since",
        f"  run {straddling} (straddling): not fired: state 'finished' is not one of ['failed']",
    ]


def test_explain_json_prints_the_decisions_after_the_firings(
    last_month: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(
        capsys, "backtest", str(last_month["config"]), "--now", iso(NOW), "--explain-json"
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert [r.get("decision") for r in records[:4]] == [None, None, None, "fired"]
    assert {
        "decision": "not_fired",
        "automation": "page-on-failure",
        "subject": f"run {last_month['ids']['straddling']!r} (straddling)",
        "reason": "state 'finished' is not one of ['failed']",
        "count": 1,
    } in records


def test_the_backtest_fires_what_evaluate_fires_over_the_same_events(
    last_month: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An independent check: the tracker's events read by a first poll, sorted by time in plain
    Python, written to a file and dry-run by `evaluate --since`, give the very same lines."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.sources.mlflow import MLflowSource

    config: Path = last_month["config"]
    config.write_text(
        config.read_text()
        + """\
  - name: loss-drop
    scope: {project: team/vision}
    event: {type: RUN_METRIC_CHANGE, metric: loss, current_window: 1, prior_window: 2, direction: decrease, amount: 0.3}
    cooldown: 0
    action: {type: no_op}
  - name: loss-outlier
    scope: {project: team/vision}
    event: {type: RUN_METRIC_ZSCORE, metric: loss, window: 5, threshold: 0.5}
    action: {type: no_op}
"""
    )
    settings = load_config(config).sources[0]
    poll = MLflowSource(settings, projects={"team/vision"}, watch_registry=False).poll(None, NOW)  # type: ignore[arg-type]
    held = sorted([*poll.filling, *poll.versions], key=lambda e: e.timestamp)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            e.model_dump_json(by_alias=True, exclude_none=True) + "\n"
            for e in held
            if e.timestamp <= NOW
        )
    )
    _, backtested, _ = run(capsys, "backtest", str(config), "--now", iso(NOW), "--since", "40d")
    _, evaluated, _ = run(
        capsys, "evaluate", str(config), str(events), "--since", iso(NOW - 40 * DAY)
    )
    assert backtested == evaluated
    assert {f[0] for f in fired(backtested)} == {
        "low-loss",
        "page-on-failure",
        "loss-drop",
        "loss-outlier",
    }


def test_a_version_registered_in_the_window_fires_its_alias_can_not_be_replayed(
    tracker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = mlflow.MlflowClient(tracker)
    client.create_registered_model("churn")
    client.create_model_version("churn", source="s3://m/1")
    client.set_registered_model_alias("churn", "production", "1")
    config = write_config(
        tmp_path,
        f"  - {{name: local, type: mlflow, tracking_uri: '{tracker}'}}\n",
        """\
  - name: new-version
    scope: {registry: models, collection: churn}
    event: {type: LINK_ARTIFACT}
    action: {type: no_op}
  - name: deploy-on-production
    scope: {registry: models, collection: churn}
    event: {type: ADD_ARTIFACT_ALIAS, alias: "^production$"}
    action: {type: no_op}
""",
    )
    now = datetime.now(UTC) + timedelta(minutes=1)
    code, out, err = run(capsys, "backtest", str(config), "--now", iso(now), "--since", "1h")
    assert code == 0
    [record] = map(json.loads, out.splitlines())
    assert (record["automation"], record["registry"], record["collection"], record["version"]) == (
        "new-version",
        "models",
        "churn",
        1,
    )
    assert err.splitlines()[0] == (
        "note: MLflow and W&B keep no time for alias and tag changes (nor W&B for links into a "
        "registry), so a backtest can not replay them: deploy-on-production fires nothing here. "
        "Only metric points, run states and created versions are replayed."
    )
    assert "Read source 'local': 0 metric points, 0 run states, 1 created version." in err


# -- W&B ------------------------------------------------------------------------------------------


def test_a_wandb_project_through_the_graphql_fake(
    fake: FakeWandb, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs and history as W&B's API gives them; a dataset version created in the project is
    dated and replayed, its link into a registry is not (W&B keeps no time for a link)."""
    start = NOW - 10 * DAY
    fake.runs["acme/vision"] = [
        FakeRun(
            "r1",
            "sweep-1",
            "alice",
            stamp(start),
            state="crashed",
            heartbeat_at=stamp(start + 2 * HOUR),
            history=[
                {"_step": s, "_timestamp": (start + s * 10 * MINUTE).timestamp(), "acc": acc}
                for s, acc in enumerate([0.5, 0.7, 0.8, 0.9])
            ],
        ),
    ]
    features = fake.log_artifact(
        "acme/vision", "features", created_at=stamp(NOW - DAY), type="dataset"
    )
    fake.link(features, MODELS, "features")
    config = write_config(
        tmp_path,
        "  - {name: team, type: wandb, entity: acme, api_key: k-123}\n",
        """\
  - name: good-accuracy
    scope: {project: acme/vision}
    event: {type: RUN_METRIC, metric: acc, window: 2, operator: ">", threshold: 0.7}
    action: {type: no_op}
  - name: page-on-crash
    scope: {project: acme/vision}
    event: {type: RUN_STATE, states: [failed]}
    action: {type: no_op}
  - name: new-features
    scope: {project: acme/vision, collection: features}
    event: {type: CREATE_ARTIFACT}
    action: {type: no_op}
  - name: registered-features
    scope: {registry: models}
    event: {type: LINK_ARTIFACT}
    action: {type: no_op}
""",
    )
    code, out, err = run(capsys, "backtest", str(config), "--now", iso(NOW))
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [
        (r["automation"], r.get("step") or r.get("state") or r.get("version")) for r in records
    ] == [("good-accuracy", 2), ("page-on-crash", "failed"), ("new-features", 0)]
    assert records[0]["timestamp"] == iso(start + 20 * MINUTE)
    assert records[1]["timestamp"] == iso(start + 2 * HOUR)  # the last heartbeat
    assert err.splitlines() == [
        "note: MLflow and W&B keep no time for alias and tag changes (nor W&B for links into a "
        "registry), so a backtest can not replay them: registered-features fires nothing here. "
        "Only metric points, run states and created versions are replayed.",
        "Read source 'team': 4 metric points, 1 run state, 1 created version.",
        "Backtest from 2026-01-02T00:00:00Z to 2026-02-01T00:00:00Z, over 6 events:",
        "  automation           firings  held back",
        "  good-accuracy              1          1",
        "  page-on-crash              1          0",
        "  new-features               1          0",
        "  registered-features        0          0",
        "3 firings (backtest: nothing was started).",
    ]


def test_a_tracker_that_can_not_be_reached_exits_1_without_a_traceback(
    fake: FakeWandb,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    monkeypatch.setattr(wandb, "RETRY_DELAYS", (0.0, 0.0))
    fake.mock.post(WANDB_API).mock(side_effect=httpx.ConnectError("Connection refused"))  # type: ignore[attr-defined]
    config = write_config(
        tmp_path,
        "  - {name: team, type: wandb, entity: acme, api_key: k-123}\n",
        PAGE_ON_FAILURE.replace("team/vision", "acme/vision"),
    )
    assert run(capsys, "backtest", str(config)) == (
        1,
        "",
        "error: Source 'team' could not be read, so nothing was backtested: W&B at "
        "https://api.wandb.ai could not be reached (ConnectError: Connection refused), after "
        "retries.\n",
    )


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "config", "message"),
    [
        (
            ["--since", "30x"],
            LOW_LOSS,
            "--since '30x' is neither a duration nor an ISO 8601 time; write it like 30d, 12h, "
            "90m or 2026-01-01T09:00:00Z.",
        ),
        (
            ["--since", "400d"],
            LOW_LOSS,
            "--since '400d' is longer than a duration may be (365 days); give the start as an "
            "ISO 8601 time instead, like 2025-01-01T00:00:00Z.",
        ),
        (
            ["--since", "2026-03-01T00:00:00Z", "--now", "2026-02-01T00:00:00Z"],
            LOW_LOSS,
            "--since '2026-03-01T00:00:00Z' does not start before --now (2026-02-01T00:00:00Z), "
            "so nothing could fire; give an earlier start or a later --now.",
        ),
        (
            ["--since", "0"],
            LOW_LOSS,
            "--since '0' does not start before --now (2026-02-01T00:00:00Z), so nothing could "
            "fire; give an earlier start or a later --now.",
        ),
        (
            ["--now", "yesterday"],
            LOW_LOSS,
            "--now 'yesterday' is not an ISO 8601 time; write it like 2026-01-01T09:00:00Z.",
        ),
        (
            ["--automation", "low-los"],
            LOW_LOSS + PAGE_ON_FAILURE,
            "CONFIG has no automation named 'low-los'; its automations: low-loss, page-on-failure.",
        ),
        (
            [],
            LOW_LOSS + "    enabled: false\n",
            "CONFIG has no enabled automation to backtest; name a disabled one with "
            "--automation to backtest it as if enabled.",
        ),
    ],
    ids=[
        "bad-duration",
        "too-long",
        "since-after-now",
        "empty-window",
        "bad-now",
        "unknown",
        "none-enabled",
    ],
)
def test_bad_input_exits_2_with_a_sentence(
    argv: list[str],
    config: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(
        tmp_path, "  - {name: local, type: mlflow, tracking_uri: 'sqlite:///x.db'}\n", config
    )
    now = [] if "--now" in argv else ["--now", "2026-02-01T00:00:00Z"]
    assert run(capsys, "backtest", str(path), *argv, *now) == (
        2,
        "",
        f"error: {message.replace('CONFIG', str(path))}\n",
    )
    assert not (tmp_path / "x.db").exists()  # nothing was read


def test_a_config_without_sources_or_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text("automations:\n" + LOW_LOSS)
    assert run(capsys, "backtest", str(path)) == (
        2,
        "",
        f"error: {path} names no sources, so there is no tracker history to backtest; add an "
        "MLflow or W&B source under 'sources:', or dry-run a file of events with "
        "`ml-automations evaluate`.\n",
    )
    missing = tmp_path / "missing.yaml"
    assert run(capsys, "backtest", str(missing)) == (
        2,
        "",
        f"error: {missing} has 1 problem:\n  - can not read {missing} (No such file or "
        "directory)\n",
    )


def test_piped_into_head_it_ends_quietly(last_month: dict[str, Any]) -> None:
    done = piped_into_head("backtest", str(last_month["config"]), "--now", iso(NOW))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr


# -- the order of arrival -------------------------------------------------------------------------


def point(run: str, step: int | None, value: Any, at: datetime, **extra: Any) -> Event:
    return event_from_dict(
        {
            "type": "METRIC",
            "project": "p",
            "run_id": run,
            "metric": extra.pop("metric", "loss"),
            "value": value,
            "timestamp": iso(at),
            **({"step": step} if step is not None else {}),
            **extra,
        }
    )


def test_events_arrive_by_their_time_and_a_run_keeps_the_order_of_its_points() -> None:
    """Two sources, read one after the other, interleave by time; points logged in the same
    millisecond keep the order their tracker gave them, and the first source's go first."""
    t = NOW - DAY
    first = TrackerHistory(
        "a",
        [point("r1", 0, 0.9, t), point("r1", 1, 0.8, t), point("r1", 2, 0.7, t + 2 * HOUR)],
        [],
    )
    second = TrackerHistory(
        "b",
        [point("r2", 0, 0.5, t + HOUR), point("r2", 1, 0.4, t)],
        [
            event_from_dict(
                {
                    "type": "CREATE_ARTIFACT",
                    "project": "p",
                    "collection": "c",
                    "version": 0,
                    "timestamp": iso(t),
                }
            )
        ],
    )
    laid_out = arrivals([first, second], NOW)
    columns = laid_out.batch.columns
    runs = [laid_out.batch.runs[code][1] for code in columns.run.tolist()]
    assert list(zip(runs, columns.order.tolist(), columns.arrival.tolist(), strict=True)) == [
        ("r1", 0, 0),
        ("r1", 1, 1),
        ("r2", 1, 2),
        ("r2", 0, 4),
        ("r1", 2, 5),
    ]
    assert [(i, e.type) for i, e in laid_out.batch.artifacts] == [(3, "CREATE_ARTIFACT")]


@pytest.mark.parametrize("block", [2, 3, 1000], ids=lambda n: f"blocks-of-{n}")
def test_the_batch_is_the_one_from_events_makes_of_the_sorted_events(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Laid out column-wise, a block of points at a time, the batch is `EventBatch.from_events`
    of the events sorted by time (stably) — with system metrics, values that do not count, run
    states, artifact events, run creation times and names, and events after `now` left out."""
    monkeypatch.setattr(backtest, "BLOCK", block)
    t = NOW - DAY
    events = [
        point("r1", 0, 0.5, t, run_name="one", user="alice", run_created_at=iso(t - HOUR)),
        point("r1", 1, "an image", t + HOUR, run_name="one"),
        point("r2", None, 97, t + 30 * MINUTE, metric="system/gpu"),
        point("r2", 0, True, t - HOUR),
        point("r2", 1, float("nan"), t + 2 * HOUR),
        point("r2", 2, 1e200, t + 3 * HOUR, run_name="two"),
        point("r2", 3, 7, NOW + HOUR),
        event_from_dict(
            {
                "type": "RUN_STATE",
                "project": "p",
                "run_id": "r1",
                "state": "failed",
                "timestamp": iso(t + 90 * MINUTE),
            }
        ),
    ]
    version = event_from_dict(
        {"type": "LINK_ARTIFACT", "registry": "models", "collection": "c", "version": 1,
         "timestamp": iso(t - 2 * HOUR)}
    )  # fmt: skip
    laid_out = arrivals([TrackerHistory("a", events, [version])], NOW)
    expected = EventBatch.from_events(
        sorted([e for e in [*events, version] if e.timestamp <= NOW], key=lambda e: e.timestamp)
    )
    assert laid_out.after_now == 1
    same_batch(laid_out.batch, expected)
    assert laid_out.batch.size == 8


def same_batch(batch: EventBatch, expected: EventBatch) -> None:
    """Every column and table of two batches equal, exactly (NaN where NaN)."""
    import dataclasses

    import numpy as np

    for name, column in dataclasses.asdict(batch.columns).items():
        other = getattr(expected.columns, name)
        assert column.dtype == other.dtype, name
        assert np.array_equal(column, other, equal_nan=column.dtype.kind == "f"), name
    assert np.array_equal(batch.created, expected.created)
    for table in ("runs", "metrics", "names", "users", "states", "artifacts"):
        assert getattr(batch, table) == getattr(expected, table), table


def test_a_run_left_running_that_went_quiet_is_a_stall_in_the_backtest(
    tracker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MLflow never marks a dead process's run as failed: the backtest sees its stalls from the
    history (a gap in its points) and from its clock, `--now`. (A run that has ended is known
    only in its last state: the tracker keeps no history of states, so its stalls are not
    replayed.)"""
    client = mlflow.MlflowClient(tracker)
    experiment = client.create_experiment("team/vision")
    log_run(client, experiment, "hung", NOW - 3 * DAY, [0.5, 0.4, 0.3], 10 * MINUTE)
    log_run(client, experiment, "gap", NOW - 2 * DAY, [0.5, 0.4], 5 * HOUR)
    stalled = """\
  - name: stalled
    scope: {project: team/vision}
    event: {type: RUN_STALLED, after: 2h}
    cooldown: 0
    action: {type: no_op}
"""
    sources = f"  - {{name: local, type: mlflow, tracking_uri: '{tracker}'}}\n"
    config = write_config(tmp_path, sources, stalled)
    code, out, _ = run(capsys, "backtest", str(config), "--now", iso(NOW))
    assert code == 0
    assert [
        (r["run_name"], r["timestamp"], r["quiet_since"]) for r in map(json.loads, out.splitlines())
    ] == [
        ("gap", iso(NOW - 2 * DAY + 2 * HOUR), iso(NOW - 2 * DAY)),  # (seen at its next point)
        ("hung", iso(NOW - 3 * DAY + 20 * MINUTE + 2 * HOUR), iso(NOW - 3 * DAY + 20 * MINUTE)),
        ("gap", iso(NOW - 2 * DAY + 7 * HOUR), iso(NOW - 2 * DAY + 5 * HOUR)),
    ]
