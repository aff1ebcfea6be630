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
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from prefect_ml_automations.automations import Automation
from prefect_ml_automations.automations._types import StrictModel, shown
from prefect_ml_automations.automations.actions import TEMPLATED_FIELDS
from prefect_ml_automations.errors import ConfigError

DEFAULT_STORE_FILE = "ml-automations.db"
#: Larger files are refused before they are parsed. A thousand automations written as in SPEC §2
#: take about 0.35 MB; PyYAML needs ~3.5 s and ~200 MB of memory per MB of dense YAML, so a
#: 2 MiB file costs at most ~7 s and ~450 MB (10 MiB would be over 30 s and 2 GB).
MAX_CONFIG_BYTES = 2 * 1024 * 1024
#: Deeper nesting is refused while parsing (the parser and the validators recurse per level).
MAX_NESTING = 100
#: Aliases (`*name`) may add this many values (nodes; long strings count one per 100
#: characters) to a document, or ALIAS_EXPANSION times what it writes out, whichever is more:
#: a "billion laughs" document expands a few hundred values into billions.
MAX_ALIASED_VALUES = 10_000
ALIAS_EXPANSION = 10


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
    raw = _parse_yaml(_read_text(path, source), source)
    return parse_config(
        raw, env=os.environ if env is None else env, source=source, base=path.parent
    )


def _read_text(path: Path, source: str) -> str:
    """The file's text, refusing what is too large to be a config and what is not UTF-8."""
    try:
        with path.open("rb") as file:
            # Read one byte past the limit, never the whole of a huge file (or of /dev/zero).
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            [f"can not read {path.absolute()} ({exc.strerror})"], source=source
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [
                f"the file is larger than {MAX_CONFIG_BYTES // 2**20} MiB, too large for a config "
                "(a thousand automations take about 0.35 MB); is it the right file?"
            ],
            source=source,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                f"line {line}, byte offset {exc.start}: the file is not UTF-8 text "
                f"({exc.reason} 0x{data[exc.start]:02x}); a config is YAML text, so save it "
                "as UTF-8 (or is this a binary file?)"
            ],
            source=source,
        ) from None
    if bad := _NOT_IN_YAML.search(text):
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise ConfigError(
            [
                f"line {line}, column {column}: the character {bad[0]!r} (U+{ord(bad[0]):04X}) "
                "can not appear in a YAML file; remove it (or is this a binary file?)"
            ],
            source=source,
        )
    return text


#: Characters YAML does not allow in a stream (YAML 1.1 §5.1, as PyYAML and libyaml check).
_NOT_IN_YAML = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _parse_yaml(text: str, source: str) -> Any:
    try:
        loader: Any = _ConfigLoader  # a SafeConstructor with guards (PyYAML's stubs list theirs)
        return yaml.load(text, Loader=loader)
    except _Refused as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}{exc.problem}"], source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError([f"{where}not valid YAML ({problem})"], source=source) from None


# --------------------------------------------------------------------------------------------
# Parsing YAML safely


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that is refused as a config (an alias bomb, a recursive alias, deep nesting)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _GuardedComposer(Composer):
    """PyYAML's composer, refusing what would blow up after parsing.

    PyYAML builds an alias as a reference to the anchored node, so a recursive alias
    (`a: &a [*a]`) builds a structure that contains itself, and nested aliases (a "billion
    laughs") build a small graph that every later walk of the data expands exponentially. Here
    an alias to an anchor whose value is still being built is refused, and every alias adds the
    size of what it stands for to a count that is capped; nesting is capped too, aliases included.
    """

    if TYPE_CHECKING:  # from the parser this composer is mixed with

        def peek_event(self) -> Any: ...

    def __init__(self) -> None:
        super().__init__()
        self._open_anchors: set[str] = set()
        self._depth = 0
        self._written = 0
        self._aliased = 0
        self._measured: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._compose_alias(event, parent, index)
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise _Refused(
                f"values are nested more than {MAX_NESTING} levels deep; a config "
                "needs far fewer (is a bracket left open?)",
                mark=event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)
        if node is not None:
            self._written += _weight(node)
        return node

    def _compose_alias(self, event: AliasEvent, parent: Node | None, index: Any) -> Node | None:
        anchor = event.anchor
        if anchor in self._open_anchors:
            raise _Refused(
                f"the alias *{anchor} stands for the value of &{anchor} that contains it, "
                "a value that would contain itself forever; write the value out instead",
                mark=event.start_mark,
            )
        node = super().compose_node(parent, index)  # an undefined alias raises ComposerError
        if node is None:
            return None
        size, height = self._measure(node)
        self._aliased += size
        if self._depth + height > MAX_NESTING:
            raise _Refused(
                f"the alias *{anchor} nests values more than {MAX_NESTING} levels deep; "
                "a config needs far fewer",
                mark=event.start_mark,
            )
        if self._aliased > max(MAX_ALIASED_VALUES, ALIAS_EXPANSION * self._written):
            raise _Refused(
                f"the aliases (*{anchor} and those before it) expand this file to more "
                f"than {MAX_ALIASED_VALUES:,} values and more than {ALIAS_EXPANSION} times what "
                "it writes out, as a 'billion laughs' attack does; write the values out, or "
                "alias fewer of them",
                mark=event.start_mark,
            )
        return node

    def _measure(self, node: Node) -> tuple[int, int]:
        """(size, height) of a node with every alias in it expanded, memoized per node."""
        known = self._measured.get(id(node))
        if known is not None:
            return known
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        measured = [self._measure(child) for child in children]
        result = (
            _weight(node) + sum(size for size, _ in measured),
            1 + max((height for _, height in measured), default=0),
        )
        self._measured[id(node)] = result
        return result


