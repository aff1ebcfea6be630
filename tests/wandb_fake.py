"""A fake W&B GraphQL API for respx: the response shapes of W&B's real API (Relay edges and
pageInfo, JSON-string fields such as `historyKeys` and history rows), state a test can change."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx


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
        last = max((row["_step"] for row in self.history), default=-1)
        keys = {"lastStep": last, "keys": {}} if self.history else {}
        return {
            "name": self.name,
            "displayName": self.display_name,
            "state": self.state,
            "createdAt": self.created_at,
            "heartbeatAt": self.heartbeat_at or self.created_at,
            "user": {"username": self.user},
            "historyKeys": json.dumps(keys),
        }


@dataclass
class FakeVersion:
    index: int
    created_at: str
    aliases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


@dataclass
class FakeWandb:
    runs: dict[str, list[FakeRun]] = field(default_factory=dict)  # "entity/project" -> runs
    collections: dict[str, dict[str, tuple[str, list[FakeVersion]]]] = field(default_factory=dict)
    page_size: int = 2
    queries: list[str] = field(default_factory=list)
    history_calls: list[tuple[str, int, int]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        operation = re.search(r"query (\w+)", body["query"])[1]  # type: ignore[index]
        variables = body["variables"]
        self.queries.append(operation)
        project = f"{variables['entity']}/{variables['project']}"
        data = getattr(self, f"_{operation.lower()}")(project, variables)
        return httpx.Response(200, json={"data": {"project": data}})

    def _page(self, nodes: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
        start = int(cursor or 0)
        chunk = nodes[start : start + self.page_size]
        end = start + len(chunk)
        return {
            "edges": [{"node": n, "cursor": str(start + i)} for i, n in enumerate(chunk)],
            "pageInfo": {"endCursor": str(end), "hasNextPage": end < len(nodes)},
        }

    def _runs(self, project: str, v: dict[str, Any]) -> dict[str, Any]:
        runs = sorted(
            self.runs.get(project, []), key=lambda r: r.heartbeat_at or r.created_at, reverse=True
        )
        if v.get("filters"):
            after = json.loads(v["filters"])["heartbeat_at"]["$gt"]
            runs = [r for r in runs if (r.heartbeat_at or r.created_at) > after]
        return {"runs": self._page([r.node() for r in runs], v.get("cursor"))}

    def _run(self, project: str, name: str) -> FakeRun:
        return next(r for r in self.runs[project] if r.name == name)

    def _history(self, project: str, v: dict[str, Any]) -> dict[str, Any]:
        self.history_calls.append((v["run"], v["minStep"], v["maxStep"]))
        rows = [
            r
            for r in self._run(project, v["run"]).history
            if v["minStep"] <= r["_step"] < v["maxStep"]
        ]
        return {"run": {"history": [json.dumps(r) for r in rows]}}

    def _systemmetrics(self, project: str, v: dict[str, Any]) -> dict[str, Any]:
        return {"run": {"events": [json.dumps(r) for r in self._run(project, v["run"]).events]}}

    def _collections(self, project: str, v: dict[str, Any]) -> dict[str, Any]:
        nodes = []
        for name, (typename, versions) in sorted(self.collections.get(project, {}).items()):
            edges = [
                {
                    "version": f"v{x.index}",
                    "node": {
                        "versionIndex": x.index,
                        "createdAt": x.created_at,
                        "tags": [{"name": t} for t in x.tags],
                        "aliases": [{"alias": a} for a in [*x.aliases, "latest"]],
                    },
                }
                for x in versions
            ]
            nodes.append({"__typename": typename, "name": name, "artifacts": {"edges": edges}})
        return {"artifactCollections": self._page(nodes, v.get("cursor"))}
