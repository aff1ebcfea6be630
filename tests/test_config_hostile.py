"""Config files under hostile input: whatever the file holds, `load_config` returns a config or
raises `ConfigError` naming the place and the fix, and `ml-automations validate` exits 0 or 2
without a traceback.

The named tests below state the limits one by one, with the exact words a user reads; the
properties after them mutate a valid config (values of every YAML type in every place, keys that
are not strings, keys dropped) and generate YAML texts and bytes, alias bombs included.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prefect_ml_automations.cli import main
from prefect_ml_automations.config import AutomationsConfig, load_config, parse_config
from prefect_ml_automations.errors import ConfigError

HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

VALID: dict[str, Any] = {
    "store": "sqlite:///ml-automations.db",
    "receiver": {"token": "t0k"},
    "sources": [{"name": "local", "type": "mlflow", "tracking_uri": "sqlite:///mlflow.db"}],
    "automations": [
        {
            "name": "deploy-on-production",
            "scope": {"registry": "models", "collection": "churn-classifier"},
            "event": {"type": "ADD_ARTIFACT_ALIAS", "alias": "^production$"},
            "action": {
                "type": "run_deployment",
                "deployment": "deploy-model/production",
                "parameters": {"model_version": "${artifact_version_string}"},
            },
        },
        {
            "name": "good-accuracy",
            "scope": {"project": "team/vision"},
            "event": {
                "type": "RUN_METRIC",
                "metric": "accuracy",
                "window": 5,
                "operator": ">",
                "threshold": 0.6,
            },
            "filters": {"user": "alice", "run_name": "^sweep-"},
            "cooldown": "1h",
            "action": {
                "type": "webhook",
                "url": "https://example.invalid/hook",
                "payload": {"text": "${run_name}: ${metric_values}"},
            },
        },
        {
            "name": "loss-plateau",
            "scope": {"project": "team/vision"},
            "event": {
                "type": "RUN_METRIC_CHANGE",
                "metric": "loss",
                "current_window": 5,
                "prior_window": 20,
                "direction": "decrease",
                "amount": 0.1,
            },
            "action": {"type": "notification", "block": "slack-webhook/team"},
        },
        {
            "name": "accuracy-outlier",
            "scope": {"project": "team/vision"},
            "event": {"type": "RUN_METRIC_ZSCORE", "metric": "accuracy", "threshold": 3},
            "action": {"type": "emit_event"},
        },
        {
            "name": "page-on-failure",
            "scope": {"project": "team/vision"},
            "event": {"type": "RUN_STATE", "states": ["failed"]},
            "action": {"type": "no_op"},
        },
    ],
}


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "automations.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refused(tmp_path: Path, content: str | bytes) -> list[str]:
    """The problems `load_config` lists for a file with this content."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, content), env={})
    assert caught.value.exit_code == 2
    return caught.value.problems


def automation(**fields: Any) -> str:
    """A file with one automation: `fields` (YAML flow text each) over a plain run automation."""
    base = {
        "name": "a",
        "scope": "{project: p}",
        "event": "{type: RUN_STATE, states: [failed]}",
        "action": "{type: no_op}",
    }
    lines = "".join(f"    {key}: {value}\n" for key, value in {**base, **fields}.items())
    return "automations:\n  - " + lines[4:]


def test_the_valid_config_these_tests_mutate_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, yaml.safe_dump(VALID)), env={})
    assert len(config.automations) == 5


# -- 1. files that are not UTF-8 text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "line 1, byte offset 0: the file is not UTF-8 text (invalid start byte 0x89); a config "
            "is YAML text, so save it as UTF-8 (or is this a binary file?)",
            id="png",
        ),
        pytest.param(
            "automations: []\nstore: sqlite:///café.db\n".encode("latin-1"),
            "line 2, byte offset 36: the file is not UTF-8 text (invalid continuation byte 0xe9); "
            "a config is YAML text, so save it as UTF-8 (or is this a binary file?)",
            id="latin-1",
        ),
        pytest.param(
            b"automations: []\nstore: x\x00\x01\x02",
            "line 2, column 9: the character '\\x00' (U+0000) can not appear in a YAML file; "
            "remove it (or is this a binary file?)",
            id="utf-8-with-control-characters",
        ),
    ],
)
def test_a_file_that_is_not_utf8_text_is_refused_with_the_offset(
    tmp_path: Path, content: bytes, message: str
) -> None:
    assert refused(tmp_path, content) == [message]


