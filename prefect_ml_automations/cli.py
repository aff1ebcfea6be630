"""The `ml-automations` command line.

Exit codes: 0 success, 1 a failure at run time, 2 bad input (config, events, arguments). Errors
are one or two sentences on stderr, never a traceback; machine-readable output goes to stdout
alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter
from cyclopts.exceptions import CycloptsError

from prefect_ml_automations.errors import BadInputError, MLAutomationsError

app = App(
    name="ml-automations",
    help="W&B-style Automations for Prefect: start deployments when models, data or runs change.",
    version_flags=["--version"],
)

ConfigFile = Annotated[Path, Parameter(help="The config file (YAML): sources and automations.")]


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
    explain: Annotated[
        bool,
        Parameter(
            help="Also say, per automation and subject, why it did or did not fire (stderr)."
        ),
    ] = False,
    explain_json: Annotated[
        bool,
        Parameter(
            help="Print the reasons as JSON records with 'decision' (stdout, after the firings)."
        ),
    ] = False,
) -> None:
    """Dry run: print the firings the events would cause, as JSON lines; start nothing."""
    from prefect_ml_automations.config import load_config
    from prefect_ml_automations.dry_run import dry_run, explain_lines

    config = load_config(file)
    since_time = _parse_time(since, "--since") if since is not None else None
    with _progress(f"Reading {events}") as progress:
        evaluation = dry_run(
            config, events, since=since_time, explain=explain or explain_json, progress=progress
        )
    out = sys.stdout
    for firing in evaluation.firings:
        out.write(firing.to_json() + "\n")
    if explain_json:
        for skip in evaluation.skips:
            out.write(json.dumps(skip.to_record()) + "\n")
    if explain:
        for line in explain_lines(config, evaluation):
            print(line, file=sys.stderr)
    count = len(evaluation.firings)
    print(
        f"{count} firing{'s' if count != 1 else ''} (dry run: nothing was started).",
        file=sys.stderr,
    )


def _parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(
            f"{option} {text!r} is not an ISO 8601 time; write it like 2026-01-01T09:00:00Z."
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by the console script)."""
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
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
