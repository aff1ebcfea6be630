"""The `ml-automations` command line.

Exit codes: 0 success, 1 a failure at run time, 2 bad input (config, events, arguments). Errors
are one or two sentences on stderr, never a traceback; machine-readable output goes to stdout
alone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter
from cyclopts.exceptions import CycloptsError
from rich.console import Console

from prefect_ml_automations.errors import BadInputError, MLAutomationsError
from prefect_ml_automations.events import EARLIEST, LATEST

if TYPE_CHECKING:
    from rich.table import Table

    from prefect_ml_automations.backtest import Backtest
    from prefect_ml_automations.config import AutomationsConfig
    from prefect_ml_automations.evaluator import Evaluation
    from prefect_ml_automations.store import HistoryRow, StateStore


class _Console(Console):
    """Rich's console, quiet when its reader goes away (`--help | head -1`): rich exits 1 then;
    like every other output of ours into a closed pipe, that is not a failure."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise BrokenPipeError  # main() ends quietly with 0


app = App(
    name="ml-automations",
    help="W&B-style Automations for Prefect: start deployments when models, data or runs change.",
    version_flags=["--version"],
    console=_Console(),
)

ConfigFile = Annotated[Path, Parameter(help="The config file (YAML): sources and automations.")]
Explain = Annotated[
    bool,
    Parameter(help="Also say, per automation and subject, why it did or did not fire (stderr)."),
]
ExplainJson = Annotated[
    bool,
    Parameter(
        help="Print every decision as a JSON record with 'decision' ('fired', with its "
        "firing_id, or 'not_fired', with the reason) on stdout, after the firings."
    ),
]


@app.command
def validate(file: ConfigFile) -> None:
    """Check a config file; exit 0, or 2 listing every problem."""
    from prefect_ml_automations.config import load_config

    config = load_config(file)
    count = len(config.automations)
    print(
        f"{file}: {count} automation{'s' if count != 1 else ''}, "
        f"{len(config.sources)} source(s): valid."
    )


