"""One story, told to MLflow (a real store) and to W&B (the respx fake): the same normalized
events and the same firings come out of both sources (SPEC §6)."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

import pytest

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.config import MLflowSourceSettings, WandbSourceSettings
from prefect_ml_automations.evaluator import Evaluator, EventBatch
from prefect_ml_automations.sources import Source
from prefect_ml_automations.sources.mlflow import MLflowSource
from prefect_ml_automations.sources.wandb import WandbSource

from .wandb_fake import MODELS, FakeRun, FakeWandb

T0 = 1_767_261_600  # 2026-01-01T10:00:00Z


class Tracker(ABC):
    """What the story does to a tracker."""

    project: str
    collection: str

    @abstractmethod
    def source(self) -> Source: ...
    @abstractmethod
    def start(self, run: str) -> None: ...
    @abstractmethod
    def log(self, run: str, step: int, value: float) -> None: ...
    @abstractmethod
    def end(self, run: str, state: str) -> None: ...
    @abstractmethod
    def new_version(self) -> None: ...
    @abstractmethod
    def alias(self, alias: str, version: int) -> None: ...
    @abstractmethod
    def tag(self, version: int, tag: str, on: bool) -> None: ...


class MLflowTracker(Tracker):
    def __init__(self, uri: str) -> None:
        import mlflow

        tag = uuid.uuid4().hex[:6]
        self.project, self.collection = f"acme/vision-{tag}", f"churn-{tag}"
        self.client = mlflow.MlflowClient(uri)
        self.experiment = self.client.create_experiment(self.project)
        self.client.create_registered_model(self.collection)
        self.runs: dict[str, str] = {}
        self.uri = uri

    def source(self) -> Source:
        settings = MLflowSourceSettings(name="mlflow", type="mlflow", tracking_uri=self.uri)
        return MLflowSource(settings, projects={self.project}, watch_registry=True)

    def start(self, run: str) -> None:
        self.runs[run] = self.client.create_run(self.experiment, run_name=run).info.run_id

    def log(self, run: str, step: int, value: float) -> None:
        self.client.log_metric(
            self.runs[run], "acc", value, step=step, timestamp=(T0 + step) * 1000
        )

    def end(self, run: str, state: str) -> None:
        self.client.set_terminated(self.runs[run], state.upper())

    def new_version(self) -> None:
        self.client.create_model_version(self.collection, source="s3://m")

    def alias(self, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(self.collection, alias, str(version))

    def tag(self, version: int, tag: str, on: bool) -> None:
        if on:
            self.client.set_model_version_tag(self.collection, str(version), tag, "")
        else:
            self.client.delete_model_version_tag(self.collection, str(version), tag)


class WandbTracker(Tracker):
    def __init__(self, fake: FakeWandb) -> None:
        tag = uuid.uuid4().hex[:6]
        self.project, self.collection = f"acme/vision-{tag}", f"churn-{tag}"
        self.fake = fake
        fake.runs[self.project] = []
        # W&B numbers a registry collection from v0, MLflow from 1: a version linked before the
        # story starts lines the numbers up. Models are logged in a project nobody watches.
        self.new_version()

    def source(self) -> Source:
        settings = WandbSourceSettings(name="wandb", type="wandb", entity="acme", api_key="k")
        return WandbSource(settings, projects={self.project}, registries={"models"})

    def _run(self, run: str) -> FakeRun:
        return next(r for r in self.fake.runs[self.project] if r.display_name == run)

    def _touch(self, run: FakeRun) -> None:
        run.heartbeat_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")

    def start(self, run: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        self.fake.runs[self.project].append(
            FakeRun(f"id-{run}", run, "alice", stamp, heartbeat_at=stamp)
        )

    def log(self, run: str, step: int, value: float) -> None:
        r = self._run(run)
        r.history.append({"_step": step, "_timestamp": T0 + step, "acc": value})
        self._touch(r)

    def end(self, run: str, state: str) -> None:
        r = self._run(run)
        r.state = {"failed": "crashed"}.get(state, state)
        self._touch(r)

    def new_version(self) -> None:
        artifact = self.fake.log_artifact("acme/training", self.collection)
        self.fake.link(artifact, MODELS, self.collection)

    def alias(self, alias: str, version: int) -> None:
        self.fake.move_alias(MODELS, self.collection, alias, version)

    def tag(self, version: int, tag: str, on: bool) -> None:
        artifact = self.fake.collections[MODELS][self.collection].version(version).artifact
        artifact.tags = (
            sorted({*artifact.tags, tag}) if on else [t for t in artifact.tags if t != tag]
        )


@pytest.fixture(params=["mlflow", "wandb"])
def tracker(request: pytest.FixtureRequest) -> Tracker:
    if request.param == "mlflow":
        pytest.importorskip("mlflow", reason="the MLflow source needs the [mlflow] extra")
        return MLflowTracker(request.getfixturevalue("tracking_uri"))
    return WandbTracker(request.getfixturevalue("fake"))


def normalized(events: list[Any]) -> list[tuple[Any, ...]]:
    """What both sources must agree on (not ids, not times the trackers stamp themselves)."""
    out = []
    for e in events:
        if e.type == "METRIC":
            out.append(("METRIC", e.run_name, e.metric, e.step, e.value))
        elif e.type == "RUN_STATE":
            out.append(("RUN_STATE", e.run_name, e.state))
        elif e.type == "RUN_HEARTBEAT":
            continue  # (W&B's own sign of life: MLflow keeps no heartbeat)
        else:
            out.append((e.type, e.registry, e.version, e.alias or e.tag))
    return sorted(out, key=repr)


def automations(t: Tracker) -> list[Automation]:
    def a(name: str, scope: dict[str, str], event: dict[str, Any]) -> Automation:
        return Automation.model_validate(
            {
                "name": name,
                "scope": scope,
                "event": event,
                "action": {"type": "no_op"},
                "cooldown": 0,
            }
        )

    registry = {"registry": "models", "collection": t.collection}
    return [
        a(
            "good",
            {"project": t.project},
            {
                "type": "RUN_METRIC",
                "metric": "acc",
                "window": 2,
                "operator": ">=",
                "threshold": 0.7,
            },
        ),
        a("failed", {"project": t.project}, {"type": "RUN_STATE", "states": ["failed"]}),
        a("deploy", registry, {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"}),
        a("linked", registry, {"type": "LINK_ARTIFACT"}),
        a("untagged", registry, {"type": "REMOVE_ARTIFACT_TAG", "tag": "^validated$"}),
    ]


def test_the_same_story_gives_the_same_events_and_firings(tracker: Tracker) -> None:
    source = tracker.source()
    evaluator = Evaluator(automations(tracker))
    polls: list[list[Any]] = []
    firings: list[tuple[Any, ...]] = []
    cursor = source.poll(None, datetime.now(UTC)).cursor

    def poll() -> None:
        nonlocal cursor
        result = source.poll(cursor, datetime.now(UTC))
        cursor = result.cursor
        polls.append(normalized(result.events))
        for f in evaluator.evaluate(EventBatch.from_events(result.events)).firings:
            firings.append((f.automation, f.run_name, f.step, f.state, f.version))

    for run in ("sweep-1", "sweep-2"):
        tracker.start(run)
    for step, (a, b) in enumerate([(0.6, 0.5), (0.8, 0.4), (0.9, 0.3)]):
        tracker.log("sweep-1", step, a)
        tracker.log("sweep-2", step, b)
    poll()
    tracker.end("sweep-1", "finished")
    tracker.end("sweep-2", "failed")
    for _ in range(4):
        tracker.new_version()
    tracker.alias("production", 3)
    tracker.tag(3, "validated", on=True)
    poll()
    tracker.alias("production", 4)  # production moves from v3 to v4
    tracker.tag(3, "validated", on=False)
    poll()

    assert polls == [
        normalized_story_1(),
        normalized_story_2(),
        normalized_story_3(),
    ]
    assert sorted(firings, key=repr) == sorted(
        [
            ("good", "sweep-1", 1, None, None),
            ("good", "sweep-1", 2, None, None),
            ("failed", "sweep-2", None, "failed", None),
            ("linked", None, None, None, 1),
            ("linked", None, None, None, 2),
            ("linked", None, None, None, 3),
            ("linked", None, None, None, 4),
            ("deploy", None, None, None, 3),
            ("deploy", None, None, None, 4),
            ("untagged", None, None, None, 3),
        ],
        key=repr,
    )


def normalized_story_1() -> list[tuple[Any, ...]]:
    points = [("METRIC", "sweep-1", "acc", s, v) for s, v in enumerate([0.6, 0.8, 0.9])]
    points += [("METRIC", "sweep-2", "acc", s, v) for s, v in enumerate([0.5, 0.4, 0.3])]
    return sorted(
        [*points, ("RUN_STATE", "sweep-1", "running"), ("RUN_STATE", "sweep-2", "running")],
        key=repr,
    )


def normalized_story_2() -> list[tuple[Any, ...]]:
    return sorted(
        [
            ("RUN_STATE", "sweep-1", "finished"),
            ("RUN_STATE", "sweep-2", "failed"),
            *[("LINK_ARTIFACT", "models", v, None) for v in (1, 2, 3, 4)],
            ("ADD_ARTIFACT_ALIAS", "models", 3, "production"),
            ("ADD_ARTIFACT_TAG", "models", 3, "validated"),
        ],
        key=repr,
    )


def normalized_story_3() -> list[tuple[Any, ...]]:
    return sorted(
        [
            ("ADD_ARTIFACT_ALIAS", "models", 4, "production"),
            ("REMOVE_ARTIFACT_TAG", "models", 3, "validated"),
        ],
        key=repr,
    )
