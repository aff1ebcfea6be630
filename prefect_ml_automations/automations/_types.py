"""Building blocks shared by the user-facing models: the strict base model and checked scalars."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer


class StrictModel(BaseModel):
    """What users write: unknown fields are typos, and typos are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


@lru_cache(maxsize=4096)
def compiled(pattern: str) -> re.Pattern[str]:
    """The compiled form of a regex that was validated when the config was loaded."""
    return re.compile(pattern)


def _check_regex(pattern: str) -> str:
    try:
        compiled(pattern)
    except re.error as exc:
        raise ValueError(
            f"{pattern!r} is not a valid regular expression ({exc}); "
            "escape special characters such as '.', '(' or '+' with a backslash"
        ) from None
    return pattern


Regex = Annotated[str, AfterValidator(_check_regex)]
"""A Python regular expression, matched with `re.search` (anchor with ^ and $)."""


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value!r}")
    return float(value)


Number = Annotated[float, BeforeValidator(_number)]
"""A finite int or float (YAML `1` and `1.0` alike); booleans and strings are refused."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be a duration such as '90s', '30m', '24h' or '2d', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    elif isinstance(value, str) and value.startswith("P"):
        return value  # ISO 8601, as pydantic writes a timedelta back out
    else:
        raise ValueError(
            f"must be a duration such as '90s', '30m', '24h', '2d' or a number of seconds, "
            f"not {value!r}"
        )
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"must be 0 (off) or a positive duration, not {value!r}")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str),
]
"""A duration: '90s', '30m', '24h', '2d', or a number of seconds."""