@app.command
def evaluate(
    file: ConfigFile,
    events: Annotated[Path, Parameter(help="Normalized events, one JSON object per line.")],
    *,
    since: Annotated[
        str | None,
        Parameter(help="Skip triggering events before this ISO 8601 time (naive = UTC)."),
    ] = None,
    explain: Explain = False,
    explain_json: ExplainJson = False,
    now: Annotated[
        str | None,
        Parameter(
            help="The clock stalled runs are judged by (RUN_STALLED), as an ISO 8601 time; "
            "default: the time of the file's latest event."
        ),
    ] = None,
) -> None:
    """Dry run: print the firings the events would cause, as JSON lines; start nothing."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.dry_run import dry_run

    config = load_config(file)
    since_time = _parse_time(since, "--since") if since is not None else None
    now_time = _parse_time(now, "--now") if now is not None else None
    with _progress(f"Reading {events}") as progress:
        evaluation = dry_run(
            config,
            events,
            since=since_time,
            explain=explain or explain_json,
            progress=progress,
            now=now_time,
        )
    _print_decisions(config, evaluation, explain=explain, explain_json=explain_json)
    count = len(evaluation.firings)
    print(
        f"{count} firing{'s' if count != 1 else ''} (dry run: nothing was started).",
        file=sys.stderr,
    )


@app.command
def backtest(
    file: ConfigFile,
    *,
    since: Annotated[
        str,
        Parameter(
            help="Where the backtest starts: a duration before --now (30d, 12h, 90m) or an ISO "
            "8601 time (naive = UTC). Earlier history only fills windows and baselines."
        ),
    ] = "30d",
    now: Annotated[
        str | None,
        Parameter(
            help="Where it ends, an ISO 8601 time (default: now); what the trackers date after "
            "it is left out."
        ),
    ] = None,
    automation: Annotated[
        list[str] | None,
        Parameter(
            name="--automation",
            negative=(),
            help="Only this automation (repeat for more); a disabled one is backtested as if "
            "enabled.",
        ),
    ] = None,
    explain: Explain = False,
    explain_json: ExplainJson = False,
) -> None:
    """What the automations would have fired over what the trackers already hold: read each
    source once, replay its history in time order, print the firings as JSON lines (as
    `evaluate` does) and a count per automation; start nothing."""
    from prefect_ml_automations.backtest import backtest as run_backtest
    from prefect_ml_automations.config import load_config

    end = _parse_time(now, "--now") if now is not None else datetime.now(UTC)
    start = _backtest_start(since, end)
    config = load_config(file)
    if not config.sources:
        raise BadInputError(
            f"{file} names no sources, so there is no tracker history to backtest; add an MLflow "
            "or W&B source under 'sources:', or dry-run a file of events with `ml-automations "
            "evaluate`."
        )
    for name in automation or ():
        _known_automation(config.automations, name, file)
    if automation is None and not any(a.enabled for a in config.automations):
        raise BadInputError(
            f"{file} has no enabled automation to backtest; name a disabled one with "
            "--automation to backtest it as if enabled."
        )
    with _step_progress() as progress:
        result = run_backtest(
            config,
            since=start,
            now=end,
            automations=automation,
            explain=explain or explain_json,
            progress=progress,
        )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    backtested = config.model_copy(update={"automations": result.automations})
    _print_decisions(backtested, result.evaluation, explain=explain, explain_json=explain_json)
    for line in _backtest_summary(result):
        print(line, file=sys.stderr)


def _print_decisions(
    config: AutomationsConfig, evaluation: Evaluation, *, explain: bool, explain_json: bool
) -> None:
    """A dry run's firings as JSON lines on stdout, then (`explain_json`) every decision as a
    record there too, and (`explain`) the reasons in words on stderr."""
    from prefect_ml_automations.dry_run import decision_records, explain_lines

    for firing in evaluation.firings:
        sys.stdout.write(firing.to_json() + "\n")
    if explain_json:
        for record in decision_records(evaluation):
            sys.stdout.write(json.dumps(record) + "\n")
    if explain:
        for line in explain_lines(config, evaluation):
            print(line, file=sys.stderr)


def _backtest_start(since: str, end: datetime) -> datetime:
    """`--since` as a time: a duration before `end`, or an ISO 8601 time before it."""
    from datetime import timedelta

    from pydantic import TypeAdapter, ValidationError

    from prefect_ml_automations.automations._types import Duration

    try:
        moment = end - TypeAdapter(Duration).validate_python(since)
    except ValidationError as exc:
        if "at most" in str(exc):
            raise BadInputError(
                f"--since {since!r} is longer than a duration may be (365 days); give the start "
                "as an ISO 8601 time instead, like 2025-01-01T00:00:00Z."
            ) from None
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise BadInputError(
                f"--since {since!r} is neither a duration nor an ISO 8601 time; write it like "
                "30d, 12h, 90m or 2026-01-01T09:00:00Z."
            ) from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    if end - moment <= timedelta(0):
        raise BadInputError(
            f"--since {since!r} does not start before --now ({_iso(end)}), so nothing could "
            "fire; give an earlier start or a later --now."
        )
    return moment


def _backtest_summary(result: Backtest) -> list[str]:
    """For a person: what was read, the span, and a table of firings and held-back matches."""
    lines = [
        f"Read source {read.source!r}: {_many(read.points, 'metric point')}, "
        f"{_many(read.states, 'run state')}, {_many(read.versions, 'created version')}."
        for read in result.read
    ]
    if result.after_now:
        lines.append(f"Left out {_many(result.after_now, 'event')} dated after --now.")
    lines.append(
        f"Backtest from {_iso(result.since)} to {_iso(result.now)}, over "
        f"{_many(result.events, 'event')}:"
    )
    rows = [("automation", "firings", "held back")] + [
        (t.automation, f"{t.firings:,}", f"{t.held_back:,}") for t in result.tallies()
    ]
    wide = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += [f"  {a:<{wide[0]}}  {f:>{wide[1]}}  {h:>{wide[2]}}" for a, f, h in rows]
    count = len(result.evaluation.firings)
    lines.append(f"{_many(count, 'firing')} (backtest: nothing was started).")
    return lines


def _many(count: int, thing: str) -> str:
    """`1 event`, `1,200 events`."""
    return f"{count:,} {thing}{'s' if count != 1 else ''}"


def _iso(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


@app.command
def ingest(
    file: ConfigFile,
    events: Annotated[Path, Parameter(help="Normalized events, one JSON object per line.")],
) -> None:
    """Put a file of events into the inbox the sensor reads (all of them, or none)."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.events import read_events
    from prefect_ml_automations.redact import safe_url
    from prefect_ml_automations.store import StateStore

    config = load_config(file)
    count = StateStore(config.store).put_events(read_events(events), origin="ingest")
    print(
        f"{count} event{'s' if count != 1 else ''} put into the inbox of {safe_url(config.store)}."
    )


