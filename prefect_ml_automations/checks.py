"""`ml-automations check`: what a valid config needs from the outside world, one line each.

`validate` proves a config is well formed; `run_checks` asks the world whether it will work:
the state store opens, the push receiver authenticates, each tracker accepts its credentials, and
the Prefect API holds every deployment and notification block an action names. Every check ends
in a `Check` — ✓, or ✗ with what to fix — and none raises, so one run reports every problem.
No secret of the config (API keys, the receiver's token and secret, a password in a URL) nor of
Prefect's settings appears in any line.

    >>> Check(True, "the state store 'sqlite:///ml.db' opens", "").line()
    "✓ the state store 'sqlite:///ml.db' opens"
    >>> Check(False, "the receiver", "it has neither token nor secret").line()
    '✗ the receiver: it has neither token nor secret'
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from prefect_ml_automations.automations.actions import Notification, RunDeployment
from prefect_ml_automations.config import (
    AutomationsConfig,
    MLflowSourceSettings,
    WandbSourceSettings,
)
from prefect_ml_automations.redact import safe_url, scrub

#: Seconds a tracker or the Prefect API has to answer one check.
TIMEOUT = 30.0
#: W&B's own query for whom an API key belongs to, as its SDK sends it (`GET_DEFAULT_ENTITY_GQL`
#: in `wandb/apis/_generated/operations.py`; the answer's type is `GetDefaultEntity` there).
#: `viewer` is null for a key W&B does not know.
VIEWER = "query GetDefaultEntity {\n  viewer {\n    id\n    entity\n  }\n}"
#: Held while the state store or an MLflow store is opened: both may run alembic migrations,
#: and alembic keeps the running migration in module globals, so two at once (in two threads of
#: one process) break each other ("no such table", "KeyError: 'script'").
_MIGRATING = threading.Lock()


@dataclass(frozen=True)
class Check:
    """One line of `check`: whether `what` holds and, when it does not, `detail` (what is wrong
    and how to fix it)."""

    ok: bool
    what: str
    detail: str = ""

    def line(self) -> str:
        """`✓ what`, or `✗ what: detail`."""
        if self.ok:
            return f"✓ {self.what}"
        return f"✗ {self.what}: {self.detail}" if self.detail else f"✗ {self.what}"


async def run_checks(config: AutomationsConfig) -> list[Check]:
    """Every check of a loaded config, in a fixed order: the store, the receiver, each source
    (as listed), then the Prefect API and what the actions name in it (each deployment and
    block once, in the order automations first name them). The checks run concurrently.
    """
    store, *sources, prefect = await asyncio.gather(
        _listed(check_store(config.store)),
        *(_listed(check_source(source)) for source in config.sources),
        check_prefect(config),
    )
    checks = [*store, check_receiver(config), *(c for s in sources for c in s), *prefect]
    secrets = _secrets(config)
    return [
        replace(
            c,
            what=scrub(c.what, secrets, limit=None),
            detail=scrub(c.detail, secrets, limit=None),
        )
        for c in checks
    ]


# -- the state store and the receiver --------------------------------------------------------


async def check_store(url: str) -> Check:
    """The state store opens (and is migrated to the current schema, as every command does)."""
    from prefect_ml_automations.errors import MLAutomationsError
    from prefect_ml_automations.store import StateStore

    what = f"the state store {safe_url(url)!r} opens"

    def open_and_close() -> None:
        with _MIGRATING:
            StateStore(url).close()

    try:
        await asyncio.to_thread(open_and_close)
    except MLAutomationsError as exc:
        return Check(False, what, str(exc))
    except Exception as exc:  # a check reports, it never crashes the command
        return Check(False, what, f"{_reason(exc)}; check the store URL in the config.")
    return Check(True, what)


def check_receiver(config: AutomationsConfig) -> Check:
    """The push receiver authenticates requests: it has a token, a secret, or both."""
    receiver = config.receiver
    kinds = [
        name
        for name, value in (("a token", receiver.token), ("a secret", receiver.secret))
        if value is not None and value.get_secret_value()
    ]
    if kinds:
        return Check(True, f"the receiver authenticates requests ({' and '.join(kinds)})")
    return Check(
        False,
        "receiver auth",
        "the receiver has neither token nor secret; `receive` refuses to start without "
        "--insecure; set receiver.token or receiver.secret in the config.",
    )


# -- the trackers ------------------------------------------------------------------------------


async def check_source(source: WandbSourceSettings | MLflowSourceSettings) -> Check:
    """The tracker answers with the source's credentials."""
    if isinstance(source, WandbSourceSettings):
        return await check_wandb(source)
    return await check_mlflow(source)


