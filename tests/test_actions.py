"""Actions (SPEC §2.3), each against what it talks to: webhooks faked at the httpx edge with
respx, deployments, notification blocks and events against a real Prefect test server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import respx
from prefect.blocks.abstract import NotificationBlock
from pydantic import SecretStr

from prefect_ml_automations import sensor as sensor_module
from prefect_ml_automations.automations import Automation, Webhook
from prefect_ml_automations.config import load_config
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.errors import ActionError
from prefect_ml_automations.sensor import Delivery, Sensor
from prefect_ml_automations.store import utcnow

from .conftest import events, firing_events, flow_runs, state

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


@respx.mock
def test_every_call_names_the_firing_and_a_users_headers_can_not_change_that() -> None:
    route = respx.post(URL).mock(side_effect=[httpx.Response(503), httpx.Response(204)])
    headers = {
        "idempotency-key": "mine",
        "X-ML-Automations-Firing-Id": "forged",
        "authorization": "Basic bWluZQ==",
        "X-Team": "ml",
    }
    assert deliver({**HOOK, "headers": headers}) == {"http_status": 204}
    assert route.call_count == 2
    for call in route.calls:
        sent = call.request.headers
        assert sent.get_list("idempotency-key") == [FIRING.firing_id]
        assert sent.get_list("x-ml-automations-firing-id") == [FIRING.firing_id]
        assert sent.get_list("authorization") == ["Bearer tok-1"]
        assert sent["x-team"] == "ml"


@respx.mock
@pytest.mark.parametrize(
    ("failure", "problem"),
    [
        (httpx.ReadTimeout("read"), "timed out after 15 s waiting for an answer (ReadTimeout)"),
        (httpx.WriteTimeout("write"), "timed out after 15 s sending the request (WriteTimeout)"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "dropped the connection before answering (RemoteProtocolError: Server "
            "disconnected without sending a response.)",
        ),
    ],
    ids=["read-timeout", "write-timeout", "dropped-connection"],
)
def test_a_call_the_target_may_have_received_is_not_repeated_within_an_attempt(
    failure: Exception, problem: str
) -> None:
    route = respx.post(URL).mock(side_effect=failure)
    with pytest.raises(ActionError) as caught:
        deliver(HOOK)
    assert str(caught.value) == f"The webhook {URL} {problem}."
    assert caught.value.retryable is True  # the sensor's back-off tries again later
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            "ConnectError: [Errno 111] Connection refused",
        ),
        (httpx.ConnectTimeout("timed out"), "ConnectTimeout: timed out"),
        (httpx.PoolTimeout(""), "PoolTimeout"),
    ],
    ids=["refused", "connect-timeout", "pool-timeout"],
)
def test_a_call_that_never_reached_the_target_is_repeated_and_reported_as_such(
    failure: Exception, reason: str
) -> None:
    route = respx.post(URL).mock(side_effect=failure)
    with pytest.raises(ActionError) as caught:
        deliver(HOOK)
    assert str(caught.value) == f"The webhook {URL} could not connect ({reason}), after retries."
    assert caught.value.retryable is True
    assert route.call_count == 4


@respx.mock
def test_a_redirect_is_not_taken_for_success() -> None:
    respx.post(URL).mock(
        return_value=httpx.Response(
            302, headers={"Location": "https://elsewhere.invalid/ml?sig=s3cr3t"}
        )
    )
    with pytest.raises(ActionError) as caught:
        deliver(HOOK)
    assert str(caught.value) == (
        f"The webhook {URL} answered HTTP 302 (a redirect to https://elsewhere.invalid/ml); "
        "redirects are not followed, so set the webhook's url to where it points."
    )
    assert caught.value.retryable is False


@respx.mock
def test_a_retry_after_longer_than_the_cap_waits_only_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Webhook, "retry_after_cap", 0.05)
    route = respx.post(URL).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            httpx.Response(200),
        ]
    )
    started = time.monotonic()
    assert deliver(HOOK) == {"http_status": 200}
    assert time.monotonic() - started < 5
    assert route.call_count == 3


def test_a_webhooks_longest_delivery_is_every_call_and_every_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Webhook, "retry_delays", (0.5, 2.0, 5.0))
    # 4 calls of 15 s, 3 waits of at most 30 s (the longest Retry-After honoured).
    assert action(HOOK).max_duration == 4 * 15 + 3 * 30
    monkeypatch.setattr(Webhook, "retry_delays", (0.5, 45.0))
    assert action(HOOK).max_duration == 3 * 15 + 30 + 45
    assert action({"type": "no_op"}).max_duration == 60
    assert action({"type": "emit_event"}).max_duration == 60


# -- no secret in a webhook's error ------------------------------------------------------------


def _echo(request: httpx.Request) -> httpx.Response:
    """A target that answers 500 with what it was sent: credentials first."""
    sent = request.headers
    lines = [
        f"authorization: {sent.get('authorization')}",
        f"x-wandb-signature: {sent.get('x-wandb-signature')}",
        f"token {sent.get('authorization', '').removeprefix('Bearer ')} at {request.url}",
        request.content.decode(),
    ]
    return httpx.Response(500, text="\n".join(lines))


@respx.mock
def test_a_target_that_echoes_the_credentials_puts_none_of_them_in_the_error() -> None:
    route = respx.post(URL).mock(side_effect=_echo)
    with pytest.raises(ActionError) as caught:
        deliver(HOOK)
    error = str(caught.value)
    signature = route.calls.last.request.headers["x-wandb-signature"]
    assert error.startswith(f"The webhook {URL} answered HTTP 500: 'authorization: Bearer ***")
    assert error.endswith(", after retries.")
    for secret in ("tok-1", "s3cret", signature, base64.b64encode(b"tok-1").decode()):
        assert secret not in error


@respx.mock
def test_a_token_in_the_webhooks_url_is_in_no_error() -> None:
    url = "https://hooks.example.invalid/ml?token=abc&channel=c0ffee"
    respx.route(host="hooks.example.invalid").mock(
        side_effect=lambda request: httpx.Response(404, text=f"no hook at {request.url}")
    )
    with pytest.raises(ActionError) as caught:
        deliver({**HOOK, "url": url})
    assert str(caught.value) == (
        "The webhook https://hooks.example.invalid/ml answered HTTP 404: "
        "'no hook at https://hooks.example.invalid/ml?token=***&channel=***'."
    )
    respx.route(host="hooks.example.invalid").mock(side_effect=httpx.ConnectError("abc"))
    with pytest.raises(ActionError) as caught:
        deliver({**HOOK, "url": url})
    assert "abc" not in str(caught.value)


# -- a slow target, through the sensor ---------------------------------------------------------


class _SlowTarget(BaseHTTPRequestHandler):
    """Reads the firing, then answers only after `server.delay` seconds."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        server.calls.append(dict(self.headers))
        time.sleep(server.delay)
        try:
            self.send_response(200)
            self.end_headers()
        except OSError:
            pass  # the caller gave up waiting

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_target() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _SlowTarget)
    server.daemon_threads = True
    server.calls, server.delay = [], 2.0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_target_gets_one_call_per_attempt_and_the_firing_fails_as_timed_out(
    slow_target: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Webhook, "call_timeout", 0.3)
    monkeypatch.setattr(sensor_module, "BACKOFF", (timedelta(0),) * 3)
    port = slow_target.server_address[1]
    config = tmp_path / "automations.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path}/store.db\n"
        "automations:\n"
        "  - name: page\n"
        "    scope: {project: p}\n"
        "    event: {type: RUN_STATE, states: [failed]}\n"
        f"    action: {{type: webhook, url: 'http://127.0.0.1:{port}/hook?token=abc'}}\n"
    )
    s = Sensor(load_config(config, env={}))
    s.store.put_events(events(state("r1", "failed", 0)), origin="push")
    s.run_once()
    for _ in range(sensor_module.MAX_ATTEMPTS):
        asyncio.run(s.deliver(utcnow() + timedelta(hours=1)))
    [row] = s.store.history(automation="page")
    assert (row.status, row.attempts) == ("failed", sensor_module.MAX_ATTEMPTS)
    assert row.error == (
        f"The webhook http://127.0.0.1:{port}/hook timed out after 0.3 s waiting for an answer "
        "(ReadTimeout)."
    )
    assert len(slow_target.calls) == sensor_module.MAX_ATTEMPTS
    assert {call["Idempotency-Key"] for call in slow_target.calls} == {row.firing_id}


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


