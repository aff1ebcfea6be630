"""Config files (SPEC §2): what is accepted, and the exact words for what is not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefect_ml_automations.automations import RunMetric, RunMetricChange, RunMetricZScore, RunState
from prefect_ml_automations.config import load_config, parse_config
from prefect_ml_automations.errors import ConfigError

SPEC_EXAMPLE = """
store: sqlite:///ml-automations.db
receiver: {token: "${RECEIVER_TOKEN}", secret: "${RECEIVER_SECRET}"}
sources:
  - {name: local, type: mlflow, tracking_uri: "sqlite:///mlflow.db"}
  - {name: team, type: wandb, entity: my-team, api_key: "${WANDB_API_KEY}"}
automations:
  - name: deploy-on-production
    source: local
    scope: {registry: models, collection: churn-classifier}
    event: {type: ADD_ARTIFACT_ALIAS, alias: "^production$"}
    action:
      type: run_deployment
      deployment: deploy-model/production
      parameters: {model_version: "${artifact_version_string}"}
  - name: good-accuracy
    source: team
    scope: {project: my-team/vision}
    event: {type: RUN_METRIC, metric: accuracy, window: 5, aggregation: average, operator: ">", threshold: 0.6}
    filters: {user: alice, run_name: "^sweep-"}
    action: {type: webhook, url: "https://example.invalid/hook", payload: {text: "${run_name}: ${metric_values}"}}
