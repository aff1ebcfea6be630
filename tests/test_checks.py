"""`ml-automations check` (issue 11 §5): what a valid config needs from the outside world.

Real components throughout: a Prefect test server with real deployments and blocks, a real
MLflow store, a real SQLite state store; only W&B is faked, at the httpx edge.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml

from prefect_ml_automations.checks import VIEWER, Check, run_checks
from prefect_ml_automations.config import AutomationsConfig, load_config

WANDB_GRAPHQL = "https://api.wandb.ai/graphql"
GOOD_KEY = "good-key-0123456789abcdef0123456789abcdef"
BAD_KEY = "wrong-key-fedcba9876543210fedcba9876543210"
TOKEN = "receiver-token-s3cr3t"


def config(tmp_path: Path, **document: Any) -> AutomationsConfig:
    """A config file written as users write it, loaded the way `validate` loads it."""
    document.setdefault("store", f"sqlite:///{tmp_path}/state.db")
    path = tmp_path / "automations.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={})


def automation(name: str, action: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "scope": {"project": "p"},
        "event": {"type": "RUN_STATE", "states": ["finished"]},
        "action": action,
    }


def deploy(name: str, deployment: str) -> dict[str, Any]:
    return automation(name, {"type": "run_deployment", "deployment": deployment})


def notify(name: str, block: str) -> dict[str, Any]:
    return automation(name, {"type": "notification", "block": block})


def lines(config: AutomationsConfig) -> list[str]:
    return [check.line() for check in asyncio.run(run_checks(config))]


def about(found: list[str], needle: str) -> str:
    """The one line that mentions `needle`."""
    matching = [line for line in found if needle in line]
    assert len(matching) == 1, found
    return matching[0]


# -- the line format ---------------------------------------------------------------------------


def test_a_passing_check_is_a_tick_and_what_was_checked() -> None:
    assert Check(True, "the store opens", "").line() == "✓ the store opens"


def test_a_failing_check_is_a_cross_what_and_the_fix() -> None:
    assert Check(False, "source 'team'", "do this.").line() == "✗ source 'team': do this."


# -- the Prefect API ---------------------------------------------------------------------------


def test_an_existing_deployment_passes_and_a_missing_one_says_how_to_create_it(
    tmp_path: Path, deployments: dict[str, Any]
) -> None:
    found = lines(
        config(
            tmp_path,
            receiver={"token": TOKEN},
            automations=[
                deploy("ship", "deploy-model/production"),
                deploy("x", "deploy-model/nowhere"),
                deploy("also-ship", "deploy-model/production"),
            ],
        )
    )
    assert about(found, "answers").startswith("✓ the Prefect API at http://127.0.0.1:")
    assert about(found, "production") == (
        "✓ deployment 'deploy-model/production' (automations 'ship', 'also-ship') exists"
    )
    assert about(found, "nowhere") == (
        "✗ deployment 'deploy-model/nowhere' (automation 'x'): does not exist; create it with "
        "`prefect deploy` or fix the name"
    )


def test_a_missing_notification_block_fails_with_how_to_create_it(
    tmp_path: Path, prefect_api: str
) -> None:
    found = lines(config(tmp_path, automations=[notify("alert", "slack-webhook/no-such-channel")]))
    assert about(found, "no-such-channel") == (
        "✗ notification block 'slack-webhook/no-such-channel' (automation 'alert'): does not "
        "exist; create it in the Prefect UI (Blocks) or with its Python class's .save(), or fix "
        "the name (see `prefect block ls`)"
    )


def test_a_saved_notification_block_passes(tmp_path: Path, prefect_api: str) -> None:
    from .notify_block import FileNotification

    FileNotification(path=str(tmp_path / "sent.jsonl")).save("ml-test-check", overwrite=True)
    found = lines(
        config(tmp_path, automations=[notify("alert", "ml-test-file-notification/ml-test-check")])
    )
    assert about(found, "ml-test-check") == (
        "✓ notification block 'ml-test-file-notification/ml-test-check' (automation 'alert') exists"
    )


def test_a_block_that_can_not_notify_fails(tmp_path: Path, prefect_api: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value="hush-hush-value").save("ml-test-check-secret", overwrite=True)
    found = lines(config(tmp_path, automations=[notify("alert", "secret/ml-test-check-secret")]))
    line = about(found, "ml-test-check-secret")
    assert line.startswith("✗ notification block 'secret/ml-test-check-secret'")
    assert "can not send notifications" in line
    assert "hush-hush-value" not in "\n".join(found)


def test_an_unreachable_prefect_api_is_one_line_without_a_traceback(
    tmp_path: Path, unused_port: int
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{unused_port}/api"}):
        found = lines(
            config(
                tmp_path,
                automations=[
                    deploy("ship", "deploy-model/production"),
                    notify("alert", "slack-webhook/team"),
                ],
            )
        )
    prefect = [line for line in found if "Prefect" in line]
    assert len(prefect) == 1, found
    assert prefect[0].startswith(
        f"✗ the Prefect API at http://127.0.0.1:{unused_port}/api: it can not be reached ("
    )
    assert prefect[0].endswith("start it with `prefect server start` or fix PREFECT_API_URL.")
    assert "Traceback" not in prefect[0]


def test_nothing_is_asked_of_prefect_when_no_action_needs_it(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        found = lines(config(tmp_path, automations=[automation("a", {"type": "no_op"})]))
    assert not [line for line in found if "Prefect" in line]


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- the trackers ------------------------------------------------------------------------------


#: W&B's answers to its `GetDefaultEntity` query (`wandb/apis/_generated/get_default_entity.py`
#: types them; `test_the_fakes_answers_are_wandbs_own_type` checks them against it): the key's
#: user and default entity — and `viewer: null` for a key it does not know.
VIEWER_ANSWER = {"data": {"viewer": {"id": "VXNlcjox", "entity": "u"}}}
UNKNOWN_KEY_ANSWER: dict[str, Any] = {"data": {"viewer": None}}


def wandb_viewer(request: httpx.Request) -> httpx.Response:
    """W&B's answer to the `viewer` query: the key's user, or 401 for any other key."""
    import base64

    expected = "Basic " + base64.b64encode(f"api:{GOOD_KEY}".encode()).decode()
    if request.headers.get("authorization") != expected:
        return httpx.Response(401, text="invalid api key " + BAD_KEY)  # W&B may echo it
    query = json.loads(request.content)["query"]
    assert query == VIEWER
    return httpx.Response(200, json=VIEWER_ANSWER)


def test_the_query_is_wandbs_own_and_the_fakes_answers_are_its_type() -> None:
    from graphql import parse, print_ast
    from wandb.apis._generated import operations
    from wandb.apis._generated.get_default_entity import GetDefaultEntity

    assert print_ast(parse(VIEWER)) == print_ast(parse(operations.GET_DEFAULT_ENTITY_GQL))
    assert GetDefaultEntity.model_validate(VIEWER_ANSWER["data"]).viewer is not None
    assert GetDefaultEntity.model_validate(UNKNOWN_KEY_ANSWER["data"]).viewer is None


def test_a_key_wandb_answers_no_viewer_for_fails(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(WANDB_GRAPHQL).respond(200, json=UNKNOWN_KEY_ANSWER)
        found = lines(config(tmp_path, sources=[wandb_source(GOOD_KEY)]))
    assert about(found, "'team'") == (
        "✗ source 'team': W&B did not recognise the API key; set WANDB_API_KEY or the "
        "source's api_key."
    )


@pytest.fixture
def wandb() -> Any:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.post(WANDB_GRAPHQL).mock(side_effect=wandb_viewer)
        yield route


def wandb_source(key: str | None) -> dict[str, Any]:
    return {
        "name": "team",
        "type": "wandb",
        "entity": "my-team",
        **({"api_key": key} if key is not None else {}),
    }


def test_wandb_accepting_the_key_passes_and_names_the_entity(tmp_path: Path, wandb: Any) -> None:
    found = lines(config(tmp_path, sources=[wandb_source(GOOD_KEY)]))
    assert about(found, "'team'") == (
        "✓ source 'team': W&B at https://api.wandb.ai accepts the API key (entity 'u')"
    )
    assert wandb.call_count == 1


def test_a_wrong_wandb_key_fails_without_showing_the_key(tmp_path: Path, wandb: Any) -> None:
    found = lines(config(tmp_path, sources=[wandb_source(BAD_KEY)]))
    assert about(found, "'team'") == (
        "✗ source 'team': W&B refused the API key (HTTP 401); set WANDB_API_KEY or the "
        "source's api_key."
    )
    assert BAD_KEY not in "\n".join(found)


def test_a_wandb_source_without_a_key_says_where_to_put_one(
    tmp_path: Path, wandb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    found = lines(config(tmp_path, sources=[wandb_source(None)]))
    assert about(found, "'team'") == (
        "✗ source 'team': no W&B API key; set WANDB_API_KEY or the source's api_key."
    )
    assert wandb.call_count == 0


def test_the_wandb_key_falls_back_to_the_environment(
    tmp_path: Path, wandb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", GOOD_KEY)
    found = lines(config(tmp_path, sources=[wandb_source(None)]))
    assert about(found, "'team'").startswith("✓ source 'team'")


def test_a_reachable_mlflow_passes(tmp_path: Path, tracking_uri: str) -> None:
    source = {"name": "local", "type": "mlflow", "tracking_uri": tracking_uri}
    found = lines(config(tmp_path, sources=[source]))
    assert about(found, "'local'") == f"✓ source 'local': MLflow at {tracking_uri!r} answers"


def test_an_mlflow_that_can_not_be_opened_fails_with_its_message(
    tmp_path: Path, tracking_uri: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    uri = f"sqlite:///{tmp_path}/a-file/mlflow.db"
    source = {"name": "local", "type": "mlflow", "tracking_uri": uri}
    line = about(lines(config(tmp_path, sources=[source])), "'local'")
    assert line.startswith(f"✗ source 'local': MLflow at {uri!r} failed (")
    assert line.endswith("check the source's tracking_uri and the server.")


# -- the receiver and the store ----------------------------------------------------------------


def test_a_receiver_without_token_or_secret_fails(tmp_path: Path) -> None:
    found = lines(config(tmp_path))
    assert about(found, "receiver auth") == (
        "✗ receiver auth: the receiver has neither token nor secret; `receive` refuses to start "
        "without --insecure; set receiver.token or receiver.secret in the config."
    )


def test_a_receiver_with_a_token_passes_without_showing_it(tmp_path: Path) -> None:
    found = lines(config(tmp_path, receiver={"token": TOKEN, "secret": "hmac-s3cr3t"}))
    assert about(found, "authenticates") == (
        "✓ the receiver authenticates requests (a token and a secret)"
    )
    text = "\n".join(found)
    assert TOKEN not in text
    assert "hmac-s3cr3t" not in text


def test_a_store_that_opens_passes(tmp_path: Path) -> None:
    found = lines(config(tmp_path))
    assert about(found, "store") == f"✓ the state store 'sqlite:///{tmp_path}/state.db' opens"


def test_a_store_that_can_not_be_opened_fails_without_its_password(tmp_path: Path) -> None:
    url = "postgresql://ml:pa55word@127.0.0.1:1/ml"
    line = about(lines(config(tmp_path, store=url)), "store")
    assert line.startswith("✗ the state store 'postgresql://127.0.0.1:1/ml' opens: ")
    assert "pa55word" not in line


# -- everything at once ------------------------------------------------------------------------


def test_every_check_of_a_whole_config_in_order(
    tmp_path: Path, deployments: dict[str, Any], tracking_uri: str, wandb: Any
) -> None:
    found = lines(
        config(
            tmp_path,
            receiver={"token": TOKEN},
            sources=[
                {"name": "local", "type": "mlflow", "tracking_uri": tracking_uri},
                wandb_source(BAD_KEY),
            ],
            automations=[
                {**deploy("ship", "deploy-model/production"), "source": "local"},
                {**notify("alert", "slack-webhook/nowhere"), "source": "team"},
            ],
        )
    )
    assert [line[:1] for line in found] == ["✓", "✓", "✓", "✗", "✓", "✓", "✗"], found
    assert [line.split()[1] for line in found] == [
        "the",  # store
        "the",  # receiver
        "source",
        "source",
        "the",  # Prefect API
        "deployment",
        "notification",
    ]
    text = "\n".join(found)
    assert BAD_KEY not in text
    assert TOKEN not in text


def test_the_check_command_finds_a_missing_deployment_a_missing_block_and_a_wrong_key(
    tmp_path: Path,
    prefect_api: str,
    deployments: dict[str, Any],
    wandb: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect_ml_automations.cli import main

    config(
        tmp_path,
        receiver={"token": TOKEN},
        sources=[wandb_source(BAD_KEY)],
        automations=[
            {**deploy("ship", "deploy-model/production"), "source": "team"},
            {**deploy("ship-nowhere", "deploy-model/nowhere"), "source": "team"},
            {**notify("page", "slack-webhook/no-such-channel"), "source": "team"},
        ],
    )
    assert main(["check", str(tmp_path / "automations.yaml")]) == 2
    out, err = capsys.readouterr()
    found = out.splitlines()
    assert about(found, "'deploy-model/production'").startswith("✓ deployment")
    assert about(found, "'deploy-model/nowhere'").startswith("✗ deployment")
    assert about(found, "no-such-channel").startswith("✗ notification block")
    assert about(found, "'team'").startswith("✗ source 'team': W&B refused the API key")
    assert err == "error: 3 of 7 check(s) failed; each ✗ line above says how to fix it.\n"
    assert BAD_KEY not in out + err
    assert TOKEN not in out + err
