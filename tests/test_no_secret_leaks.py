"""No planted secret in any output: CLI, history, the Prefect table artifact, the firing events
and the logs — even when a webhook target echoes the credentials it was sent back in its error
answer, and the store URL carries a password."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import load_config
from prefect_ml_automations.store import StateStore

from .conftest import firing_events, state

TOKEN = "tok-PLANTED-9f3a1c"
SIGNING = "sig-PLANTED-77e0b2"
HEADER = "hdr-PLANTED-1b2c3d"
QUERY = "qry-PLANTED-5e6f7a"
RECEIVER = "rcv-PLANTED-0c0c0c"
PASSWORD = "pw-PLANTED-d4d4d4"
IN_PATH = "path-PLANTED-e5e5e5"  # as Slack's and Discord's webhook URLs keep theirs
PLANTED = (TOKEN, SIGNING, HEADER, QUERY, RECEIVER, PASSWORD, IN_PATH)
HOOK = f"https://hooks.example.invalid/services/T0/{IN_PATH}"


def echo_everything(request: httpx.Request) -> httpx.Response:
    """A target that quotes back the credentials it got, then everything else — with a 500."""
    first = ("authorization", "x-api-key", "x-wandb-signature")
    echoed = {name: request.headers[name] for name in first}
    echoed.update(url=str(request.url), headers=dict(request.headers))
    return httpx.Response(500, text=json.dumps(echoed))


def test_no_planted_secret_reaches_any_output(
    tmp_path: Path,
    prefect_api: str,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect_ml_automations import sensor as sensor_module

    monkeypatch.setattr(sensor_module, "MAX_ATTEMPTS", 1)  # one attempt: failed at once
    # PostgreSQL here trusts local connections, so any password opens the store: it is only
    # planted, to be looked for.
    store_url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    file = tmp_path / "automations.yaml"
    file.write_text(
        f"""
store: {store_url}
receiver: {{token: {RECEIVER}}}
automations:
  - name: page-on-failure
    scope: {{project: p}}
    event: {{type: RUN_STATE, states: [failed]}}
    action:
      type: webhook
      url: "{HOOK}?token={QUERY}"
      access_token: {TOKEN}
      secret: {SIGNING}
      headers: {{X-Api-Key: {HEADER}}}
      payload: {{run: "${{run_id}}"}}
"""
    )
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(state("r1", "failed", 0)) + "\n")
    for name in ("prefect_ml_automations", "prefect"):
        logging.getLogger(name).addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="prefect_ml_automations")
    outputs: list[str] = []
    try:
        with respx.mock(assert_all_called=False) as mock:
            mock.route(host="127.0.0.1").pass_through()
            mock.post(url__startswith=HOOK).mock(side_effect=echo_everything)
            for argv in (
                ["validate", str(file)],
                ["ingest", str(file), str(events)],
                ["evaluate", str(file), str(events), "--explain"],
                ["run", str(file), "--once"],
                ["history", str(file)],
                ["history", str(file), "--json"],
                ["quarantine", str(file)],
            ):
                main(argv)
                captured = capsys.readouterr()
                outputs += [captured.out, captured.err]
                if argv[0] == "history" and "--json" in argv:
                    (firing_id,) = [
                        json.loads(line)["firing_id"] for line in captured.out.splitlines()
                    ]
            main(["retry", str(file), firing_id])
            captured = capsys.readouterr()
            outputs += [captured.out, captured.err]
    finally:
        for name in ("prefect_ml_automations", "prefect"):
            logging.getLogger(name).removeHandler(caplog.handler)

    history = StateStore(load_config(file, env={}).store).history()
    assert [row.status for row in history] == ["failed"]
    # The error is there, quoting the answer — scrubbed where the credentials were.
    assert '{"authorization": "***", "x-api-key": "***"' in (history[0].error or "")
    outputs += [row.error or "" for row in history]
    outputs += [record.getMessage() for record in caplog.records]
    outputs.append(json.dumps(_artifacts(prefect_api)))
    events = firing_events(prefect_api, firing_id)
    assert events, "the firing's events never arrived"
    outputs.append(json.dumps(events))
    everything = "\n".join(outputs)
    assert "page-on-failure" in everything  # the outputs were captured at all
    for secret in PLANTED:
        assert secret not in everything, f"{secret} leaked"


def _artifacts(api: str) -> list[dict[str, Any]]:
    answer = httpx.post(
        f"{api}/artifacts/filter", json={"sort": "CREATED_DESC", "limit": 50, "offset": 0}
    )
    answer.raise_for_status()
    return list(answer.json())


def test_validate_shows_no_credential_of_the_wrong_type_and_no_url_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "automations.yaml"
    file.write_text(
        f"""
receiver: {{token: 1234567890123}}
sources:
  - {{name: team, type: wandb, entity: e, api_key: [{TOKEN}]}}
automations:
  - name: hook
    scope: {{project: p}}
    event: {{type: RUN_STATE, states: [failed]}}
    action:
      type: webhook
      url: "ftp://host/x?token={QUERY}"
      access_token: 99
      headers: {{X-K: {{a: {HEADER}}}}}
"""
    )
    assert main(["validate", str(file)]) == 2
    err = capsys.readouterr().err
    assert (
        "action.access_token: must be a string, not a number (not shown: it may be a secret)" in err
    )
    assert "action.url: 'ftp://host/x' is not an http(s) URL" in err
    for secret in (TOKEN, QUERY, HEADER, "1234567890123"):
        assert secret not in err
