"""Events per second for one and for two sensor processes on one PostgreSQL store.

    python benchmarks/workers.py [--events 200000] [--projects 8] [--limit 10000]

Fills the inbox of a fresh PostgreSQL database with `--events` metric points of `--projects`
projects (100 runs each, interleaved as concurrently logging runs send them), watched by three
metric automations per project (as in benchmarks/evaluate.py). Then starts N sensor processes
(N = 1, then 2, each time on a fresh copy of the same inbox), lets them go at once, and times
until the inbox is empty: each cycle takes its share of the partitions (projects) nobody holds,
at most `--limit` events, and evaluates, records and saves them in its transaction. The firings
recorded must be the same for N = 1 and N = 2 (each once). Process start-up is not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import sqlalchemy as sa
from evaluate import AUTOMATIONS

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.config import AutomationsConfig
from prefect_ml_automations.events import event_from_dict
from prefect_ml_automations.sensor import Sensor
from prefect_ml_automations.store import StateStore, firings, utcnow

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
RUNS = 100


def automations(projects: int) -> list[Automation]:
    """benchmarks/evaluate.py's three automations, once per project."""
    return [
        a.model_copy(
            update={
                "name": f"{a.name}-{p}",
                "scope": a.scope.model_copy(update={"project": f"bench-{p}"}),
            }
        )
        for p in range(projects)
        for a in AUTOMATIONS
    ]


def fresh_postgres(name: str) -> str:
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def points(count: int, projects: int) -> list[Any]:
    steps = -(-count // (projects * RUNS))
    out = []
    for step in range(steps):
        for run in range(RUNS):
            for p in range(projects):
                if len(out) == count:
                    return out
                value = 0.5 + 0.3 * ((step * 7 + run * 13 + p) % 11) / 11
                out.append(
                    event_from_dict(
                        {
                            "type": "METRIC",
                            "project": f"bench-{p}",
                            "run_id": f"run-{run:04d}",
                            "metric": "acc",
                            "step": step,
                            "value": value,
                            "timestamp": f"2026-01-05T{step // 3600 % 24:02d}:"
                            f"{step // 60 % 60:02d}:{step % 60:02d}Z",
                        }
                    )
                )
    return out


def work(url: str, projects: int, limit: int, barrier: Any, out: Any) -> None:
    """One sensor process: cycle until the inbox is empty."""
    config = AutomationsConfig(store=url, automations=automations(projects))
    store = StateStore(url)
    sensor = Sensor(config, store)
    store.working(sensor.name, utcnow())  # (so that the first cycles already share)
    barrier.wait()
    start = time.time()
    events = cycles = 0
    while True:
        report = sensor.commit([], limit=limit)
        cycles += 1
        events += report.events
        if report.events == 0:
            if not store.has_inbox():
                break
            time.sleep(0.02)  # another sensor holds what is left
    out.put((start, time.time(), events, cycles))
    sensor.leave()
    store.close()


def measure(workers: int, inbox: list[Any], projects: int, limit: int) -> tuple[float, set[str]]:
    url = fresh_postgres("mla_bench_workers")
    store = StateStore(url)
    for start in range(0, len(inbox), 20_000):
        store.put_events(inbox[start : start + 20_000], origin="ingest")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    out = context.Queue()
    processes = [
        context.Process(target=work, args=(url, projects, limit, barrier, out))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(end for _, end, _, _ in results) - min(start for start, _, _, _ in results)
    taken = sum(events for _, _, events, _ in results)
    with store.engine.connect() as connection:
        fired = set(connection.execute(sa.select(firings.c.firing_id)).scalars())
    store.close()
    rate = taken / elapsed
    shares = ", ".join(f"{events:,} events in {cycles} cycles" for _, _, events, cycles in results)
    print(
        f"  {workers} sensor process(es): {taken:,} events in {elapsed:.2f} s = "
        f"{rate:,.0f} events/s ({shares}); {len(fired):,} firings"
    )
    assert taken == len(inbox), f"{taken} events evaluated, {len(inbox)} put in"
    return rate, fired


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--projects", type=int, default=8)
    parser.add_argument("--limit", type=int, default=10_000)
    args = parser.parse_args()
    inbox = points(args.events, args.projects)
    print(
        f"{len(inbox):,} metric points, {args.projects} projects × {RUNS} runs, "
        f"{len(automations(args.projects))} automations, at most {args.limit:,} events a cycle, "
        "PostgreSQL:"
    )
    one, fired_one = measure(1, inbox, args.projects, args.limit)
    two, fired_two = measure(2, inbox, args.projects, args.limit)
    same = "the same firings" if fired_one == fired_two else "DIFFERENT firings"
    print(f"  two against one: {two / one:.2f}× the events/s, {same}")


if __name__ == "__main__":
    main()