def _weight(node: Node) -> int:
    """What a node counts for in the alias budget: 1, plus 1 per 100 characters of a string."""
    return 1 + len(node.value) // 100 if isinstance(node, ScalarNode) else 1


class _GuardedConstructor(SafeConstructor):
    """PyYAML's safe constructor, with a mark on values Python refuses to build, and no key
    written twice in one mapping (PyYAML would keep the last one silently: a typo's trap)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):  # `!!set 1`: PyYAML's own error says what is wrong
            return super().construct_mapping(node, deep=deep)
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:  # as written: before `<<` merges are flattened in
            if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value
            if key in first_line:
                raise _Refused(
                    f"the key {shown(key)} is written twice in one mapping (first on line "
                    f"{first_line[key] + 1}); keep one of them",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # `2026-13-45` (a date), an integer of more than 4300 digits, `!!float ''` ...
            if isinstance(node, ScalarNode) and node.tag.endswith(":int"):
                problem = (
                    f"the integer {node.value[:20]}… of {len(node.value)} digits is too large "
                    "for any field"
                )
            else:
                value = shown(node.value) if isinstance(node, ScalarNode) else "a value"
                problem = (
                    f"{value} can not be read as a {node.tag.rsplit(':', 1)[-1]} ({exc}); "
                    "quote it if it is meant as text"
                )
            raise _Refused(problem, node.start_mark) from None


if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _Parser  # type: ignore[import-not-found, unused-ignore]

    class _ConfigLoader(  # type: ignore[misc, unused-ignore]
        _GuardedComposer, _Parser, _GuardedConstructor, Resolver
    ):
        """libyaml's parser (three times faster) with the guarded composer and constructor.

        The composer comes first so that its `compose_node` is used, not libyaml's own."""

        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _GuardedComposer.__init__(self)
            _GuardedConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover — PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _ConfigLoader(  # type: ignore[no-redef]
        Reader, Scanner, Parser, _GuardedComposer, _GuardedConstructor, Resolver
    ):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            _GuardedComposer.__init__(self)
            _GuardedConstructor.__init__(self)
            Resolver.__init__(self)


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
            [
                "the file must be a mapping with 'sources' and 'automations' at the top, "
                f"not {_kind(raw)} ({shown(raw)})"
            ],
            source=source,
        )
    for key in raw:
        if isinstance(key, str) and key not in _TOP_LEVEL:
            hint = _did_you_mean(key, _TOP_LEVEL) or f" (use {', '.join(_TOP_LEVEL)})."
            problems.append(f"{shown(key)} is not a known top-level key{hint}")

    resolved = _substitute_env(raw, env, problems, secrets)
    resolved.setdefault("store", f"sqlite:///{(base or Path('.')) / DEFAULT_STORE_FILE}")
    if base is not None and isinstance(resolved["store"], str):
        resolved["store"] = beside(resolved["store"], base)

    sources = _validated_list(resolved, "sources", _source_label, SourceSettings, problems)
    _validated_list(resolved, "automations", _automation_label, Automation, problems)
    receiver = resolved.get("receiver")
    _validate({} if receiver is None else receiver, ReceiverSettings, "receiver", problems)
    store = resolved["store"]
    if not isinstance(store, str) or not store:
        problems.append(
            "store: must be a SQLAlchemy URL such as sqlite:///ml-automations.db "
            f"or postgresql+psycopg://user@host/db, not {shown(store)}."
        )
    elif "\x00" in store:
        problems.append("store: contains a NUL character (\\x00); remove it.")

    problems.extend(_cross_checks(resolved, sources))
    if problems:
        raise ConfigError(problems, source=source)
    try:
        return AutomationsConfig.model_validate(resolved)
    except ValidationError as exc:  # each part was validated above: a safety net, not a path
        raise ConfigError(_format_errors(exc.errors(), "the config"), source=source) from None


