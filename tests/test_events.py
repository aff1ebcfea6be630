"""Normalized events (SPEC §5): parsing, and errors that name the file, the line and the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prefect_ml_automations.errors import EventError
from prefect_ml_automations.events import (
    AddArtifactAliasEvent,
    MetricEvent,
    RunStateEvent,
    read_events,
)

from .conftest import metric

GOOD = [
    {
        "type": "METRIC",
        "project": "my-team/vision",
        "run_id": "r1",
        "run_name": "sweep-1",
        "user": "alice",
        "run_created_at": "2026-01-01T09:00:00Z",
        "metric": "accuracy",
        "step": 12,
        "value": 0.63,
        "timestamp": "2026-01-01T10:00:05Z",
    },
    {
        "type": "RUN_STATE",
        "project": "my-team/vision",
        "run_id": "r1",
        "run_name": "sweep-1",
        "user": "alice",
        "run_created_at": "2026-01-01T09:00:00Z",
        "state": "Finished",
        "timestamp": "2026-01-01T11:00:00",
    },
    {
        "type": "ADD_ARTIFACT_ALIAS",
        "registry": "models",
        "collection": "churn-classifier",
        "version": 4,
        "alias": "production",
        "artifact_type": "model",
        "user": "bob",
        "metadata": {"auc": 0.91},
        "timestamp": "2026-01-02T08:00:00Z",
    },
    {
        "type": "METRIC",
        "project": "p",
        "run_id": "r1",
        "metric": "system.gpu",
        "value": 97,
        "timestamp": "2026-01-01T10:00:05+02:00",
    },
]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_spec_examples_parse(tmp_path: Path) -> None:
    point, state, alias, system = read_events(write(tmp_path, [json.dumps(e) for e in GOOD] + [""]))
    assert isinstance(point, MetricEvent)
    assert point.number == 0.63
    assert isinstance(state, RunStateEvent)
    assert state.state == "finished"
    assert state.timestamp == datetime(2026, 1, 1, 11, tzinfo=UTC)  # naive means UTC
    assert isinstance(alias, AddArtifactAliasEvent)
    assert (alias.alias, alias.version_string) == ("production", "models/churn-classifier:v4")
    assert isinstance(system, MetricEvent)
    assert system.step is None
    assert system.timestamp == datetime(2026, 1, 1, 8, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "counts"),
    [
        (1, True),
        (0.5, True),
        (True, False),
        ("0.5", False),
        (None, False),
        ({"_type": "image-file"}, False),
    ],
)
def test_any_json_value_is_accepted_but_only_finite_numbers_count(
    value: object, counts: bool
) -> None:
    from prefect_ml_automations.events import event_from_dict

    event = event_from_dict(metric("r1", 0, value, 0))
    assert (event.number is not None) is counts  # type: ignore[union-attr]


BAD_LINES = [
    (
        '{"type": "METRIC", "project": "p", "run_id": "r1", "metric": "acc", "value": 1, "timestamp": "2026-01-01T00:00:00Z"}',
        "field 'step' is required for metric 'acc' (only system metrics, named system.* or system/*, may leave it out)",
    ),
    (
        '{"type": "METRIC", "project": "p", "run_id": "r1", "metric": "acc", "step": 1, "timestamp": "2026-01-01T00:00:00Z"}',
        "field 'value' is required",
    ),
    (
        '{"type": "METRICS", "project": "p"}',
        "field 'type': 'METRICS' is not an event type; use one of METRIC, RUN_STATE, RUN_HEARTBEAT, LINK_ARTIFACT, "
        "UNLINK_ARTIFACT, CREATE_ARTIFACT, ADD_ARTIFACT_ALIAS, ADD_ARTIFACT_TAG, REMOVE_ARTIFACT_TAG",
    ),
    (
        '{"project": "p"}',
        "field 'type' is required (one of METRIC, RUN_STATE, RUN_HEARTBEAT, LINK_ARTIFACT, UNLINK_ARTIFACT, "
        "CREATE_ARTIFACT, ADD_ARTIFACT_ALIAS, ADD_ARTIFACT_TAG, REMOVE_ARTIFACT_TAG)",
    ),
    ("not json", "not valid JSON (expected ident at line 1 column 2)"),
    (
        '{"type": "METRIC", "project": "p", "run_id": "r1", "metric": "acc", "step": 1.5, "value": 1, "timestamp": "2026-01-01T00:00:00Z"}',
        "field 'step': input should be a valid integer (got 1.5)",
    ),
    (
        '{"type": "METRIC", "project": "p", "run_id": "r1", "metric": "acc", "step": 1, "value": 1, "timestamp": "yesterday"}',
        "field 'timestamp' must be an ISO 8601 time such as 2026-01-01T10:00:00Z (got 'yesterday')",
    ),
    (
        '{"type": "ADD_ARTIFACT_ALIAS", "registry": "m", "project": "p", "collection": "c", "version": 1, "alias": "x", "timestamp": "2026-01-01T00:00:00Z"}',
        "an artifact event names exactly one of 'registry' or 'project' (where it happened)",
    ),
    (
        '{"type": "ADD_ARTIFACT_ALIAS", "registry": "m", "collection": "c", "version": 1, "timestamp": "2026-01-01T00:00:00Z"}',
        "field 'alias' is required",
    ),
    (
        '{"type": "RUN_STATE", "project": "p", "run_id": "r1", "state": "finished", "timestamp": "2026-01-01T00:00:00Z", "vaule": 1}',
        "field 'vaule' is not a known field of this event type (a typo?)",
    ),
    ("[1, 2]", "each event must be a JSON object, not [1, 2]"),
]


@pytest.mark.parametrize(
    ("line", "message"), BAD_LINES, ids=[str(i) for i in range(len(BAD_LINES))]
)
def test_a_malformed_line_names_the_file_the_line_and_the_field(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write(tmp_path, [json.dumps(GOOD[0]), line, json.dumps(GOOD[1])])
    with pytest.raises(EventError) as caught:
        read_events(path)
    assert caught.value.problems == [f"{path}:2: {message}"]
    assert caught.value.exit_code == 2


def test_every_malformed_line_is_reported_up_to_twenty(tmp_path: Path) -> None:
    path = write(tmp_path, ["{}"] * 25 + [json.dumps(GOOD[0])])
    with pytest.raises(EventError) as caught:
        read_events(path)
    problems = caught.value.problems
    assert len(problems) == 21
    assert problems[19].startswith(f"{path}:20: ")
    assert problems[20] == "… and 5 more malformed lines"
    assert str(caught.value).startswith(
        f"{path} has 21 malformed events; none of its events was used:"
    )
