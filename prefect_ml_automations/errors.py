"""The one exception tree of prefect-ml-automations.

Every error a user can cause is a subclass of `MLAutomationsError` whose message is one or two
complete sentences: what was wrong, where, and how to fix it. The command line prints the message
and exits with `exit_code` (2 for bad input, 1 for failures at run time) — never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class MLAutomationsError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class BadInputError(MLAutomationsError):
    """The user handed us something we can not use (a config, an event, an argument)."""

    exit_code = 2


class ConfigError(BadInputError):
    """An automation config is invalid; `problems` lists every problem found, not just the first.

    >>> str(ConfigError(["a: x.", "b: y."], source="automations.yaml"))
    'automations.yaml has 2 problems:\\n  - a: x.\\n  - b: y.'
    """

    def __init__(self, problems: Sequence[str], *, source: str = "the config") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        head = f"{source} has {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class EventError(BadInputError):
    """Normalized events are malformed; each problem names the file, the line and the field."""

    def __init__(self, problems: Sequence[str], *, source: str = "the events") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        plural = "s" if count != 1 else ""
        head = f"{source} has {count} malformed event{plural}; none of its events was used:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))

    @classmethod
    def unreadable(cls, path: Path, reason: str) -> EventError:
        """The file itself can not be read: one sentence with the absolute path tried."""
        error = cls([f"can not read {path.absolute()} ({reason})"], source=str(path))
        error.args = (f"{str(path.absolute())!r} can not be read ({reason}); check the path.",)
        return error


class StateError(MLAutomationsError):
    """Saved evaluator state can not be read (written by an incompatible version, or damaged)."""


class SourceError(MLAutomationsError):
    """A tracker (W&B, MLflow) could not be read."""


class SourceUnavailable(SourceError):
    """A tracker could not be reached, or was busy (429, 5xx) through every retry: a later poll
    may well succeed."""


class ActionError(MLAutomationsError):
    """An action (deployment, webhook, notification) could not be carried out.

    `retryable` says whether trying again later may help (a connection error, a 5xx) or not
    (an unknown deployment, a 4xx answer).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