class SecretNotification(NotificationBlock):
    """A notification block whose failure quotes its secret URL (as Apprise's errors can)."""

    _block_type_name: ClassVar[str] = "ML Test Secret Notification"
    _block_type_slug: ClassVar[str] = "ml-test-secret-notification"

    url: SecretStr

    def notify(self, body: str, subject: str | None = None) -> None:
        raise RuntimeError(f"POST {self.url.get_secret_value()} answered 500")


def test_a_failing_notification_block_is_retried_and_its_secret_stays_out_of_the_error(
    prefect_api: str,
) -> None:
    hook = "https://hooks.slack.example/services/T0/B0/XyZ-s3cret"
    SecretNotification(url=SecretStr(hook)).save("ml-test-secret", overwrite=True)
    with pytest.raises(ActionError) as caught:
        deliver({"type": "notification", "block": "ml-test-secret-notification/ml-test-secret"})
    assert str(caught.value) == (
        "The notification block 'ml-test-secret-notification/ml-test-secret' could not send "
        "(RuntimeError: POST *** answered 500)."
    )
    assert caught.value.retryable is True


def test_emit_event_returns_the_event_id(prefect_api: str) -> None:
    first = deliver({"type": "emit_event", "payload": {"version": "${artifact_version_index}"}})
    assert first == deliver({"type": "emit_event"})  # a fixed id per firing: no duplicates


