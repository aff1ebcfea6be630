"""Shared builders: automations and events written the way users write them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config

# `from prefect import flow` sets up Prefect's logging, whose console handler keeps the
# `sys.stderr` of that moment. Done here, at collection, that is pytest's own stream — not the
# `capsys` stream of whichever test first imports Prefect, which is closed after it (and every
# later flow run would crash logging into it).
from prefect import flow as _configures_prefect_logging  # noqa: F401

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.evaluator import Evaluator
from prefect_ml_automations.events import Event, event_from_dict
from prefect_ml_automations.store import MIGRATIONS

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """An ISO time `seconds` after 2026-01-01T10:00:00Z."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def automation(
    name: str = "a", *, project: str = "p", cooldown: Any = 0, **event: Any
) -> Automation:
    """A run automation in project `project`, no-op action, cooldown off unless given."""
    return Automation.model_validate(
        {
            "name": name,
            "scope": {"project": project},
            "event": event,
            "cooldown": cooldown,
            "action": {"type": "no_op"},
            **({"filters": event.pop("filters")} if "filters" in event else {}),
        }
    )


def metric(run: str, step: int | None, value: Any, t: float, **extra: Any) -> dict[str, Any]:
    return {
        "type": "METRIC",
        "project": extra.pop("project", "p"),
        "run_id": run,
        "metric": extra.pop("metric", "acc"),
        "value": value,
        "timestamp": at(t),
        **({"step": step} if step is not None else {}),
        **extra,
    }


def state(run: str, value: str, t: float, **extra: Any) -> dict[str, Any]:
    return {
        "type": "RUN_STATE",
        "project": extra.pop("project", "p"),
        "run_id": run,
        "state": value,
        "timestamp": at(t),
        **extra,
    }


def piped_into_head(*args: str) -> Any:
    """`ml-automations ARGS | head -1` in bash with `pipefail`, so the command's own exit code
    is the pipeline's: what a person sees who pipes its output into `head`."""
    import shlex
    import subprocess
    import sys

    command = shlex.join([sys.executable, "-m", "prefect_ml_automations.cli", *args])
    return subprocess.run(
        f"set -o pipefail; {command} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        executable="/bin/bash",
    )


def events(*dicts: dict[str, Any]) -> list[Event]:
    return [event_from_dict(d) for d in dicts]


def fire(automations: list[Automation], dicts: list[dict[str, Any]], **kwargs: Any) -> list[Firing]:
    """Evaluate normalized event dicts in one batch; the firings."""
    return Evaluator(automations).evaluate(events(*dicts), **kwargs).firings


def fired_at(firings: list[Firing]) -> list[tuple[str | None, int | None]]:
    """(run, step) of each firing, in order: what most scenarios assert."""
    return [(f.run_id, f.step) for f in firings]


@pytest.fixture
def ramp() -> list[dict[str, Any]]:
    """Run r1 logging acc = 0.1, 0.2, … 1.0 at steps 0..9, one second apart."""
    return [metric("r1", step, round(0.1 * (step + 1), 10), step) for step in range(10)]


def firing_events(api: str, firing_id: str, *, at_least: int = 1) -> list[dict[str, Any]]:
    """The events about a firing the Prefect API holds (they are stored a few seconds after
    they are taken), once there are `at_least` of them (or 30 s have passed)."""
    import time

    import httpx

    where = {"resource": {"id": [f"ml-automations.firing.{firing_id}"]}}
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.post(f"{api}/events/filter", json={"filter": where, "limit": 50})
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()["events"]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# -- the runtime: a real Prefect API, real stores ---------------------------------------------


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One Prefect test server for the session (it takes seconds to start); yields its URL."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with (
        temporary_settings(
            {
                PREFECT_HOME: str(home),
                PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(home / "results"),
                PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            }
        ),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def deployments(prefect_api: str) -> dict[str, Any]:
    """Deployments `deploy-model/production`, `deploy-model/staging`, `train-model/nightly` (no worker:
    their flow runs stay scheduled, which is all exactly-once needs)."""
    import asyncio

    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="deploy-model")
    def deploy_model(model_version: str = "") -> None: ...

    @flow(name="train-model")
    def train_model(reason: str = "") -> None: ...

    async def create() -> dict[str, Any]:
        async with get_client() as client:
            ids = {}
            for fn, name in (
                (deploy_model, "production"),
                (deploy_model, "staging"),
                (train_model, "nightly"),
            ):
                flow_id = await client.create_flow(fn)
                ids[f"{fn.name}/{name}"] = await client.create_deployment(
                    flow_id=flow_id, name=name
                )
            return ids

    return asyncio.run(create())


def flow_runs(deployment_id: Any) -> list[Any]:
    """The flow runs of a deployment, oldest first."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async def read() -> list[Any]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.ID_DESC,
                limit=200,
            )
        return sorted(runs, key=lambda r: r.created)

    return asyncio.run(read())


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Any:
    """A fresh, empty PostgreSQL database on the local server (dropped afterwards)."""
    yield from _fresh_postgres_database()


@pytest.fixture
def another_postgres_url() -> Any:
    """A second one, beside `postgres_url`."""
    yield from _fresh_postgres_database()


def _fresh_postgres_database() -> Iterator[str]:
    import uuid

    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); the many-workers mode needs it"
        )
    name = f"mla_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


# -- W&B, faked at the httpx edge ----------------------------------------------------------------

WANDB_API = "https://api.wandb.ai/graphql"


@pytest.fixture
def fake() -> Any:
    """A fake W&B GraphQL API behind respx (Prefect's own API on 127.0.0.1 passes through)."""
    import respx

    from .wandb_fake import FakeWandb

    fake = FakeWandb()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(WANDB_API).mock(side_effect=fake.handle)
        fake.mock = mock  # type: ignore[attr-defined]
        yield fake


# -- MLflow: a real store ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow store (SQLite) for the session: creating its tables takes seconds."""
    mlflow = pytest.importorskip("mlflow", reason="the MLflow source needs the [mlflow] extra")
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    mlflow.MlflowClient(uri).search_experiments()
    return uri


@contextmanager
def migrations(url: str) -> Iterator[tuple[Config, sa.Connection]]:
    """The store's migrations on one transaction of the database at `url`: run
    `alembic.command.upgrade/downgrade(config, revision)`, and query with the connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            yield config, connection
    finally:
        engine.dispose()
