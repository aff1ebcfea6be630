"""The config file (YAML): the state store, the push receiver, the sources and the automations.

`load_config` reads a file, takes `${ENV}` references from the environment (outside action
templates), validates every automation on its own so that *every* problem in the file is reported
at once, and raises `ConfigError` naming the automation, the field and the fix for each.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.automations._types import StrictModel
from prefect_ml_automations.automations.actions import TEMPLATED_FIELDS
from prefect_ml_automations.errors import ConfigError

DEFAULT_STORE_FILE = "ml-automations.db"


class MLflowSourceSettings(StrictModel):
    """An MLflow tracking server or store, whose model registry is one registry."""

    name: str = Field(min_length=1)
    type: Literal["mlflow"]
    tracking_uri: str = Field(min_length=1, description="sqlite:///mlflow.db or http://host:5000")
    registry: str = Field(
        default="models", description="The name automations use for its registry."
    )


class WandbSourceSettings(StrictModel):
    """A Weights & Biases entity (cloud or self-managed), read over its GraphQL API."""

    name: str = Field(min_length=1)
    type: Literal["wandb"]
    entity: str = Field(
        min_length=1, description="The team (or user) entity whose projects are watched."
    )
    org_entity: str | None = Field(
        default=None,
        description=(
            "The organization's entity, which holds the registries (wandb-registry-<name>); "
            "found from the team entity, as W&B's SDK does, when left out."
        ),
    )
    api_key: SecretStr | None = Field(default=None, description="Falls back to $WANDB_API_KEY.")
    base_url: str = Field(
        default="https://api.wandb.ai", description="W&B's API; your host when self-managed."
    )


SourceSettings = Annotated[MLflowSourceSettings | WandbSourceSettings, Field(discriminator="type")]


class ReceiverSettings(StrictModel):
    """How the push receiver authenticates requests (§6); either may be left out."""

    token: SecretStr | None = None
    secret: SecretStr | None = None


class AutomationsConfig(StrictModel):
    """A whole config file."""

    store: str = Field(description="SQLAlchemy URL of the state store.")
    receiver: ReceiverSettings = ReceiverSettings()
    sources: list[SourceSettings] = Field(default_factory=list)
    automations: list[Automation] = Field(default_factory=list)

    def automation(self, name: str) -> Automation:
        for automation in self.automations:
            if automation.name == name:
                return automation
        raise KeyError(name)


#: W&B's names for events that are spelled differently here.
_WANDB_EVENT_NAMES = {"LINK_MODEL": "LINK_ARTIFACT"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_REF = re.compile(r"\{\{\s*prefect\.blocks\.secret\.([a-z0-9-]+)\s*\}\}")
_TOP_LEVEL = ("store", "receiver", "sources", "automations")


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> AutomationsConfig:
    """Read and validate a config file; raise `ConfigError` listing every problem in it."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"can not read the file ({exc.strerror})"], source=source) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}not valid YAML ({problem})"], source=source) from None
    return parse_config(
        raw, env=os.environ if env is None else env, source=source, base=path.parent
    )


def parse_config(
    raw: Any,
    *,
    env: Mapping[str, str],
    secrets: Callable[[str], str] | None = None,
    source: str = "the config",
    base: Path | None = None,
) -> AutomationsConfig:
    """Validate an already-parsed config document (see `load_config`)."""
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            ["the file must be a mapping with 'sources' and 'automations' at the top"],
            source=source,
        )
    raw = dict(raw)
    for key in raw:
        if key not in _TOP_LEVEL:
            hint = _did_you_mean(key, _TOP_LEVEL) or f" (use {', '.join(_TOP_LEVEL)})."
            problems.append(f"{key!r} is not a known top-level key{hint}")
    raw.setdefault("store", f"sqlite:///{(base or Path('.')) / DEFAULT_STORE_FILE}")

    resolved = _substitute_env(raw, env, problems, secrets)

    sources = _validated_list(resolved, "sources", _source_label, SourceSettings, problems)
    _validated_list(resolved, "automations", _automation_label, Automation, problems)
    _validate(resolved.get("receiver") or {}, ReceiverSettings, "receiver", problems)
    if not isinstance(resolved["store"], str) or not resolved["store"]:
        problems.append(
            "store: must be a SQLAlchemy URL such as sqlite:///ml-automations.db "
            "or postgresql+psycopg://user@host/db"
        )

    problems.extend(_cross_checks(resolved, sources))
    if problems:
        raise ConfigError(problems, source=source)
    return AutomationsConfig.model_validate(resolved)


