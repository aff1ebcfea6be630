"""A fake W&B GraphQL API for respx, shaped as W&B's own code says W&B answers.

It is a small GraphQL executor (graphql-core parses each request) over W&B-shaped objects: it
answers any query — ours, or the very documents W&B's SDK sends — with exactly the fields asked
for, fragments, aliases and `@include` honoured, and refuses a field W&B's types do not have with
a GraphQL error, as W&B's server does. `tests/test_wandb_fake.py` runs W&B's own documents through
it and validates the answers with W&B's generated response types. Each shape names the W&B file it
follows (paths in the `wandb/wandb` repository; the same files ship in the `wandb` package):

- runs: `wandb/apis/public/runs.py` (`RUN_FRAGMENT`, `_create_runs_query`): `historyKeys` is a
  JSON *object* (`lastHistoryStep` does `.get("lastStep")`), `config` / `summaryMetrics` /
  `systemMetrics` JSON *strings*, times without an offset (UTC), `project: null` for a project
  that does not exist or that the key can not see;
- history: `core/api/graphql/query_runhistory_backend.graphql` (`history(minStep, maxStep,
  samples)`, `maxStep` exclusive, rows as JSON strings); system metrics: `Run._full_history`
  (`events(samples)`, rows with `_timestamp`, `_runtime`, `system.*` and no `_step`);
- artifacts: `tools/graphql_codegen/artifacts/artifacts.graphql` (`ProjectArtifacts`: an edge's
  `version` numbers the version in the collection asked about, `node.versionIndex` in its source
  sequence; `aliases` span every collection the artifact is in, `vN` and `latest` included;
  `state` COMMITTED / PENDING / DELETED) and `artifact_collections.graphql`
  (`ProjectArtifactCollections`, `__typename` ArtifactSequence or ArtifactPortfolio);
- registries: `misc.graphql` (`FetchOrgInfoFromEntity`): a registry is the project
  `wandb-registry-<name>` of the organization's entity, not of the team's.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    value_from_ast_untyped,
)

REGISTRY_PREFIX = "wandb-registry-"
#: The organization entity of the team entity `acme`, which holds its registries.
ORG = "acme-org"
#: The project of the `models` registry.
MODELS = f"{ORG}/{REGISTRY_PREFIX}models"
#: W&B's abstract types and the concrete types that implement them.
INTERFACES = {"ArtifactCollection": {"ArtifactSequence", "ArtifactPortfolio"}}


def gid(kind: str, key: object) -> str:
    """A W&B-style global id: base64 of `Kind:key`."""
    return base64.b64encode(f"{kind}:{key}".encode()).decode()


def stamp(moment: datetime | None = None) -> str:
    """A time as W&B writes it: UTC, no offset."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


class QueryError(Exception):
    """What W&B answers as a GraphQL error."""


# -- the data -------------------------------------------------------------------------------------


@dataclass
class FakeRun:
    name: str
    display_name: str
    user: str
    created_at: str
    state: str = "running"
    heartbeat_at: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def node(self) -> dict[str, Any]:
        """The run as `RUN_FRAGMENT` selects it (`wandb/apis/public/runs.py`)."""
        keys: dict[str, Any] = {}
        if self.history:
            metrics = {k for row in self.history for k in row if not k.startswith("_")}
            keys = {
                "lastStep": max(row["_step"] for row in self.history),
                "keys": {
                    k: {
                        "typeCounts": [{"type": "number", "count": 1}],
                        "previousValue": self.history[-1].get(k),
                    }
                    for k in sorted(metrics)
                },
            }
        summary = {k: v for row in self.history for k, v in row.items()}
        return {
            "__typename": "Run",
            "id": gid("Run", self.name),
            "projectId": 1,
            "tags": [],
            "name": self.name,
            "displayName": self.display_name,
            "sweepName": None,
            "state": self.state,
            "config": "{}",
            "group": None,
            "jobType": None,
            "commit": None,
            "readOnly": False,
            "createdAt": self.created_at,
            "heartbeatAt": self.heartbeat_at or self.created_at,
            "description": None,
            "notes": None,
            "systemMetrics": json.dumps(self.events[-1] if self.events else {}),
            "summaryMetrics": json.dumps(summary),
            "historyLineCount": len(self.history),
            "user": {"name": self.user.title(), "username": self.user},
            "historyKeys": keys,
        }


