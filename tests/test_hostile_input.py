"""The doors this change opened, under hostile input: the trackers' webhooks answer a clear 4xx
or a 202 that stored exactly what it says — never a 500 — whatever an authenticated sender puts in
the JSON; `import-wandb` turns any JSON into YAML that loads, or a clear error.

The payload keys are the variables W&B's webhook payloads carry (W&B's docs,
`models/automations/create-automations/webhook.mdx`, "Payload variables") and the fields of
MLflow 3's registry webhook bodies (`mlflow/webhooks/types.py`): the doors are attacked where
they read, with values of every JSON type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prefect_ml_automations.config import parse_config
from prefect_ml_automations.receiver import create_app
from prefect_ml_automations.store import StateStore

TOKEN = {"Authorization": "Bearer t0k"}
HOSTILE = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["", "v3", "v99999999999999999999", "-1", "production", "a/b/c:v1"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def wandb_payloads() -> st.SearchStrategy[dict[str, Any]]:
    version_strings = st.one_of(
        values,
        st.builds(
            lambda e, p, c, h: f"{e}/{p}/{c}:{h}",
            st.sampled_from(["acme", "acme-org", ""]),
            st.sampled_from(["vision", "wandb-registry-models", "wandb-registry-"]),
            st.text(min_size=0, max_size=8),
            st.sampled_from(["v0", "v4", "v18446744073709551616", "production", "latest", ""]),
        ),
    )
    event_types = st.one_of(
        st.sampled_from(
            [
                "LINK_MODEL",
                "LINK_ARTIFACT",
                "UNLINK_ARTIFACT",
                "CREATE_ARTIFACT",
                "ADD_ARTIFACT_ALIAS",
                "ADD_ARTIFACT_TAG",
                "REMOVE_ARTIFACT_TAG",
                "RUN_STATE",
                "RUN_METRIC",
            ]
        ),
        values,
    )
    return st.fixed_dictionaries(
        {"event_type": event_types},
        optional={
            "artifact_version_string": version_strings,
            "alias": values,
            "tag": values,
            "event_author": values,
            "entity_name": values,
            "project_name": values,
            "run_id": values,
            "run_url": st.one_of(values, st.just("https://wandb.ai/acme/vision/runs/r1")),
            "run_name": values,
            "run_status": st.one_of(values, st.sampled_from(["running", "crashed", "KILLED"])),
        },
    )


def mlflow_payloads() -> st.SearchStrategy[dict[str, Any]]:
    data = st.one_of(
        values,
        st.fixed_dictionaries(
            {},
            optional={
                "name": values,
                "version": st.one_of(values, st.sampled_from(["1", "0", "-3", "1e3", "x"])),
                "alias": values,
                "key": values,
                "value": values,
                "tags": values,
            },
        ),
    )
    return st.fixed_dictionaries(
        {
            "entity": st.one_of(
                st.sampled_from(
                    [
                        "model_version",
                        "model_version_tag",
                        "model_version_alias",
                        "registered_model",
                    ]
                ),
                values,
            ),
            "action": st.one_of(st.sampled_from(["created", "set", "deleted"]), values),
        },
        optional={"data": data, "timestamp": st.one_of(values, st.just("2026-01-02T08:00:00Z"))},
    )


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, StateStore]:
    folder: Path = tmp_path_factory.mktemp("hostile")
    config = parse_config(
        {
            "store": f"sqlite:///{folder}/store.db",
            "receiver": {"token": "t0k"},
            "sources": [
                {"name": "team", "type": "wandb", "entity": "acme", "api_key": "k"},
                {"name": "local", "type": "mlflow", "tracking_uri": f"sqlite:///{folder}/m.db"},
            ],
            "automations": [],
        },
        env={},
    )
    store = StateStore(config.store)
    return TestClient(create_app(config, store), raise_server_exceptions=False), store


def _answered_clearly(
    receiver: tuple[TestClient, StateStore], path: str, payload: dict[str, Any]
) -> None:
    http, store = receiver
    before = store.inbox_size()
    response = http.post(path, content=json.dumps(payload), headers=TOKEN)
    assert response.status_code in (202, 400, 413, 422), (response.status_code, response.text)
    body = response.json()
    if response.status_code == 202:
        assert store.inbox_size() == before + body["accepted"]
    else:
        assert isinstance(body["error"], str)
        assert body["error"]
        assert store.inbox_size() == before  # a refused call stores nothing


@HOSTILE
@given(payload=wandb_payloads())
def test_any_wandb_call_gets_a_clear_answer(
    receiver: tuple[TestClient, StateStore], payload: dict[str, Any]
) -> None:
    _answered_clearly(receiver, "/wandb", payload)


@HOSTILE
@given(payload=mlflow_payloads())
def test_any_mlflow_call_gets_a_clear_answer(
    receiver: tuple[TestClient, StateStore], payload: dict[str, Any]
) -> None:
    _answered_clearly(receiver, "/mlflow", payload)


def saved_automations() -> st.SearchStrategy[dict[str, Any]]:
    """Automations shaped like W&B's `TriggerFields` (`wandb/automations/_generated/fragments.py`),
    with every value free to be wrong."""
    filters = st.one_of(
        values, st.dictionaries(st.sampled_from(["filter", "run_filter", "run_metric_filter",
        "run_state_filter", "metric_filter", "$or", "$and", "display_name"]), values, max_size=3
        ).map(json.dumps),
    )  # fmt: skip
    return st.fixed_dictionaries(
        {"name": st.one_of(st.text(max_size=12), values)},
        optional={
            "scope": st.one_of(
                values,
                st.fixed_dictionaries(
                    {
                        "__typename": st.sampled_from(
                            ["Project", "ArtifactPortfolio", "ArtifactSequence", "Entity", "X"]
                        ),
                        "name": st.one_of(st.sampled_from(["vision", "wandb-registry-models"]), values),
                    },
                    optional={"id": values, "entityType": values},
                ),
            ),
            "event": st.one_of(
                values,
                st.fixed_dictionaries(
                    {"eventType": st.one_of(st.sampled_from(
                        ["RUN_METRIC", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE", "RUN_STATE",
                         "LINK_MODEL", "ADD_ARTIFACT_ALIAS", "ADD_ARTIFACT_TAG",
                         "UPDATE_ARTIFACT_ALIAS", "WEAVE_METRIC_THRESHOLD"]), values)},
                    optional={"filter": filters},
                ),
            ),
            "action": st.one_of(
                values,
                st.fixed_dictionaries(
                    {"__typename": st.sampled_from(["GenericWebhookTriggeredAction",
                     "NotificationTriggeredAction", "NoOpTriggeredAction", "X"])},
                    optional={"requestPayload": values, "integration": values, "title": values},
                ),
            ),
            "enabled": values,
            "description": values,
        },
    )  # fmt: skip


@HOSTILE
@given(document=st.one_of(values, st.lists(saved_automations(), max_size=3)))
@example(document=[{"event": {"eventType": "LINK_MODEL", "filter": {"\x1f": None}}}])  # a note
def test_any_json_imports_into_yaml_that_loads_or_a_clear_error(document: Any) -> None:
    import yaml

    from prefect_ml_automations.config import parse_config
    from prefect_ml_automations.errors import MLAutomationsError
    from prefect_ml_automations.wandb_import import import_wandb

    try:
        imported = import_wandb(document, entity="acme")
    except MLAutomationsError as exc:  # a clear error: one that says something
        refused: MLAutomationsError | None = exc
    else:
        refused = None
    if refused is not None:
        assert str(refused).strip()
        return
    loaded = yaml.safe_load(imported.yaml()) or {}
    parse_config({"store": "sqlite:///x.db", **loaded}, env={})
