"""Stalled runs (issue 13 §1, `RUN_STALLED`): a running run that shows no sign of life — no
metric point, no heartbeat, no state — for `after` fires once per stall, at the moment its quiet
time reached `after`. It is judged on the clock: the evaluator is told `now` (the sensor's
clock, the dry run's latest event or `--now`), or sees the stall when the run's next event
arrives late. Batching and re-delivery never change it (tests/test_properties.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import ConfigError, load_config, parse_config
from prefect_ml_automations.evaluator import Evaluator
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore

from .conftest import T0, at, automation, events, metric, migrations, state

STALLED = automation("stalled", type="RUN_STALLED", after="30m")
MIN = 60


def beat(run: str, t: float, **extra: Any) -> dict[str, Any]:
    return {"type": "RUN_HEARTBEAT", "project": "p", "run_id": run, "timestamp": at(t), **extra}


def stalls(*dicts: dict[str, Any], now_minutes: float | None = None, a: Any = STALLED) -> list:
    now = None if now_minutes is None else T0 + timedelta(minutes=now_minutes)
    firings = Evaluator([a]).evaluate(events(*dicts), now=now).firings
    return [(f.run_id, f.timestamp, f.quiet_since) for f in firings]


def t(minutes: float) -> Any:
    return T0 + timedelta(minutes=minutes)


def test_a_run_quiet_for_after_fires_once_when_the_clock_passes_its_deadline() -> None:
    training = [state("r1", "running", 0), metric("r1", 1, 0.5, 5 * MIN)]
    assert stalls(*training, now_minutes=34) == []  # quiet for 29 minutes: not yet
    # The firing's time is the moment the quiet time reached 30m, whenever the clock saw it.
    assert stalls(*training, now_minutes=35) == [("r1", t(35), t(5))]
    assert stalls(*training, now_minutes=500) == [("r1", t(35), t(5))]


def test_a_heartbeat_keeps_a_run_from_stalling() -> None:
    alive = [state("r1", "running", 0), beat("r1", 20 * MIN), beat("r1", 45 * MIN)]
    assert stalls(*alive, now_minutes=70) == []
    assert stalls(*alive, now_minutes=75) == [("r1", t(75), t(45))]


def test_a_late_sign_of_life_shows_the_stall_without_a_clock() -> None:
    """The run logged at 10:05, then nothing until 11:00: it was stalled from 10:35."""
    late = [
        state("r1", "running", 0),
        metric("r1", 1, 0.5, 5 * MIN),
        metric("r1", 2, 0.4, 60 * MIN),
    ]
    assert stalls(*late) == [("r1", t(35), t(5))]
    # The clock sees the same stall (one firing, the same id), and nothing more by 11:29.
    assert stalls(*late, now_minutes=89) == [("r1", t(35), t(5))]


def test_each_stall_fires_once_and_a_run_that_comes_back_can_stall_again() -> None:
    evaluator = Evaluator([STALLED])
    first = evaluator.evaluate(events(state("r1", "running", 0)), now=t(40))
    assert [f.timestamp for f in first.firings] == [t(30)]
    assert evaluator.evaluate([], now=t(90)).firings == []  # the same stall: judged already
    back = evaluator.evaluate(events(metric("r1", 1, 0.5, 100 * MIN)), now=t(131))
    assert [(f.timestamp, f.quiet_since) for f in back.firings] == [(t(130), t(100))]
    assert first.firings[0].firing_id != back.firings[0].firing_id


@pytest.mark.parametrize(
    ("story", "reason"),
    [
        ([state("r1", "finished", 0)], "the run is 'finished', not running"),
        (
            [state("r1", "running", 0), state("r1", "crashed", MIN)],
            "the run is 'failed', not running",
        ),
        (
            [metric("r1", 1, 0.5, 0)],
            "no state was seen for the run: only a run known to be running can stall",
        ),
    ],
    ids=["finished", "crashed", "no-state"],
)
def test_only_a_run_known_to_be_running_can_stall(story: list[dict[str, Any]], reason: str) -> None:
    evaluation = Evaluator([STALLED]).evaluate(events(*story), now=t(600), explain=True)
    assert evaluation.firings == []
    assert [s.reason for s in evaluation.skips] == [reason]


def test_a_run_that_finishes_after_a_long_silence_had_stalled() -> None:
    """Quiet from 10:05 while running, then marked finished at 11:00: it stalled at 10:35."""
    story = [
        state("r1", "running", 0),
        metric("r1", 1, 0.5, 5 * MIN),
        state("r1", "finished", 60 * MIN),
    ]
    assert stalls(*story, now_minutes=600) == [("r1", t(35), t(5))]


def test_run_filters_the_cooldown_and_since_apply_to_stalls() -> None:
    alice_only = automation(
        "stalled", type="RUN_STALLED", after="30m", filters={"user": "alice"}, cooldown="2h"
    )
    story = [
        state("r1", "running", 0, user="alice"),
        state("r2", "running", 0, user="bob"),
        metric("r1", 1, 0.5, 60 * MIN),  # a late sign of life: the stall at 10:30 fires
    ]
    assert stalls(*story, now_minutes=95, a=alice_only) == [("r1", t(30), t(0))]  # 11:30 held back
    evaluation = Evaluator([alice_only]).evaluate(events(*story), now=t(95), since=t(31))
    assert [f.timestamp for f in evaluation.firings] == [t(90)]  # 10:30 is before --since


def test_explain_says_how_long_a_running_run_has_been_quiet() -> None:
    evaluation = Evaluator([STALLED]).evaluate(
        events(state("r1", "running", 0), metric("r1", 1, 0.5, 20 * MIN)), now=t(40), explain=True
    )
    assert [s.reason for s in evaluation.skips] == [
        "last sign of life at 2026-01-01T10:20:00+00:00, less than 30m before "
        "2026-01-01T10:40:00+00:00"
    ]


def test_after_must_be_a_positive_duration() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "automations": [
                    {
                        "name": "s",
                        "scope": {"project": "p"},
                        "event": {"type": "RUN_STALLED", "after": 0},
                        "action": {"type": "no_op"},
                    },
                    {
                        "name": "t",
                        "scope": {"project": "p"},
                        "event": {"type": "RUN_STALLED"},
                        "action": {"type": "no_op"},
                    },
                ]
            },
            env={},
        )
    assert caught.value.problems == [
        "automation 's' (automations[0]): event.after: must be a positive duration such as "
        "'30m' (a run is never quiet for no time).",
        "automation 't' (automations[1]): event.after: is required but missing; add 'after: …'.",
    ]


CONFIG = """
store: sqlite:///{tmp}/store.db
automations:
  - name: stalled
    scope: {{project: p}}
    event: {{type: RUN_STALLED, after: 30m}}
    action: {{type: no_op}}
