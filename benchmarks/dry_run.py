"""How long the dry run takes on a large file, against the floor of just parsing it.

    python benchmarks/dry_run.py               # 1M events
    python benchmarks/dry_run.py --events 200000

Writes a JSON-lines file of METRIC events (1k runs, interleaved as trackers log them, with run
names, users and creation times as sources send them), then times, in the same run:
- the floor: a loop that only parses each line, with orjson and with msgspec (the faster one
  counts),
- `read_batch(...)`: reading the file into the evaluator's columns, every line validated,
- `dry_run(...)`: that, and evaluating three metric automations (one of each kind) at every
  point,
- the per-line path the fast reader replaced (a pydantic `Event` per line, then its columns),
- the whole command, `ml-automations evaluate`, as a process (imports and output included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import orjson

from prefect_ml_automations.config import load_config
from prefect_ml_automations.dry_run import dry_run
from prefect_ml_automations.evaluator.batch import BatchBuilder
from prefect_ml_automations.event_files import read_batch
from prefect_ml_automations.events import scan_events

CONFIG = """
automations:
  - name: threshold
    scope: {project: bench}
    event: {type: RUN_METRIC, metric: acc, window: 5, operator: ">", threshold: 0.6}
    action: {type: no_op}
  - name: change
    scope: {project: bench}
    event: {type: RUN_METRIC_CHANGE, metric: acc, current_window: 10, prior_window: 50,
            direction: increase, amount: 0.05}
    action: {type: no_op}
  - name: zscore
    scope: {project: bench}
    event: {type: RUN_METRIC_ZSCORE, metric: acc, window: 30, threshold: 3}
    action: {type: no_op}
"""


def write_events(path: Path, count: int, runs: int = 1000) -> None:
    rng = np.random.default_rng(0)
    skill = rng.normal(0, 0.05, runs)
    with path.open("w") as out:
        for i in range(count):
            run, step = i % runs, i // runs
            value = 0.5 + skill[run] + 0.3 * (1 - np.exp(-step / 300)) + rng.normal(0, 0.02)
            second = step + run / 1000
            event = {
                "type": "METRIC",
                "project": "bench",
                "run_id": f"run-{run:05d}",
                "run_name": f"sweep-{run}",
                "user": "alice",
                "run_created_at": f"2026-01-01T09:{run // 60 % 60:02d}:{run % 60:02d}Z",
                "metric": "acc",
                "step": step,
                "value": round(float(value), 6),
                "timestamp": f"2026-01-0{1 + int(second // 86400)}T{int(second // 3600) % 24:02d}:"
                f"{int(second // 60) % 60:02d}:{second % 60:09.6f}Z",
            }
            out.write(json.dumps(event) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp, "automations.yaml")
        config_path.write_text(CONFIG)
        events = Path(tmp, "events.jsonl")
        write_events(events, args.events)
        size = events.stat().st_size

        floors = {}
        for name, parse in (("orjson", orjson.loads), ("msgspec", msgspec.json.Decoder().decode)):
            start = time.perf_counter()
            with events.open("rb") as handle:
                for line in handle:
                    parse(line)
            floors[name] = time.perf_counter() - start
        floor = min(floors.values())

        start = time.perf_counter()
        batch = read_batch(events)
        reading = time.perf_counter() - start
        del batch

        config = load_config(config_path)
        start = time.perf_counter()
        evaluation = dry_run(config, events)
        seconds = time.perf_counter() - start

        start = time.perf_counter()
        builder = BatchBuilder()
        scan_events(events, builder.add)
        builder.build()
        per_line = time.perf_counter() - start

        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect_ml_automations.cli",
                "evaluate",
                str(config_path),
                str(events),
            ],
            capture_output=True,
            check=True,
        )
        command = time.perf_counter() - start
        printed = done.stdout.count(b"\n")

    print(
        f"{args.events:,} events ({size / 2**20:,.0f} MiB):\n"
        f"  parse each line, orjson   {floors['orjson']:6.2f} s\n"
        f"  parse each line, msgspec  {floors['msgspec']:6.2f} s\n"
        f"  read_batch()              {reading:6.2f} s  = {reading / floor:.2f}× the faster parse\n"
        f"  dry_run()                 {seconds:6.2f} s  = {seconds / floor:.2f}× "
        f"({len(evaluation.firings):,} firings)\n"
        f"  per line (pydantic Event, then columns) {per_line:6.2f} s  = "
        f"{per_line / floor:.2f}×\n"
        f"  ml-automations evaluate (process) {command:6.2f} s  = {command / floor:.2f}× "
        f"({printed:,} lines printed)"
    )


if __name__ == "__main__":
    main()
