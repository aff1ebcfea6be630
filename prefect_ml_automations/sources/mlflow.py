"""The MLflow source: runs, metrics, the model registry and logged models, by polling.

- Runs of the watched experiments (an automation's `project` is an experiment name): the running
  ones and those started or ended since the last poll. A state change is a `RUN_STATE` event; a
  metric whose latest step or time moved has its history fetched from the last point seen on.
  System metrics (`system/…`) have no step and are ordered by time.
- The registry (one per tracking server, named in the source config): a new model version is
  `LINK_ARTIFACT`; aliases (added or moved) are `ADD_ARTIFACT_ALIAS`; version tags (`key=value`)
  added or removed are `ADD_ARTIFACT_TAG` / `REMOVE_ARTIFACT_TAG`. MLflow stamps no time on alias
  or tag changes, so they are found by comparing snapshots and take the poll's time.
- MLflow 3 logged models created in a watched experiment are `CREATE_ARTIFACT`.

`mlflow` is an optional dependency (`pip install prefect-ml-automations[mlflow]`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_ml_automations.config import MLflowSourceSettings
from prefect_ml_automations.errors import SourceError
from prefect_ml_automations.events import Event, event_from_dict, is_system_metric
from prefect_ml_automations.sources import Cursor, Poll
from prefect_ml_automations.sources.snapshots import (
    CollectionSnapshot,
    SeenVersion,
    apply_change,
    collection_changes,
    remove_alias,
)

#: MLflow run statuses as the states automations know (SCHEDULED is not a state change).
STATES = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
#: Runs started or ended this long before the last poll are looked at again (clock skew).
OVERLAP_MS = 60_000


def _iso(ms: int | None) -> str:
    moment = datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)
    return moment.isoformat()


def _tag(key: str, value: str | None) -> str:
    return f"{key}={value}" if value else key


class RunMemory(BaseModel):
    """What the last poll saw of one run: its state, and per metric the latest [step, time]."""

    status: str | None = None
    metrics: dict[str, tuple[int, int]] = Field(default_factory=dict)


class LoggedModels(BaseModel):
    """Logged models: the newest creation time seen, and how many each name has (its versions)."""

    after_ms: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class MLflowCursor(Cursor):
    """Where an MLflow source left off."""

    version: Literal[2]
    polled_ms: int
    runs: dict[str, RunMemory] = Field(default_factory=dict)
    #: Registered model name -> its versions' aliases and tags.
    registry: dict[str, CollectionSnapshot] = Field(default_factory=dict)
    logged: LoggedModels = Field(default_factory=LoggedModels)


class MLflowSource:
    """Polls one MLflow tracking store or server.

    >>> # MLflowSource(settings, projects={"team/vision"}, watch_registry=True).poll(None, now)
    """

    def __init__(
        self, settings: MLflowSourceSettings, *, projects: set[str], watch_registry: bool
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.projects = projects
        self.watch_registry = watch_registry
        self._client: Any = None
        self.calls = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from mlflow import MlflowClient
            except ImportError:
                raise SourceError(
                    f"Source {self.name!r} needs the mlflow package: "
                    "pip install 'prefect-ml-automations[mlflow]'."
                ) from None
            self._client = MlflowClient(self.settings.tracking_uri)
        return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"MLflow at {self.settings.tracking_uri!r} failed on {method} "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
            ) from exc

    # -- a poll ---------------------------------------------------------------------------------

    def poll(self, cursor: dict[str, Any] | None, now: datetime) -> Poll:
        self.calls = 0
        now_ms = int(now.timestamp() * 1000)
        state = MLflowCursor.load(cursor, self.name)
        first = state is None
        if state is None:
            state = MLflowCursor(version=2, polled_ms=now_ms)
        out = Poll()
        sink = out.filling if first else out.events
        experiments = self._experiments()
        self._runs(experiments, state.runs, state.polled_ms, first, sink)
        # (A first poll fires nothing; the versions already there go to `out.versions`.)
        new_versions = out.versions if first else out.events
        if self.watch_registry:
            self._registry(state.registry, now, first, new_versions)
        self._logged_models(experiments, state.logged, state.polled_ms, first, new_versions)
        state.polled_ms = now_ms
        out.cursor = state.dump()
        out.calls = self.calls
        return out

    def _experiments(self) -> dict[str, str]:
        found = {}
        for name in sorted(self.projects):
            experiment = self._call("get_experiment_by_name", name)
            if experiment is not None:
                found[experiment.experiment_id] = name
        return found

    def _paged(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Every page of an MLflow search."""
        found, token = [], None
        while True:
            page = self._call(method, *args, max_results=1000, page_token=token, **kwargs)
            found.extend(page)
            token = page.token
            if not token:
                return found

    def _search_runs(self, ids: list[str], filter_string: str) -> list[Any]:
        return self._paged("search_runs", ids, filter_string=filter_string)

    def _runs(
        self,
        experiments: dict[str, str],
        seen: dict[str, RunMemory],
        since_ms: int,
        first: bool,
        sink: list[Event],
    ) -> None:
        if not experiments:
            return
        ids = list(experiments)
        if first:
            candidates = self._search_runs(ids, "")
        else:
            after = since_ms - OVERLAP_MS
            candidates = [
                *self._search_runs(ids, "attributes.status = 'RUNNING'"),
                *self._search_runs(ids, f"attributes.start_time > {after}"),
                *self._search_runs(ids, f"attributes.end_time > {after}"),
            ]
        runs = {r.info.run_id: r for r in candidates}
        found: list[tuple[int, int, Event]] = []
        for run in sorted(runs.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id)):
            info = run.info
            base = {
                "project": experiments[info.experiment_id],
                "run_id": info.run_id,
                "run_name": info.run_name,
                "user": info.user_id or None,
                "run_created_at": _iso(info.start_time),
            }
            memory = seen.setdefault(info.run_id, RunMemory())
            # The latest value of each metric, with its step and time (MLflow's public proto of
            # the run's data; `RunData.metrics` holds the values alone).
            for metric in run.data.to_proto().metrics:
                last = memory.metrics.get(metric.key)
                if last == (metric.step, metric.timestamp):
                    continue
                system = is_system_metric(metric.key)
                for point in self._call("get_metric_history", info.run_id, metric.key):
                    order = point.timestamp if system else point.step
                    if last is not None and order <= (last[1] if system else last[0]):
                        continue
                    event = {
                        **base,
                        "type": "METRIC",
                        "metric": metric.key,
                        "value": point.value,
                        "timestamp": _iso(point.timestamp),
                    }
                    if not system:
                        event["step"] = point.step
                    found.append((point.timestamp, 1, event_from_dict(event)))
                memory.metrics[metric.key] = (metric.step, metric.timestamp)
            state = STATES.get(info.status)
            if state is not None and state != memory.status:
                when = info.end_time if state != "running" and info.end_time else info.start_time
                found.append(
                    (
                        when or 0,
                        2,
                        event_from_dict(
                            {**base, "type": "RUN_STATE", "state": state, "timestamp": _iso(when)}
                        ),
                    )
                )
                memory.status = state
        found.sort(key=lambda item: (item[0], item[1]))
        sink.extend(event for _, _, event in found)

    def _registry(
        self,
        snapshots: dict[str, CollectionSnapshot],
        now: datetime,
        first: bool,
        sink: list[Event],
    ) -> None:
        place = {"registry": self.settings.registry, "artifact_type": "model"}
        for model in sorted(self._paged("search_registered_models"), key=lambda m: m.name):
            # `search_model_versions` leaves `aliases` empty: the registered model holds them.
            holders: dict[int, set[str]] = {}
            for alias, number in model.aliases.items():
                holders.setdefault(int(number), set()).add(alias)
            seen = {
                int(v.version): SeenVersion(
                    aliases=frozenset(holders.get(int(v.version), ())),
                    tags=frozenset(_tag(k, t) for k, t in (v.tags or {}).items()),
                    created=_iso(v.creation_timestamp),
                    user=v.user_id or None,
                )
                for v in self._call("search_model_versions", f"name='{model.name}'")
            }
            events, snapshots[model.name] = collection_changes(
                {**place, "collection": model.name},
                snapshots.get(model.name),
                seen,
                arrival="LINK_ARTIFACT",
                unlinks=False,
                now=now.isoformat(),
            )
            if first:  # only the versions are dated: MLflow keeps no time for aliases, tags
                sink.extend(e for e in events if e.type == "LINK_ARTIFACT")
            else:
                sink.extend(events)

    def _logged_models(
        self,
        experiments: dict[str, str],
        seen: LoggedModels,
        since_ms: int,
        first: bool,
        sink: list[Event],
    ) -> None:
        if not experiments or not hasattr(self.client, "search_logged_models"):
            return
        after = since_ms if seen.after_ms is None else seen.after_ms
        counts = seen.counts
        condition = None if first else f"creation_time > {after}"
        models = self._call("search_logged_models", list(experiments), filter_string=condition)
        newest = after
        for model in sorted(models, key=lambda m: (m.creation_timestamp, m.model_id)):
            key = f"{model.experiment_id}/{model.name}"
            counts[key] = counts.get(key, 0) + 1
            newest = max(newest, model.creation_timestamp)
            sink.append(
                event_from_dict(
                    {
                        "type": "CREATE_ARTIFACT",
                        "project": experiments[model.experiment_id],
                        "collection": model.name,
                        "version": counts[key],
                        "artifact_type": "model",
                        "timestamp": _iso(model.creation_timestamp),
                    }
                )
            )
        seen.after_ms = newest


