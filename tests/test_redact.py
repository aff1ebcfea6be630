"""No secret in any error (redact.py): `scrub` takes secrets and credential-looking values out of
quoted text, `safe_url` shows a URL without its credentials and query — checked on named
examples and, with hypothesis, on secrets planted in random text and random URLs."""

from __future__ import annotations

import base64
import json
import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import SecretStr

from prefect_ml_automations.redact import REDACTED, safe_url, scrub

# -- scrub: named examples --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.J9.x-y_z", "Authorization: Bearer ***"),
        ("authorization: Basic YXBpOmtleQ==", "authorization: Basic ***"),
        ("Authorization: Token ghp_abc def\nnext", "Authorization: Token ***\nnext"),
        ("Cookie: session=a1; theme=dark", "Cookie: ***; theme=dark"),
        ('{"authorization": "Bearer tok"}', '{"authorization": "***"}'),
        ('{"Authorization":"token x y"}', '{"Authorization":"***"}'),
        (
            "{'authorization': 'Bearer tok', 'accept': '*/*'}",
            "{'authorization': '***', 'accept': '*/*'}",
        ),
        ('{"password": "p\\"w", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("X-Wandb-Signature: q1w2e3r4==", "X-Wandb-Signature: ***"),
        ('{"x-wandb-signature": "q1w2e3r4=="}', '{"x-wandb-signature": "***"}'),
        ("GET /hook?token=abc&page=2", "GET /hook?token=***&page=2"),
        ("api_key=k-123 access_token=t-9", "api_key=*** access_token=***"),
        ("password: hunter2", "password: ***"),
        (
            "could not reach postgresql+psycopg://ml:pa55@db:5432/ml",
            "could not reach postgresql+psycopg://***@db:5432/ml",
        ),
        ("nothing to hide here: HTTP 503", "nothing to hide here: HTTP 503"),
    ],
    ids=[
        "bearer",
        "basic",
        "authorization-header-line",
        "cookie",
        "json-authorization",
        "json-authorization-other-scheme",
        "python-repr-of-headers",
        "json-password-with-escaped-quote",
        "wandb-signature-header",
        "wandb-signature-json",
        "query-token",
        "api-key-and-access-token",
        "yaml-password",
        "sqlalchemy-url-in-text",
        "plain-text-untouched",
    ],
)
def test_credential_looking_values_are_scrubbed_without_being_named(
    text: str, expected: str
) -> None:
    assert scrub(text) == expected


def test_a_named_secret_is_scrubbed_in_every_form_it_travels_in() -> None:
    secret = "s3cr/t+é?"
    raw = secret.encode()
    forms = [
        secret,
        quote(secret, safe=""),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        json.dumps(secret)[1:-1],
    ]
    text = " | ".join(f"echo {form}" for form in forms)
    assert scrub(text, [SecretStr(secret)], limit=None) == " | ".join(["echo ***"] * len(forms))


def test_a_longer_secret_that_holds_a_shorter_one_goes_whole() -> None:
    assert scrub("key abcdef!", ["abc", "abcdef"]) == "key ***!"


def test_scrubbing_comes_before_cutting() -> None:
    secret = "x" * 10 + "SECRET"
    text = "a" * 195 + secret
    assert scrub(text, [secret]) == "a" * 195 + REDACTED
    assert scrub("b" * 300) == "b" * 199 + "…"


def test_a_text_cut_in_the_middle_of_a_secret_loses_the_secrets_head_too() -> None:
    # A body read up to a size limit can end in the first half of a token.
    assert scrub("token was tok-12", ["tok-1234567"], truncated=True) == "token was …"


def test_a_secret_made_only_of_stars_is_ignored() -> None:
    assert scrub("a * b", ["*", "**"]) == "a * b"


# -- scrub: properties ------------------------------------------------------------------------

secrets_strategy = st.lists(
    st.text(min_size=1, max_size=24).filter(lambda s: s.strip("*")), min_size=1, max_size=3
)


