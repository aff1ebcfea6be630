"""The command line: exit codes, stdout for machines, stderr for people (SPEC §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_ml_automations.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(EXAMPLES / "automations.yaml"))
    assert code == 0
    assert out.strip().endswith("5 automations, 0 source(s): valid.")


def test_validate_exits_2_listing_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "automations:\n"
        "  - {name: a, scope: {project: p}, event: {type: RUN_STATE, states: [killed]}, action: {type: no_op}}\n"
        "  - {name: b, scope: {registry: r}, event: {type: RUN_STATE, states: [failed]}, action: {type: nop}}\n"
    )
    code, out, err = run(capsys, "validate", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path} has 2 problems:\n")
    assert "Traceback" not in err
    assert "automation 'a' (automations[0]): event.states: 'killed' can not be chosen" in err
    assert "automation 'b' (automations[1]): action: type 'nop' is not known" in err


def test_evaluate_prints_the_firings_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "evaluate", str(EXAMPLES / "automations.yaml"), str(EXAMPLES / "events.jsonl")
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["automation"], r.get("run_id") or r.get("version")) for r in records] == [
        ("accuracy-outlier", "r1"),
        ("good-accuracy", "r1"),
        ("loss-plateau", "r1"),
        ("loss-plateau", "r4"),
        ("page-on-failure", "r4"),
        ("deploy-on-production", 3),
        ("deploy-on-production", 4),
    ]
    assert all(r["status"] == "pending" and len(r["firing_id"]) == 32 for r in records)
    assert records[1]["metric_values"] == [0.57, 0.59, 0.61, 0.63, 0.65]
    assert records[4]["state"] == "failed"
    assert err == "7 firings (dry run: nothing was started).\n"


def test_evaluate_explain_says_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "evaluate",
        str(EXAMPLES / "automations.yaml"),
        str(EXAMPLES / "events.jsonl"),
        "--explain",
    )
    assert code == 0
    assert (
        "  my-team/vision/churn-classifier:v3 (production): not fired: the event happened in project "
        "'my-team/vision', not in collection 'churn-classifier' of registry 'models': a registry automation "
        "sees only events in the registry (link the version into registry 'models', or scope the automation "
        "to the project)"
    ) in err.splitlines()
    assert (
        "  run 'r2' (sweep-2): not fired: the window is not full yet (it needs 5 values) (4×); "
        "not fired: average(accuracy, 5) > 0.6 did not hold (6×)"
    ) in err.splitlines()


def test_evaluate_explain_json_adds_decision_records(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        capsys,
        "evaluate",
        str(EXAMPLES / "automations.yaml"),
        str(EXAMPLES / "events.jsonl"),
        "--explain-json",
    )
    records = [json.loads(line) for line in out.splitlines()]
    decisions = [r for r in records if "decision" in r]
    assert len(records) - len(decisions) == 7
    assert {
        "decision": "not_fired",
        "automation": "page-on-failure",
        "subject": "run 'r1' (sweep-1)",
        "reason": "state 'finished' is not one of ['failed']",
        "count": 1,
    } in decisions


def test_since_skips_earlier_triggers(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        capsys,
        "evaluate",
        str(EXAMPLES / "automations.yaml"),
        str(EXAMPLES / "events.jsonl"),
        "--since",
        "2026-01-02T09:00:00",
    )
    assert [json.loads(line)["version"] for line in out.splitlines()] == [4]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["evaluate", "CONFIG", "EVENTS", "--since", "last week"],
            "error: --since 'last week' is not an ISO 8601 time; write it like 2026-01-01T09:00:00Z.\n",
        ),
        (
            ["evaluate", "CONFIG", "missing.jsonl"],
            "error: 'HERE/missing.jsonl' can not be read (No such file or directory); check the "
            "path.\n",
        ),
        (
            ["serve", "CONFIG", "--interval", "0"],
            "error: --interval must be a positive, finite number of seconds, not 0.0.\n",
        ),
        (
            ["validate", "missing.yaml"],
            "error: missing.yaml has 1 problem:\n"
            "  - can not read HERE/missing.yaml (No such file or directory)\n",
        ),
    ],
    ids=["bad-since", "missing-events", "serve-interval", "missing-config"],
)
def test_bad_input_exits_2_with_a_sentence(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [
        {
            "CONFIG": str(EXAMPLES / "automations.yaml"),
            "EVENTS": str(EXAMPLES / "events.jsonl"),
        }.get(a, a)
        for a in argv
    ]
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (2, "", message.replace("HERE", str(Path.cwd())))


def test_unknown_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "--nope")
    assert code == 2
    assert "Traceback" not in err
