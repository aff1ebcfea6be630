"""Templates (SPEC §2.3): string leaves only, a lone variable keeps its type, unknown → ''."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.templates import render, variables

ALIAS = Firing(
    firing_id="abc",
    automation="deploy",
    event_type="ADD_ARTIFACT_ALIAS",
    timestamp=datetime(2026, 1, 2, tzinfo=UTC),
    registry="models",
    collection="churn",
    version=4,
    alias="production",
    user="bob",
    metadata={"auc": 0.91},
)
METRIC = Firing(
    firing_id="def",
    automation="good",
    event_type="RUN_METRIC",
    timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    project="team/vision",
    run_id="r1",
    run_name="sweep-1",
    metric="acc",
    step=4,
    value=0.62,
    metric_values=[0.6, 0.64],
    metric_filter="average(acc, 2) > 0.6",
)


def test_artifact_variables() -> None:
    v = variables(ALIAS)
    assert v["artifact_version_string"] == "models/churn:v4"
    assert (v["artifact_version_index"], v["registry_name"], v["alias"], v["event_author"]) == (
        4,
        "models",
        "production",
        "bob",
    )
    assert v["artifact_metadata.auc"] == 0.91
    assert v["run_name"] == ""  # does not apply: an empty string


def test_run_metric_variables() -> None:
    v = variables(METRIC)
    assert (v["entity_name"], v["project_name"]) == ("team", "vision")
    assert (v["metric_value"], v["metric_values"], v["metric_filter"]) == (
        0.62,
        [0.6, 0.64],
        "average(acc, 2) > 0.6",
    )


def test_a_lone_variable_keeps_its_type_and_text_gets_json() -> None:
    payload = {
        "version": "${artifact_version_index}",
        "auc": "${artifact_metadata.auc}",
        "text": "${alias} → v${artifact_version_index} ${nothing}",
    }
    assert render(payload, variables(ALIAS)) == {
        "version": 4,
        "auc": 0.91,
        "text": "production → v4 ",
    }
    assert render(["${metric_values}", "values: ${metric_values}"], variables(METRIC)) == [
        [0.6, 0.64],
        "values: [0.6, 0.64]",
    ]


def test_values_can_not_inject_structure() -> None:
    hostile = METRIC.model_copy(update={"run_name": '", "admin": true, "x": "'})
    rendered = render({"text": "run ${run_name}"}, variables(hostile))
    assert rendered == {"text": 'run ", "admin": true, "x": "'}
    assert set(rendered) == {"text"}


def test_keys_and_non_strings_are_left_alone() -> None:
    assert render({"${run_name}": 1, "n": 2.5, "b": True, "z": None}, variables(METRIC)) == {
        "${run_name}": 1,
        "n": 2.5,
        "b": True,
        "z": None,
    }
