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
from typing import Any

from prefect_ml_automations.config import MLflowSourceSettings
from prefect_ml_automations.errors import SourceError
from prefect_ml_automations.events import Event, event_from_dict, is_system_metric
from prefect_ml_automations.sources import Poll

#: MLflow run statuses as the states automations know (SCHEDULED is not a state change).
STATES = {"RUNNING": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
#: Runs started or ended this long before the last poll are looked at again (clock skew).
OVERLAP_MS = 60_000


def _iso(ms: int | None) -> str:
    moment = datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)
    return moment.isoformat()


def _tag(key: str, value: str | None) -> str:
    return f"{key}={value}" if value else key


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
        first = cursor is None
        state: dict[str, Any] = dict(cursor or {"runs": {}, "registry": {}, "logged": {}})
        now_ms = int(now.timestamp() * 1000)
        since_ms = int(state.get("polled_ms", now_ms))
        out = Poll()
        sink = out.filling if first else out.events
        experiments = self._experiments()
        self._runs(experiments, state["runs"], since_ms, first, sink)
        if self.watch_registry:
            self._registry(state["registry"], now, first, out.events)
        self._logged_models(experiments, state["logged"], since_ms, first, out.events)
        state["polled_ms"] = now_ms
        out.cursor = state
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
        seen: dict[str, Any],
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
            memory = seen.setdefault(info.run_id, {"status": None, "metrics": {}})
            for metric in run.data._metric_objs:  # latest value of each metric, with step and time
                last = memory["metrics"].get(metric.key)
                if last is not None and [metric.step, metric.timestamp] == last:
                    continue
                for point in self._call("get_metric_history", info.run_id, metric.key):
                    system = is_system_metric(metric.key)
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
                memory["metrics"][metric.key] = [metric.step, metric.timestamp]
            state = STATES.get(info.status)
            if state is not None and state != memory["status"]:
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
                memory["status"] = state
        found.sort(key=lambda item: (item[0], item[1]))
        sink.extend(event for _, _, event in found)

    def _registry(
        self, snapshot: dict[str, Any], now: datetime, first: bool, sink: list[Event]
    ) -> None:
        registry = self.settings.registry
        models = self._paged("search_registered_models")
        for model in sorted(models, key=lambda m: m.name):
            before = snapshot.get(model.name, {"aliases": {}, "versions": {}})
            versions = self._call("search_model_versions", f"name='{model.name}'")
            aliases = {alias: int(number) for alias, number in model.aliases.items()}
            after: dict[str, Any] = {"aliases": aliases, "versions": {}}
            for version in sorted(versions, key=lambda v: int(v.version)):
                number = str(version.version)
                tags = {_tag(k, v) for k, v in (version.tags or {}).items()}
                after["versions"][number] = sorted(tags)
                place = {
                    "registry": registry,
                    "collection": model.name,
                    "version": int(number),
                    "artifact_type": "model",
                    "user": version.user_id or None,
                }
                if first:
                    continue
                old = before["versions"].get(number)
                if old is None:
                    sink.append(
                        event_from_dict(
                            {
                                **place,
                                "type": "LINK_ARTIFACT",
                                "timestamp": _iso(version.creation_timestamp),
                            }
                        )
                    )
                    old = []
                moment = now.isoformat()
                for tag in sorted(tags - set(old)):
                    sink.append(
                        event_from_dict(
                            {**place, "type": "ADD_ARTIFACT_TAG", "tag": tag, "timestamp": moment}
                        )
                    )
                for tag in sorted(set(old) - tags):
                    sink.append(
                        event_from_dict(
                            {
                                **place,
                                "type": "REMOVE_ARTIFACT_TAG",
                                "tag": tag,
                                "timestamp": moment,
                            }
                        )
                    )
            if not first:
                for alias, number in sorted(after["aliases"].items()):
                    if before["aliases"].get(alias) != number:
                        sink.append(
                            event_from_dict(
                                {
                                    "type": "ADD_ARTIFACT_ALIAS",
                                    "registry": registry,
                                    "collection": model.name,
                                    "version": number,
                                    "alias": alias,
                                    "artifact_type": "model",
                                    "timestamp": now.isoformat(),
                                }
                            )
                        )
            snapshot[model.name] = after

    def _logged_models(
        self,
        experiments: dict[str, str],
        seen: dict[str, Any],
        since_ms: int,
        first: bool,
        sink: list[Event],
    ) -> None:
        if not experiments or not hasattr(self.client, "search_logged_models"):
            return
        after = seen.get("after_ms", since_ms)
        counts: dict[str, int] = seen.setdefault("counts", {})
        condition = None if first else f"creation_time > {after}"
        models = self._call("search_logged_models", list(experiments), filter_string=condition)
        newest = after
        for model in sorted(models, key=lambda m: (m.creation_timestamp, m.model_id)):
            key = f"{model.experiment_id}/{model.name}"
            counts[key] = counts.get(key, 0) + 1
            newest = max(newest, model.creation_timestamp)
            if first:
                continue
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
        seen["after_ms"] = newest


