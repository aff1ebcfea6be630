"""The Weights & Biases source: W&B's GraphQL API over httpx (no `wandb` package needed).

Every document below asks only for fields, and passes only arguments of the types, that W&B's
own SDK sends (a test checks them against the documents in the `wandb` package); the answers are
read as W&B's code says W&B writes them:

- Runs of the watched projects, most recently active first (`-heartbeat_at`), re-reading an
  overlapping window because W&B's run filters lag. W&B marks a run `crashed` some minutes after
  its heartbeats stop, without a new heartbeat, so the runs last seen alive that did not show up
  are asked for by name. A state change is `RUN_STATE`; a running run's new `heartbeatAt` is a
  `RUN_HEARTBEAT` (a sign of life for `RUN_STALLED`).
- `historyKeys` is a JSON object (`wandb/apis/public/runs.py` reads `lastStep` from it); when
  `lastStep` moved past the last step seen, the new history rows are read in pages of 1,000 steps
  (`history(minStep, maxStep, samples)`, `maxStep` exclusive — W&B down-samples a range larger
  than `samples`) and become `METRIC` points. System metrics (`system.*`) come from the run's
  `events` stream, by time, and only when an automation watches one.
- Artifact collections of the watched projects and registries. A registry is the project
  `wandb-registry-<name>` of the *organization's* entity, found from the team entity as W&B's SDK
  does (or named as `org_entity`). A version is numbered as its collection numbers it (the edge's
  `version`; `versionIndex` counts the source sequence), only `COMMITTED` versions count, and a
  version's aliases are those it holds in this collection — never `vN` or `latest`. New versions
  are `CREATE_ARTIFACT` (a project) or `LINK_ARTIFACT` (a registry), versions gone from a
  portfolio `UNLINK_ARTIFACT`, and aliases and tags are found by snapshot diff
  (`sources/snapshots.py`): W&B keeps no time for them.
- A project or registry that does not exist, or that the key can not see (W&B answers
  `project: null`), is a source error naming it. 429 and 5xx answers are retried with back-off,
  honouring `Retry-After`; anything else fails the poll, and its cursor stays where it was.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from prefect_ml_automations.config import WandbSourceSettings
from prefect_ml_automations.errors import SourceError, SourceUnavailable
from prefect_ml_automations.events import Event, RunStateEvent, event_from_dict
from prefect_ml_automations.sources import Cursor, Poll
from prefect_ml_automations.sources.snapshots import (
    CollectionSnapshot,
    SeenVersion,
    apply_change,
    collection_changes,
)

#: A registry is the project `wandb-registry-<name>` (W&B's `sdk/artifacts/_validators.py`).
REGISTRY_PREFIX = "wandb-registry-"
DEFAULT_BASE_URL: str = WandbSourceSettings.model_fields["base_url"].default
#: Runs active this long before the last poll are read again (W&B's filters lag).
OVERLAP = timedelta(minutes=5)
#: Waits before retrying a 429 / 5xx answer (seconds); a Retry-After header wins.
RETRY_DELAYS = (1.0, 4.0, 10.0)
#: Steps of history asked for at once (W&B's own page size; larger ranges are down-sampled).
HISTORY_PAGE = 1000
#: Rows of a run's system-metric stream asked for (W&B serves the whole stream, sampled).
SYSTEM_SAMPLES = 10_000
#: Items asked for per page (W&B may hand out fewer).
PAGE = 100
#: Run names asked for at once when looking up runs that went silent.
NAMES_PER_QUERY = 100

# `wandb/apis/public/runs.py` (`_create_runs_query`, `RUN_FRAGMENT`).
RUNS = """
query Runs(
  $project: String!, $entity: String!, $cursor: String, $perPage: Int, $order: String,
  $filters: JSONString
) {
  project(name: $project, entityName: $entity) {
    runs(filters: $filters, after: $cursor, first: $perPage, order: $order) {
      edges { node { name displayName state createdAt heartbeatAt user { username } historyKeys } }
      pageInfo { endCursor hasNextPage }
    }
  }
}"""

# `core/api/graphql/query_runhistory_backend.graphql` (W&B's own history scan).
HISTORY = """
query HistoryPage(
  $entity: String!, $project: String!, $run: String!, $minStep: Int64!, $maxStep: Int64!,
  $pageSize: Int!
) {
  project(name: $project, entityName: $entity) {
    run(name: $run) { history(minStep: $minStep, maxStep: $maxStep, samples: $pageSize) }
  }
}"""

# `wandb/apis/public/runs.py` (`Run._full_history` with `stream="system"`).
SYSTEM = """
query RunFullHistory($project: String!, $entity: String!, $name: String!, $samples: Int) {
  project(name: $project, entityName: $entity) { run(name: $name) { events(samples: $samples) } }
}"""

# `tools/graphql_codegen/artifacts/artifact_collections.graphql` (`ProjectArtifactCollections`).
COLLECTIONS = """
query ProjectArtifactCollections(
  $entity: String!, $project: String!, $cursor: String, $perPage: Int
) {
  project(entityName: $entity, name: $project) {
    artifactCollections(after: $cursor, first: $perPage) {
      pageInfo { endCursor hasNextPage }
      edges { node { __typename name type: defaultArtifactType { name } } }
    }
  }
}"""

# `tools/graphql_codegen/artifacts/artifacts.graphql` (`ProjectArtifacts`, `ArtifactFragment`).
VERSIONS = """
query ProjectArtifacts(
  $entity: String!, $project: String!, $type: String!, $collection: String!, $cursor: String,
  $perPage: Int, $filters: JSONString
) {
  project(entityName: $entity, name: $project) {
    artifactType(name: $type) {
      artifactCollection(name: $collection) {
        artifacts(after: $cursor, first: $perPage, filters: $filters) {
          pageInfo { endCursor hasNextPage }
          edges {
            version
            node {
              state createdAt tags { name }
              aliases { alias artifactCollection { name project { name entity { name } } } }
            }
          }
        }
      }
    }
  }
}"""

# `tools/graphql_codegen/artifacts/misc.graphql` (`FetchOrgInfoFromEntity`).
ORGANIZATION = """
query FetchOrgInfoFromEntity($entity: String!) {
  entity(name: $entity) {
    organization { name orgEntity { name } }
    user { organizations { name orgEntity { name } } }
  }
}"""

#: W&B run states as the states automations know; others (pending, preempting, …) fire nothing.
STATES = {
    "running": "running",
    "finished": "finished",
    "crashed": "failed",
    "failed": "failed",
    "killed": "killed",
}
#: States from which W&B may still move a run on its own (a crash is declared, not reported).
ALIVE = {"running", "pending", "preempting"}
_VERSION_ALIAS = re.compile(r"v\d+")


def graphql_errors(body: Any) -> list[str]:
    """The messages of a GraphQL answer's `errors` (none when it has none)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(e.get("message", e) if isinstance(e, dict) else e) for e in errors]