def _validate(item: Any, model: Any, label: str, problems: list[str]) -> Any:
    try:
        return TypeAdapter(model).validate_python(item)
    except ValidationError as exc:
        problems.extend(_format_errors(exc.errors(), label))
        return None


def _validated_list(
    raw: dict[str, Any], key: str, label: Any, model: Any, problems: list[str]
) -> list[Any]:
    """Validate each item of a top-level list on its own, so one bad item hides no other."""
    items = raw.get(key) or []
    if not isinstance(items, list):
        problems.append(f"{key}: must be a list (each item starting with '- ')")
        return []
    validated = (
        _validate(item, model, label(index, item), problems) for index, item in enumerate(items)
    )
    return [item for item in validated if item is not None]


def _source_label(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"source {name!r} (sources[{index}])" if name else f"sources[{index}]"


def _automation_label(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"automation {name!r} (automations[{index}])" if name else f"automations[{index}]"


def _cross_checks(raw: dict[str, Any], sources: list[Any]) -> Iterable[str]:
    """Checks across items, made on the raw items so that an invalid automation still counts."""
    source_names = [s.name for s in sources]
    for name in sorted({n for n in source_names if source_names.count(n) > 1}):
        yield f"sources: two sources are named {name!r}; give each a unique name."
    items = raw.get("automations")
    items = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    seen: set[str] = set()
    for index, item in enumerate(items):
        name, source = item.get("name"), item.get("source")
        label = _automation_label(index, item)
        if isinstance(name, str) and name in seen:
            yield f"{label}: name: another automation is already named {name!r}; make names unique."
        if isinstance(name, str):
            seen.add(name)
        if source is not None and source not in source_names:
            known = ", ".join(repr(n) for n in source_names) or "none are configured"
            yield (
                f"{label}: source: {source!r} is not a configured source "
                f"(sources: {known}){_did_you_mean(str(source), source_names) or '.'}"
            )
        if source is None and len(source_names) > 1:
            yield (
                f"{label}: source: there are {len(source_names)} sources, so name the one this "
                f"automation watches (one of {', '.join(repr(n) for n in source_names)})."
            )


# --------------------------------------------------------------------------------------------
# ${ENV} substitution


def _substitute_env(
    raw: dict[str, Any],
    env: Mapping[str, str],
    problems: list[str],
    secrets: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """`${NAME}` from the environment and `{{ prefect.blocks.secret.NAME }}` from a Prefect
    Secret block, in every string outside action templates."""

    def walk(value: Any, where: str, templated: bool) -> Any:
        if isinstance(value, dict):
            return {
                k: walk(v, f"{where}.{k}" if where else str(k), templated or _is_template(where, k))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]", templated) for i, v in enumerate(value)]
        if isinstance(value, str) and not templated:
            value = _SECRET_REF.sub(lambda m: secret(m[1], where), value)
            return _ENV_REF.sub(lambda m: lookup(m[1], where), value)
        return value

    def lookup(name: str, where: str) -> str:
        if name in env:
            return env[name]
        problems.append(
            f"{where}: the environment variable {name!r} is not set; export it before running "
            "(or write the value in the file)"
        )
        return ""

    def secret(name: str, where: str) -> str:
        try:
            return (secrets or _prefect_secret)(name)
        except Exception as exc:  # the API is down, or no such block: say which and where
            problems.append(
                f"{where}: the Prefect Secret block {name!r} could not be read "
                f"({exc.__class__.__name__}); create it (Blocks → Secret) or check PREFECT_API_URL"
            )
            return ""

    return {k: walk(v, str(k), False) for k, v in raw.items()}


def _prefect_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    block: Secret[Any] = Secret.load(name)  # type: ignore[assignment]  # (sync in this context)
    value = block.get()
    return value if isinstance(value, str) else json.dumps(value)


def _is_template(where: str, key: Any) -> bool:
    """Action fields whose strings are `${variable}` templates, not environment references."""
    return bool(re.fullmatch(r"automations\[\d+\]\.action", where)) and key in TEMPLATED_FIELDS


# --------------------------------------------------------------------------------------------
# Error messages


_KNOWN_FIELDS: set[str] = set()
#: Discriminator values pydantic puts into an error's location; they add nothing for a reader.
_UNION_TAGS = {"registry", "project", "mlflow", "wandb"}


def _known_fields() -> set[str]:
    """Every field name a user can write, for "did you mean" hints."""
    if not _KNOWN_FIELDS:
        from prefect_ml_automations.automations import actions, filters, scopes, triggers

        for module in (actions, filters, scopes, triggers):
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, BaseModel):
                    _KNOWN_FIELDS.update(obj.model_fields)
                    if "type" in obj.model_fields:
                        _UNION_TAGS.update(
                            getattr(obj.model_fields["type"].annotation, "__args__", ())
                        )
        _KNOWN_FIELDS.update(Automation.model_fields)
        _KNOWN_FIELDS.update(MLflowSourceSettings.model_fields, WandbSourceSettings.model_fields)
    return _KNOWN_FIELDS


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _loc(error: ErrorDetails) -> str:
    """`event.window`, `action.parameters`, `states[2]` — without pydantic's union tags."""
    _known_fields()
    parts: list[str] = []
    raw = error["loc"]
    for index, item in enumerate(raw):
        previous = raw[index - 1] if index else None
        if item in _UNION_TAGS and (previous in {None, "event", "action", "scope"}):
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def _format_errors(errors: list[ErrorDetails], label: str) -> list[str]:
    out = []
    for error in errors:
        loc = _loc(error)
        kind = error["type"]
        msg = error["msg"]
        ctx = error.get("ctx") or {}
        if kind == "missing":
            text = f"is required but missing; add '{loc.rsplit('.', 1)[-1]}: …'"
        elif kind == "extra_forbidden":
            field = loc.rsplit(".", 1)[-1]
            text = f"is not a known field (a typo?){_did_you_mean(field, _known_fields())}"
        elif kind == "value_error":
            text = msg.removeprefix("Value error, ")
        elif kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
            text = f"{msg.lower()}, not {error['input']!r}"
            if ctx.get("ge") == 1 or (ctx.get("gt") == 0 and isinstance(error["input"], int)):
                text = f"must be a whole number of at least 1, not {error['input']!r}"
        elif kind == "literal_error":
            expected = ctx.get("expected", "one of the listed values")
            text = f"{error['input']!r} is not allowed; use {expected}"
        elif kind == "union_tag_invalid":
            tags = str(ctx.get("expected_tags", ""))
            tag = str(ctx.get("tag"))
            if tag in _WANDB_EVENT_NAMES:
                hint = f"; W&B's {tag} is {_WANDB_EVENT_NAMES[tag]!r} here"
            else:
                hint = _did_you_mean(tag, tags.replace("'", "").split(", "))
            text = f"type {ctx.get('tag')!r} is not known; use one of {tags}{hint}"
        elif kind == "union_tag_not_found":
            text = f"needs a 'type' (one of the {ctx.get('discriminator', 'type')} values)"
        elif kind == "scope":
            text = msg
        elif kind in {"int_type", "int_parsing", "int_from_float"}:
            text = f"must be a whole number, not {error['input']!r}"
        elif kind in {"string_type"}:
            text = f"must be a string, not {error['input']!r}"
        elif kind in {"string_too_short"}:
            text = "must not be empty"
        elif kind in {"string_too_long"}:
            text = f"is too long (at most {ctx.get('max_length')} characters)"
        elif kind in {"model_type", "dict_type"}:
            text = f"must be a mapping (key: value), not {error['input']!r}"
        elif kind == "list_type":
            text = f"must be a list, not {error['input']!r}"
        elif kind == "too_short":
            text = "must not be empty"
        else:
            text = msg[0].lower() + msg[1:] if msg else kind
        text = text if text.endswith("?") else text.rstrip(".") + "."
        out.append(f"{label}: {loc}: {text}" if loc else f"{label}: {text}")
    return out
