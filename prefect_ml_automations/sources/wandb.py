"""The Weights & Biases source: W&B's GraphQL API over httpx (no `wandb` package needed).

- Runs of the watched projects, most recently active first (`-heartbeat_at`), re-reading an
  overlapping window because W&B's run filters lag: a state change is `RUN_STATE`; new history
  rows only (from the last step seen, `historyKeys.lastStep` telling whether there are any) are
  `METRIC` points; system metrics (`system.*`) come from the run's events stream, by time.
- Artifact collections of the watched projects and registries (`wandb-registry-<name>` projects
  of the organization's entity, whose collections are portfolios): new versions are
  `CREATE_ARTIFACT` (in a project) or `LINK_ARTIFACT` (in a registry), versions gone from a
  portfolio `UNLINK_ARTIFACT`, aliases and tags by snapshot diff (W&B stamps no time on them).
- 429 and 5xx answers are retried with back-off, honouring `Retry-After`; anything else fails
  the poll — and with it the cycle's transaction, so no cursor moves past data not read.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from prefect_ml_automations.config import WandbSourceSettings
from prefect_ml_automations.errors import SourceError
from prefect_ml_automations.events import Event, event_from_dict
from prefect_ml_automations.sources import Poll

REGISTRY_PREFIX = "wandb-registry-"
#: Runs active this long before the last poll are read again (W&B's filters lag).
OVERLAP = timedelta(minutes=5)
#: Waits before retrying a 429 / 5xx answer (seconds); a Retry-After header wins.
RETRY_DELAYS = (1.0, 4.0, 10.0)

RUNS = """
query Runs($entity: String!, $project: String!, $cursor: String, $filters: JSONString) {
  project(name: $project, entityName: $entity) {
    runs(first: 100, after: $cursor, order: "-heartbeat_at", filters: $filters) {
      edges { node { name displayName state createdAt heartbeatAt user { username } historyKeys } }
      pageInfo { endCursor hasNextPage }
    }
  }
}"""

HISTORY = """
query History(
  $entity: String!, $project: String!, $run: String!, $minStep: Int64!, $maxStep: Int64!
) {
  project(name: $project, entityName: $entity) {
    run(name: $run) { history(minStep: $minStep, maxStep: $maxStep, samples: 1000000) }
  }
}"""

SYSTEM = """
query SystemMetrics($entity: String!, $project: String!, $run: String!) {
  project(name: $project, entityName: $entity) { run(name: $run) { events(samples: 100000) } }
}"""

COLLECTIONS = """
query Collections($entity: String!, $project: String!, $cursor: String) {
  project(name: $project, entityName: $entity) {
    artifactCollections(first: 50, after: $cursor) {
      edges { node { __typename name
        artifacts(first: 100) { edges { version node {
          versionIndex createdAt tags { name } aliases { alias } } } } } }
      pageInfo { endCursor hasNextPage }
    }
  }
}"""

STATES = {
    "running": "running",
    "finished": "finished",
    "crashed": "failed",
    "failed": "failed",
    "killed": "killed",
}


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
        self.calls = 0
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
        self._http = httpx.Client(
            base_url=settings.base_url, auth=("api", key), timeout=60, transport=transport
        )

    # -- GraphQL ----------------------------------------------------------------------------

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        """One GraphQL request, with back-off on 429 and 5xx; its `data`."""
        for delay in (*RETRY_DELAYS, None):
            self.calls += 1
            try:
                response = self._http.post(
                    "/graphql", json={"query": document, "variables": variables}
                )
            except httpx.TransportError as exc:
                problem = f"could not be reached ({exc.__class__.__name__})"
            else:
                if response.status_code == 200:
                    body = response.json()
                    if body.get("errors"):
                        raise SourceError(
                            f"W&B at {self.settings.base_url} refused a query: "
                            f"{body['errors'][0].get('message', body['errors'][0])}."
                        )
                    return dict(body.get("data") or {})
                problem = f"answered HTTP {response.status_code}"
                if response.status_code in (401, 403):
                    raise SourceError(
                        f"W&B at {self.settings.base_url} {problem}: check the API key of "
                        f"source {self.name!r}."
                    )
                if response.status_code != 429 and response.status_code < 500:
                    raise SourceError(f"W&B at {self.settings.base_url} {problem}.")
                retry_after = response.headers.get("Retry-After")
                if delay is not None and retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), 60.0)
            if delay is None:
                break
            time.sleep(delay)
        raise SourceError(f"W&B at {self.settings.base_url} {problem}, after retries.")

    def _pages(
        self, document: str, path: tuple[str, ...], **variables: Any
    ) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        cursor = None
        while True:
            data: Any = self.query(document, cursor=cursor, **variables)
            for key in path:
                data = (data or {}).get(key)
            if not data:
                return nodes
            nodes.extend(edge["node"] for edge in data["edges"])
            if not data["pageInfo"]["hasNextPage"]:
                return nodes
            cursor = data["pageInfo"]["endCursor"]

    # -- a poll ---------------------------------------------------------------------------

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        self.calls = 0
        first = cursor is None
        state: dict[str, Any] = dict(cursor or {"runs": {}, "collections": {}})
        out = Poll()
        since = state.get("polled_at")
        for project in sorted(self.projects):
            entity, name = self._split(project)
            self._runs(
                project, entity, name, state["runs"], since, out.filling if first else out.events
            )
            self._collections(
                project, entity, name, None, state["collections"], first, now, out.events
            )
        for registry in sorted(self.registries):
            project = f"{REGISTRY_PREFIX}{registry}"
            self._collections(
                project,
                self.settings.entity,
                project,
                registry,
                state["collections"],
                first,
                now,
                out.events,
            )
        state["polled_at"] = now.isoformat()
        out.cursor = state
        out.calls = self.calls
        return out

    def _split(self, project: str) -> tuple[str, str]:
        entity, _, name = project.rpartition("/")
        return (entity or self.settings.entity), name

    def _runs(
        self,
        project: str,
        entity: str,
        name: str,
        seen: dict[str, Any],
        since: str | None,
        sink: list[Event],
    ) -> None:
        filters = None
        if since is not None:
            after = datetime.fromisoformat(since) - OVERLAP
            filters = json.dumps({"heartbeat_at": {"$gt": after.strftime("%Y-%m-%dT%H:%M:%S")}})
        runs = self._pages(RUNS, ("project", "runs"), entity=entity, project=name, filters=filters)
        found: list[tuple[str, int, Event]] = []
        for run in sorted(runs, key=lambda r: (r["createdAt"], r["name"])):
            key = f"{project}/{run['name']}"
            memory = seen.setdefault(key, {"state": None, "step": -1, "system": ""})
            base = {
                "project": project,
                "run_id": run["name"],
                "run_name": run.get("displayName"),
                "user": (run.get("user") or {}).get("username"),
                "run_created_at": _utc(run["createdAt"]),
            }
            keys = json.loads(run.get("historyKeys") or "{}") or {}
            last_step = int(keys.get("lastStep", -1))
            if last_step > memory["step"]:
                rows = self.query(
                    HISTORY,
                    entity=entity,
                    project=name,
                    run=run["name"],
                    minStep=memory["step"] + 1,
                    maxStep=last_step + 1,
                )["project"]["run"]["history"]
                for row in map(json.loads, rows):
                    when = _from_seconds(row.get("_timestamp"))
                    for metric, value in row.items():
                        if not metric.startswith("_") and "_step" in row:
                            found.append(
                                (
                                    when,
                                    1,
                                    event_from_dict(
                                        {
                                            **base,
                                            "type": "METRIC",
                                            "metric": metric,
                                            "step": row["_step"],
                                            "value": value,
                                            "timestamp": when,
                                        }
                                    ),
                                )
                            )
                memory["step"] = last_step
            state = STATES.get(run["state"])
            moved = state == "running" or (state is not None and state != memory["state"])
            if self.system_metrics and moved:
                rows = self.query(SYSTEM, entity=entity, project=name, run=run["name"])["project"][
                    "run"
                ]["events"]
                for row in map(json.loads, rows):
                    when = _from_seconds(row.get("_timestamp"))
                    if when <= memory["system"]:
                        continue
                    for metric, value in row.items():
                        if metric.startswith("system."):
                            found.append(
                                (
                                    when,
                                    1,
                                    event_from_dict(
                                        {
                                            **base,
                                            "type": "METRIC",
                                            "metric": metric,
                                            "value": value,
                                            "timestamp": when,
                                        }
                                    ),
                                )
                            )
                    memory["system"] = when
            if state is not None and state != memory["state"]:
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
                memory["state"] = state
        found.sort(key=lambda item: (item[0], item[1]))
        sink.extend(event for _, _, event in found)

    def _collections(
        self,
        project: str,
        entity: str,
        name: str,
        registry: str | None,
        snapshots: dict[str, Any],
        first: bool,
        polled: datetime,
        sink: list[Event],
    ) -> None:
        collections = self._pages(
            COLLECTIONS, ("project", "artifactCollections"), entity=entity, project=name
        )
        place = {"registry": registry} if registry is not None else {"project": project}
        now = polled.isoformat()  # W&B stamps no time on alias and tag changes
        for collection in sorted(collections, key=lambda c: c["name"]):
            key = f"{project}/{collection['name']}"
            before = snapshots.get(key, {})
            after: dict[str, Any] = {}
            for edge in collection["artifacts"]["edges"]:
                node = edge["node"]
                version = str(node["versionIndex"])
                after[version] = {
                    "aliases": sorted(
                        a["alias"] for a in node["aliases"] if a["alias"] != "latest"
                    ),
                    "tags": sorted(t["name"] for t in node.get("tags") or []),
                    "created": _utc(node["createdAt"]),
                }
            if not first:
                portfolio = collection["__typename"] == "ArtifactPortfolio"
                common = {**place, "collection": collection["name"]}
                for version, info in sorted(after.items(), key=lambda kv: int(kv[0])):
                    old = before.get(version)
                    common_v = {**common, "version": int(version)}
                    if old is None:
                        kind = "LINK_ARTIFACT" if portfolio else "CREATE_ARTIFACT"
                        sink.append(
                            event_from_dict(
                                {**common_v, "type": kind, "timestamp": info["created"]}
                            )
                        )
                        old = {"aliases": [], "tags": []}
                    for alias in sorted(set(info["aliases"]) - set(old["aliases"])):
                        sink.append(
                            event_from_dict(
                                {
                                    **common_v,
                                    "type": "ADD_ARTIFACT_ALIAS",
                                    "alias": alias,
                                    "timestamp": now,
                                }
                            )
                        )
                    for tag in sorted(set(info["tags"]) - set(old["tags"])):
                        sink.append(
                            event_from_dict(
                                {
                                    **common_v,
                                    "type": "ADD_ARTIFACT_TAG",
                                    "tag": tag,
                                    "timestamp": now,
                                }
                            )
                        )
                    for tag in sorted(set(old["tags"]) - set(info["tags"])):
                        sink.append(
                            event_from_dict(
                                {
                                    **common_v,
                                    "type": "REMOVE_ARTIFACT_TAG",
                                    "tag": tag,
                                    "timestamp": now,
                                }
                            )
                        )
                if portfolio:
                    for version in sorted(set(before) - set(after), key=int):
                        sink.append(
                            event_from_dict(
                                {
                                    **common,
                                    "version": int(version),
                                    "type": "UNLINK_ARTIFACT",
                                    "timestamp": now,
                                }
                            )
                        )
            snapshots[key] = after


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


_VERSION_STRING = re.compile(
    r"^(?:(?P<entity>[^/]+)/)?(?P<project>[^/]+)/(?P<collection>[^:/]+):v(?P<version>\d+)$"
)
#: W&B's event names for the ones spelled differently here.
_WANDB_TYPES = {"LINK_MODEL": "LINK_ARTIFACT"}


def webhook_changes(
    cursor: dict[str, Any] | None, payload: dict[str, Any], entity: str, now: datetime
) -> tuple[list[Event], dict[str, Any] | None]:
    """The event of one W&B webhook call, and the source's cursor with the change applied.

    W&B's body is the payload template the automation was given; the receiver understands one
    carrying W&B's own variables: `event_type`, `artifact_version_string`, `alias`, `tag`,
    `event_author`, and for run events `entity_name`, `project_name`, `run_id`, `run_name`,
    `run_status`. A change the poller already reported (it is in the cursor's snapshot) gives no
    event, and a change given here is not reported again by the poller.
    """
    kind = _WANDB_TYPES.get(str(payload.get("event_type")), str(payload.get("event_type")))
    when = now.isoformat()
    user = payload.get("event_author") or None
    if kind == "RUN_STATE":
        project = f"{payload.get('entity_name') or entity}/{payload.get('project_name')}"
        state = STATES.get(str(payload.get("run_status", "")).lower())
        run_id = str(payload.get("run_id") or "")
        if state is None or not run_id:
            raise ValueError(
                "a RUN_STATE call needs run_id and run_status (running, finished, failed, crashed)"
            )
        memory = (
            None
            if cursor is None
            else cursor.setdefault("runs", {}).setdefault(
                f"{project}/{run_id}", {"state": None, "step": -1, "system": ""}
            )
        )
        if memory is not None and memory["state"] == state:
            return [], cursor
        if memory is not None:
            memory["state"] = state
        event = {
            "type": "RUN_STATE",
            "project": project,
            "run_id": run_id,
            "state": state,
            "run_name": payload.get("run_name") or None,
            "user": user,
            "timestamp": when,
        }
        return [event_from_dict(event)], cursor
    match = _VERSION_STRING.match(str(payload.get("artifact_version_string", "")))
    if match is None:
        raise ValueError(
            "artifact_version_string must look like entity/project/collection:v3 "
            "(put ${artifact_version_string} into the webhook's payload)"
        )
    owner = match["entity"] or entity
    project, collection, version = match["project"], match["collection"], match["version"]
    place: dict[str, Any] = (
        {"registry": project.removeprefix(REGISTRY_PREFIX)}
        if project.startswith(REGISTRY_PREFIX)
        else {"project": f"{owner}/{project}"}
    )
    key = (
        f"{project if project.startswith(REGISTRY_PREFIX) else owner + '/' + project}/{collection}"
    )
    snapshot = None if cursor is None else cursor.setdefault("collections", {}).setdefault(key, {})
    known = snapshot is not None and version in snapshot
    info = (
        None
        if snapshot is None
        else snapshot.setdefault(version, {"aliases": [], "tags": [], "created": when})
    )
    change: dict[str, Any] = {}
    if kind == "ADD_ARTIFACT_ALIAS":
        change = {"alias": payload.get("alias")}
    elif kind in ("ADD_ARTIFACT_TAG", "REMOVE_ARTIFACT_TAG"):
        change = {"tag": payload.get("tag")}
    if info is not None:
        value = next(iter(change.values()), None)
        seen = {
            "ADD_ARTIFACT_ALIAS": value in info["aliases"],
            "ADD_ARTIFACT_TAG": value in info["tags"],
            "REMOVE_ARTIFACT_TAG": value not in info["tags"],
        }.get(kind, known)  # a new version: seen if the snapshot had it
        if seen:
            return [], cursor
        if kind == "ADD_ARTIFACT_ALIAS":
            info["aliases"] = sorted({*info["aliases"], value})
        elif kind == "ADD_ARTIFACT_TAG":
            info["tags"] = sorted({*info["tags"], value})
        elif kind == "REMOVE_ARTIFACT_TAG":
            info["tags"] = [t for t in info["tags"] if t != value]
    event = {
        "type": kind,
        **place,
        "collection": collection,
        "version": int(version),
        "user": user,
        "timestamp": when,
        **change,
    }
    return [event_from_dict(event)], cursor