@dataclass
class FakeArtifact:
    """One logged artifact: a version of its source sequence."""

    project: str  # "entity/project"
    sequence: str
    index: int
    created_at: str
    type: str = "model"
    state: str = "COMMITTED"
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return gid("Artifact", f"{self.project}/{self.sequence}:{self.index}")


@dataclass
class Membership:
    """An artifact in a collection: its version number there, and the aliases it holds there."""

    artifact: FakeArtifact
    index: int
    aliases: list[str] = field(default_factory=list)


@dataclass
class FakeCollection:
    project: str  # "entity/project"
    name: str
    typename: str  # ArtifactSequence or ArtifactPortfolio
    type: str = "model"
    members: list[Membership] = field(default_factory=list)

    def version(self, index: int) -> Membership:
        return next(m for m in self.members if m.index == index)


@dataclass
class FakeWandb:
    runs: dict[str, list[FakeRun]] = field(default_factory=dict)  # "entity/project" -> runs
    collections: dict[str, dict[str, FakeCollection]] = field(default_factory=dict)
    #: team entity -> (organization name, the organization's entity)
    organizations: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {"acme": ("Acme", ORG)}
    )
    #: Projects that exist but hold nothing yet.
    projects: set[str] = field(default_factory=set)
    #: The largest page the server hands out, whatever `first` asks for.
    page_size: int = 2
    queries: list[str] = field(default_factory=list)
    history_calls: list[tuple[str, int, int]] = field(default_factory=list)

    # -- what tests do to W&B ---------------------------------------------------------------------

    def log_artifact(
        self,
        project: str,
        sequence: str,
        *,
        aliases: list[str] | None = None,
        tags: list[str] | None = None,
        created_at: str | None = None,
        state: str = "COMMITTED",
        type: str = "model",
    ) -> FakeArtifact:
        """A run logs a new version of `sequence` (W&B moves `latest` to it)."""
        collection = self.collection(project, sequence, "ArtifactSequence", type)
        artifact = FakeArtifact(
            project,
            sequence,
            len(collection.members),
            created_at or stamp(),
            type=type,
            state=state,
            tags=list(tags or []),
        )
        collection.members.append(Membership(artifact, artifact.index, list(aliases or [])))
        return artifact

    def link(
        self,
        artifact: FakeArtifact,
        project: str,
        portfolio: str,
        *,
        aliases: list[str] | None = None,
    ) -> Membership:
        """Link an artifact into a portfolio (a registry collection): its next version there."""
        collection = self.collection(project, portfolio, "ArtifactPortfolio", artifact.type)
        number = max((m.index for m in collection.members), default=-1) + 1
        member = Membership(artifact, number, list(aliases or []))
        collection.members.append(member)
        return member

    def unlink(self, project: str, portfolio: str, index: int) -> None:
        collection = self.collections[project][portfolio]
        collection.members = [m for m in collection.members if m.index != index]

    def move_alias(self, project: str, collection: str, alias: str, index: int) -> None:
        """Give version `index` the alias (one version holds an alias at a time)."""
        for member in self.collections[project][collection].members:
            member.aliases = [a for a in member.aliases if a != alias]
            if member.index == index:
                member.aliases.append(alias)

    def collection(self, project: str, name: str, typename: str, type: str) -> FakeCollection:
        return self.collections.setdefault(project, {}).setdefault(
            name, FakeCollection(project, name, typename, type)
        )

    def run(self, project: str, name: str) -> FakeRun:
        return next(r for r in self.runs[project] if r.name == name)

    # -- HTTP -------------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        try:
            data = self.execute(body["query"], body.get("variables") or {})
        except QueryError as exc:
            return httpx.Response(200, json={"data": None, "errors": [{"message": str(exc)}]})
        return httpx.Response(200, json={"data": data})

    def execute(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Answer one GraphQL document as W&B would."""
        tree = parse(document)
        operations = [d for d in tree.definitions if isinstance(d, OperationDefinitionNode)]
        fragments = {
            d.name.value: d for d in tree.definitions if isinstance(d, FragmentDefinitionNode)
        }
        [operation] = operations
        self.queries.append(operation.name.value if operation.name else "")
        defaults = {
            v.variable.name.value: value_from_ast_untyped(v.default_value)
            for v in operation.variable_definitions
            if v.default_value is not None
        }
        return _Executor(fragments, {**defaults, **variables}).select(
            _Query(self), operation.selection_set
        )


# -- the executor ---------------------------------------------------------------------------------


class _Executor:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode], variables: dict[str, Any]):
        self.fragments = fragments
        self.variables = variables

    def select(self, obj: Any, selection_set: SelectionSetNode) -> dict[str, Any]:
        out: dict[str, Any] = {}
        typename = _typename(obj)
        for node in selection_set.selections:
            if not self._included(node):
                continue
            if isinstance(node, FieldNode):
                key = node.alias.value if node.alias else node.name.value
                args = {
                    a.name.value: value_from_ast_untyped(a.value, self.variables)
                    for a in node.arguments
                }
                value = _resolve(obj, node.name.value, args)
                out[key] = self._complete(value, node)
            else:
                if isinstance(node, FragmentSpreadNode):
                    fragment: Any = self.fragments[node.name.value]
                else:
                    assert isinstance(node, InlineFragmentNode)
                    fragment = node
                condition = fragment.type_condition.name.value if fragment.type_condition else None
                if (
                    condition is None
                    or condition == typename
                    or typename in INTERFACES.get(condition, ())
                ):
                    for key, value in self.select(obj, fragment.selection_set).items():
                        out[key] = _merge(out.get(key), value)
        return out

    def _complete(self, value: Any, node: FieldNode) -> Any:
        if node.selection_set is None:
            if isinstance(value, _Object):
                raise QueryError(f'Field "{node.name.value}" of an object needs a selection.')
            return value
        if value is None:
            return None
        if isinstance(value, list):
            return [self.select(item, node.selection_set) for item in value]
        return self.select(value, node.selection_set)

    def _included(self, node: Any) -> bool:
        for directive in node.directives or ():
            condition = value_from_ast_untyped(directive.arguments[0].value, self.variables)
            if directive.name.value == "include" and not condition:
                return False
            if directive.name.value == "skip" and condition:
                return False
        return True


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return new


class _Object:
    """A W&B object: fields with arguments (or computed) are methods `f_<field>(**arguments)`,
    plain fields are the keys of `data`."""

    typename = ""
    data: dict[str, Any] = {}  # noqa: RUF012 (read only: a subclass sets its own)


def _typename(obj: Any) -> str:
    return obj.typename if isinstance(obj, _Object) else str(obj.get("__typename", ""))


def _resolve(obj: Any, name: str, args: dict[str, Any]) -> Any:
    if name == "__typename":
        return _typename(obj)
    if isinstance(obj, _Object):
        method: Callable[..., Any] | None = getattr(obj, f"f_{name}", None)
        if method is not None:
            return method(**args)
        if name in obj.data:
            return obj.data[name]
    elif name in obj:
        return obj[name]
    raise QueryError(f'Cannot query field "{name}" on type "{_typename(obj) or "?"}".')


def _connection(nodes: list[Any], first: int | None, after: str | None, limit: int) -> Any:
    start = int(after or 0)
    size = min(first if first is not None else 50, limit)
    chunk = nodes[start : start + size]
    end = start + len(chunk)
    return {
        "__typename": "Connection",
        "totalCount": len(nodes),
        "edges": [{"node": n, "cursor": str(start + i + 1)} for i, n in enumerate(chunk)],
        "pageInfo": {
            "__typename": "PageInfo",
            "endCursor": str(end),
            "hasNextPage": end < len(nodes),
        },
    }


#: W&B's run filter columns (snake case, `wandb/apis/public/api.py`, `Api.runs`) as run fields.
_COLUMNS = {
    "heartbeat_at": "heartbeatAt",
    "created_at": "createdAt",
    "display_name": "displayName",
    "name": "name",
    "state": "state",
}
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda have, operand: have > operand,
    "$gte": lambda have, operand: have >= operand,
    "$lt": lambda have, operand: have < operand,
    "$eq": lambda have, operand: have == operand,
    "$in": lambda have, operand: have in operand,
    "$regex": lambda have, operand: re.search(operand, have) is not None,
}


def _matches(run: dict[str, Any], condition: dict[str, Any]) -> bool:
    """The subset of W&B's Mongo-style run filters the source sends; anything else is refused,
    so a filter this fake does not know can not pass unnoticed."""
    for key, value in condition.items():
        if key in ("$or", "$and"):
            found = (_matches(run, c) for c in value)
            if not (any(found) if key == "$or" else all(found)):
                return False
            continue
        if key not in _COLUMNS:
            raise QueryError(f"unknown run filter field {key!r}")
        for op, operand in (value if isinstance(value, dict) else {"$eq": value}).items():
            if op not in _OPERATORS:
                raise QueryError(f"unsupported filter operator {op!r}")
            if not _OPERATORS[op](run[_COLUMNS[key]], operand):
                return False
    return True


class _Query(_Object):
    typename = "Query"

    def __init__(self, fake: FakeWandb) -> None:
        self.fake = fake

    def f_project(self, name: str, entityName: str) -> Any:
        key = f"{entityName}/{name}"
        fake = self.fake
        if key not in fake.runs and key not in fake.collections and key not in fake.projects:
            return None  # W&B: no such project, or the key can not see it
        return _Project(fake, key)

    def f_entity(self, name: str) -> Any:
        org = self.fake.organizations.get(name)
        organization = (
            None
            if org is None
            else {"__typename": "Organization", "name": org[0], "orgEntity": {"name": org[1]}}
        )
        return {"__typename": "Entity", "organization": organization, "user": None}


class _Project(_Object):
    typename = "Project"

    def __init__(self, fake: FakeWandb, key: str) -> None:
        self.fake, self.key = fake, key
        self.data = {**_project_info(key), "readOnly": False}

    def f_runCount(self, filters: str | None = None) -> int:
        return len(self._runs(filters))

    def _runs(self, filters: str | None) -> list[dict[str, Any]]:
        nodes = [r.node() for r in self.fake.runs.get(self.key, [])]
        condition = json.loads(filters) if filters else {}
        return [n for n in nodes if _matches(n, condition)]

    def f_runs(
        self,
        filters: str | None = None,
        after: str | None = None,
        first: int | None = None,
        order: str | None = None,
    ) -> Any:
        nodes = self._runs(filters)
        order = order or "+created_at"
        column = _COLUMNS[order.lstrip("+-")]
        nodes.sort(key=lambda n: (n[column], n["name"]), reverse=order.startswith("-"))
        return _connection(nodes, first, after, self.fake.page_size)

    def f_run(self, name: str) -> Any:
        run = next((r for r in self.fake.runs.get(self.key, []) if r.name == name), None)
        return None if run is None else _Run(self.fake, run)

    def f_artifactCollections(
        self,
        after: str | None = None,
        first: int | None = None,
        filters: str | None = None,
        order: str | None = None,
    ) -> Any:
        collections = self.fake.collections.get(self.key, {})
        nodes = [_Collection(self.fake, c) for _, c in sorted(collections.items())]
        return _connection(nodes, first, after, self.fake.page_size)

    def f_artifactType(self, name: str) -> Any:
        return _ArtifactType(self.fake, self.key, name)


class _ArtifactType(_Object):
    typename = "ArtifactType"

    def __init__(self, fake: FakeWandb, project: str, name: str) -> None:
        self.fake, self.project, self.name = fake, project, name

    def f_name(self) -> str:
        return self.name

    def f_artifactCollection(self, name: str) -> Any:
        found = self.fake.collections.get(self.project, {}).get(name)
        return None if found is None or found.type != self.name else _Collection(self.fake, found)


def _project_info(key: str) -> dict[str, Any]:
    entity, _, name = key.partition("/")
    return {
        "__typename": "Project",
        "id": gid("Project", key),
        "internalId": str(zlib.crc32(key.encode()) % 10_000),
        "name": name,
        "entity": {"name": entity},
    }


class _Collection(_Object):
    def __init__(self, fake: FakeWandb, collection: FakeCollection) -> None:
        self.fake, self.collection = fake, collection
        self.typename = collection.typename
        self.data = {
            "id": gid("ArtifactCollection", f"{collection.project}/{collection.name}"),
            "name": collection.name,
            "description": None,
            "createdAt": "2026-01-01T00:00:00",
            "updatedAt": None,
            "project": _project_info(collection.project),
            "defaultArtifactType": {"name": collection.type},
            "tags": {"edges": []},
        }

    def f_artifacts(
        self,
        after: str | None = None,
        first: int | None = None,
        order: str | None = None,
        filters: str | None = None,
    ) -> Any:
        condition = json.loads(filters) if filters else {}
        members = [
            m
            for m in self.collection.members
            if all(getattr(m.artifact, k) == v for k, v in condition.items())
        ]
        # W&B's default order is not documented: newest first here, so that nothing may rely on
        # an order it was not asked for.
        members.sort(key=lambda m: m.index, reverse=True)
        page = _connection(members, first, after, self.fake.page_size)
        page["edges"] = [
            {"version": f"v{e['node'].index}", "cursor": e["cursor"], "node": self._node(e["node"])}
            for e in page["edges"]
        ]
        return page

    def _node(self, member: Membership) -> dict[str, Any]:
        """`ArtifactFragment` (`tools/graphql_codegen/artifacts/artifacts.graphql`)."""
        artifact = member.artifact
        return {
            "__typename": "Artifact",
            "id": artifact.id,
            "artifactSequence": {
                "__typename": "ArtifactSequence",
                "name": artifact.sequence,
                "project": _project_info(artifact.project),
            },
            "versionIndex": artifact.index,
            "artifactType": {"name": artifact.type},
            "description": None,
            "metadata": json.dumps(artifact.metadata),
            "ttlDurationSeconds": -1,
            "ttlIsInherited": True,
            "tags": [{"__typename": "Tag", "id": gid("Tag", t), "name": t} for t in artifact.tags],
            "historyStep": None,
            "state": artifact.state,
            "size": 1024,
            "digest": "0" * 32,
            "digestAlgorithm": "MANIFEST_MD5",
            "commitHash": None,
            "fileCount": 1,
            "createdAt": artifact.created_at,
            "updatedAt": None,
            "aliases": self._aliases(artifact),
        }

    def _aliases(self, artifact: FakeArtifact) -> list[dict[str, Any]]:
        """Every alias the artifact holds, in every collection it is in — `vN` and `latest`
        too (`wandb/sdk/artifacts/artifact.py`, `_assign_attrs`, keeps this collection's)."""
        out = []
        for project in sorted(self.fake.collections):
            for collection in self.fake.collections[project].values():
                newest = max((m.index for m in collection.members), default=None)
                for member in collection.members:
                    if member.artifact is not artifact:
                        continue
                    names = [*member.aliases, f"v{member.index}"]
                    if member.index == newest:
                        names.append("latest")
                    info = {
                        "__typename": collection.typename,
                        "name": collection.name,
                        "project": _project_info(collection.project),
                    }
                    out += [
                        {
                            "__typename": "ArtifactAlias",
                            "id": gid("ArtifactAlias", f"{collection.name}:{name}"),
                            "alias": name,
                            "artifactCollection": info,
                        }
                        for name in names
                    ]
        return out


class _Run(_Object):
    typename = "Run"

    def __init__(self, fake: FakeWandb, run: FakeRun) -> None:
        self.fake, self.run = fake, run
        self.data = run.node()

    def f_history(
        self, minStep: int = 0, maxStep: int | None = None, samples: int = 500
    ) -> list[str]:
        """`maxStep` exclusive; W&B answers at most `samples` rows (down-sampled beyond)."""
        stop = maxStep if maxStep is not None else 2**62
        self.fake.history_calls.append((self.run.name, minStep, stop))
        rows = [r for r in self.run.history if minStep <= r["_step"] < stop]
        if len(rows) > samples:  # down-sampled: a client must never ask for more than a page
            rows = rows[:: -(-len(rows) // samples)]
        return [json.dumps(r) for r in rows]

    def f_events(self, samples: int = 500) -> list[str]:
        rows = self.run.events
        if len(rows) > samples:
            rows = rows[:: -(-len(rows) // samples)]
        return [json.dumps(r) for r in rows]