"""
ENV = {"RECEIVER_TOKEN": "tok", "RECEIVER_SECRET": "sec", "WANDB_API_KEY": "key-123"}


def problems(document: str | dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    raw = yaml.safe_load(document) if isinstance(document, str) else document
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env=env or {})
    return caught.value.problems


def one(automation: dict[str, Any]) -> dict[str, Any]:
    base = {"name": "a", "scope": {"project": "p"}, "action": {"type": "no_op"}}
    return {"automations": [{**base, **automation}]}


def test_the_spec_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text(SPEC_EXAMPLE)
    config = load_config(path, env=ENV)
    deploy, accuracy = config.automations
    assert deploy.action.parameters == {"model_version": "${artifact_version_string}"}  # a template
    assert accuracy.action.payload == {"text": "${run_name}: ${metric_values}"}
    assert config.sources[1].api_key.get_secret_value() == "key-123"  # from the environment
    assert "key-123" not in repr(config)  # secrets never print
    assert isinstance(accuracy.event, RunMetric)
    assert accuracy.event.describe() == "average(accuracy, 5) > 0.6"
    assert accuracy.cooldown == timedelta(hours=24)


def test_the_store_defaults_to_a_sqlite_file_beside_the_config(tmp_path: Path) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text("automations: []\n")
    assert load_config(path, env={}).store == f"sqlite:///{tmp_path}/ml-automations.db"


def test_defaults_of_every_metric_event() -> None:
    config = parse_config(
        {
            "automations": [
                {
                    **one({})["automations"][0],
                    "name": "m",
                    "event": {"type": "RUN_METRIC", "metric": "x", "operator": "<", "threshold": 1},
                },
                {
                    **one({})["automations"][0],
                    "name": "c",
                    "event": {
                        "type": "RUN_METRIC_CHANGE",
                        "metric": "x",
                        "direction": "any",
                        "amount": 0.25,
                    },
                },
                {
                    **one({})["automations"][0],
                    "name": "z",
                    "event": {"type": "RUN_METRIC_ZSCORE", "metric": "x", "threshold": 3},
                },
                {
                    **one({})["automations"][0],
                    "name": "s",
                    "event": {"type": "RUN_STATE", "states": ["crashed", "finished"]},
                },
            ]
        },
        env={},
    )
    m, c, z, s = (a.event for a in config.automations)
    assert isinstance(m, RunMetric)
    assert (m.window, m.aggregation) == (5, "average")
    assert isinstance(c, RunMetricChange)
    assert (c.current_window, c.prior_window, c.aggregation, c.change_type) == (
        10,
        50,
        "average",
        "relative",
    )
    assert isinstance(z, RunMetricZScore)
    assert (z.window, z.direction) == (30, "either")
    assert isinstance(s, RunState)
    assert s.states == ["failed", "finished"]


@pytest.mark.parametrize(
    ("spelling", "symbol"),
    [
        (">", ">"),
        ("above_or_equal", ">="),
        ("below", "<"),
        ("$lte", "<="),
        ("equal", "=="),
        ("$ne", "!="),
    ],
)
def test_operator_spellings(spelling: str, symbol: str) -> None:
    event = {"type": "RUN_METRIC", "metric": "x", "operator": spelling, "threshold": 1}
    assert parse_config(one({"event": event}), env={}).automations[0].event.operator == symbol  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("cooldown", "seconds"),
    [("90s", 90), ("30m", 1800), ("2d", 172800), (600, 600), (0, 0), ("24h", 86400)],
)
def test_cooldown_spellings(cooldown: object, seconds: int) -> None:
    event = {"type": "RUN_STATE", "states": ["failed"]}
    config = parse_config(one({"event": event, "cooldown": cooldown}), env={})
    assert config.automations[0].cooldown.total_seconds() == seconds


BAD = [
    pytest.param(
        {
            "event": {
                "type": "RUN_METRIC",
                "metric": "acc",
                "window": 0,
                "operator": ">",
                "threshold": 1,
            }
        },
        "automation 'a' (automations[0]): event.window: must be a whole number of at least 1, not 0.",
        id="window-below-1",
    ),
    pytest.param(
        {
            "event": {
                "type": "RUN_METRIC",
                "metric": "acc",
                "windw": 5,
                "operator": ">",
                "threshold": 1,
            }
        },
        "automation 'a' (automations[0]): event.windw: is not a known field (a typo?); did you mean 'window'?",
        id="typo",
    ),
    pytest.param(
        {"event": {"type": "RUN_METRIC", "operator": ">", "threshold": 1}},
        "automation 'a' (automations[0]): event.metric: is required but missing; add 'metric: …'.",
        id="missing-metric",
    ),
    pytest.param(
        {
            "event": {
                "type": "RUN_METRIC",
                "metric": "acc",
                "aggregation": "mean",
                "operator": ">",
                "threshold": 1,
            }
        },
        "automation 'a' (automations[0]): event.aggregation: 'mean' is not allowed; use 'average', 'min' or 'max'.",
        id="aggregation",
    ),
    pytest.param(
        {"event": {"type": "RUN_METRIC", "metric": "acc", "operator": "~", "threshold": 1}},
        "automation 'a' (automations[0]): event.operator: '~' is not an operator; use one of > >= < <= == != "
        "(or above, above_or_equal, below, below_or_equal, equal, not_equal, $gt … $ne).",
        id="operator",
    ),
    pytest.param(
        {"event": {"type": "RUN_METRIC_CHANGE", "metric": "acc", "direction": "any", "amount": 0}},
        "automation 'a' (automations[0]): event.amount: must be greater than 0, not 0; for a relative "
        "change it is a fraction (0.25 = 25 %).",
        id="amount-zero",
    ),
    pytest.param(
        {"event": {"type": "RUN_STATE", "states": ["killed"]}},
        "automation 'a' (automations[0]): event.states: 'killed' can not be chosen: a killed run never "
        "triggers (as in W&B); choose from running, finished, failed.",
        id="killed",
    ),
    pytest.param(
        {
            "event": {"type": "RUN_METRIC", "metric": "acc", "operator": ">", "threshold": 1},
            "scope": {"registry": "models"},
        },
        "automation 'a' (automations[0]): event: RUN_METRIC can not be used with registry 'models'; run "
        "events need a plain project scope such as {project: team/project} (no registry, no collection).",
        id="run-event-in-registry",
    ),
    pytest.param(
        {
            "event": {"type": "RUN_STATE", "states": ["failed"]},
            "scope": {"project": "p", "collection": "c"},
        },
        "automation 'a' (automations[0]): event: RUN_STATE can not be used with collection 'c' of project "
        "'p'; run events need a plain project scope such as {project: p} (no registry, no collection).",
        id="run-event-with-collection",
    ),
    pytest.param(
        {"event": {"type": "CREATE_ARTIFACT"}, "scope": {"registry": "models"}},
        "automation 'a' (automations[0]): event: CREATE_ARTIFACT can not be used with registry 'models'; "
        "use a project scope such as {project: team/project}.",
        id="create-in-registry",
    ),
    pytest.param(
        {"event": {"type": "ADD_ARTIFACT_TAG", "tag": "(("}},
        "automation 'a' (automations[0]): event.tag: '((' is not a valid regular expression (missing ), "
        "unterminated subpattern at position 1); escape special characters such as '.', '(' or '+' with a backslash.",
        id="bad-regex",
    ),
    pytest.param(
        {
            "event": {"type": "ADD_ARTIFACT_TAG"},
            "action": {"type": "run_deployment", "deployment": "deploy-model"},
        },
        "automation 'a' (automations[0]): action.deployment: 'deploy-model' is not a deployment name; write "
        "it as 'flow-name/deployment-name' (see `prefect deployment ls`).",
        id="deployment-name",
    ),
    pytest.param(
        {"event": {"type": "LINK_MODEL"}},
        "automation 'a' (automations[0]): event: type 'LINK_MODEL' is not known; use one of 'LINK_ARTIFACT', "
        "'UNLINK_ARTIFACT', 'CREATE_ARTIFACT', 'ADD_ARTIFACT_ALIAS', 'ADD_ARTIFACT_TAG', 'REMOVE_ARTIFACT_TAG', "
        "'RUN_STATE', 'RUN_STALLED', 'RUN_METRIC', 'RUN_METRIC_CHANGE', 'RUN_METRIC_ZSCORE'; W&B's LINK_MODEL is 'LINK_ARTIFACT' here.",
        id="unknown-event",
    ),
    pytest.param(
        {"event": {"type": "ADD_ARTIFACT_TAG"}, "filters": {"user": "x"}},
        "automation 'a' (automations[0]): filters: run filters apply to run events only, not to "
        "ADD_ARTIFACT_TAG; remove 'filters' or narrow the scope instead.",
        id="filters-on-artifact-event",
    ),
    pytest.param(
        {"event": {"type": "ADD_ARTIFACT_TAG"}, "scope": {"registry": "models", "project": "p"}},
        "automation 'a' (automations[0]): scope: names both a registry and a project; a scope is one or the "
        "other, so write two automations to watch both.",
        id="scope-both",
    ),
    pytest.param(
        {"event": {"type": "RUN_STATE", "states": ["failed"]}, "cooldown": "soon"},
        "automation 'a' (automations[0]): cooldown: must be a duration such as '90s', '30m', '24h', '2d' or "
        "a number of seconds, not 'soon'.",
        id="cooldown",
    ),
    pytest.param(
        {"event": {"type": "RUN_METRIC_ZSCORE", "metric": "acc", "threshold": True}},
        "automation 'a' (automations[0]): event.threshold: must be a number, not True.",
        id="boolean-threshold",
    ),
]


@pytest.mark.parametrize(("automation", "message"), BAD)
def test_invalid_automations_are_refused_naming_the_field_and_the_fix(
    automation: dict[str, Any], message: str
) -> None:
    assert problems(one(automation)) == [message]


def test_every_problem_in_a_file_is_reported() -> None:
    document = """