def registry_changes(
    cursor: dict[str, Any] | None, body: dict[str, Any], registry: str
) -> tuple[list[Event], dict[str, Any] | None]:
    """The events of one MLflow registry webhook call, and the source's cursor with the change
    applied to its registry snapshot.

    The poller finds registry changes by comparing with this snapshot, so a change that came by
    webhook first is not found again by polling — and a change the poller saw first is dropped
    here: each change gives one event, however it arrives.
    """
    entity, action, data = body.get("entity"), body.get("action"), body.get("data") or {}
    name = data.get("name")
    if not isinstance(name, str):
        return [], cursor
    snapshot = None if cursor is None else cursor.setdefault("registry", {})
    model = None if snapshot is None else snapshot.setdefault(name, {"aliases": {}, "versions": {}})
    when = body.get("timestamp") or datetime.now(UTC).isoformat()
    place = {"registry": registry, "collection": name, "artifact_type": "model", "timestamp": when}
    events: list[Event] = []

    def tags_of(version: str) -> list[str]:
        return [] if model is None else list(model["versions"].setdefault(version, []))

    if (entity, action) == ("model_version", "created"):
        version = str(data.get("version"))
        if model is None or version not in model["versions"]:
            events.append(
                event_from_dict({**place, "type": "LINK_ARTIFACT", "version": int(version)})
            )
            tags = sorted(_tag(k, v) for k, v in (data.get("tags") or {}).items())
            if model is not None:
                model["versions"][version] = tags
    elif (entity, action) == ("model_version_tag", "set"):
        version, tag = str(data.get("version")), _tag(str(data.get("key")), data.get("value"))
        current = tags_of(version)
        if tag not in current:
            events.append(
                event_from_dict(
                    {**place, "type": "ADD_ARTIFACT_TAG", "version": int(version), "tag": tag}
                )
            )
            replaced = [t for t in current if t.split("=", 1)[0] != data.get("key")]
            if model is not None:
                model["versions"][version] = sorted([*replaced, tag])
    elif (entity, action) == ("model_version_tag", "deleted"):
        version, key = str(data.get("version")), str(data.get("key"))
        gone = [t for t in tags_of(version) if t.split("=", 1)[0] == key]
        if model is None or gone:
            for tag in gone or [key]:
                events.append(
                    event_from_dict(
                        {
                            **place,
                            "type": "REMOVE_ARTIFACT_TAG",
                            "version": int(version),
                            "tag": tag,
                        }
                    )
                )
            if model is not None:
                model["versions"][version] = [t for t in tags_of(version) if t not in gone]
    elif (entity, action) == ("model_version_alias", "created"):
        number, alias = int(str(data.get("version"))), str(data.get("alias"))
        if model is None or model["aliases"].get(alias) != number:
            events.append(
                event_from_dict(
                    {**place, "type": "ADD_ARTIFACT_ALIAS", "version": number, "alias": alias}
                )
            )
            if model is not None:
                model["aliases"][alias] = number
    elif (entity, action) == ("model_version_alias", "deleted") and model is not None:
        model["aliases"].pop(str(data.get("alias")), None)
    return events, cursor


def source_for(settings: MLflowSourceSettings, automations: list[Any]) -> MLflowSource:
    """The MLflow source watching what the automations that name it (or no source) look at."""
    mine = [a for a in automations if a.source in (None, settings.name)]
    projects = {a.project for a in mine if a.project is not None}
    watch = any(getattr(a.scope, "registry", None) == settings.registry for a in mine)
    return MLflowSource(settings, projects=projects, watch_registry=watch)