def registry_changes(
    cursor: dict[str, Any] | None, body: dict[str, Any], registry: str, source: str = "mlflow"
) -> tuple[list[Event], dict[str, Any] | None]:
    """The events of one MLflow registry webhook call, and the source's cursor with the change
    applied to its registry snapshot.

    The poller finds registry changes by comparing with this snapshot, so a change that came by
    webhook first is not found again by polling — and a change the poller saw first is dropped
    here: each change gives one event, however it arrives. Before the source's first poll there
    is no snapshot: every call is an event.
    """
    entity, action, data = body.get("entity"), body.get("action"), body.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("its 'data' must be an object (MLflow sends the model version there)")
    name = data.get("name")
    if not isinstance(name, str):
        return [], cursor
    state = MLflowCursor.load(cursor, source)
    snapshot = None if state is None else state.registry.setdefault(name, {})
    when = body.get("timestamp") or datetime.now(UTC).isoformat()
    place = {"registry": registry, "collection": name, "artifact_type": "model", "timestamp": when}
    version = data.get("version")
    changes: list[dict[str, Any]] = []
    if (entity, action) == ("model_version", "created"):
        changes.append({"type": "LINK_ARTIFACT"})
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise ValueError("its 'data.tags' must be an object of tag names and values")
        changes += [{"type": "ADD_ARTIFACT_TAG", "tag": _tag(k, v)} for k, v in tags.items()]
    elif (entity, action) == ("model_version_tag", "set"):
        key, tag = str(data.get("key")), _tag(str(data.get("key")), data.get("value"))
        held = [] if snapshot is None else _held_tags(snapshot, version)
        # A key holds one value: the value it replaces goes, as a poll would see it.
        changes += [
            {"type": "REMOVE_ARTIFACT_TAG", "tag": t}
            for t in held
            if t.split("=", 1)[0] == key and t != tag
        ]
        changes.append({"type": "ADD_ARTIFACT_TAG", "tag": tag})
    elif (entity, action) == ("model_version_tag", "deleted"):
        key = str(data.get("key"))
        held = [key] if snapshot is None else _held_tags(snapshot, version)
        changes += [
            {"type": "REMOVE_ARTIFACT_TAG", "tag": t} for t in held if t.split("=", 1)[0] == key
        ]
    elif (entity, action) == ("model_version_alias", "created"):
        changes.append({"type": "ADD_ARTIFACT_ALIAS", "alias": str(data.get("alias"))})
    elif (entity, action) == ("model_version_alias", "deleted") and snapshot is not None:
        remove_alias(snapshot, str(data.get("alias")))
    events = []
    for change in changes:
        event = event_from_dict({**place, **change, "version": int(str(version))})
        if snapshot is None or apply_change(snapshot, event):
            events.append(event)
    return events, (cursor if state is None else state.dump())


def _held_tags(snapshot: CollectionSnapshot, version: Any) -> list[str]:
    held = snapshot.get(int(str(version)))
    return [] if held is None else list(held.tags)


def source_for(settings: MLflowSourceSettings, automations: list[Any]) -> MLflowSource:
    """The MLflow source watching what the automations that name it (or no source) look at."""
    mine = [a for a in automations if a.source in (None, settings.name)]
    projects = {a.project for a in mine if a.project is not None}
    watch = any(getattr(a.scope, "registry", None) == settings.registry for a in mine)
    return MLflowSource(settings, projects=projects, watch_registry=watch)