sources:
  - {name: local, type: mlflow, tracking_uri: "sqlite:///mlflow.db"}
  - {name: local, type: mlflow, tracking_uri: "sqlite:///other.db"}
automations:
  - name: x
    scope: {project: p}
    event: {type: RUN_METRIC, metric: acc, window: 0, operator: ">", threshold: 1}
    action: {type: no_op}
  - name: x
    source: lokal
    scope: {project: p}
    event: {type: RUN_STATE, states: [failed]}
    action: {type: no_op}
  - name: y
    scope: {project: p}
    event: {type: RUN_STATE, states: [failed]}
    action: {type: no_op}
extra: 1
"""
    assert problems(document) == [
        "'extra' is not a known top-level key (use store, receiver, sources, automations).",
        "automation 'x' (automations[0]): event.window: must be a whole number of at least 1, not 0.",
        "sources: two sources are named 'local'; give each a unique name.",
        "automation 'x' (automations[0]): source: there are 2 sources, so name the one this automation "
        "watches (one of 'local', 'local').",
        "automation 'x' (automations[1]): name: another automation is already named 'x'; make names unique.",
        "automation 'x' (automations[1]): source: 'lokal' is not a configured source (sources: 'local', "
        "'local'); did you mean 'local'?",
        "automation 'y' (automations[2]): source: there are 2 sources, so name the one this automation "
        "watches (one of 'local', 'local').",
    ]


def test_a_missing_environment_variable_is_named() -> None:
    document = yaml.safe_load(SPEC_EXAMPLE)
    assert problems(document, env={"RECEIVER_TOKEN": "t", "RECEIVER_SECRET": "s"}) == [
        "source 'team' (sources[1]): api_key: the environment variable 'WANDB_API_KEY' is not set; "
        "export it before running (or write the value in the file)."
    ]


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("automations:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(
        f"{path} has 1 problem:\n  - line 3, column 1: not valid YAML"
    )
    assert caught.value.exit_code == 2


def test_a_missing_file_is_a_config_error_naming_the_absolute_path_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("nope.yaml", env={})
    assert caught.value.problems == [
        f"can not read {tmp_path}/nope.yaml (No such file or directory)"
    ]


def test_a_relative_sqlite_store_lives_beside_the_config_not_where_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "project").mkdir()
    config = tmp_path / "project" / "automations.yaml"
    config.write_text("store: sqlite:///state/ml.db\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("project/automations.yaml", env={}).store == (
        f"sqlite:///{tmp_path}/project/state/ml.db"
    )


def test_secrets_can_come_from_prefect_secret_blocks() -> None:
    document = {
        "sources": [
            {
                "name": "team",
                "type": "wandb",
                "entity": "t",
                "api_key": "{{ prefect.blocks.secret.wandb-key }}",
            }
        ],
        "automations": [
            {
                "name": "a",
                "scope": {"registry": "models"},
                "event": {"type": "ADD_ARTIFACT_ALIAS"},
                "action": {
                    "type": "webhook",
                    "url": "https://x.invalid",
                    "secret": "{{prefect.blocks.secret.hook}}",
                    "payload": {"text": "{{ prefect.blocks.secret.hook }} stays a template"},
                },
            }
        ],
    }
    stored = {"wandb-key": "k-1", "hook": "h-1"}
    config = parse_config(document, env={}, secrets=stored.__getitem__)
    assert config.sources[0].api_key.get_secret_value() == "k-1"
    assert config.automations[0].action.secret.get_secret_value() == "h-1"
    assert config.automations[0].action.payload == {
        "text": "{{ prefect.blocks.secret.hook }} stays a template"
    }
    [message] = parse_problems(document, secrets={}.__getitem__)
    assert message == (
        "source 'team' (sources[0]): api_key: the Prefect Secret block 'wandb-key' could not be read "
        "(KeyError); create it (Blocks → Secret) or check PREFECT_API_URL."
    )


def parse_problems(document: dict[str, Any], secrets: Any) -> list[str]:
    document = {**document, "automations": []}
    with pytest.raises(ConfigError) as caught:
        parse_config(document, env={}, secrets=secrets)
    return caught.value.problems


# -- Prefect Secret blocks, read from a real Prefect API -----------------------------------------

HOOK_WITH_A_SECRET_TOKEN = """
automations:
  - name: hook
    scope: {registry: models}
    event: {type: ADD_ARTIFACT_ALIAS}
    action:
      type: webhook
      url: https://example.invalid/hook
      access_token: "{{ prefect.blocks.secret.BLOCK }}"
