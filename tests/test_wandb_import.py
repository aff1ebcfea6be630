"""`import-wandb`: W&B's automation definitions become ours, saying what can not come along."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import parse_config

WANDB = [
    {
        "name": "deploy-prod",
        "description": "alias production",
        "enabled": True,
        "triggeringEventType": "ADD_ARTIFACT_ALIAS",
        "eventFilter": json.dumps({"$or": [{"$and": [{"alias": {"$regex": "^production$"}}]}]}),
        "scope": {
            "__typename": "ArtifactPortfolio",
            "name": "churn",
            "project": {"name": "wandb-registry-models", "entityName": "acme"},
        },
        "action": {
            "__typename": "GenericWebhookTriggeredAction",
            "integration": {"urlEndpoint": "https://hooks.example.invalid/x"},
            "requestPayload": json.dumps({"version": "${artifact_version_string}"}),
        },
    },
    {
        "name": "good-acc",
        "triggeringEventType": "RUN_METRIC",
        "eventFilter": json.dumps(
            {
                "run_filter": json.dumps({"$and": [{"display_name": {"$contains": "sweep."}}]}),
                "run_metric_filter": {
                    "threshold_filter": {
                        "name": "acc",
                        "agg_op": "AVERAGE",
                        "window_size": 5,
                        "cmp_op": "$gt",
                        "threshold": 0.6,
                    }
                },
            }
        ),
        "scope": {"__typename": "Project", "name": "vision", "entityName": "acme"},
        "action": {
            "__typename": "NotificationTriggeredAction",
            "title": "good",
            "message": "run ${run_name}",
            "severity": "WARN",
        },
    },
    {
        "name": "loss-jump",
        "triggeringEventType": "RUN_METRIC_CHANGE",
        "eventFilter": json.dumps(
            {
                "run_filter": "{}",
                "run_metric_filter": {
                    "change_filter": {
                        "name": "loss",
                        "agg_op": "MAX",
                        "window_size": 5,
                        "prior_window_size": 10,
                        "change_dir": "INCREASE",
                        "change_type": "ABSOLUTE",
                        "change_amount": 0.5,
                    }
                },
            }
        ),
        "scope": {"__typename": "Project", "name": "vision"},
        "action": {"__typename": "NoOpTriggeredAction"},
    },
    {
        "name": "outlier",
        "triggeringEventType": "RUN_METRIC_ZSCORE",
        "eventFilter": json.dumps(
            {
                "run_filter": "{}",
                "run_metric_filter": {
                    "zscore_filter": {
                        "name": "acc",
                        "window_size": 20,
                        "threshold": 3.0,
                        "change_dir": "INCREASE",
                    }
                },
            }
        ),
        "scope": {"__typename": "Project", "name": "vision"},
        "action": {"__typename": "NoOpTriggeredAction"},
    },
    {
        "name": "failures",
        "triggeringEventType": "RUN_STATE",
        "eventFilter": json.dumps(
            {"run_filter": "{}", "run_state_filter": {"states": ["FAILED", "CRASHED", "KILLED"]}}
        ),
        "scope": {"__typename": "Project", "name": "vision"},
        "action": {"__typename": "NoOpTriggeredAction"},
    },
]


def test_wandb_automations_become_valid_yaml_and_the_notes_say_what_did_not_travel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wandb.json"
    path.write_text(
        json.dumps({"data": {"project": {"automations": {"edges": [{"node": n} for n in WANDB]}}}})
    )
    assert main(["import-wandb", str(path), "--entity", "acme"]) == 0
    out, err = capsys.readouterr()
    document = yaml.safe_load(out)
    config = parse_config(document, env={})  # what it wrote is a valid config
    by_name = {a.name: a for a in config.automations}
    assert by_name["deploy-prod"].scope.model_dump(exclude_none=True) == {
        "registry": "models",
        "collection": "churn",
    }
    assert by_name["deploy-prod"].event.alias == "^production$"  # type: ignore[union-attr]
    assert by_name["deploy-prod"].action.payload == {"version": "${artifact_version_string}"}  # type: ignore[union-attr]
    assert by_name["good-acc"].event.describe() == "average(acc, 5) > 0.6"
    assert by_name["good-acc"].filters.run_name == "sweep\\."  # type: ignore[union-attr]
    assert (
        by_name["loss-jump"].event.describe()
        == "max(loss, last 5) increases by ≥ 0.5 against the 10 before"
    )
    assert by_name["outlier"].event.describe() == "z(acc, last 20 runs) ≥ 3"
    assert by_name["failures"].event.states == ["failed"]  # type: ignore[union-attr]
    assert "note: failures: the state KILLED is dropped: a killed run never triggers here" in err
    assert "note: good-acc: the Slack notification needs a Prefect notification block" in err


def test_a_file_without_automations_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    assert main(["import-wandb", str(path)]) == 2
    assert "The file holds no W&B automations" in capsys.readouterr().err