@app.command
def run(
    file: ConfigFile,
    *,
    once: Annotated[bool, Parameter(help="One cycle, as a Prefect flow run, then exit.")] = False,
    interval: Annotated[float, Parameter(help="Seconds between polls of the sources.")] = 30.0,
    verbose: Annotated[
        bool, Parameter(help="Also show Prefect's tracebacks for expected failures.")
    ] = False,
) -> None:
    """The sensor: evaluate new events, record firings, run their actions."""
    import asyncio

    from prefect_ml_automations.config import load_config

    load_config(file)  # bad input fails here, before anything starts
    _check_interval(interval)
    _service_logging(verbose)
    if once:
        from prefect_ml_automations.flows import sensor_cycle

        state: Any = asyncio.run(sensor_cycle(str(file), return_state=True))  # type: ignore[arg-type]
        counts = asyncio.run(state.aresult(raise_on_failure=False))
        if isinstance(counts, dict):
            print(json.dumps(counts))
        if not state.is_completed():
            raise MLAutomationsError(state.message or "The sensor cycle failed.")
        return
    from prefect_ml_automations.flows import sensor_service
    from prefect_ml_automations.flows.sensor import STOP_ON_SIGNALS

    STOP_ON_SIGNALS.set(lambda _: None)  # SIGTERM and Ctrl-C stop the loop between cycles
    asyncio.run(sensor_service(str(file), interval=interval))
    print("stopped.", file=sys.stderr)


