"""Run filters: which runs may fire a run automation (they never narrow a z-score baseline)."""

from __future__ import annotations

from pydantic import Field

from prefect_ml_automations.automations._types import Regex, StrictModel, compiled


class RunFilters(StrictModel):
    """`user` must equal the run's user; `run_name` is a regex searched in the run's name.

    >>> RunFilters(run_name="^sweep-").admits(user="bob", run_name="sweep-3") is None
    True
    """

    user: str | None = Field(
        default=None, description="Only runs of this user (the exact user name) may fire."
    )
    run_name: Regex | None = Field(
        default=None,
        description="Only runs whose name matches this regex may fire (searched: '^sweep-' "
        "for names that start with 'sweep-').",
    )

    def admits(self, *, user: str | None, run_name: str | None) -> str | None:
        """None when a run with this user and name may fire, else the reason it may not."""
        if self.user is not None and user != self.user:
            return f"filtered out: the run's user is {user!r}, not {self.user!r}"
        if self.run_name is not None and not compiled(self.run_name).search(run_name or ""):
            return f"filtered out: run name {run_name!r} does not match {self.run_name!r}"
        return None

    def admits_user(self, user: str | None) -> bool:
        return self.user is None or user == self.user

    def admits_name(self, run_name: str | None) -> bool:
        return self.run_name is None or bool(compiled(self.run_name).search(run_name or ""))
