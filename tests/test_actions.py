"""Actions (SPEC §2.3), each against what it talks to: webhooks faked at the httpx edge with
respx, deployments, notification blocks and events against a real Prefect test server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from prefect_ml_automations.automations import Automation, Webhook
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.errors import ActionError

from .conftest import flow_runs

FIRING = Firing(
    firing_id="0123456789abcdef0123456789abcdef",
    automation="deploy-on-production",
    event_type="ADD_ARTIFACT_ALIAS",
    timestamp=datetime(2026, 1, 2, 8, tzinfo=UTC),
    registry="models",
    collection="churn-classifier",
    version=4,
    alias="production",
    user="bob",
)
URL = "https://hooks.example.invalid/ml"


def action(settings: dict[str, Any]) -> Any:
    return Automation.model_validate(
        {
            "name": "a",
            "scope": {"registry": "models"},
            "event": {"type": "ADD_ARTIFACT_ALIAS"},
            "action": settings,
        }
    ).action


def deliver(settings: dict[str, Any], firing: Firing = FIRING) -> Any:
    return asyncio.run(action(settings).deliver(firing))


@pytest.fixture(autouse=True)
def no_webhook_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Webhook, "retry_delays", (0.0, 0.0, 0.0))


# -- webhook ---------------------------------------------------------------------------------------

HOOK = {
    "type": "webhook",
    "url": URL,
    "access_token": "tok-1",
    "secret": "s3cret",
    "payload": {
        "text": "${artifact_version_string} is ${alias}",
        "version": "${artifact_version_index}",
    },
}


@respx.mock
def test_a_webhook_posts_the_rendered_payload_signed_like_wandb() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    assert deliver(HOOK) == {"http_status": 200}
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "text": "models/churn-classifier:v4 is production",
        "version": 4,
    }
    assert request.headers["authorization"] == "Bearer tok-1"
    expected = base64.b64encode(
        hmac.new(b"s3cret", request.content, hashlib.sha256).digest()
    ).decode()
    assert request.headers["x-wandb-signature"] == expected


@respx.mock
@pytest.mark.parametrize(
    "failures",
    [
        [httpx.Response(503)],
        [httpx.Response(429, headers={"Retry-After": "0"})],
        [httpx.ConnectError("refused")],
    ],
    ids=["5xx", "429", "connection"],
)
def test_a_webhook_retries_connection_errors_429_and_5xx(failures: list[Any]) -> None:
    route = respx.post(URL).mock(side_effect=[*failures, httpx.Response(204)])
    assert deliver(HOOK) == {"http_status": 204}
    assert route.call_count == 2


@respx.mock
def test_a_webhook_never_retries_other_4xx() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(404, text="no such hook"))
    with pytest.raises(ActionError) as caught:
        deliver(HOOK)
    assert str(caught.value) == f"The webhook {URL} answered HTTP 404: 'no such hook'."
    assert caught.value.retryable is False
    assert route.call_count == 1


@respx.mock
def test_a_webhook_that_stays_down_is_a_retryable_failure() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(502, text="bad gateway"))
    with pytest.raises(ActionError) as caught:
        deliver(HOOK)
    assert caught.value.retryable is True
    assert "answered HTTP 502" in str(caught.value)
    assert route.call_count == 4  # the first try and three retries


def test_secrets_never_print() -> None:
    hook = action(HOOK)
    assert "tok-1" not in repr(hook)
    assert "s3cret" not in repr(hook)


# -- deployments, notifications, events (a real Prefect API) ---------------------------------------


def test_run_deployment_starts_one_flow_run_per_firing(deployments: dict[str, Any]) -> None:
    settings = {
        "type": "run_deployment",
        "deployment": "deploy-model/production",
        "parameters": {"model_version": "${artifact_version_string}"},
        "tags": ["ml"],
    }
    first = deliver(settings)["flow_run_id"]
    again = deliver(settings)["flow_run_id"]  # the same firing delivered twice: the same run
    other = deliver(settings, FIRING.model_copy(update={"firing_id": "f" * 32, "version": 5}))[
        "flow_run_id"
    ]
    runs = flow_runs(deployments["deploy-model/production"])
    assert first == again != other
    assert [str(r.id) for r in runs] == [first, other]
    assert runs[0].parameters == {"model_version": "models/churn-classifier:v4"}
    assert "ml" in runs[0].tags


def test_the_same_firing_on_two_deployments_of_one_flow_starts_two_runs(
    deployments: dict[str, Any],
) -> None:
    firing = FIRING.model_copy(update={"firing_id": "e" * 32})
    production = deliver(
        {"type": "run_deployment", "deployment": "deploy-model/production"}, firing
    )
    staging = deliver({"type": "run_deployment", "deployment": "deploy-model/staging"}, firing)
    assert production != staging
    staged = {str(r.id) for r in flow_runs(deployments["deploy-model/staging"])}
    assert staging["flow_run_id"] in staged


def test_an_unknown_deployment_fails_for_good(prefect_api: str) -> None:
    with pytest.raises(ActionError) as caught:
        deliver({"type": "run_deployment", "deployment": "deploy-model/nope"})
    assert caught.value.retryable is False
    assert str(caught.value).startswith("Deployment 'deploy-model/nope' does not exist")


def test_a_notification_goes_through_a_saved_block(prefect_api: str, tmp_path: Path) -> None:
    from .notify_block import FileNotification

    FileNotification(path=str(tmp_path / "sent.jsonl")).save("ml-test-notify", overwrite=True)
    deliver(
        {
            "type": "notification",
            "block": "ml-test-file-notification/ml-test-notify",
            "severity": "error",
            "title": "${automation_name}",
            "message": "${artifact_version_string} → ${alias}",
        }
    )
    [sent] = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert sent == {
        "subject": "[error] deploy-on-production",
        "body": "models/churn-classifier:v4 → production",
    }


def test_a_missing_notification_block_fails_for_good(prefect_api: str) -> None:
    with pytest.raises(
        ActionError, match="No saved notification block is named 'nope/nothing'"
    ) as caught:
        deliver({"type": "notification", "block": "nope/nothing"})
    assert caught.value.retryable is False


def test_emit_event_returns_the_event_id(prefect_api: str) -> None:
    first = deliver({"type": "emit_event", "payload": {"version": "${artifact_version_index}"}})
    assert first == deliver({"type": "emit_event"})  # a fixed id per firing: no duplicates


def test_no_op_records_only() -> None:
    assert deliver({"type": "no_op"}) is None