class GraphQLRefused(SourceError):
    """W&B answered a query with GraphQL errors (an unknown field, a bad argument, …)."""

    def __init__(self, where: str, messages: list[str]) -> None:
        super().__init__(f"{where} refused a query: {'; '.join(messages)}.")
        self.messages = messages


class WandbAPI:
    """W&B's GraphQL endpoint: `POST <base>/graphql` with HTTP Basic `api:<API key>`.

    `query` returns an answer's `data`. 429 and 5xx answers are retried after `retry_delays`
    (a `Retry-After` header wins; `None`: `RETRY_DELAYS`); anything else is a `SourceError` that
    says what to fix — `key_hint` for a refused key — or, for GraphQL errors, `GraphQLRefused`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        key_hint: str,
        retry_delays: Sequence[float] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.where = f"W&B at {base_url}"
        self.key_hint = key_hint
        self.retry_delays = retry_delays
        self.calls = 0
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), auth=("api", api_key), timeout=60, transport=transport
        )

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        where = self.where
        delays = RETRY_DELAYS if self.retry_delays is None else tuple(self.retry_delays)
        for delay in (*delays, None):
            self.calls += 1
            try:
                response = self._http.post(
                    "/graphql", json={"query": document, "variables": variables}
                )
            except httpx.TransportError as exc:
                reason = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
                problem = f"could not be reached ({reason})"
            else:
                if response.status_code == 200:
                    return self._data(response)
                problem = f"answered HTTP {response.status_code}"
                if response.status_code in (401, 403):
                    raise SourceError(f"{where} {problem}: {self.key_hint}")
                if response.status_code != 429 and response.status_code < 500:
                    raise SourceError(f"{where} {problem}: {response.text[:200]!r}.")
                retry_after = response.headers.get("Retry-After")
                if delay is not None and retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), 60.0)
            if delay is None:
                break
            time.sleep(delay)
        raise SourceUnavailable(f"{where} {problem}{', after retries' if delays else ''}.")

    def _data(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"{self.where} answered with something not JSON.") from None
        if not isinstance(body, dict):
            raise SourceError(f"{self.where} answered with JSON that is not an object.")
        messages = graphql_errors(body)
        if messages:
            raise GraphQLRefused(self.where, messages)
        data = body.get("data")
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        self._http.close()


class RunMemory(BaseModel):
    """What the last poll saw of one run."""

    state: str | None = Field(default=None, description="Its state, as automations know it.")
    alive: bool = Field(default=False, description="W&B may still mark it crashed.")
    step: int = Field(default=-1, description="The last history step read.")
    system: float = Field(default=0.0, description="The time of the last system row read.")
    heartbeat: datetime | None = Field(
        default=None, description="Its last heartbeat seen while it was running (`heartbeatAt`)."
    )


class WandbCursor(Cursor):
    """Where a W&B source left off."""

    version: Literal[2]
    polled_at: datetime
    org_entity: str | None = None
    #: Projects (`entity/project`) and registries (`wandb-registry-<name>`) being watched:
    #: one added later starts watching from then on, like a new source.
    watching: list[str] = Field(default_factory=list)
    #: `entity/project/run id` -> what the last poll saw of it.
    runs: dict[str, RunMemory] = Field(default_factory=dict)
    #: `entity/project/collection` or `wandb-registry-<name>/collection` -> its versions.
    collections: dict[str, CollectionSnapshot] = Field(default_factory=dict)


class WandbSource:
    """Polls the W&B projects and registries the automations watch."""

    def __init__(
        self,
        settings: WandbSourceSettings,
        *,
        projects: set[str],
        registries: set[str],
        system_metrics: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = settings.name
        #: Whether to read runs' system-metric streams (only if an automation watches one:
        #: W&B serves the whole stream each time).
        self.system_metrics = system_metrics
        self.settings = settings
        self.projects = projects
        self.registries = registries
        key = (
            settings.api_key.get_secret_value()
            if settings.api_key
            else os.environ.get("WANDB_API_KEY")
        )
        if not key:
            raise SourceError(
                f"Source {self.name!r} has no W&B API key: set api_key in the config "
                '(for example "${WANDB_API_KEY}") or export WANDB_API_KEY.'
            )
        self.api = WandbAPI(
            settings.base_url,
            key,
            key_hint=f"check the API key of source {self.name!r}.",
            transport=transport,
        )

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        """One GraphQL request's `data` (see `WandbAPI.query`)."""
        return self.api.query(document, **variables)

    def _edges(
        self, document: str, path: tuple[str, ...], missing: str, **variables: Any
    ) -> Iterator[dict[str, Any]]:
        """Every edge of a paged connection at `path`; `missing` is the error when its first
        step is null (W&B's answer for a project that does not exist or can not be seen)."""
        cursor = None
        while True:
            data: Any = self.query(document, cursor=cursor, perPage=PAGE, **variables)
            for depth, key in enumerate(path):
                data = data.get(key) if isinstance(data, dict) else None
                if data is None:
                    if depth == 0:
                        raise SourceError(missing)
                    return  # a collection deleted between two requests
            yield from data["edges"]
            if not data["pageInfo"]["hasNextPage"]:
                return
            cursor = data["pageInfo"]["endCursor"]

    # -- a poll ---------------------------------------------------------------------------

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        self.api.calls = 0
        state = WandbCursor.load(cursor, self.name) or WandbCursor(version=2, polled_at=now)
        out = Poll()
        for project in sorted(self.projects):
            new = project not in state.watching
            entity, name = self._split(project)
            missing = (
                f"W&B project {entity}/{name} was not found, or the API key of source "
                f"{self.name!r} can not see it: check the project's name and the key's access."
            )
            self._runs(
                project, entity, name, state, None if new else state.polled_at, missing,
                out.filling if new else out.events,
            )  # fmt: skip
            self._collections(
                {"project": project}, project, entity, name, state, new, now, missing,
                out.versions if new else out.events,
            )  # fmt: skip
            if new:
                state.watching.append(project)
        for registry in sorted(self.registries):
            home = f"{REGISTRY_PREFIX}{registry}"
            org = self._org_entity(state)
            missing = (
                f"W&B registry {registry!r} (project {home} of organization entity {org!r}) was "
                f"not found, or the API key of source {self.name!r} can not see it: check the "
                "registry's name and the key's access (or set org_entity)."
            )
            new = home not in state.watching
            self._collections(
                {"registry": registry}, home, org, home, state, new, now, missing,
                out.versions if new else out.events,
            )  # fmt: skip
            if new:
                state.watching.append(home)
        state.polled_at = now
        out.cursor = state.dump()
        out.calls = self.api.calls
        return out

    def _split(self, project: str) -> tuple[str, str]:
        entity, _, name = project.rpartition("/")
        return (entity or self.settings.entity), name

    def _org_entity(self, state: WandbCursor) -> str:
        """The entity of the organization that holds the registries (W&B's SDK resolves it from
        the team entity the same way: the entity's organization, else the user's only one)."""
        if self.settings.org_entity:
            return self.settings.org_entity
        if state.org_entity:
            return state.org_entity
        team = self.settings.entity
        found = self.query(ORGANIZATION, entity=team).get("entity")
        if not isinstance(found, dict):
            raise SourceError(
                f"W&B entity {team!r} was not found, or the API key of source {self.name!r} can "
                "not see it: check the source's entity."
            )
        candidates = [found.get("organization")]
        if not (candidates[0] or {}).get("orgEntity"):
            candidates = list((found.get("user") or {}).get("organizations") or [])
        names = sorted({(o.get("orgEntity") or {}).get("name") or "" for o in candidates if o})
        names = [n for n in names if n]
        if len(names) != 1:
            which = f"it belongs to several: {', '.join(names)}" if names else "it belongs to none"
            raise SourceError(
                f"Source {self.name!r}: the W&B organization that holds the registries can not be "
                f"found from entity {team!r} ({which}); set org_entity in the source's settings."
            )
        state.org_entity = names[0]
        return names[0]

    # -- runs -----------------------------------------------------------------------------

    def _runs(
        self,
        project: str,
        entity: str,
        name: str,
        state: WandbCursor,
        since: datetime | None,
        missing: str,
        sink: list[Event],
    ) -> None:
        common = {"entity": entity, "project": name, "missing": missing, "order": "-heartbeat_at"}
        if since is None:  # the first look: every run, to fill windows and baselines
            runs = [e["node"] for e in self._edges(RUNS, ("project", "runs"), **common)]
        else:
            after = (since - OVERLAP).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            active = json.dumps({"heartbeat_at": {"$gt": after}})
            runs = [
                e["node"] for e in self._edges(RUNS, ("project", "runs"), filters=active, **common)
            ]
            shown = {run["name"] for run in runs}
            prefix = f"{project}/"
            silent = sorted(
                key.removeprefix(prefix)
                for key, memory in state.runs.items()
                if memory.alive and key.startswith(prefix) and key.removeprefix(prefix) not in shown
            )
            for start in range(0, len(silent), NAMES_PER_QUERY):
                names = json.dumps({"name": {"$in": silent[start : start + NAMES_PER_QUERY]}})
                runs += [
                    e["node"]
                    for e in self._edges(RUNS, ("project", "runs"), filters=names, **common)
                ]
        found: list[tuple[str, int, Event]] = []
        for run in sorted(runs, key=lambda r: (_utc(r["createdAt"]), r["name"])):
            memory = state.runs.setdefault(f"{project}/{run['name']}", RunMemory())
            found += self._run_events(project, entity, name, run, memory)
        found.sort(key=lambda item: (item[0], item[1]))
        sink.extend(event for _, _, event in found)

    def _run_events(
        self, project: str, entity: str, name: str, run: dict[str, Any], memory: RunMemory
    ) -> list[tuple[str, int, Event]]:
        base = {
            "project": project,
            "run_id": run["name"],
            "run_name": run.get("displayName"),
            "user": (run.get("user") or {}).get("username"),
            "run_created_at": _utc(run["createdAt"]),
        }
        found: list[tuple[str, int, Event]] = []
        keys = run.get("historyKeys")
        if isinstance(keys, str):  # a JSON object; an older server may have written it as text
            keys = json.loads(keys or "{}")
        last_step = int((keys or {}).get("lastStep", -1))
        for start in range(memory.step + 1, last_step + 1, HISTORY_PAGE):
            stop = min(start + HISTORY_PAGE, last_step + 1)
            page = self.query(
                HISTORY,
                entity=entity,
                project=name,
                run=run["name"],
                minStep=start,
                maxStep=stop,
                pageSize=HISTORY_PAGE,
            )
            for row in map(json.loads, _run_field(page, "history")):
                if "_step" not in row:
                    continue
                when = _from_seconds(row.get("_timestamp"))
                found += [
                    (when, 1, _metric(base, metric, value, when, step=row["_step"]))
                    for metric, value in row.items()
                    if not metric.startswith("_")
                ]
        memory.step = max(memory.step, last_step)
        raw_state = str(run.get("state") or "").lower()
        state = STATES.get(raw_state)
        moved = raw_state in ALIVE or (state is not None and state != memory.state)
        if self.system_metrics and moved:
            page = self.query(
                SYSTEM, entity=entity, project=name, name=run["name"], samples=SYSTEM_SAMPLES
            )
            for row in map(json.loads, _run_field(page, "events")):
                moment = float(row.get("_timestamp") or 0)
                if moment <= memory.system:
                    continue
                when = _from_seconds(moment)
                found += [
                    (when, 1, _metric(base, metric, value, when))
                    for metric, value in row.items()
                    if metric.startswith("system.")
                ]
                memory.system = moment
        if state is not None and state != memory.state:
            when = _utc(run.get("heartbeatAt") or run["createdAt"])
            found.append(
                (
                    when,
                    2,
                    event_from_dict(
                        {**base, "type": "RUN_STATE", "state": state, "timestamp": when}
                    ),
                )
            )
            memory.state = state
        beat = run.get("heartbeatAt")
        if state == "running" and beat:
            # A sign of life without a metric point: it keeps the run from counting as stalled.
            beat_at = datetime.fromisoformat(_utc(beat))
            if memory.heartbeat is None or beat_at > memory.heartbeat:
                heartbeat = {**base, "type": "RUN_HEARTBEAT", "timestamp": beat_at}
                found.append((beat_at.isoformat(), 3, event_from_dict(heartbeat)))
                memory.heartbeat = beat_at
        memory.alive = raw_state in ALIVE
        return found

    # -- artifacts ------------------------------------------------------------------------

    def _collections(
        self,
        place: dict[str, Any],
        home: str,
        entity: str,
        name: str,
        state: WandbCursor,
        new: bool,
        now: datetime,
        missing: str,
        sink: list[Event],
    ) -> None:
        """Diff every collection of a project (`home` is `entity/project`) or a registry (`home`
        is `wandb-registry-<name>`, `entity` the organization's) against its snapshot. When the
        project or registry is `new`, nothing fires: only the versions W&B dates (those created
        in a project's sequences; a link into a portfolio has no time) go to `sink`."""
        edges = self._edges(
            COLLECTIONS,
            ("project", "artifactCollections"),
            missing,
            entity=entity,
            project=name,
        )
        for collection in sorted((e["node"] for e in edges), key=lambda c: c["name"]):
            portfolio = collection["__typename"] == "ArtifactPortfolio"
            seen = self._versions(entity, name, collection, now if portfolio else None)
            key = f"{home}/{collection['name']}"
            events, state.collections[key] = collection_changes(
                {**place, "collection": collection["name"]},
                state.collections.get(key),
                seen,
                arrival="LINK_ARTIFACT" if portfolio else "CREATE_ARTIFACT",
                unlinks=portfolio,
                now=now.isoformat(),
            )
            if not new:
                sink.extend(events)
            elif not portfolio:
                sink.extend(e for e in events if e.type == "CREATE_ARTIFACT")

    def _versions(
        self, entity: str, name: str, collection: dict[str, Any], linked: datetime | None
    ) -> dict[int, SeenVersion]:
        """The committed versions of a collection, numbered as the collection numbers them, with
        the aliases they hold in it. W&B keeps no time for a link: `linked` stands in for it."""
        found: dict[int, SeenVersion] = {}
        edges = self._edges(
            VERSIONS,
            ("project", "artifactType", "artifactCollection", "artifacts"),
            f"W&B project {entity}/{name} vanished while it was read; the next poll reads it.",
            entity=entity,
            project=name,
            type=(collection.get("type") or {}).get("name", ""),
            collection=collection["name"],
            filters=json.dumps({"state": "COMMITTED"}),
        )
        for edge in edges:
            node = edge["node"]
            if node.get("state", "COMMITTED") != "COMMITTED":
                continue  # still uploading, or deleted
            aliases = frozenset(
                a["alias"]
                for a in node.get("aliases") or []
                if _in_collection(a.get("artifactCollection") or {}, entity, name, collection)
                and a["alias"] != "latest"
                and not _VERSION_ALIAS.fullmatch(a["alias"])
            )
            created = linked.isoformat() if linked is not None else _utc(node["createdAt"])
            found[int(str(edge["version"]).removeprefix("v"))] = SeenVersion(
                aliases=aliases,
                tags=frozenset(t["name"] for t in node.get("tags") or []),
                created=created,
            )
        return found