def _kind(value: Any) -> str:
    """'a list', 'a string', 'a number' ... for messages about a value of the wrong type."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def beside(store: str, base: Path) -> str:
    """A SQLite store at a relative path lives beside the config file (as the default store
    does), not wherever the command happens to run: `sqlite:///ml-automations.db` in
    `/srv/ml/automations.yaml` is `/srv/ml/ml-automations.db`.

    >>> beside("sqlite:///state/ml.db", Path("/srv/ml"))
    'sqlite:////srv/ml/state/ml.db'
    >>> beside("postgresql://db/ml", Path("/srv/ml"))
    'postgresql://db/ml'
    """
    prefix = next((p for p in ("sqlite:///", "sqlite+pysqlite:///") if store.startswith(p)), None)
    if prefix is None:
        return store
    path = store.removeprefix(prefix)
    if not path or path.startswith(("/", "file:", ":memory:")) or "?" in path:
        return store
    return f"{prefix}{(base / path).absolute()}"


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
    items = raw.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append(
            f"{key}: must be a list (each item starting with '- '), not {_kind(items)} "
            f"({shown(items)})."
        )
        return []
    validated = (
        _validate(item, model, label(index, item), problems) for index, item in enumerate(items)
    )
    return [item for item in validated if item is not None]


def _name_of(item: Any) -> str | None:
    """The item's name for its label: whole up to the longest name allowed (255), cut beyond."""
    name = item.get("name") if isinstance(item, dict) else None
    return shown(name, limit=300) if isinstance(name, str) and name else None


def _source_label(index: int, item: Any) -> str:
    name = _name_of(item)
    return f"source {name} (sources[{index}])" if name else f"sources[{index}]"


def _automation_label(index: int, item: Any) -> str:
    name = _name_of(item)
    return f"automation {name} (automations[{index}])" if name else f"automations[{index}]"


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
            yield (
                f"{label}: name: another automation is already named {shown(name)}; "
                "make names unique."
            )
        if isinstance(name, str):
            seen.add(name)
        if isinstance(source, str) and source not in source_names:
            known = ", ".join(repr(n) for n in source_names) or "none are configured"
            yield (
                f"{label}: source: {shown(source)} is not a configured source "
                f"(sources: {known}){_did_you_mean(source, source_names) or '.'}"
            )
        if source is None and len(source_names) > 1:
            yield (
                f"{label}: source: there are {len(source_names)} sources, so name the one this "
                f"automation watches (one of {', '.join(repr(n) for n in source_names)})."
            )


# --------------------------------------------------------------------------------------------
# ${ENV} substitution


def _substitute_env(
    raw: dict[Any, Any],
    env: Mapping[str, str],
    problems: list[str],
    secrets: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """`${NAME}` from the environment and `{{ prefect.blocks.secret.NAME }}` from a Prefect
    Secret block, in every string outside action templates. Keys that are not strings (YAML's
    `on:`, `1:`) are reported and left out: every field name is a string."""
    read: dict[str, str | Exception] = {}  # each block is read once, however often named

    def walk(value: Any, where: str, templated: bool) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    whose = f"{_place(where, raw)}: the key" if where else "the top-level key"
                    problems.append(
                        f"{whose} {shown(k)} is not a string; quote it (YAML reads unquoted "
                        "yes/no/on/off/true/false, ~ and numbers as booleans, null and numbers)."
                    )
                    continue
                key_where = f"{where}.{k}" if where else k
                out[k] = walk(v, key_where, templated or _is_template(where, k))
            return out
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
            f"{_place(where, raw)}: the environment variable {name!r} is not set; export it "
            "before running (or write the value in the file)."
        )
        return ""

    def secret(name: str, where: str) -> str:
        if name not in read:
            try:
                read[name] = (secrets or _prefect_secret)(name)
            except Exception as exc:  # the API is down, or no such block: say which and where
                read[name] = exc
        value = read[name]
        if isinstance(value, str):
            return value
        if isinstance(value, ValueError):  # Prefect's answer when no block has the name
            problems.append(
                f"{_place(where, raw)}: there is no Prefect Secret block named {name!r}; create "
                f"it in the Prefect UI (Blocks → Secret) or with Secret(value=...).save({name!r}), "
                "or check PREFECT_API_URL."
            )
        else:
            problems.append(
                f"{_place(where, raw)}: the Prefect Secret block {name!r} could not be read "
                f"({value.__class__.__name__}); create it (Blocks → Secret) or check "
                "PREFECT_API_URL."
            )
        return ""

    return walk(raw, "", False)  # type: ignore[no-any-return]