# -- 2. alias bombs ------------------------------------------------------------------------------

RECURSIVE = (
    "the alias *a stands for the value of &a that contains it, a value that would contain "
    "itself forever; write the value out instead"
)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("automations: &a [*a]\n", "line 1, column 18", id="list"),
        pytest.param("receiver: &a {token: *a}\n", "line 1, column 22", id="mapping"),
        pytest.param("receiver: &a {<<: *a}\n", "line 1, column 19", id="merge-key"),
        pytest.param("a: &a [[[*a]]]\n", "line 1, column 10", id="nested"),
    ],
)
def test_a_recursive_alias_is_refused(tmp_path: Path, text: str, where: str) -> None:
    assert refused(tmp_path, text) == [f"{where}: {RECURSIVE}"]


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """Nested anchors: each level's list aliases the level before `width` times."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_fast_saying_why(tmp_path: Path) -> None:
    path = write(tmp_path, billion_laughs())  # 9^10 (3.5 billion) strings once expanded
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert time.perf_counter() - started < 1.0
    assert caught.value.problems == [
        "line 5, column 10: the aliases (*l3 and those before it) expand this file to more than "
        "10,000 values and more than 10 times what it writes out, as a 'billion laughs' attack "
        "does; write the values out, or alias fewer of them"
    ]


def test_a_billion_laughs_of_long_strings_is_counted_by_their_length(tmp_path: Path) -> None:
    text = "l0: &l0 '" + "x" * 500_000 + "'\nl1: [" + ", ".join(["*l0"] * 100) + "]\n"
    [problem] = refused(tmp_path, text)
    assert problem.startswith("line 2, column ")
    assert "expand this file to more than 10,000 values" in problem


def test_aliases_that_repeat_a_setting_are_welcome(tmp_path: Path) -> None:
    first = (
        "  - name: a0\n"
        "    scope: {project: p}\n"
        "    event: &failed {type: RUN_STATE, states: [failed]}\n"
        "    action: &page {type: webhook, url: 'https://example.invalid', payload: {text: hi}}\n"
    )
    others = "".join(
        f"  - {{name: a{i}, scope: {{project: p}}, event: *failed, action: *page}}\n"
        for i in range(1, 300)
    )
    config = load_config(write(tmp_path, f"automations:\n{first}{others}"), env={})
    assert len(config.automations) == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "automations:\n" + "".join("  " * i + "- \n" for i in range(1, 120)),
            "line 101, column 201: values are nested more than 100 levels deep; a config needs "
            "far fewer (is a bracket left open?)",
            id="block",
        ),
        pytest.param(
            "a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 45 + "*a" + "]" * 45 + "\n",
            "line 2, column 49: the alias *a nests values more than 100 levels deep; a config "
            "needs far fewer",
            id="through-an-alias",
        ),
    ],
)
def test_deep_nesting_is_refused(tmp_path: Path, text: str, message: str) -> None:
    assert refused(tmp_path, text) == [message]


# -- 3. keys that are not strings ----------------------------------------------------------------

NOT_A_STRING = (
    "is not a string; quote it (YAML reads unquoted yes/no/on/off/true/false, ~ and numbers as "
    "booleans, null and numbers)."
)


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        pytest.param(
            "{True: x}\n", [f"the top-level key True {NOT_A_STRING}"], id="boolean-at-the-top"
        ),
        pytest.param("on: 1\n", [f"the top-level key True {NOT_A_STRING}"], id="yaml-on"),
        pytest.param("~: 1\n", [f"the top-level key None {NOT_A_STRING}"], id="null"),
        pytest.param(
            "automations: [{1: 2}]\n",
            [
                f"automations[0]: the key 1 {NOT_A_STRING}",
                "automations[0]: name: is required but missing; add 'name: …'.",
                "automations[0]: scope: is required but missing; add 'scope: …'.",
                "automations[0]: event: is required but missing; add 'event: …'.",
                "automations[0]: action: is required but missing; add 'action: …'.",
            ],
            id="in-an-automation",
        ),
        pytest.param(
            automation(scope="{project: p, 3.5: x}"),
            [f"automation 'a' (automations[0]): scope: the key 3.5 {NOT_A_STRING}"],
            id="in-a-scope",
        ),
        pytest.param(
            automation(
                action="{type: run_deployment, deployment: a/b, parameters: {yes: 1, 2: 3}}"
            ),
            [
                f"automation 'a' (automations[0]): action.parameters: the key True {NOT_A_STRING}",
                f"automation 'a' (automations[0]): action.parameters: the key 2 {NOT_A_STRING}",
            ],
            id="in-parameters",
        ),
        pytest.param(
            "sources: [{name: s, type: mlflow, tracking_uri: x, 7: 8}]\n",
            [f"source 's' (sources[0]): the key 7 {NOT_A_STRING}"],
            id="in-a-source",
        ),
    ],
)
def test_keys_that_are_not_strings_are_named(
    tmp_path: Path, text: str, messages: list[str]
) -> None:
    assert refused(tmp_path, text) == messages


# -- 4. wrong types at every level ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "automations: false\n",
            "automations: must be a list (each item starting with '- '), not a boolean (False).",
            id="automations-false",
        ),
        pytest.param(
            "sources: 7\n",
            "sources: must be a list (each item starting with '- '), not a number (7).",
            id="sources-7",
        ),
        pytest.param(
            "receiver: [1]\n", "receiver: must be a mapping (key: value), not [1].", id="receiver"
        ),
        pytest.param(
            "receiver: false\n",
            "receiver: must be a mapping (key: value), not False.",
            id="receiver-false",
        ),
        pytest.param(
            "store: 5\n",
            "store: must be a SQLAlchemy URL such as sqlite:///ml-automations.db or "
            "postgresql+psycopg://user@host/db, not 5.",
            id="store-5",
        ),
        pytest.param(
            "- automations\n",
            "the file must be a mapping with 'sources' and 'automations' at the top, not a list "
            "(['automations'])",
            id="top-level-list",
        ),
        pytest.param(
            "automations\n",
            "the file must be a mapping with 'sources' and 'automations' at the top, not a string "
            "('automations')",
            id="top-level-scalar",
        ),
        pytest.param(
            "automations: [5]\n",
            "automations[0]: must be a mapping (key: value), not 5.",
            id="automation-a-number",
        ),
        pytest.param(
            "sources: [[]]\n",
            "sources[0]: must be a mapping (key: value), not [].",
            id="source-a-list",
        ),
        pytest.param(
            automation(name="{x: 1}"),
            "automations[0]: name: must be a string, not {'x': 1}.",
            id="name-a-mapping",
        ),
        pytest.param(
            automation(event="[RUN_STATE]"),
            "automation 'a' (automations[0]): event: must be a mapping (key: value), not "
            "['RUN_STATE'].",
            id="event-a-list",
        ),
        pytest.param(
            automation(cooldown="[1h]"),
            "automation 'a' (automations[0]): cooldown: must be a duration such as '90s', '30m', "
            "'24h', '2d' or a number of seconds, not ['1h'].",
            id="cooldown-a-list",
        ),
        pytest.param(
            automation(event="{type: RUN_STATE, states: failed: x}"),
            "line 4, column 44: not valid YAML (did not find expected ',' or '}')",
            id="syntax",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(tmp_path: Path, text: str, message: str) -> None:
    assert refused(tmp_path, text) == [message]


# -- 5. numbers too large for a float, and numbers that are not finite ---------------------------

HUGE = "1" + "0" * 400  # 10**400: a Python int, beyond any float
TOO_LARGE = (
    "is too large: 1000000000… (a 401-digit number); write a finite number (at most about 1.8e308)."
)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(
            f"{{type: RUN_METRIC, metric: m, operator: '>', threshold: {HUGE}}}",
            f"event.threshold: {TOO_LARGE}",
            id="threshold-10**400",
        ),
        pytest.param(
            f"{{type: RUN_METRIC, metric: m, operator: '>', threshold: -{HUGE}}}",
            "event.threshold: is too large: -100000000… (a 401-digit number); write a finite "
            "number (at most about 1.8e308).",
            id="threshold-minus-10**400",
        ),
        pytest.param(
            f"{{type: RUN_METRIC_CHANGE, metric: m, direction: any, amount: {HUGE}}}",
            f"event.amount: {TOO_LARGE}",
            id="amount-10**400",
        ),
        pytest.param(
            f"{{type: RUN_METRIC_ZSCORE, metric: m, threshold: {HUGE}}}",
            f"event.threshold: {TOO_LARGE}",
            id="zscore-threshold-10**400",
        ),
        pytest.param(
            "{type: RUN_METRIC, metric: m, operator: '>', threshold: .inf}",
            "event.threshold: must be a finite number, not inf.",
            id="threshold-inf",
        ),
        pytest.param(
            "{type: RUN_METRIC, metric: m, operator: '>', threshold: .nan}",
            "event.threshold: must be a finite number, not nan.",
            id="threshold-nan",
        ),
        pytest.param(
            "{type: RUN_METRIC_CHANGE, metric: m, direction: any, amount: -.inf}",
            "event.amount: must be a finite number, not -inf.",
            id="amount-minus-inf",
        ),
        pytest.param(
            "{type: RUN_METRIC_ZSCORE, metric: m, threshold: .NaN}",
            "event.threshold: must be a finite number, not nan.",
            id="zscore-nan",
        ),
        pytest.param(
            "{type: RUN_METRIC, metric: m, operator: '>', threshold: 1" + "0" * 5000 + "}",
            None,
            id="5001-digits",
        ),
    ],
)
def test_numbers_must_be_finite_and_fit_a_float(
    tmp_path: Path, event: str, message: str | None
) -> None:
    problems = refused(tmp_path, automation(event=event))
    if message is None:  # Python refuses to read the integer: the line and column say where
        assert problems == [
            "line 4, column 68: the integer 10000000000000000000… of 5001 digits is too large "
            "for any field"
        ]
    else:
        assert problems == [f"automation 'a' (automations[0]): {message}"]


# -- 6. cooldowns --------------------------------------------------------------------------------

AT_MOST_A_YEAR = (
    "must be at most 365 days ('365d'), not {}; to stop an automation firing, set 'enabled: false'."
)


@pytest.mark.parametrize(
    ("cooldown", "message"),
    [
        pytest.param("1e20", AT_MOST_A_YEAR.format("'1e20'"), id="1e20"),
        pytest.param("1.0e+20", AT_MOST_A_YEAR.format("1e+20"), id="float-1e20"),
        pytest.param(HUGE, AT_MOST_A_YEAR.format("1000000000… (a 401-digit number)"), id="10**400"),
        pytest.param("99999999999d", AT_MOST_A_YEAR.format("'99999999999d'"), id="99999999999d"),
        pytest.param("366d", AT_MOST_A_YEAR.format("'366d'"), id="366d"),
        pytest.param(".inf", AT_MOST_A_YEAR.format("inf"), id="inf"),
        pytest.param("-5", "must be 0 (off) or a positive duration, not -5.", id="negative"),
        pytest.param(".nan", "must be 0 (off) or a positive duration, not nan.", id="nan"),
        pytest.param(
            "P99999999999D",
            "must be a duration such as '90s', '30m', '24h', '2d' or ISO 8601 'P1DT2H' of at most "
            "365 days, not 'P99999999999D'.",
            id="iso-8601-overflow",
        ),
        pytest.param("P400D", AT_MOST_A_YEAR.format("'P400D'"), id="iso-8601-400-days"),
    ],
)
def test_a_cooldown_is_at_most_a_year(tmp_path: Path, cooldown: str, message: str) -> None:
    assert refused(tmp_path, automation(cooldown=cooldown)) == [
        f"automation 'a' (automations[0]): cooldown: {message}"
    ]


@pytest.mark.parametrize("cooldown", ["365d", "8760h", "31536000", "P365D", "0"])
def test_a_cooldown_of_up_to_a_year_is_accepted(tmp_path: Path, cooldown: str) -> None:
    config = load_config(write(tmp_path, automation(cooldown=cooldown)), env={})
    assert config.automations[0].cooldown.days in (0, 365)


# -- 7. windows the evaluator can keep in memory -------------------------------------------------

IN_MEMORY = "the evaluator keeps that many of each run's latest values per metric in memory."


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(
            "{type: RUN_METRIC, metric: m, operator: '>', threshold: 1, window: 1000000000}",
            f"event.window: must be at most 1000 values, not 1000000000: {IN_MEMORY}",
            id="run-metric",
        ),
        pytest.param(
            "{type: RUN_METRIC, metric: m, operator: '>', threshold: 1, window: 1001}",
            f"event.window: must be at most 1000 values, not 1001: {IN_MEMORY}",
            id="run-metric-1001",
        ),
        pytest.param(
            "{type: RUN_METRIC_CHANGE, metric: m, direction: any, amount: 1, current_window: 500,"
            " prior_window: 501}",
            "event: current_window + prior_window must be at most 1000 values together, not "
            f"500 + 501: {IN_MEMORY}",
            id="run-metric-change",
        ),
        pytest.param(
            "{type: RUN_METRIC_CHANGE, metric: m, direction: any, amount: 1, prior_window: "
            f"{HUGE}}}",
            "event: current_window + prior_window must be at most 1000 values together, not "
            f"10 + 1000000000… (a 401-digit number): {IN_MEMORY}",
            id="run-metric-change-10**400",
        ),
        pytest.param(
            "{type: RUN_METRIC_ZSCORE, metric: m, threshold: 3, window: 1001}",
            "event.window: must be at most 1000 runs, not 1001: the evaluator keeps a list of "
            "that many runs per metric in memory, and each firing records the whole baseline.",
            id="run-metric-zscore",
        ),
    ],
)
def test_windows_are_bounded_by_memory(tmp_path: Path, event: str, message: str) -> None:
    assert refused(tmp_path, automation(event=event)) == [
        f"automation 'a' (automations[0]): {message}"
    ]


def test_windows_of_1000_values_are_accepted(tmp_path: Path) -> None:
    text = automation(
        event="{type: RUN_METRIC_CHANGE, metric: m, direction: any, amount: 1, current_window: "
        "400, prior_window: 600}"
    )
    assert load_config(write(tmp_path, text), env={}).automations[0].event.values_needed == 1000  # type: ignore[union-attr]


# -- 8. NUL characters and very long regexes ------------------------------------------------------

NUL = (
    "contains a NUL character (\\x00), which can not be stored (PostgreSQL refuses it in text); "
    "remove it."
)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"name": '"a\\0"'}, "name", id="name"),
        pytest.param(
            {"event": '{type: RUN_METRIC, metric: "acc\\0", operator: ">", threshold: 1}'},
            "event.metric",
            id="metric",
        ),
        pytest.param(
            {"scope": '{project: p, collection_regex: "^a\\0"}', "event": "{type: LINK_ARTIFACT}"},
            "scope.collection_regex",
            id="regex",
        ),
        pytest.param({"filters": '{user: "al\\0ice"}'}, "filters.user", id="user"),
        pytest.param(
            {"action": '{type: run_deployment, deployment: "flow/dep\\0"}'},
            "action.deployment",
            id="deployment",
        ),
        pytest.param(
            {"action": '{type: webhook, url: "https://x.invalid", payload: {a: ["\\0"]}}'},
            "action.payload",
            id="payload",
        ),
        pytest.param(
            {"action": '{type: run_deployment, deployment: a/b, tags: ["ok", "n\\0"]}'},
            "action.tags",
            id="tags",
        ),
    ],
)
def test_nul_characters_are_refused(tmp_path: Path, fields: dict[str, str], field: str) -> None:
    [problem] = refused(tmp_path, automation(**fields))
    assert problem.endswith(f"(automations[0]): {field}: {NUL}")


def test_a_nul_character_in_a_source_or_the_store_is_refused(tmp_path: Path) -> None:
    text = 'store: "sqlite:///x\\0.db"\nsources: [{name: s, type: mlflow, tracking_uri: "a\\0"}]\n'
    assert refused(tmp_path, text) == [
        f"source 's' (sources[0]): tracking_uri: {NUL}",
        "store: contains a NUL character (\\x00); remove it.",
    ]


def test_a_regex_of_more_than_1000_characters_is_refused(tmp_path: Path) -> None:
    long = automation(
        scope=f"{{project: p, collection_regex: '{'a' * 1001}'}}", event="{type: LINK_ARTIFACT}"
    )
    assert refused(tmp_path, long) == [
        "automation 'a' (automations[0]): scope.collection_regex: is a regular expression of "
        "1001 characters; at most 1000 are allowed, so match on a shorter pattern."
    ]
    fine = long.replace("a" * 1001, "a" * 1000)
    assert load_config(write(tmp_path, fine), env={}).automations[0].name == "a"


def test_a_regex_repeat_count_beyond_reach_is_refused(tmp_path: Path) -> None:
    text = automation(filters="{run_name: 'a{99999999999}'}")
    assert refused(tmp_path, text) == [
        "automation 'a' (automations[0]): filters.run_name: 'a{99999999999}' is not a valid "
        "regular expression (the repetition number is too large); escape special characters such "
        "as '.', '(' or '+' with a backslash."
    ]


# -- 9. files too large to be a config ------------------------------------------------------------


def test_a_50_mb_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "automations.yaml"
    with path.open("wb") as file:
        file.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NUL bytes, written in no time
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert time.perf_counter() - started < 1.0
    assert caught.value.problems == [
        "the file is larger than 2 MiB, too large for a config (a thousand automations take "
        "about 0.35 MB); is it the right file?"
    ]


# -- other values Python can not build -----------------------------------------------------------


def test_a_date_that_does_not_exist_is_refused_at_its_line(tmp_path: Path) -> None:
    assert refused(tmp_path, automation(description="2026-13-45")) == [
        "line 6, column 18: '2026-13-45' can not be read as a timestamp (month must be in "
        "1..12); quote it if it is meant as text"
    ]


# -- properties ----------------------------------------------------------------------------------

HUGE_NUMBERS = [10**400, -(10**400), 2**63, -(2**63) - 1, 1e308, -1e308, 1e-320]
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "${NOT_SET_ANYWHERE}",
    "((",
    "a{99999999999}",
    "x" * 1001,
    "99999999999d",
    "1e20",
    "P99999999999D",
    "-P1D",
    "killed",
    "LINK_MODEL",
    "nop",
    "a/b",
    "\u202e\u2028",
    "2026-13-45",
    ".inf",
    "RUN_METRIC",
    "registry",
    "project",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_NUMBERS),
    st.floats(),  # inf and nan too
    st.text(max_size=12),
    st.sampled_from(NASTY_STRINGS),
    st.dates(),
)
keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["name", "type", "window", "event", "scope", "action", "a\x00"]),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)


def _places(value: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value in a document, containers before their contents."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        yield value, key
        if isinstance(item, dict | list):
            yield from _places(item)


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    """The valid config with one to three places replaced, dropped or grown."""
    document: dict[str, Any] = {"root": copy.deepcopy(VALID)}
    for _ in range(draw(st.integers(1, 3))):
        container, key = draw(st.sampled_from(list(_places(document))))
        how = draw(st.sampled_from(["replace", "replace", "drop", "grow"]))
        if how == "drop" and container is not document:
            del container[key]
        elif how == "grow" and isinstance(container[key], dict):
            container[key][draw(keys)] = draw(values)
        elif how == "grow" and isinstance(container[key], list):
            container[key].append(draw(values))
        else:
            container[key] = draw(values)
    return document["root"]


def _dumped(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=False)


def _reads_or_is_refused(path: Path) -> None:
    """`load_config` returns a config or raises `ConfigError` with problems; nothing else."""
    problems: list[str] = []
    try:
        config = load_config(path, env={"RECEIVER_TOKEN": "t"})
    except ConfigError as exc:
        problems = exc.problems
        assert problems, "a ConfigError lists at least one problem"
    else:
        assert isinstance(config, AutomationsConfig)
    assert all(isinstance(p, str) and p for p in problems)


def _secrets(name: str) -> str:
    raise ValueError(f"Unable to find block document named {name}")


@HOSTILE
@given(document=mutated_configs())
@example(document={True: "x"})
@example(document={"automations": [{1: 2}]})
@example(document={"automations": False, "sources": 7, "receiver": [1], "store": 5})
@example(document=[VALID])
def test_a_mutated_config_loads_or_is_refused_with_a_config_error(
    tmp_path: Path, document: Any
) -> None:
    _reads_or_is_refused(write(tmp_path, _dumped(document)))
    with contextlib.suppress(ConfigError):  # the same document as data, as blocks hand it over
        parse_config(document, env={}, secrets=_secrets)


YAML_PIECES = [
    "automations:",
    "sources:",
    "receiver:",
    "store:",
    "\n",
    "\n  ",
    "  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "? ",
    "!!binary ",
    "!!set ",
    "!!python/object:os.system ",
    "!!float ",
    "!!int ",
    "!!str ",
    "!!timestamp ",
    "'",
    '"',
    "\\0",
    "# c",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\t",
    "name: a",
    "scope: {project: p}",
    "event: {type: RUN_STATE, states: [failed]}",
    "event: {type: RUN_METRIC, metric: m, operator: '>', threshold: ",
    "action: {type: no_op}",
    "cooldown: ",
    "window: ",
    HUGE,
    "9" * 4400,
    ".inf",
    ".nan",
    "~",
    "yes",
    "on",
    "2026-13-45",
    "0x1F",
    "1:2:3",
    "é",
    "\ufeff",
    "|\n",
    ">\n",
]
yaml_texts = st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join)
bombs = st.builds(billion_laughs, levels=st.integers(1, 12), width=st.integers(1, 12)) | st.builds(
    lambda depth, alias: "a: &a " + "[" * depth + "]" * depth + f"\nb: {alias}\n",
    depth=st.integers(1, 130),
    alias=st.sampled_from(["*a", "[*a]", "&a [*a]", "{k: *a}", "*b"]),
)


@HOSTILE
@given(text=st.one_of(yaml_texts, st.text(max_size=200), bombs))
@example(text="!!set 1")  # a set written as a scalar (found by hypothesis)
@example(text="a: !!set 1")
def test_any_text_loads_or_is_refused_with_a_config_error(tmp_path: Path, text: str) -> None:
    _reads_or_is_refused(write(tmp_path, text))


@HOSTILE
@given(data=st.binary(max_size=300) | st.builds(lambda b: b"automations: []\n" + b, st.binary()))
def test_any_bytes_load_or_are_refused_with_a_config_error(tmp_path: Path, data: bytes) -> None:
    _reads_or_is_refused(write(tmp_path, data))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    content=st.one_of(
        mutated_configs().map(_dumped),
        yaml_texts,
        bombs,
        st.binary(max_size=100),
    )
)
def test_validate_exits_0_or_2_and_never_prints_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes
) -> None:
    path = write(tmp_path, content)
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 2)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith(f"error: {path} has ")
    else:
        assert out.endswith("valid.\n")


def test_a_key_written_twice_is_refused_not_silently_overwritten(tmp_path: Path) -> None:
    file = tmp_path / "automations.yaml"
    file.write_text(
        "automations:\n"
        "  - name: a\n"
        "    scope: {project: p}\n"
        '    event: {type: RUN_METRIC, metric: acc, threshold: 0.5, operator: ">", threshold: 0.7}\n'
        "    action: {type: no_op}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(file, env={})
    assert caught.value.problems == [
        "line 4, column 75: the key 'threshold' is written twice in one mapping (first on line "
        "4); keep one of them"
    ]
    # A key a `<<` merge brings in may be written again: that is what merges are for.
    file.write_text(
        "automations:\n"
        "  - &a {name: a, scope: {project: p}, event: {type: RUN_STATE, states: [failed]},"
        " action: {type: no_op}}\n"
        "  - <<: *a\n"
        "    name: b\n"
    )
    assert [a.name for a in load_config(file, env={}).automations] == ["a", "b"]
