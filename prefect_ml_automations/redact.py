"""Keep secrets out of error messages: `scrub` a text, `safe_url` a URL.

An error message travels far — the firing history, the sensor's Prefect artifact, a
`firing.failed` Prefect event, the logs — and much of it is quoted from the outside world: a
webhook target's answer (which may echo the request's `Authorization` header), an exception's
text (which may quote a URL with a token in it). Whatever quotes the outside world goes through
`scrub` first, and a URL is shown as `safe_url` shows it.

    >>> scrub('{"authorization": "Bearer tok-1", "ok": false}')
    '{"authorization": "***", "ok": false}'
    >>> scrub("echoed s3cr$t, s3cr%24t and czNjciR0", secrets=["s3cr$t"])
    'echoed ***, *** and ***'
    >>> safe_url("https://bot:pw@hooks.example.com/ml?token=abc#top")
    'https://hooks.example.com/ml'
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

#: What a secret becomes.
REDACTED = "***"
#: How much of a quoted text (a response body, an exception's message) an error keeps.
EXCERPT = 200

# Names under which credentials travel: header names, query parameters, JSON keys, form fields.
_VALUE_KEYS = (
    r"x-wandb-signature|x-mlflow-signature|x-hub-signature(?:-256)?"
    r"|x-api-key|api[-_]?key|api[-_]?token|access[-_]?token|refresh[-_]?token|id[-_]?token"
    r"|auth[-_]?token|client[-_]?secret|token|secret|password|passwd|pwd|signature"
    r"|private[-_]?key"
)
_KEYS = rf"(?:proxy-)?authorization|cookie|set-cookie|{_VALUE_KEYS}"
# `"authorization": "Bearer x"` in JSON, `'token': 'x'` in a Python repr: the whole quoted value.
_QUOTED = re.compile(
    rf"""(?P<key>(?P<q>["'])(?:{_KEYS})(?P=q)\s*[:=]\s*)(?P<v>(?P<q2>["'])(?:\\.|(?!(?P=q2)).)*(?P=q2))""",
    re.IGNORECASE | re.DOTALL,
)
# `Authorization: Token x y` in a header dump: the rest of the value (to the line's end), the
# scheme kept.
_HEADER = re.compile(
    r"(?P<key>(?<![\w-])(?:proxy-)?(?:authorization|cookie|set-cookie)\s*[:=]\s*"
    r"(?:(?:bearer|basic|digest|token)\s+)?)"
    r"(?P<v>(?![\"'\s])[^\r\n,;}\]]+)",
    re.IGNORECASE,
)
# `token=x` in a query string or a form, `api_key: x` in YAML: the value (to a separator).
_ASSIGNED = re.compile(
    rf"(?P<key>(?<![\w-])(?:{_VALUE_KEYS})[\"']?\s*[:=]\s*)(?P<v>(?![\"'\s])[^\s&,;\"'<>()\[\]{{}}]+)",
    re.IGNORECASE,
)
# `Bearer x`, `Basic x`, `Digest x` anywhere.
_SCHEME = re.compile(
    r"(?P<key>\b(?:bearer|basic|digest)\s+)(?P<v>[A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE
)
# `scheme://user:password@host` anywhere (http, postgresql+psycopg, redis, …).
_USERINFO = re.compile(r"(?P<key>\b[a-z][a-z0-9+.\-]*://)(?P<v>[^\s@'\"<>]+@)", re.IGNORECASE)


def scrub(
    text: object,
    secrets: Iterable[Any] = (),
    *,
    limit: int | None = EXCERPT,
    truncated: bool = False,
) -> str:
    """`text` with every secret value replaced by `***`, then cut to `limit` characters.

    Replaced are: each of `secrets` (strings or `SecretStr`s; `None`s are skipped) as written,
    base64-encoded, URL-encoded and JSON-escaped; and, whatever `secrets` holds, values that look
    like credentials — `Bearer x`, `Basic x`, `Authorization: x`, `X-Wandb-Signature: x`,
    `token=x`, `api_key=x`, `password=x`, `"authorization": "x"` (JSON or a Python repr), and
    the password of a `scheme://user:password@host` URL. Scrubbing comes before cutting, so no
    cut leaves half a secret behind; a secret made only of `*` can not be told from the marker
    and is ignored. `truncated` says `text` is the head of something longer (a body read up to a
    size): the beginning of a secret at its very end is removed too, and the result ends in `…`.

    >>> scrub("GET /hook?api_key=k1&page=2 answered 401")
    'GET /hook?api_key=***&page=2 answered 401'
    >>> scrub("x" * 300, limit=10)
    'xxxxxxxxx…'
    """
    if not isinstance(text, str):
        text = str(text)
    forms = _forms(secrets)
    if truncated:
        # The rest of a secret may be in the part never read: drop any head of one at the end.
        tail = max(
            (
                k
                for f in forms
                for k in range(1, min(len(f), len(text) + 1))
                if text.endswith(f[:k])
            ),
            default=0,
        )
        text = text[: len(text) - tail]
    pattern = re.compile("|".join(re.escape(f) for f in forms)) if forms else None
    text = _without(text, pattern)
    for rule in (_QUOTED, _SCHEME, _HEADER, _ASSIGNED, _USERINFO):
        text = rule.sub(_redact_value, text)
    # Once more: a replacement can make a secret out of its neighbours ('to' + '***' + …).
    text = _without(text, pattern)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    elif truncated:
        text += "…"
    return _without(text, pattern)


def _without(text: str, pattern: re.Pattern[str] | None) -> str:
    """`text` with every match of `pattern` replaced, until none is left. Replacing one secret
    can join its neighbours into another, hence the repetition; each pass takes away characters
    other than '*' and adds none, so it ends."""
    if pattern is None:
        return text
    while True:
        scrubbed = pattern.sub(REDACTED, text)
        if scrubbed == text:
            return text
        text = scrubbed


def _redact_value(match: re.Match[str]) -> str:
    value = match.group("v")
    if value.startswith(('"', "'")):
        return f"{match.group('key')}{value[0]}{REDACTED}{value[0]}"
    if value.endswith("@"):  # a URL's user:password@
        return f"{match.group('key')}{REDACTED}@"
    return f"{match.group('key')}{REDACTED}"


def _forms(secrets: Iterable[Any]) -> list[str]:
    """Every way each secret may show up in a text, longest first (so a longer secret that
    holds a shorter one is replaced whole)."""
    forms: set[str] = set()
    for secret in secrets:
        value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        if not isinstance(value, str) or not value.strip("*"):
            continue
        raw = value.encode()
        encoded = [
            value,
            quote(value, safe=""),
            quote_plus(value, safe=""),
            quote(value),
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
        ]
        for form in encoded:
            forms.add(form)
            forms.add(form.rstrip("="))  # base64 without its padding
    return sorted((f for f in forms if f.strip("*")), key=len, reverse=True)


_SCHEME_PREFIX = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*:)//(?P<rest>.*)$", re.DOTALL)
# Credentials as RFC 3986 reads them (to the last '@' before the path) and as SQLAlchemy's
# `make_url` does (a password is anything up to the first '@', '/' and '?' included).
_RFC_USERINFO = re.compile(r"^[^/?#]*@")
_SQLALCHEMY_USERINFO = re.compile(r"^[^:/@?#]*:[^@]*@")


def safe_url(url: object) -> str:
    """`url` without its user, password, query string and fragment — and, for http(s), without
    its path beyond the first segment — for messages and logs.

    Works for http(s) URLs and SQLAlchemy URLs alike, and never raises: what is not a URL comes
    back with anything that could be credentials or a query cut off.

    >>> safe_url("postgresql+psycopg://user:p/w?d@db.internal:5432/ml?sslmode=require")
    'postgresql+psycopg://db.internal:5432/ml'
    >>> safe_url("sqlite:///ml-automations.db")
    'sqlite:///ml-automations.db'
    >>> safe_url("https://hooks.slack.com/services/T000/B000/XXXXXXXX?x=1")
    'https://hooks.slack.com/services/…'
    """
    try:
        text = url if isinstance(url, str) else str(url)
    except Exception:
        return "<a URL that can not be shown>"
    match = _SCHEME_PREFIX.match(text.strip())
    scheme, rest = (match["scheme"] + "//", match["rest"]) if match else ("", text.strip())
    found = [m.end() for m in (_RFC_USERINFO.match(rest), _SQLALCHEMY_USERINFO.match(rest)) if m]
    if found:
        rest = rest[max(found) :]
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    if scheme.lower() in ("http://", "https://"):
        # Webhook URLs carry their secret in the path too (Slack's /services/T…/B…/<secret>,
        # Discord's /api/webhooks/<id>/<token>): only the host and the first segment are shown.
        host, slash, path = rest.partition("/")
        first, more, beyond = path.partition("/")
        rest = host + slash + first + ("/…" if beyond else more)
    return scheme + rest


__all__ = ["EXCERPT", "REDACTED", "safe_url", "scrub"]
