"""What one poll of a tracker costs: 1k runs of which 100 are active, each logging a new point.

    python benchmarks/source_poll.py [--runs 1000] [--active 100]

MLflow: a real store (SQLite) through MlflowClient — calls counted at the client.
W&B: the GraphQL API faked with respx (a GraphQL executor over W&B-shaped objects) — requests
counted at the edge, and the time spent inside the fake server told apart from the source's own.
Each figure is a steady-state poll (after the first one that starts watching), median of 5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import respx

sys.path.insert(0, str(Path(__file__).parent.parent))

from prefect_ml_automations.config import MLflowSourceSettings, WandbSourceSettings
from prefect_ml_automations.sources.mlflow import MLflowSource
from prefect_ml_automations.sources.wandb import WandbSource
from tests.wandb_fake import FakeRun, FakeWandb

T0 = 1_767_261_600


def mlflow_case(runs: int, active: int) -> None:
    import mlflow
    from mlflow.entities import Metric

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment("acme/bench")
        ids = []
        start = time.perf_counter()
        for i in range(runs):
            run_id = client.create_run(experiment, run_name=f"run-{i}").info.run_id
            metrics = [Metric("acc", 0.5, (T0 + s) * 1000, s) for s in range(20)]
            client.log_batch(run_id, metrics=metrics)
            if i >= active:
                client.set_terminated(run_id, "FINISHED")
            ids.append(run_id)
        print(
            f"MLflow store with {runs:,} runs ({active} running) built in "
            f"{time.perf_counter() - start:.0f} s"
        )
        settings = MLflowSourceSettings(name="m", type="mlflow", tracking_uri=uri)
        source = MLflowSource(settings, projects={"acme/bench"}, watch_registry=False)
        cursor = source.poll(None, datetime.now(UTC)).cursor
        times, calls, found = [], [], []
        for step in range(20, 25):
            for run_id in ids[:active]:
                client.log_metric(run_id, "acc", 0.6, step=step, timestamp=(T0 + step) * 1000)
            start = time.perf_counter()
            poll = source.poll(cursor, datetime.now(UTC))
            times.append(time.perf_counter() - start)
            cursor, calls, found = poll.cursor, [*calls, poll.calls], [*found, len(poll.events)]
        print(
            f"  steady poll: median {statistics.median(times) * 1e3:.0f} ms, "
            f"{statistics.median(calls):.0f} MLflow calls, "
            f"{statistics.median(found):.0f} new events"
        )


def wandb_case(runs: int, active: int) -> None:
    fake = FakeWandb(page_size=100)
    stamp = datetime(2026, 1, 1, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fake.runs["acme/bench"] = [
        FakeRun(
            f"r{i}",
            f"run-{i}",
            "alice",
            stamp,
            state="running" if i < active else "finished",
            heartbeat_at=stamp,
            history=[{"_step": s, "_timestamp": T0 + s, "acc": 0.5} for s in range(20)],
        )
        for i in range(runs)
    ]
    settings = WandbSourceSettings(name="w", type="wandb", entity="acme", api_key="k")
    serving = [0.0]  # time spent inside the fake server, to tell the source's own cost apart

    def serve(request: Any) -> Any:
        start = time.perf_counter()
        try:
            return fake.handle(request)
        finally:
            serving[0] += time.perf_counter() - start

    with respx.mock() as mock:
        route = mock.post("https://api.wandb.ai/graphql").mock(side_effect=serve)
        source = WandbSource(
            settings, projects={"acme/bench"}, registries=set(), system_metrics=False
        )
        cursor = source.poll(None, datetime.now(UTC)).cursor
        times, requests, found, own = [], [], [], []
        for step in range(20, 25):
            now = datetime.now(UTC)
            for run in fake.runs["acme/bench"][:active]:
                run.history.append({"_step": step, "_timestamp": T0 + step, "acc": 0.6})
                run.heartbeat_at = now.strftime("%Y-%m-%dT%H:%M:%S.%f")
            before = route.call_count
            serving[0] = 0.0
            start = time.perf_counter()
            poll = source.poll(cursor, now)
            times.append(time.perf_counter() - start)
            own.append(times[-1] - serving[0])
            cursor = poll.cursor
            requests.append(route.call_count - before)
            found.append(len(poll.events))
    print(
        f"W&B ({runs:,} runs, {active} active, faked with respx): steady poll median "
        f"{statistics.median(times) * 1e3:.0f} ms "
        f"(the source's own share {statistics.median(own) * 1e3:.0f} ms, the rest the fake "
        f"server), {statistics.median(requests):.0f} GraphQL requests, "
        f"{statistics.median(found):.0f} new events"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--active", type=int, default=100)
    args = parser.parse_args()
    wandb_case(args.runs, args.active)
    mlflow_case(args.runs, args.active)


if __name__ == "__main__":
    main()