def _in_collection(
    owner: dict[str, Any], entity: str, project: str, collection: dict[str, Any]
) -> bool:
    """Whether an alias belongs to this collection (an artifact's aliases span all of its)."""
    where = owner.get("project") or {}
    owner_entity = (where.get("entity") or {}).get("name", entity)
    return bool(
        owner.get("name") == collection["name"]
        and where.get("name", project) == project
        and owner_entity == entity
    )


def _run_field(page: dict[str, Any], field: str) -> list[str]:
    run = (page.get("project") or {}).get("run") or {}
    return list(run.get(field) or [])


def _metric(
    base: dict[str, Any], metric: str, value: Any, when: str, *, step: int | None = None
) -> Event:
    event = {**base, "type": "METRIC", "metric": metric, "value": value, "timestamp": when}
    if step is not None:
        event["step"] = step
    return event_from_dict(event)


def _utc(text: str) -> str:
    """W&B times are UTC, often written without an offset."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _from_seconds(value: Any) -> str:
    return datetime.fromtimestamp(float(value or 0), tz=UTC).isoformat()


def source_for(settings: WandbSourceSettings, automations: list[Any]) -> WandbSource:
    """The W&B source watching what the automations that name it (or no source) look at."""
    mine = [a for a in automations if a.source in (None, settings.name)]
    projects = {a.project for a in mine if a.project is not None}
    registries = {a.scope.registry for a in mine if getattr(a.scope, "registry", None)}
    system = any(str(getattr(a.event, "metric", "")).startswith("system.") for a in mine)
    return WandbSource(settings, projects=projects, registries=registries, system_metrics=system)


# -- W&B's webhook calls --------------------------------------------------------------------------

#: `${artifact_version_string}`: `[entity/]project/collection:<vN or an alias>` (W&B's docs show
#: both `:v3` and `:production`).
_VERSION_STRING = re.compile(
    r"^(?:(?P<entity>[^/]+)/)?(?P<project>[^/]+)/(?P<collection>[^:/]+):(?P<handle>[^:/]+)$"
)
#: W&B's event names (as `${event_type}` renders them) for the ones spelled differently here.
_WANDB_TYPES = {"LINK_MODEL": "LINK_ARTIFACT"}
_ARTIFACT_TYPES = {
    "LINK_ARTIFACT",
    "UNLINK_ARTIFACT",
    "CREATE_ARTIFACT",
    "ADD_ARTIFACT_ALIAS",
    "ADD_ARTIFACT_TAG",
    "REMOVE_ARTIFACT_TAG",
}
#: Where a run's id can be read from a W&B run URL (`https://<host>/<entity>/<project>/runs/<id>`).
_RUN_URL = re.compile(r"/(?P<entity>[^/]+)/(?P<project>[^/]+)/runs/(?P<run>[^/?#]+)")


class WebhookProblem(ValueError):
    """A W&B webhook call that can not be turned into an event; the message says what to add."""


class Deferred(Exception):
    """A W&B call that names no version number: the poller, which reads W&B, reports it."""


def webhook_changes(
    cursor: dict[str, Any] | None,
    payload: dict[str, Any],
    entity: str,
    now: datetime,
    source: str = "wandb",
) -> tuple[list[Event], dict[str, Any] | None]:
    """The event of one W&B webhook call, and the source's cursor with the change applied.

    W&B's body is the payload template the automation was given, filled from W&B's documented
    variables: `${event_type}`, `${event_author}`, `${entity_name}`, `${project_name}`,
    `${artifact_version_string}`, `${artifact_collection_name}`, `${alias}`, `${tag}`. A change the
    poller already reported (it is in the cursor's snapshot) gives no event, and a change given
    here is not reported again by the poller. Run events (W&B documents no run variables) are
    read from `run_id` or a run URL (`run_url`), with `run_status`.

    Raises `WebhookProblem` naming what is missing, or `Deferred` when the version is given by
    an alias only (`…:production`) and a poll must find its number.
    """
    raw_type = str(payload.get("event_type") or "")
    kind = _WANDB_TYPES.get(raw_type, raw_type)
    state = WandbCursor.load(cursor, source)
    user = _text(payload.get("event_author"))
    when = now.isoformat()
    if kind == "RUN_STATE":
        event = _run_state_call(payload, entity, user, when)
        if state is not None:
            memory = state.runs.setdefault(f"{event.project}/{event.run_id}", RunMemory())
            if memory.state == event.state:
                return [], cursor
            memory.state = event.state
            memory.alive = event.state == "running"  # so a silent crash is still looked for
            return [event], state.dump()
        return [event], cursor
    if kind not in _ARTIFACT_TYPES:
        raise WebhookProblem(
            f"event_type {raw_type!r} can not be received: W&B's calls carry no metric values, "
            "so run-metric automations are read by polling; pushed calls may be "
            f"{', '.join(sorted(_ARTIFACT_TYPES | {'RUN_STATE'}))}"
        )
    text = _text(payload.get("artifact_version_string")) or ""
    match = _VERSION_STRING.match(text)
    if match is None:
        raise WebhookProblem(
            f"artifact_version_string {text!r} must look like entity/project/collection:v3 "
            "(put ${artifact_version_string} into the webhook's payload)"
        )
    project, collection, handle = match["project"], match["collection"], match["handle"]
    owner = match["entity"] or _text(payload.get("entity_name")) or entity
    registry = project.startswith(REGISTRY_PREFIX)
    place: dict[str, Any] = (
        {"registry": project.removeprefix(REGISTRY_PREFIX)}
        if registry
        else {"project": f"{owner}/{project}"}
    )
    change: dict[str, Any] = {}
    if kind == "ADD_ARTIFACT_ALIAS":
        change = {"alias": _text(payload.get("alias")) or handle}
    elif kind in ("ADD_ARTIFACT_TAG", "REMOVE_ARTIFACT_TAG"):
        tag = _text(payload.get("tag"))
        if not tag:
            raise WebhookProblem(f"a {kind} call needs the tag: put ${{tag}} into the payload")
        change = {"tag": tag}
    key = f"{project if registry else owner + '/' + project}/{collection}"
    snapshot = None if state is None else state.collections.get(key)
    if not _VERSION_ALIAS.fullmatch(handle):
        # `…:production` names the version by an alias: which number holds it is only known to
        # W&B, and the poller reads that (an alias it already reported is no new event).
        if snapshot is not None and any(handle in v.aliases for v in snapshot.values()):
            return [], cursor
        raise Deferred(f"{text!r} names no version number")
    change_event = event_from_dict(
        {
            "type": kind,
            **place,
            "collection": collection,
            "version": int(handle[1:]),
            "user": user,
            "timestamp": when,
            **change,
        }
    )
    if state is None:
        return [change_event], cursor
    if not apply_change(state.collections.setdefault(key, {}), change_event):
        return [], cursor
    return [change_event], state.dump()


def _run_state_call(
    payload: dict[str, Any], entity: str, user: str | None, when: str
) -> RunStateEvent:
    url = _RUN_URL.search(_text(payload.get("run_url")) or "")
    run_id = _text(payload.get("run_id")) or (url["run"] if url else None)
    owner = _text(payload.get("entity_name")) or (url["entity"] if url else None) or entity
    project = _text(payload.get("project_name")) or (url["project"] if url else None)
    status = (_text(payload.get("run_status")) or _text(payload.get("run_state")) or "").lower()
    missing = [
        name
        for name, value in (
            ("${run_id} (or ${run_url})", run_id),
            ("${project_name}", project),
            ("${run_status}", status),
        )
        if not value
    ]
    if missing:
        raise WebhookProblem(
            f"a RUN_STATE call needs {', '.join(missing)} in its payload to name the run and its "
            "state"
        )
    state = STATES.get(status)
    if state is None:
        raise WebhookProblem(
            f"run_status {status!r} is not a state automations know (running, finished, "
            "failed, crashed, killed)"
        )
    return RunStateEvent.model_validate(
        {
            "type": "RUN_STATE",
            "project": f"{owner}/{project}",
            "run_id": run_id,
            "run_name": _text(payload.get("run_name")),
            "user": user,
            "state": state,
            "timestamp": when,
        }
    )


def _text(value: Any) -> str | None:
    """A payload variable's value: W&B renders a variable that does not apply as empty."""
    return value if isinstance(value, str) and value.strip() else None