"""


def test_a_sensor_finds_a_run_that_went_quiet_on_a_later_cycle_with_no_events(
    tmp_path: Path,
) -> None:
    """The store keeps each run's last sign of life; a cycle with an empty inbox still loads
    the runs whose quiet time ran out (and only those) and fires their stall once."""
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(CONFIG.format(tmp=tmp_path))
    config = load_config(config_file, env={})
    store = StateStore(config.store)
    sensor = Sensor(config)
    store.put_events(
        events(state("r1", "running", 0), metric("r1", 1, 0.5, 5 * MIN), state("r2", "running", 0)),
        origin="push",
    )
    assert sensor.commit([], now=t(10)).fired == []
    store.put_events(events(beat("r2", 25 * MIN)), origin="push")
    assert sensor.commit([], now=t(31)).fired == []
    later = sensor.commit([], now=t(36))  # the inbox is empty
    assert [(f.run_id, f.timestamp) for f in later.fired] == [("r1", t(35))]
    assert [(f.run_id, f.timestamp) for f in sensor.commit([], now=t(61)).fired] == [("r2", t(55))]
    assert sensor.commit([], now=t(600)).fired == []  # each stall once
    assert sorted(row.subject for row in store.history()) == ["run 'r1'", "run 'r2'"]


def test_a_run_that_stalled_before_the_sensor_watched_does_not_fire(tmp_path: Path) -> None:
    """What a tracker held before the sensor watched it only fills (SPEC §3 rule 10): a run
    left `running` for a year (MLflow never marks a dead run) is no surprise page."""
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(CONFIG.format(tmp=tmp_path))
    config = load_config(config_file, env={})
    store = StateStore(config.store)
    store.put_events(events(state("old", "running", 0)), origin="fill")
    sensor = Sensor(config)
    assert sensor.commit([], now=t(60 * 24 * 365)).fired == []
    assert sensor.commit([], now=t(60 * 24 * 366)).fired == []
    store.put_events(events(metric("old", 1, 0.5, 60 * 24 * 366 * MIN)), origin="push")
    sensor.commit([], now=t(60 * 24 * 366))
    assert [f.run_id for f in sensor.commit([], now=t(60 * 24 * 366 + 31)).fired] == ["old"]


def test_the_dry_run_judges_stalls_by_the_files_latest_event_or_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "automations.yaml"
    config_file.write_text(CONFIG.format(tmp=tmp_path))
    lines = events(
        state("r1", "running", 0), metric("r1", 1, 0.5, 5 * MIN), state("r2", "running", 20 * MIN)
    )
    (tmp_path / "events.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in lines))
    assert main(["evaluate", str(config_file), str(tmp_path / "events.jsonl")]) == 0
    assert capsys.readouterr().out == ""  # by 10:20, the file's latest event: nothing yet
    args = ["evaluate", str(config_file), str(tmp_path / "events.jsonl"), "--now", at(60 * MIN)]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split('"run_id":"')[1][:2] for line in printed] == ["r1", "r2"]
    assert main([*args[:3], "--now", "tomorrow"]) == 2
    assert "--now 'tomorrow' is not an ISO 8601 time" in capsys.readouterr().err


def sensor_on(tmp_path: Path, *automations: dict[str, Any], **kwargs: Any) -> Sensor:
    """A sensor on a SQLite store in `tmp_path`, with these automations (in YAML's shape)."""
    config = parse_config(
        {"store": f"sqlite:///{tmp_path}/store.db", "automations": list(automations)}, env={}
    )
    return Sensor(config, **kwargs)


def stall_automation(project: str = "p") -> dict[str, Any]:
    return {
        "name": f"stalled-{project}",
        "scope": {"project": project},
        "event": {"type": "RUN_STALLED", "after": "30m"},
        "cooldown": 0,
        "action": {"type": "no_op"},
    }


def busy_run(run: str = "r1", until: float = 60) -> list[dict[str, Any]]:
    """A running run that logs every 5 minutes until `until` minutes: never quiet for 30m."""
    return [state(run, "running", 0)] + [
        metric(run, i, 0.5, 5 * MIN * i) for i in range(1, int(until // 5) + 1)
    ]


def test_a_cycle_that_leaves_events_in_the_inbox_does_not_judge_the_clock(
    tmp_path: Path,
) -> None:
    """A backlog (a sensor back from an outage, the take cut at its limit): the run's newer
    points are still waiting, so its quiet time is not known yet."""
    sensor = sensor_on(tmp_path, stall_automation())
    sensor.store.put_events(events(*busy_run()), origin="push")
    fired = []
    while sensor.store.inbox_size():
        fired += sensor.commit([], now=t(61), limit=3).fired
    assert fired == []
    assert [f.timestamp for f in sensor.commit([], now=t(91)).fired] == [t(90)]


def test_a_trackers_history_taken_in_does_not_swallow_a_stall_elsewhere(tmp_path: Path) -> None:
    """The history of a project newly watched is judged silently (no surprise backfill), and
    only its own runs: a run of another project whose stall is due in that cycle fires."""
    sensor = sensor_on(tmp_path, stall_automation("p"), stall_automation("q"))
    sensor.store.put_events(
        events(state("r1", "running", 0), metric("r1", 1, 0.5, 5 * MIN)), origin="push"
    )
    assert sensor.commit([], now=t(6)).fired == []
    old = [state("old", "running", 0, project="q"), metric("old", 1, 0.5, MIN, project="q")]
    sensor.store.put_events(events(*old), origin="fill")
    assert [(f.run_id, f.timestamp) for f in sensor.commit([], now=t(40)).fired] == [("r1", t(35))]


def test_the_clock_waits_when_an_event_can_not_be_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event evaluation trips over is quarantined by halving the batch: the halves are
    judged without the clock (a run's newer points may be in the other half), then the clock
    once, over all of them."""
    import prefect_ml_automations.sensor as sensor_module

    class Tripping(Evaluator):
        def evaluate(self, events: Any, **kwargs: Any) -> Any:
            if any(run_id == "poison" for _, run_id in events.runs):
                raise RuntimeError("a bug this event finds")
            return super().evaluate(events, **kwargs)

    monkeypatch.setattr(sensor_module, "Evaluator", Tripping)
    sensor = sensor_on(tmp_path, stall_automation())
    story = [*busy_run(), metric("poison", 1, 0.5, 60 * MIN)]
    sensor.store.put_events(events(*story), origin="push")
    report = sensor.commit([], now=t(61))
    assert (report.quarantined, report.fired) == (1, [])
    assert [f.timestamp for f in sensor.commit([], now=t(91)).fired] == [t(90)]


class Tracker:
    """A source that can be taken down: while down, its poll fails."""

    name = "tracker"

    def __init__(self) -> None:
        self.down = False
        self.waiting: list[Any] = []

    def poll(self, cursor: Any, now: Any) -> Any:
        from prefect_ml_automations.errors import SourceError
        from prefect_ml_automations.sources import Poll

        if self.down:
            raise SourceError("the tracker answered 503")
        found, self.waiting = self.waiting, []
        return Poll(events=found, cursor={"polled": now.isoformat()})


def test_a_tracker_that_can_not_be_read_stops_the_clock_for_stalls(tmp_path: Path) -> None:
    """Its runs' signs of life wait unread in the tracker: their quiet time is judged as of
    when it was last read, so a tracker down for longer than `after` pages nobody."""
    tracker = Tracker()
    sensor = sensor_on(tmp_path, stall_automation(), sources=[tracker])
    tracker.waiting = events(state("r1", "running", 0), metric("r1", 1, 0.5, 5 * MIN))
    assert sensor.evaluate(now=t(6)).fired == []
    tracker.down = True
    tracker.waiting = events(metric("r1", 2, 0.5, 20 * MIN), metric("r1", 3, 0.5, 35 * MIN))
    assert sensor.evaluate(now=t(40)).fired == []  # read last at 10:06: not quiet for 30m then
    tracker.down = False
    assert sensor.evaluate(now=t(45)).fired == []
    assert [f.timestamp for f in sensor.evaluate(now=t(66)).fired] == [t(65)]


def test_an_automation_renamed_to_another_kind_keeps_its_runs_readable(tmp_path: Path) -> None:
    """What a run remembers of a `for_points` automation, when an automation of that name is
    now a RUN_STALLED one (or the other way round), is kept beside it — never a row no cycle
    can read again."""
    streaky = {
        "name": "x",
        "scope": {"project": "p"},
        "event": {"type": "RUN_METRIC", "metric": "acc", "window": 1, "operator": ">",
                  "threshold": 0, "for_points": 3},
        "cooldown": 0,
        "action": {"type": "no_op"},
    }  # fmt: skip
    first = sensor_on(tmp_path, streaky)
    first.store.put_events(
        events(state("r1", "running", 0), metric("r1", 1, 0.5, MIN)), origin="push"
    )
    first.commit([], now=t(2))
    second = sensor_on(tmp_path, {**stall_automation(), "name": "x"})
    second.store.put_events(events(beat("r1", 5 * MIN)), origin="push")
    assert second.commit([], now=t(30)).fired == []  # (it watches for stalls from here)
    assert [f.automation for f in second.commit([], now=t(40)).fired] == ["x"]
    third = sensor_on(tmp_path, streaky)
    third.store.put_events(events(metric("r1", 2, 0.5, 50 * MIN)), origin="push")
    assert third.commit([], now=t(51)).fired == []  # the streak goes on: 2 points, not 3
    third.store.put_events(events(metric("r1", 3, 0.5, 51 * MIN)), origin="push")
    assert [f.step for f in third.commit([], now=t(52)).fired] == [3]


PLAIN = {
    "name": "plain",
    "scope": {"project": "p"},
    "event": {"type": "RUN_METRIC", "metric": "acc", "window": 1, "operator": ">", "threshold": 9},
    "action": {"type": "no_op"},
}


def quiet_runs() -> list[dict[str, Any]]:
    """r-old went quiet at -60m, r2 at 0, r1 at 5m: all running."""
    return [
        state("r-old", "running", -60 * MIN),
        state("r2", "running", 0),
        state("r1", "running", 0),
        metric("r1", 1, 0.5, 5 * MIN),
    ]


def test_a_stall_automation_added_later_fires_for_the_runs_that_stall_after_it_came(
    tmp_path: Path,
) -> None:
    """The sensor watches for its stalls from the cycle that first sees it (20m here): a run
    quiet since before stalls then all the same (r2 at 30m, r1 at 35m), silently only if its
    stall was over before (r-old at -30m) — never a surprise page for a stale run."""
    before = sensor_on(tmp_path, PLAIN)
    before.store.put_events(events(*quiet_runs()), origin="push")
    before.commit([], now=t(10))
    after = sensor_on(tmp_path, PLAIN, stall_automation())
    assert after.commit([], now=t(20)).fired == []
    assert [(f.run_id, f.timestamp) for f in after.commit([], now=t(31)).fired] == [("r2", t(30))]
    assert [(f.run_id, f.timestamp) for f in after.commit([], now=t(36)).fired] == [("r1", t(35))]
    assert after.commit([], now=t(600)).fired == []


def test_a_stall_automation_enabled_again_watches_from_then_on(tmp_path: Path) -> None:
    """While it is off, r2 and r1 stall (at 30m and 35m) and r3 goes quiet (at 35m): enabled
    again at 41m, it fires for r3's stall at 65m only."""
    disabled = {**stall_automation(), "enabled": False}
    off = sensor_on(tmp_path, disabled)
    went_quiet = [state("r3", "running", 0), metric("r3", 1, 0.5, 35 * MIN)]
    off.store.put_events(events(*quiet_runs(), *went_quiet), origin="push")
    assert off.commit([], now=t(40)).fired == []
    on = sensor_on(tmp_path, stall_automation())
    assert on.commit([], now=t(41)).fired == []
    assert [(f.run_id, f.timestamp) for f in on.commit([], now=t(66)).fired] == [("r3", t(65))]
    assert on.commit([], now=t(600)).fired == []


def test_a_stall_over_before_the_sensor_watched_is_judged_silently_and_explained() -> None:
    since = {"stalled": t(35)}
    stream = events(state("r1", "running", 0), state("r2", "running", 0), beat("r2", 10 * MIN))
    evaluation = Evaluator([STALLED], watching_since=since).evaluate(
        stream, now=t(60), explain=True
    )
    assert [(f.run_id, f.timestamp) for f in evaluation.firings] == [("r2", t(40))]
    [skip] = [s for s in evaluation.skips if s.subject == "run 'r1'"]
    assert skip.reason == (
        "it stalled at 2026-01-01T10:30:00+00:00, before the sensor watched for this "
        "automation's stalls (since 2026-01-01T10:35:00+00:00)"
    )


def test_a_store_upgraded_under_a_sensor_keeps_watching_its_stall_automations(
    tmp_path: Path,
) -> None:
    """Migration 0008 finds the sensor there: its stall automations were watched all along, so
    a stall due while it was being upgraded still fires (not one over before it 'came')."""
    sensor = sensor_on(tmp_path, stall_automation())
    sensor.store.put_events(events(*busy_run(until=5)), origin="push")
    sensor.commit([], now=t(10))
    sensor.store.engine.dispose()
    with migrations(f"sqlite:///{tmp_path}/store.db") as (config, _):
        command.downgrade(config, "0007")
        command.upgrade(config, "0008")
    upgraded = sensor_on(tmp_path, stall_automation())
    assert [(f.run_id, f.timestamp) for f in upgraded.commit([], now=t(40)).fired] == [
        ("r1", t(35))
    ]


def test_a_stall_automation_moved_to_another_project_watches_it_from_then_on(
    tmp_path: Path,
) -> None:
    """Its new project's quiet runs are found (rq at 30m), and a stall there over before the
    move stays silent though a late sign of life shows it (rq-old, quiet since -60m)."""
    first = sensor_on(tmp_path, stall_automation("p"))
    quiet_in_q = [
        state("rq", "running", 0, project="q"),
        state("rq-old", "running", -60 * MIN, project="q"),
    ]
    first.store.put_events(events(*quiet_in_q), origin="push")
    first.commit([], now=t(10))
    moved = sensor_on(tmp_path, {**stall_automation("q"), "name": "stalled-p"})
    assert moved.commit([], now=t(20)).fired == []
    assert [(f.run_id, f.timestamp) for f in moved.commit([], now=t(31)).fired] == [("rq", t(30))]
    moved.store.put_events(events(beat("rq-old", 100 * MIN, project="q")), origin="push")
    assert moved.commit([], now=t(101)).fired == []


def test_a_stall_automation_added_while_a_tracker_is_down_watches_from_the_wall_clock(
    tmp_path: Path,
) -> None:
    """The stall clock lags while the tracker is down (read last at 10:06); the automation was
    added at 13:20, so r1's stall at 10:35 was over before it came."""
    tracker = Tracker()
    before = sensor_on(tmp_path, PLAIN, sources=[tracker])
    tracker.waiting = events(state("r1", "running", 0), metric("r1", 1, 0.5, 5 * MIN))
    before.evaluate(now=t(6))
    tracker.down = True
    added = sensor_on(tmp_path, PLAIN, stall_automation(), sources=[tracker])
    assert added.evaluate(now=t(200)).fired == []
    tracker.down = False
    assert added.evaluate(now=t(301)).fired == []
