"""Building blocks shared by the user-facing models: the strict base model and checked scalars."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

#: Longer patterns are refused: nobody writes them by hand, and each is compiled and cached.
MAX_REGEX_LENGTH = 1000
#: A cooldown longer than this would in practice never end (`enabled: false` says that better).
MAX_COOLDOWN = timedelta(days=365)


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` for a message, cut short: a 5 MB string or a 400-digit number is shown by
    its start and its size, not in full.

    >>> shown(10**400)
    '1000000000… (a 401-digit number)'
    >>> shown("ab" * 100, limit=9)
    "'abababab… (200 characters)"
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # repr() of an int over 4300 digits raises ValueError: count the digits from the bits.
        digits = len(str(abs(value))) if value.bit_length() < 14_000 else None
        about = f"a {digits}-digit number" if digits else "a number of over 4,000 digits"
        head = str(value)[:10] if digits else ("-" if value < 0 else "")
        return f"{head}… ({about})"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters"
    return f"{text[:limit]}… ({size})"


def _nul_free(value: Any) -> bool:
    """Whether no string in `value` (nested lists and mappings, keys included) holds a NUL."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, SecretStr):
        return "\x00" not in value.get_secret_value()
    if isinstance(value, list | tuple):
        return all(_nul_free(v) for v in value)
    if isinstance(value, dict):
        return all(_nul_free(k) and _nul_free(v) for k, v in value.items())
    return True


class StrictModel(BaseModel):
    """What users write: unknown fields are typos, and typos are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        # Names, regexes and payloads end up in PostgreSQL text and JSON, which can not hold NUL.
        if not _nul_free(value):
            raise ValueError(
                "contains a NUL character (\\x00), which can not be stored (PostgreSQL refuses "
                "it in text); remove it"
            )
        return value


#: How long one match of a user's regex may take. A pattern with nested repeats (`(a+)+$`)
#: backtracks exponentially on a crafted name; past this it is an error, so the event that
#: carries the name is quarantined instead of holding the sensor for hours.
REGEX_TIMEOUT = 0.1


class RegexTimeout(ValueError):
    """A regex took longer than `REGEX_TIMEOUT` on one text."""


class BoundedRegex:
    """A user's regex with Python's `re` semantics, each search bounded in time (the `regex`
    module's `timeout`; Python's `re` has none)."""

    def __init__(self, pattern: str) -> None:
        import regex

        re.compile(pattern)  # the messages users know, for a pattern that does not compile
        self.pattern = pattern
        self._compiled = regex.compile(pattern, flags=regex.VERSION0)

    def search(self, text: str) -> bool:
        try:
            return self._compiled.search(text, timeout=REGEX_TIMEOUT) is not None
        except TimeoutError:
            raise RegexTimeout(
                f"the regular expression {shown(self.pattern)} took more than "
                f"{REGEX_TIMEOUT:g} s on {shown(text, limit=40)} ({len(text)} characters); "
                "simplify it (nested repeats such as (a+)+ backtrack exponentially)"
            ) from None


@lru_cache(maxsize=4096)
def compiled(pattern: str) -> BoundedRegex:
    """The compiled form of a regex that was validated when the config was loaded."""
    return BoundedRegex(pattern)


def _check_regex(pattern: str) -> str:
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(
            f"is a regular expression of {len(pattern)} characters; at most "
            f"{MAX_REGEX_LENGTH} are allowed, so match on a shorter pattern"
        )
    try:
        compiled(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        # OverflowError: a repeat count too large ('a{99999999999}'); RecursionError: nesting.
        raise ValueError(
            f"{shown(pattern)} is not a valid regular expression ({exc}); "
            "escape special characters such as '.', '(' or '+' with a backslash"
        ) from None
    return pattern


Regex = Annotated[str, AfterValidator(_check_regex)]
"""A Python regular expression, matched with `re.search` (anchor with ^ and $)."""


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range (about 1.8e308)
        raise ValueError(
            f"is too large: {shown(value)}; write a finite number (at most about 1.8e308)"
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {shown(value)}")
    return number


Number = Annotated[float, BeforeValidator(_number)]
"""A finite int or float (YAML `1` and `1.0` alike); booleans, strings and numbers too large for
a float are refused."""

_ISO_DURATION = TypeAdapter(timedelta)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    seconds: int | float
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(
            f"must be a duration such as '90s', '30m', '24h' or '2d', not {shown(value)}"
        )
    elif isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]  # a huge one is inf, not an error
    elif isinstance(value, str) and value.startswith("P"):
        # ISO 8601, as pydantic writes a timedelta back out ("P1DT2H")
        try:
            seconds = _ISO_DURATION.validate_python(value).total_seconds()
        except ValidationError:
            raise ValueError(
                f"must be a duration such as '90s', '30m', '24h', '2d' or ISO 8601 'P1DT2H' of "
                f"at most {MAX_COOLDOWN.days} days, not {shown(value)}"
            ) from None
    else:
        raise ValueError(
            f"must be a duration such as '90s', '30m', '24h', '2d' or a number of seconds, "
            f"not {shown(value)}"
        )
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"must be 0 (off) or a positive duration, not {shown(value)}")
    # Compared before timedelta() is built: timedelta(seconds=1e20) raises OverflowError.
    if seconds > MAX_COOLDOWN.total_seconds():
        raise ValueError(
            f"must be at most {MAX_COOLDOWN.days} days ('{MAX_COOLDOWN.days}d'), not "
            f"{shown(value)}; to stop an automation firing, set 'enabled: false'"
        )
    return timedelta(seconds=seconds)


def duration_text(duration: timedelta) -> str:
    """A duration the way users write it: '90s', '30m', '24h', '2d' ('0' when none)."""
    seconds = duration.total_seconds()
    if not seconds:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(duration_text, return_type=str),
]
"""A duration from 0 to 365 days: '90s', '30m', '24h', '2d', or a number of seconds."""