@given(
    secrets=secrets_strategy,
    around=st.lists(st.text(max_size=30), min_size=1, max_size=6),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
)
def test_a_planted_secret_is_never_found_after_scrub(
    secrets: list[str], around: list[str], limit: int | None
) -> None:
    planted = "".join(
        part + secrets[i % len(secrets)] + (" Bearer " if i % 2 else "")
        for i, part in enumerate(around)
    )
    scrubbed = scrub(planted, secrets, limit=limit)
    for secret in secrets:
        assert secret not in scrubbed


@given(secret=st.text(min_size=1, max_size=24).filter(lambda s: s.strip("*")), cut=st.data())
def test_no_head_of_a_secret_survives_a_cut_read(secret: str, cut: st.DataObject) -> None:
    body = f"echo {secret} done"
    at = cut.draw(st.integers(min_value=5, max_value=len(body)))
    scrubbed = scrub(body[:at], [secret], truncated=at < len(body), limit=None)
    assert secret not in scrubbed
    if at < len(body):
        assert scrubbed.endswith("…")


@given(st.text(max_size=300), st.lists(st.text(max_size=10), max_size=3))
def test_scrub_never_raises_and_keeps_its_limit(text: str, secrets: list[str]) -> None:
    assert len(scrub(text, secrets, limit=50)) <= 50 + len(REDACTED)


# -- safe_url --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/ml?token=abc", "https://hooks.example.com/ml"),
        ("https://bot:pw@hooks.example.com:8443/ml#frag", "https://hooks.example.com:8443/ml"),
        ("postgresql+psycopg://user:pw@db.internal/ml", "postgresql+psycopg://db.internal/ml"),
        ("postgresql://u:p@ss@db/ml?sslmode=require", "postgresql://db/ml"),
        ("postgresql://u:pa/ss?x#y@db:5432/ml", "postgresql://db:5432/ml"),
        ("sqlite:///ml-automations.db", "sqlite:///ml-automations.db"),
        ("http://[::1]:4200/api", "http://[::1]:4200/api"),
        ("not a url?secret=1", "not a url"),
        ("", ""),
    ],
    ids=[
        "query",
        "userinfo-and-fragment",
        "sqlalchemy",
        "at-sign-in-password",
        "slash-question-hash-in-password",
        "sqlite",
        "ipv6",
        "garbage",
        "empty",
    ],
)
def test_safe_url_shows_where_without_credentials_or_query(url: str, shown: str) -> None:
    assert safe_url(url) == shown


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "url",
    [None, 42, b"https://u:p@h/", _Unprintable()],
    ids=["none", "int", "bytes", "unprintable"],
)
def test_safe_url_never_raises_on_what_is_not_a_url(url: object) -> None:
    assert isinstance(safe_url(url), str)


@given(st.text())
def test_safe_url_never_raises(url: str) -> None:
    assert isinstance(safe_url(url), str)


_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
_PATH = st.from_regex(r"(/[a-z0-9._-]{0,8}){0,3}", fullmatch=True)
# What either grammar lets a password hold unencoded: anything but '@' (SQLAlchemy reads a
# password up to the first '@'; RFC 3986 would need the rest percent-encoded).
_PASSWORD = st.text(
    alphabet=st.characters(blacklist_characters="@", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)


@given(
    scheme=st.sampled_from(["http", "https", "postgresql+psycopg", "mysql+pymysql", "redis"]),
    user=st.text(alphabet=string.ascii_letters + string.digits + "._-", max_size=8),
    password=_PASSWORD,
    host=_HOST,
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    path=_PATH,
    query=st.text(alphabet=string.ascii_letters + "=&", max_size=12),
)
def test_safe_url_never_shows_the_password(
    scheme: str,
    user: str,
    password: str,
    host: str,
    port: int | None,
    path: str,
    query: str,
) -> None:
    where = f"{host}:{port}" if port else host
    assume(password.strip() == password and password not in f"{scheme}://{where}{path}")
    url = f"{scheme}://{user}:{password}@{where}{path}?{query}&pw={password}#{password}"
    shown = safe_url(url)
    assert password not in shown
    if scheme.startswith("http"):  # a webhook's path may hold its secret: the first segment
        segments = path.split("/")
        path = "/".join(segments[:2]) + ("/…" if len(segments) > 2 and segments[2:] != [""] else "")
        path += "/" if segments[2:] == [""] else ""
    assert shown == f"{scheme}://{where}{path}"