@app.command
def receive(
    file: ConfigFile,
    *,
    host: Annotated[str, Parameter(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, Parameter(help="Port to listen on.")] = 8765,
    insecure: Annotated[
        bool, Parameter(help="Accept requests without a token (loopback addresses only).")
    ] = False,
    sensor: Annotated[
        bool, Parameter(help="Also run the sensor here, woken by each push (--no-sensor: not).")
    ] = True,
    interval: Annotated[float, Parameter(help="Seconds between sensor polls.")] = 30.0,
    verbose: Annotated[
        bool, Parameter(help="Also show Prefect's tracebacks for expected failures.")
    ] = False,
) -> None:
    """The push receiver: POST /events into the inbox (and, by default, the sensor)."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.flows.receiver import serve_receiver

    config = load_config(file)
    _check_interval(interval)
    if insecure and host not in ("127.0.0.1", "localhost", "::1"):
        raise BadInputError(f"--insecure is for loopback only; listen on 127.0.0.1, not {host!r}.")
    _service_logging(verbose)
    stopped_by = serve_receiver(
        str(file),
        config,
        host=host,
        port=port,
        insecure=insecure,
        with_sensor=sensor,
        interval=interval,
    )
    if stopped_by is None:  # not stopped by a signal: the server could not go on (it said why)
        raise MLAutomationsError(
            f"The receiver could not listen on {host}:{port}, or stopped by itself; the lines "
            "above say why."
        )
    print("stopped.", file=sys.stderr)


@app.command
def serve(
    file: ConfigFile,
    *,
    interval: Annotated[float, Parameter(help="Seconds between sensor cycles.")] = 60.0,
    name: Annotated[str, Parameter(help="The deployment's name.")] = "sensor",
) -> None:
    """Serve the sensor as a scheduled Prefect deployment (ml-automations-sensor/NAME)."""
    from prefect import serve as prefect_serve

    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.flows.sensor import sensor_deployment

    load_config(file)  # bad input fails here, before anything is served
    _check_interval(interval)
    deployment = sensor_deployment(file, interval=interval, name=name)
    print(
        f"Serving ml-automations-sensor/{name}, a cycle every {interval:g} s "
        "(Ctrl-C stops serving and pauses the schedule, so no late runs pile up)."
    )
    try:
        prefect_serve(deployment, pause_on_shutdown=True, print_starting_message=False)
    finally:
        # Prefect's runner pauses what it served — unless it was stopped while starting up.
        if _pause_deployment(f"ml-automations-sensor/{name}"):
            print(f"Stopped; the schedule of ml-automations-sensor/{name} is paused.")


def _pause_deployment(name: str) -> bool:
    """Pause a deployment's schedule; False when there is none (or no API to ask)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def pause() -> bool:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(name)
            if not deployment.paused:
                await client.pause_deployment(deployment.id)
            return True

    try:
        return asyncio.run(pause())
    except Exception:  # not created, or the API is gone: nothing left to pause
        return False


@app.command
def apply(file: ConfigFile) -> None:
    """Save a config file as Prefect blocks: its automations, sources (with their credentials),
    receiver settings and store — all a sensor started from the Prefect UI needs."""
    from prefect_ml_automations.blocks import save_config
    from prefect_ml_automations.config import load_config

    save_config(load_config(file))


@app.command
def history(
    file: ConfigFile,
    *,
    automation: Annotated[str | None, Parameter(help="Only this automation.")] = None,
    status: Annotated[
        str | None, Parameter(help="Only this status: pending, finished, failed, skipped.")
    ] = None,
    firing: Annotated[
        str | None,
        Parameter(help="Only this firing: its id, or the id's first characters (at least 4)."),
    ] = None,
    json_lines: Annotated[
        bool,
        Parameter(
            name="--json",
            help="One firing record per line (docs/evaluation.md), with status, attempts, "
            "error, flow_run_id.",
        ),
    ] = False,
) -> None:
    """The firing history of a config's state store: one line per firing, newest last."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.store import StateStore

    if status is not None and status not in ("pending", "finished", "failed", "skipped"):
        raise BadInputError(
            f"--status {status!r} is not a status; use pending, finished, failed or skipped."
        )
    config = load_config(file)
    store = StateStore(config.store)
    if firing is not None:
        one = store.history_of(_firing_id(store, firing, file))
        rows = [one] if one is not None else []
        rows = [
            r
            for r in rows
            if (automation is None or r.automation == automation)
            and (status is None or r.status == status)
        ]
    else:
        rows = store.history(automation=automation, status=status)
    if json_lines:
        for row in rows:
            print(json.dumps(row.to_record()))
        return
    from rich.console import Console

    console = Console()
    console.print(_history_table(rows, console.width))
    if firing is not None:
        for row in rows:
            for line in _firing_details(row):
                console.print(line, markup=False, highlight=False)


def _history_table(rows: Sequence[HistoryRow], width: int) -> Table:
    """The history as a table of one line per entry, fitted to `width` columns.

    The id, time, automation, subject, status and detail always show (the last three cut with
    "…" when the terminal is narrow, never wrapped); the event type and attempt count only where
    there is room for them."""
    from rich.table import Table
    from rich.text import Text

    wide = width >= 120
    headers = ["id", "when (UTC)", "automation", "event", "subject", "status", "tries", "detail"]
    cells = [
        [
            row.firing_id[:8],
            f"{row.updated_at.astimezone(UTC):%m-%d %H:%M}",
            row.automation,
            row.firing.event_type if row.firing else "",
            row.subject,
            row.status,
            str(row.attempts),
            _detail(row),
        ]
        for row in rows
    ]
    shown = [header for header in headers if wide or header not in ("event", "tries")]
    natural = {h: max([len(h), *(len(line[headers.index(h)]) for line in cells)]) for h in shown}
    # Columns are two spaces apart; what the fixed columns leave is shared by the others.
    room = width - 2 * (len(shown) - 1) - sum(w for h, w in natural.items() if h not in _SHARE)
    widths = natural | _share(room, {h: natural[h] for h in _SHARE})
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in shown:
        table.add_column(
            header,
            width=widths[header],
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if header == "tries" else "left",
        )
    for line in cells:
        table.add_row(*(Text(line[headers.index(h)]) for h in shown))
    return table


#: How the history's wide columns share a narrow terminal: the detail matters most.
_SHARE = {"automation": 5, "subject": 6, "detail": 9}


def _share(room: int, wanted: dict[str, int]) -> dict[str, int]:
    """Split `room` characters between columns that want `wanted` each, in the `_SHARE`
    proportions (at least 4 each: "ab…" still says something); what a column does not need
    goes to the others, the detail first.

    >>> _share(40, {"automation": 13, "subject": 60, "detail": 90})
    {'automation': 10, 'subject': 12, 'detail': 18}
    >>> _share(40, {"automation": 5, "subject": 8, "detail": 90})
    {'automation': 5, 'subject': 8, 'detail': 27}
    """
    total = sum(_SHARE.values())
    widths = {h: min(w, max(4, room * _SHARE[h] // total)) for h, w in wanted.items()}
    spare = room - sum(widths.values())
    for header in ("detail", "subject", "automation"):
        more = max(0, min(spare, wanted[header] - widths[header]))
        widths[header] += more
        spare -= more
    return widths


def _detail(row: HistoryRow) -> str:
    """What a person needs next about an entry, in one line."""
    if row.status == "skipped":
        text = f"{row.error} ({row.count}×)"
    elif row.status == "pending" and row.retry_at is not None:
        text = f"next try {row.retry_at.astimezone(UTC):%H:%M:%S}; {row.error}"
    elif row.status == "pending":
        text = "waiting for the sensor"
    elif row.error:
        text = row.error
    else:
        text = ", ".join(f"{k} {v}" for k, v in json.loads(row.result or "{}").items()) or "done"
    return " ".join(text.split())  # one line, whatever the error held


def _firing_details(row: HistoryRow) -> list[str]:
    """One firing in full, for `history --firing`: nothing cut."""
    lines = [
        f"firing     {row.firing_id}",
        f"automation {row.automation}",
        f"subject    {row.subject}",
        f"status     {row.status} (attempts: {row.attempts})",
        f"recorded   {row.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"updated    {row.updated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
    ]
    if row.retry_at is not None and row.status == "pending":
        lines.append(f"next try   after {row.retry_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    if row.error:
        lines.append(f"{'reason' if row.status == 'skipped' else 'error':<10} {row.error}")
    for key, value in json.loads(row.result or "{}").items():
        lines.append(f"{key:<10} {value}")
    return lines


def _firing_id(store: StateStore, prefix: str, file: Path) -> str:
    """The one firing id that starts with `prefix` (at least 4 characters); exit 2 otherwise."""
    prefix = prefix.strip().lower()
    if len(prefix) < 4:
        raise BadInputError(
            f"Firing id {prefix!r} is too short; give at least its first 4 characters "
            f"(`ml-automations history {file}` lists them)."
        )
    candidates = store.firing_ids_starting(prefix, limit=6)
    if not candidates:
        raise BadInputError(
            f"No firing id starts with {prefix!r}; `ml-automations history {file}` lists them."
        )
    if len(candidates) > 1:
        shown = ", ".join(candidates[:5]) + (", …" if len(candidates) > 5 else "")
        raise BadInputError(
            f"Several firing ids start with {prefix!r} ({shown}); give more of the id."
        )
    return candidates[0]


@app.command
def retry(
    file: ConfigFile,
    firing_id: Annotated[
        str, Parameter(help="The firing's id, or its first characters (at least 4).")
    ],
) -> None:
    """Run a failed firing's action again, now; exit 0 if it finished, 1 if it failed again."""
    import asyncio

    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.sensor import Sensor

    config = load_config(file)
    sensor = Sensor(config)
    whole = _firing_id(sensor.store, firing_id, file)
    delivery = asyncio.run(sensor.retry(whole))
    if delivery.status == "finished":
        done = ", ".join(f"{k} {v}" for k, v in (delivery.result or {}).items()) or "done"
        print(f"Firing {whole} finished: {done}.")
        return
    error = (delivery.error or "no reason given").rstrip(".")
    if delivery.status == "pending" and delivery.retry_at is None:  # it did not run at all
        raise MLAutomationsError(f"Firing {whole} was not run: {error}.")
    if delivery.retry_at is not None:
        raise MLAutomationsError(
            f"Firing {whole} failed again ({error}); the sensor tries it again after "
            f"{delivery.retry_at.astimezone(UTC):%H:%M:%S} UTC."
        )
    raise MLAutomationsError(
        f"Firing {whole} failed again ({error}); it is not tried again by itself: fix the "
        f"cause, then `ml-automations retry {file} {whole[:8]}`."
    )


@app.command(name="import-wandb")
def import_wandb(
    definitions: Annotated[
        Path | None,
        Parameter(
            help="JSON of W&B automations as W&B's API returns them; leave out to fetch them "
            "(--entity)."
        ),
    ] = None,
    *,
    entity: Annotated[
        str | None,
        Parameter(
            help="The W&B entity (team) whose automations to fetch; with a FILE, the entity its "
            "projects belong to."
        ),
    ] = None,
    project: Annotated[
        str | None,
        Parameter(
            help="Only automations of this project (NAME or ENTITY/NAME) and its collections."
        ),
    ] = None,
    registry: Annotated[
        str | None, Parameter(help="Only automations of this registry and its collections.")
    ] = None,
    base_url: Annotated[
        str | None,
        Parameter(help="W&B's API, for fetching (default $WANDB_BASE_URL, else api.wandb.ai)."),
    ] = None,
) -> None:
    """Turn W&B automations into our YAML (stdout): from a FILE, or fetched with --entity
    and $WANDB_API_KEY. What does not carry over is a comment in the YAML and a note on stderr."""
    import os

    from prefect_ml_automations.sources.wandb import DEFAULT_BASE_URL
    from prefect_ml_automations.wandb_import import fetch_automations
    from prefect_ml_automations.wandb_import import import_wandb as convert

    if definitions is not None:
        if base_url is not None:
            raise BadInputError("--base-url is for fetching; leave it out when giving a FILE.")
        try:
            document = json.loads(definitions.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BadInputError(f"{definitions} can not be read ({exc.strerror}).") from None
        except json.JSONDecodeError as exc:
            raise BadInputError(
                f"{definitions} is not JSON ({exc.msg}, line {exc.lineno})."
            ) from None
        imported = convert(document, entity=entity, project=project, registry=registry)
    else:
        if not entity:
            raise BadInputError(
                "Give a FILE of W&B automations (JSON), or --entity to fetch them from W&B."
            )
        api_key = os.environ.get("WANDB_API_KEY")
        if not api_key:
            raise BadInputError(
                "WANDB_API_KEY is not set: export your W&B API key "
                "(https://wandb.ai/authorize) to fetch automations, or give a FILE."
            )
        url = base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
        fetched = fetch_automations(entity, api_key=api_key, base_url=url)
        imported = convert(
            fetched.triggers,
            entity=entity,
            project=project,
            registry=registry,
            homes=fetched.homes,
        )
        imported.empty_because = f"W&B lists no automations for entity {entity!r}"
        if fetched.omitted:
            left = ", ".join(sorted(fetched.omitted))
            print(f"note: {url} does not know {left}: left out of the query", file=sys.stderr)
        if fetched.legacy:
            print(
                f"note: {url} has no Entity.triggers: read by the legacy project walk",
                file=sys.stderr,
            )
    for note in imported.messages():
        print(f"note: {note}", file=sys.stderr)
    why = imported.nothing_imported()
    if why is not None:
        raise MLAutomationsError(why)
    sys.stdout.write(imported.yaml())


@app.command
def demo(
    *,
    directory: Annotated[
        Path, Parameter(name="--dir", help="Where the demo keeps its stores and config.")
    ] = Path("ml-automations-demo"),
) -> None:
    """The whole loop on a local MLflow and a local Prefect: no account, no network."""
    from prefect_ml_automations.flows.demo import run_demo

    run_demo(directory)


@app.command
def check(file: ConfigFile) -> None:
    """`validate`, plus what needs the outside world: the store opens, the receiver has auth,
    each tracker answers with its credentials, each deployment and notification block exists.
    One line each, ✓ or ✗ with the fix; exit 2 when any ✗."""
    import asyncio

    from prefect_ml_automations.checks import run_checks
    from prefect_ml_automations.config import load_config

    checks = asyncio.run(run_checks(load_config(file)))
    for one in checks:
        print(one.line())
    failed = sum(not c.ok for c in checks)
    if failed:
        raise BadInputError(
            f"{failed} of {len(checks)} check(s) failed; each ✗ line above says how to fix it."
        )


@app.command
def quarantine(
    file: ConfigFile,
    *,
    json_lines: Annotated[
        bool, Parameter(name="--json", help="One JSON record per quarantined event.")
    ] = False,
    redrive: Annotated[
        bool,
        Parameter(
            help="Put the quarantined events (all, or those of --id) back into the inbox, once "
            "what failed them is fixed; one that still fails comes back here."
        ),
    ] = False,
    ids: Annotated[
        list[int] | None, Parameter(name="--id", help="Only the quarantined event with this id.")
    ] = None,
) -> None:
    """Events a sensor accepted but could not evaluate, each kept with its error."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.redact import safe_url
    from prefect_ml_automations.store import StateStore

    for wrong in [i for i in ids or () if not 1 <= i < 2**63]:
        raise BadInputError(
            f"--id {wrong} is not the id of a quarantined event; "
            f"`ml-automations quarantine {file}` lists them."
        )
    config = load_config(file)
    store = StateStore(config.store)
    if redrive:
        count = store.redrive(ids)
        print(f"{count} event(s) put back into the inbox of {safe_url(config.store)}.")
        return
    rows = [q for q in store.quarantined() if ids is None or q.id in ids]
    if json_lines:
        for row in rows:
            print(json.dumps(row.to_record()))
        return
    print(f"{len(rows)} event(s) in the quarantine of {safe_url(config.store)}.")
    for row in rows:
        print(f"#{row.id} {row.quarantined_at:%Y-%m-%d %H:%M:%S} ({row.origin}): {row.error}")
        print(f"    {row.body if len(row.body) <= 300 else row.body[:300] + '…'}")
    if rows:
        print(
            f"Once fixed: ml-automations quarantine {file} --redrive  "
            "(puts them back into the inbox)."
        )


AutomationName = Annotated[str, Parameter(help="The automation's name, as in the config.")]


@app.command
def pause(
    file: ConfigFile,
    automation: AutomationName,
    *,
    reason: Annotated[str, Parameter(help="Why, for the record (shown by `paused`).")] = "",
) -> None:
    """Stop an automation firing from the next cycle on (every sensor on the store), keeping
    what the evaluator remembers of it; its matches are in the history as skipped."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.store import StateStore

    config = load_config(file)
    _known_automation(config.automations, automation, file)
    before = StateStore(config.store).pause(automation, reason or "paused by hand")
    if before is not None:
        print(f"{automation} is paused already (since {before:%Y-%m-%d %H:%M:%S} UTC).")
        return
    print(
        f"Paused {automation}: from the next cycle on its matches are held back as skipped. "
        f"`ml-automations resume {file} {automation}` lets it fire again."
    )


@app.command
def resume(file: ConfigFile, automation: AutomationName) -> None:
    """Let a paused automation fire again, from the next cycle on."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.store import StateStore

    config = load_config(file)
    store = StateStore(config.store)
    if automation not in store.paused():  # (one paused, then renamed or removed, may resume)
        _known_automation(config.automations, automation, file)
    if store.resume(automation):
        print(f"Resumed {automation}: it fires again from the next cycle on.")
    else:
        print(f"{automation} was not paused.")


@app.command
def paused(file: ConfigFile) -> None:
    """The paused automations: since when, and why."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.redact import safe_url
    from prefect_ml_automations.store import StateStore

    config = load_config(file)
    rows = sorted(StateStore(config.store).paused().items())
    names = {a.name for a in config.automations}
    print(f"{len(rows)} automation(s) paused in {safe_url(config.store)}.")
    for name, (since, why) in rows:
        gone = "" if name in names else f" (not in {file}: it stays paused if it comes back)"
        print(f"{name}: since {since:%Y-%m-%d %H:%M:%S} UTC — {why}{gone}")


def _known_automation(automations: Sequence[Any], name: str, file: Path) -> None:
    names = [a.name for a in automations]
    if name not in names:
        listed = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        raise BadInputError(
            f"{file} has no automation named {name!r}; its automations: {listed or 'none'}."
        )


def _service_logging(verbose: bool = False) -> None:
    """A service says what it does: its start, each busy cycle, each firing (INFO); and Prefect's
    engine does not repeat an expected failure with a traceback (unless `verbose`)."""
    logging.getLogger("prefect_ml_automations").setLevel(logging.INFO)
    if not verbose:
        for name in ("prefect.task_runs", "prefect.flow_runs"):
            logging.getLogger(name).addFilter(_expected_failures)


def _expected_failures(record: logging.LogRecord) -> bool:
    """Prefect's engine logs a failed task run with `exc_info`: a traceback for what our own
    ERROR line already says in one sentence (an action that failed, a tracker that is down), or
    "NoneType: None" for a returned Failed state. Those records lose the traceback, and the
    returned-state one (the same words as our line) is dropped; a bug's traceback stays."""
    error = record.exc_info[1] if record.exc_info else None
    if record.exc_info and (error is None or isinstance(error, MLAutomationsError)):
        record.exc_info = None
        record.exc_text = None
        if error is None and str(record.msg).startswith("Task run failed with state"):
            return False
    return True


def _check_interval(interval: float) -> None:
    import math

    if not math.isfinite(interval) or interval <= 0:
        raise BadInputError(
            f"--interval must be a positive, finite number of seconds, not {interval}."
        )


def _parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(
            f"{option} {text!r} is not an ISO 8601 time; write it like 2026-01-01T09:00:00Z."
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    if not EARLIEST <= moment < LATEST:
        raise BadInputError(
            f"{option} {text!r} is outside the times this tool takes ({EARLIEST:%Y-%m-%d} to "
            f"{LATEST:%Y-%m-%d}); give a time within them."
        )
    return moment


@contextmanager
def _progress(what: str) -> Iterator[Callable[[int], None] | None]:
    """A progress line on stderr while long work runs, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(what)
        yield lambda count: progress.update(task, description=f"{what}: {count:,} events")


@contextmanager
def _step_progress() -> Iterator[Callable[[str], None] | None]:
    """A spinner on stderr naming the step under way, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("Starting")
        yield lambda step: progress.update(task, description=f"{step}…")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by the console script)."""
    # With no PREFECT_API_URL, Prefect starts a temporary server of its own, which then logs an
    # ERROR per start when it can not send usage data (offline machines, CI). Unless the user
    # chose otherwise, that server keeps its analytics to itself.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # What a sensor says (each cycle, each firing, each failed action) also goes to the flow
    # run it runs in, so the Prefect UI shows it beside the run — Prefect's "extra loggers";
    # lines said outside any flow run (the receiver's) stay in the terminal only.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "prefect_ml_automations")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    try:
        app(
            list(sys.argv[1:] if argv is None else argv),
            exit_on_error=False,
            print_error=True,
            result_action="return_value",
        )
    except CycloptsError:
        return 2
    except MLAutomationsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output into `head` or `less` that closed early: nothing more to say, and nothing to
        # flush into the closed pipe at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:  # a bug of ours, or a failure nobody foresaw: no traceback for users
        from sqlalchemy.exc import SQLAlchemyError

        from prefect_ml_automations.store import store_problem

        if os.environ.get("ML_AUTOMATIONS_TRACEBACK"):
            raise
        if isinstance(exc, SQLAlchemyError):
            print(f"error: The state store failed: {store_problem(exc)}.", file=sys.stderr)
            return 1
        print(
            f"error: {exc.__class__.__name__}: {exc} (unexpected; run again with "
            "ML_AUTOMATIONS_TRACEBACK=1 to see where, and please report it).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