def test_an_emitted_event_arrives_once_however_often_it_is_delivered(prefect_api: str) -> None:
    firing = FIRING.model_copy(update={"firing_id": uuid.uuid4().hex})
    settings = {"type": "emit_event", "payload": {"version": "${artifact_version_index}"}}
    first = deliver(settings, firing)
    assert deliver(settings, firing) == first  # a retry sends the same event again
    [event] = firing_events(prefect_api, firing.firing_id)
    assert event["id"] == first["event_id"]
    assert event["event"] == "ml.automation.fired"
    assert event["payload"]["version"] == 4
    assert event["payload"]["firing"]["firing_id"] == firing.firing_id
    time.sleep(3)  # time enough for a second copy to be stored, were it counted twice
    assert len(firing_events(prefect_api, firing.firing_id)) == 1


def test_an_event_emitted_in_a_flow_run_is_related_to_the_run(prefect_api: str) -> None:
    from prefect import flow
    from prefect.runtime import flow_run

    firing = FIRING.model_copy(update={"firing_id": uuid.uuid4().hex})

    @flow(name="ml-test-emit")
    async def emit() -> str:
        await action({"type": "emit_event"}).deliver(firing)
        return str(flow_run.id)

    run_id = asyncio.run(emit())
    [event] = firing_events(prefect_api, firing.firing_id)
    related = {(r["prefect.resource.role"], r["prefect.resource.id"]) for r in event["related"]}
    assert ("automation", "ml-automations.automation.deploy-on-production") in related
    assert ("flow-run", f"prefect.flow-run.{run_id}") in related  # as emit_event relates it
    assert "flow" in {role for role, _ in related}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_event_the_prefect_api_did_not_take_is_a_retryable_failure() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = f"http://127.0.0.1:{_closed_port()}/api"
    started = time.monotonic()
    with temporary_settings({PREFECT_API_URL: api}), pytest.raises(ActionError) as caught:
        deliver({"type": "emit_event"})
    assert time.monotonic() - started < 10
    assert caught.value.retryable is True
    assert str(caught.value).startswith(
        f"The Prefect API at {api} did not take the event 'ml.automation.fired' ("
    )


def test_with_no_prefect_api_and_no_temporary_server_an_event_is_not_sent() -> None:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
        temporary_settings,
    )

    settings = {PREFECT_API_URL: None, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}
    with temporary_settings(settings), pytest.raises(ActionError) as caught:  # type: ignore[dict-item]
        deliver({"type": "emit_event"})
    assert caught.value.retryable is False
    assert str(caught.value) == (
        "The Prefect event 'ml.automation.fired' was not sent: no Prefect API is configured. "
        "Set PREFECT_API_URL (for example http://127.0.0.1:4200/api) or log in to Prefect Cloud."
    )


def test_the_sensors_own_events_are_confirmed_or_a_warning(
    prefect_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_ml_automations.tasks.sensor import aannounce, announce

    firing = FIRING.model_copy(update={"firing_id": uuid.uuid4().hex})
    finished = Delivery(firing, "finished", result={"http_status": 200})
    assert asyncio.run(aannounce(finished, {})) is True
    [event] = firing_events(prefect_api, firing.firing_id)
    assert event["event"] == "ml.automation.firing.finished"

    failed = Delivery(firing, "failed", error="down", attempt=3)
    api = f"http://127.0.0.1:{_closed_port()}/api"
    with (
        temporary_settings({PREFECT_API_URL: api}),
        caplog.at_level(logging.WARNING, logger="prefect_ml_automations"),
    ):
        assert asyncio.run(aannounce(failed, {})) is False
    [warning] = [r for r in caplog.records if r.name == "prefect_ml_automations"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        f"The Prefect event ml.automation.firing.failed of firing {firing.firing_id[:8]} "
        f"('deploy-on-production') was not sent: The Prefect API at {api} did not take"
    )

    caplog.clear()
    too_big = Delivery(firing, "finished", result={"log": "x" * 2_000_000})
    with caplog.at_level(logging.WARNING, logger="prefect_ml_automations"):
        announce(too_big, {})  # never raises: the cycle goes on
    [warning] = [r for r in caplog.records if r.name == "prefect_ml_automations"]
    assert "was not sent: EventTooLarge" in warning.getMessage()


def test_no_op_records_only() -> None:
    assert deliver({"type": "no_op"}) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "http://h:99999/x"}, "'http://h:99999/x' has a port out of range"),
        ({"headers": {"X Bad": "v"}}, "the header name 'X Bad' can not be sent"),
        ({"headers": {"X-Ok": "a\nb"}}, "the value of header 'X-Ok' can not be sent"),
        ({"headers": {"X-Ok": "tökén"}}, "the value of header 'X-Ok' can not be sent"),
        ({"access_token": "tökén"}, "can not be sent as 'Authorization: Bearer …'"),
    ],
    ids=["port", "header-name", "header-line-break", "header-non-ascii", "token-non-ascii"],
)
def test_webhook_settings_http_can_not_carry_are_refused_when_loaded(
    settings: dict[str, Any], message: str
) -> None:
    from pydantic import ValidationError

    from prefect_ml_automations.automations.actions import Webhook

    with pytest.raises(ValidationError) as caught:
        Webhook.model_validate({"type": "webhook", "url": "https://h/x", **settings})
    (error,) = caught.value.errors()
    assert message in error["msg"]
    assert "tökén" not in error["msg"]  # a credential is not quoted back