def _wandb_key(source: WandbSourceSettings) -> str | None:
    # As the W&B source reads it: the config's api_key, else $WANDB_API_KEY.
    if source.api_key is not None:
        return source.api_key.get_secret_value() or None
    return os.environ.get("WANDB_API_KEY") or None


async def check_wandb(
    source: WandbSourceSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> Check:
    """W&B accepts the source's API key: one `viewer` query (`VIEWER`), `POST
    <base_url>/graphql` with HTTP Basic `api:<key>`, as the W&B source sends every query."""
    where = safe_url(source.base_url)
    what = f"source {source.name!r}"
    fix = "set WANDB_API_KEY or the source's api_key"
    key = _wandb_key(source)
    if key is None:
        return Check(False, what, f"no W&B API key; {fix}.")
    try:
        async with httpx.AsyncClient(
            base_url=source.base_url.rstrip("/"),
            auth=("api", key),
            timeout=TIMEOUT,
            transport=transport,
        ) as http:
            response = await http.post("/graphql", json={"query": VIEWER, "variables": {}})
    except httpx.HTTPError as exc:
        return Check(
            False,
            what,
            f"W&B at {where} could not be reached ({_reason(exc, [key])}); check the "
            "source's base_url and the network.",
        )
    if response.status_code in (401, 403):
        return Check(
            False,
            what,
            f"W&B refused the API key (HTTP {response.status_code}); {fix}.",
        )
    if response.status_code != 200:
        return Check(
            False,
            what,
            f"W&B at {where} answered HTTP {response.status_code} "
            f"({scrub(response.text, [key])!r}); check the source's base_url.",
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return Check(
            False,
            what,
            f"{where} answered with something that is not W&B's GraphQL API; check the "
            "source's base_url.",
        )
    from prefect_ml_automations.sources.wandb import graphql_errors

    if errors := graphql_errors(body):
        return Check(
            False,
            what,
            f"W&B at {where} refused the query ({scrub('; '.join(errors), [key])}).",
        )
    data = body.get("data")
    viewer = data.get("viewer") if isinstance(data, dict) else None
    if not isinstance(viewer, dict):
        return Check(False, what, f"W&B did not recognise the API key; {fix}.")
    entity = viewer.get("entity")
    return Check(True, f"{what}: W&B at {where} accepts the API key (entity {entity!r})")


async def check_mlflow(source: MLflowSourceSettings) -> Check:
    """MLflow answers: `search_experiments(max_results=1)` on the tracking URI."""
    where = safe_url(source.tracking_uri)
    what = f"source {source.name!r}"
    try:
        from mlflow import MlflowClient
    except ImportError:
        return Check(
            False,
            what,
            "the MLflow source needs the mlflow package: "
            "pip install 'prefect-ml-automations[mlflow]'.",
        )

    def search() -> None:
        # A database URI may be migrated on open; a server's (http) never is, and may hang.
        local = not source.tracking_uri.lower().startswith(("http://", "https://"))
        with _MIGRATING if local else contextlib.nullcontext():
            MlflowClient(source.tracking_uri).search_experiments(max_results=1)

    try:
        await _in_daemon_thread(search, TIMEOUT)
    except TimeoutError:
        return Check(
            False,
            what,
            f"MLflow at {where!r} did not answer within {TIMEOUT:g} s; check the source's "
            "tracking_uri and that the server is up.",
        )
    except Exception as exc:
        return Check(
            False,
            what,
            f"MLflow at {where!r} failed ({_reason(exc)}); check the source's tracking_uri "
            "and the server.",
        )
    return Check(True, f"{what}: MLflow at {where!r} answers")


# -- the Prefect API ---------------------------------------------------------------------------


async def check_prefect(config: AutomationsConfig) -> list[Check]:
    """The Prefect API answers, and holds each deployment and notification block the actions
    name. Nothing is asked of it when no action needs Prefect."""
    deployments = _named(config, RunDeployment, lambda a: a.deployment)
    blocks = _named(config, Notification, lambda a: a.block)
    if not deployments and not blocks:
        return []
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        return [
            Check(
                False,
                "the Prefect API",
                "no Prefect API is configured; set PREFECT_API_URL (for example "
                "http://127.0.0.1:4200/api) or log in to Prefect Cloud.",
            )
        ]
    where = safe_url(api_url)
    try:
        async with asyncio.timeout(TIMEOUT), get_client() as client:
            problem = await client.api_healthcheck()
            if problem is not None:
                raise problem
            checks = [Check(True, f"the Prefect API at {where} answers")]
            for name, users in deployments.items():
                checks.append(await _check_deployment(client, name, users))
            for name, users in blocks.items():
                checks.append(await _check_block(client, name, users))
    except Exception as exc:
        reason = f"no answer within {TIMEOUT:g} s" if isinstance(exc, TimeoutError) else None
        return [
            Check(
                False,
                f"the Prefect API at {where}",
                f"it can not be reached ({reason or _reason(exc)}); start it with "
                "`prefect server start` or fix PREFECT_API_URL.",
            )
        ]
    return checks


async def _check_deployment(client: Any, name: str, users: list[str]) -> Check:
    from prefect.exceptions import ObjectNotFound

    what = f"deployment {name!r} ({_automations(users)})"
    try:
        await client.read_deployment_by_name(name)
    except ObjectNotFound:
        return Check(False, what, "does not exist; create it with `prefect deploy` or fix the name")
    return Check(True, f"{what} exists")


async def _check_block(client: Any, name: str, users: list[str]) -> Check:
    from prefect.exceptions import ObjectNotFound

    what = f"notification block {name!r} ({_automations(users)})"
    slug, _, block_name = name.partition("/")
    try:
        # Without secrets: whether the block is there is all a check needs to know.
        document = await client.read_block_document_by_name(block_name, slug, include_secrets=False)
    except ObjectNotFound:
        return Check(
            False,
            what,
            "does not exist; create it in the Prefect UI (Blocks) or with its Python "
            "class's .save(), or fix the name (see `prefect block ls`)",
        )
    schema = getattr(document, "block_schema", None)
    capabilities = getattr(schema, "capabilities", None)
    if capabilities is not None and "notify" not in capabilities:
        return Check(
            False,
            what,
            f"is a {slug!r} block, which can not send notifications; name a notification "
            "block (Slack, Teams, email, …)",
        )
    return Check(True, f"{what} exists")


# -- helpers -----------------------------------------------------------------------------------


def _named(
    config: AutomationsConfig, kind: type[Any], name: Callable[[Any], str]
) -> dict[str, list[str]]:
    """What actions of `kind` name -> the automations naming it, in the config's order."""
    named: dict[str, list[str]] = {}
    for automation in config.automations:
        if isinstance(automation.action, kind):
            users = named.setdefault(name(automation.action), [])
            if automation.name not in users:
                users.append(automation.name)
    return named


def _automations(names: list[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    return f"automation{'s' if len(names) != 1 else ''} {listed}"


async def _listed(check: Awaitable[Check]) -> list[Check]:
    return [await check]


async def _in_daemon_thread(work: Callable[[], None], timeout: float) -> None:
    """`work()` in a daemon thread, waited for up to `timeout` seconds (then `TimeoutError`).

    Not `asyncio.to_thread`: MLflow's HTTP client retries for minutes, and `asyncio.run` waits
    for its executor's threads at exit; a daemon thread left behind ends with the process.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="ml-automations-check", daemon=True).start()
    async with asyncio.timeout(timeout):
        await done


def _reason(exc: BaseException, secrets: Iterable[Any] = ()) -> str:
    """An exception as `Type: first line of its message`, scrubbed."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    reason = f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__
    return scrub(reason, secrets)


def _secrets(config: AutomationsConfig) -> list[str]:
    """Every secret a line could quote: the config's, $WANDB_API_KEY and Prefect's."""
    found: list[Any] = [config.receiver.token, config.receiver.secret]
    found += [s.api_key for s in config.sources if isinstance(s, WandbSourceSettings)]
    found.append(os.environ.get("WANDB_API_KEY"))
    try:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        found += [getattr(api, "key", None), getattr(api, "auth_string", None)]
    except Exception:
        pass
    values = [v.get_secret_value() if hasattr(v, "get_secret_value") else v for v in found]
    return [v for v in values if isinstance(v, str) and v]


__all__ = ["Check", "run_checks"]