"""


def test_a_prefect_secret_block_resolves_from_sync_code_and_inside_an_event_loop(
    prefect_api: str, tmp_path: Path
) -> None:
    """`run` and `receive` load the config inside async code, where `Secret.load` would hand
    back a coroutine instead of the block; `validate` loads it from plain sync code."""
    import asyncio

    from prefect.blocks.system import Secret

    Secret(value="s3cr3t").save("ml-hook-token", overwrite=True)
    path = tmp_path / "automations.yaml"
    path.write_text(HOOK_WITH_A_SECRET_TOKEN.replace("BLOCK", "ml-hook-token"))

    async def load_inside_a_running_loop() -> Any:
        return load_config(path, env={})

    for config in (load_config(path, env={}), asyncio.run(load_inside_a_running_loop())):
        [hook] = config.automations
        assert hook.action.access_token.get_secret_value() == "s3cr3t"  # type: ignore[union-attr]
        assert "s3cr3t" not in repr(config)


def test_a_missing_prefect_secret_block_names_the_block_and_the_fix(
    prefect_api: str, tmp_path: Path
) -> None:
    import asyncio

    path = tmp_path / "automations.yaml"
    path.write_text(HOOK_WITH_A_SECRET_TOKEN.replace("BLOCK", "no-such-block"))

    async def load_inside_a_running_loop() -> Any:
        return load_config(path, env={})

    for load in (
        lambda: load_config(path, env={}),
        lambda: asyncio.run(load_inside_a_running_loop()),
    ):
        with pytest.raises(ConfigError) as caught:
            load()
        assert caught.value.problems == [
            "automation 'hook' (automations[0]): action.access_token: there is no Prefect Secret "
            "block named 'no-such-block'; create it in the Prefect UI (Blocks → Secret) or with "
            "Secret(value=...).save('no-such-block'), or check PREFECT_API_URL."
        ]