def _place(where: str, raw: dict[Any, Any]) -> str:
    """`automations[2].scope.project` as problems name it: `automation 'x' (automations[2]):
    scope.project`."""
    match = re.match(r"(automations|sources)\[(\d+)\]\.?", where)
    if match is None:
        return where
    items = raw.get(match[1])
    index = int(match[2])
    item = items[index] if isinstance(items, list) and index < len(items) else None
    label = (_automation_label if match[1] == "automations" else _source_label)(index, item)
    rest = where[match.end() :]
    return f"{label}: {rest}" if rest else label


def _prefect_secret(name: str) -> str:
    """The value of the Prefect Secret block `name`, from sync code or inside an event loop.

    `Secret.load` is "sync compatible": inside a running event loop it returns a coroutine
    instead of the block (the `run` and `receive` commands load the config inside async code).
    `_sync=True` asks for the blocking call whatever the context; it reads the block with
    Prefect's synchronous client."""
    from prefect.blocks.system import Secret

    load: Any = Secret.load
    block = load(name, _sync=True)
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
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        name = str(item)
        if not name.isprintable() or len(name) > 60:  # a key with a NUL, or 5 MB long
            name = shown(name, limit=60)
        parts.append(("." if parts else "") + name)
    return "".join(parts)


#: Fields whose values are credentials: a message says what kind of value is there, never it.
_SECRET_PLACE = re.compile(r"(^|\.)(api_key|access_token|secret|token|password|headers)(\.|$)")


def _format_errors(errors: list[ErrorDetails], label: str) -> list[str]:
    out = []
    for error in errors:
        loc = _loc(error)
        kind = error["type"]
        msg = error["msg"]
        ctx = error.get("ctx") or {}
        given = shown(error.get("input"))
        if _SECRET_PLACE.search(loc):  # a token of the wrong type is still a token: not shown
            given = f"{_kind(error.get('input'))} (not shown: it may be a secret)"
        if kind == "missing":
            text = f"is required but missing; add '{loc.rsplit('.', 1)[-1]}: …'"
        elif kind == "extra_forbidden":
            field = loc.rsplit(".", 1)[-1]
            text = f"is not a known field (a typo?){_did_you_mean(field, _known_fields())}"
        elif kind == "value_error":
            text = msg.removeprefix("Value error, ")
        elif kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
            text = f"{msg.lower()}, not {given}"
            if ctx.get("ge") == 1 or (ctx.get("gt") == 0 and isinstance(error["input"], int)):
                text = f"must be a whole number of at least 1, not {given}"
        elif kind == "literal_error":
            expected = ctx.get("expected", "one of the listed values")
            text = f"{given} is not allowed; use {expected}"
        elif kind == "union_tag_invalid":
            tags = str(ctx.get("expected_tags", ""))
            tag = str(ctx.get("tag"))
            if tag in _WANDB_EVENT_NAMES:
                hint = f"; W&B's {tag} is {_WANDB_EVENT_NAMES[tag]!r} here"
            else:
                hint = _did_you_mean(tag, tags.replace("'", "").split(", "))
            text = f"type {shown(ctx.get('tag'))} is not known; use one of {tags}{hint}"
        elif kind == "union_tag_not_found":
            text = f"needs a 'type' (one of the {ctx.get('discriminator', 'type')} values)"
        elif kind == "scope":
            text = msg
        elif kind in {"int_type", "int_parsing", "int_from_float"}:
            text = f"must be a whole number, not {given}"
        elif kind in {"string_type"}:
            text = f"must be a string, not {given}"
        elif kind in {"string_too_short"}:
            text = "must not be empty"
        elif kind in {"string_too_long"}:
            text = f"is too long (at most {ctx.get('max_length')} characters)"
        elif kind in {"model_type", "dict_type", "model_attributes_type"}:
            text = f"must be a mapping (key: value), not {given}"
        elif kind == "list_type":
            text = f"must be a list, not {given}"
        elif kind == "too_short":
            text = "must not be empty"
        else:
            text = msg[0].lower() + msg[1:] if msg else kind
        text = text if text.endswith("?") else text.rstrip(".") + "."
        out.append(f"{label}: {loc}: {text}" if loc else f"{label}: {text}")
    return out
