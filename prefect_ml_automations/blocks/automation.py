"""The automation block: one W&B-style automation, edited in the Prefect UI.

The block keeps the automation in a shape that the Prefect UI's schema form can edit and give back
unchanged; `from_automation` and `to_automation` translate between it and the `Automation` model
that YAML files use. What the form (Prefect 3.9's V2 UI) does with a JSON schema decides the shape:

- A union (`anyOf`) is a row of tabs. Reopening a saved value picks the tab whose `properties`
  share the most keys with it (the first on a tie); discriminators and `const` are not read. So
  every option here has a key no other option has, which every saved value of it holds: the
  event's and the action's kind is a "marker" key (`alias_event: ADD_ARTIFACT_ALIAS`,
  `webhook: webhook`), the scope's is its required `registry` or `project`.
- A `const` is an empty text box; an `enum` is a drop-down. A `default` is filled in whenever the
  field shows with no value; the markers are one- (or two-, three-) item enums with a default, so
  choosing a tab fills the marker in.
- The edit page first shows the form empty and puts the saved values in a moment later. What the
  form fills in on that first showing (defaults, a JSON editor's empty value, a "None") is merged
  over the saved values when they arrive, and saving then writes the mix back: the issue's
  "empty registry scope and empty run_deployment action". So nothing shown before a tab is chosen
  has a default: the event and the action start on an empty "Choose" tab, `disabled` stands in
  for `enabled` (off is the default), the cooldown is empty until written (24h).
- A dict (`type: object` without properties) is a JSON editor; a field without a `type` (pydantic's
  `JsonValue`) is replaced by an empty JSON editor, losing what was saved: the webhook's payload,
  any JSON, is JSON text (`format: json-string`).
- `X | None` is two tabs ("str" / "None"); here optional fields are plain and simply left out.
- `format: password` is a password box; Prefect hides the saved value ("********") and keeps it
  when the form sends that placeholder back (the block's `secret_fields`).
- The form refuses nothing: its check sends the values as their own schema. (So a top-level value
  is read as a JSON-schema keyword: a null "description" makes the edit page refuse to save,
  whatever else it holds; the block never saves one.) `to_automation` names what is wrong, and
  the sensor leaves such a block out.

The block's pydantic fields only hold what the form saved (leniently, so a half-filled block still
loads); `to_automation` judges it. Kept light (pydantic models only, no pandas or numpy at
import): every Prefect server and worker imports it through the `prefect.collections` entry point.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar, get_args

from prefect.blocks.core import Block
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_serializer,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

from prefect_ml_automations.automations import (
    AddArtifactAlias,
    AddArtifactTag,
    Automation,
    CreateArtifact,
    EmitEvent,
    LinkArtifact,
    NoOp,
    Notification,
    ProjectScope,
    RegistryScope,
    RemoveArtifactTag,
    RunDeployment,
    RunFilters,
    RunMetric,
    RunMetricChange,
    RunMetricZScore,
    RunStalled,
    RunState,
    UnlinkArtifact,
    Webhook,
)
from prefect_ml_automations.automations._types import duration_text
from prefect_ml_automations.automations.actions import AnyAction
from prefect_ml_automations.automations.triggers import EventTrigger
from prefect_ml_automations.blocks._common import DOCS, LOGO

JsonSchema = dict[str, Any]

# --------------------------------------------------------------------------------------------
# The form's options: which event and action kinds share a tab, and the key that marks each tab.

#: (marker key, tab title, what the tab is for, the event kinds it offers)
_EVENT_TABS: tuple[tuple[str, str, str, tuple[type[BaseModel], ...]], ...] = (
    (
        "artifact_event",
        "Artifact",
        "A version is linked into a collection, unlinked from it, or created.",
        (LinkArtifact, UnlinkArtifact, CreateArtifact),
    ),
    ("alias_event", "Alias", "An alias is added to a version.", (AddArtifactAlias,)),
    (
        "tag_event",
        "Tag",
        "A tag is added to a version or removed from it.",
        (AddArtifactTag, RemoveArtifactTag),
    ),
    ("run_state_event", "Run state", "A run enters a state.", (RunState,)),
    (
        "stalled_event",
        "Stalled run",
        "A running run shows no sign of life (no metric point, no heartbeat) for a while.",
        (RunStalled,),
    ),
    (
        "metric_event",
        "Metric",
        "An aggregate of a run's latest metric values crosses a threshold.",
        (RunMetric,),
    ),
    (
        "metric_change_event",
        "Metric change",
        "A run's metric changes between two consecutive windows of values.",
        (RunMetricChange,),
    ),
    (
        "metric_zscore_event",
        "Metric z-score",
        "A run's latest metric value stands out from the project's other runs.",
        (RunMetricZScore,),
    ),
)
_ACTION_TABS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Run deployment", RunDeployment),
    ("Webhook", Webhook),
    ("Notification", Notification),
    ("Emit event", EmitEvent),
    ("No-op", NoOp),
)
_SCOPE_TABS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Registry", RegistryScope),
    ("Project", ProjectScope),
)


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _union_members(annotated: Any) -> tuple[type[BaseModel], ...]:
    union, *_ = get_args(annotated)
    return get_args(union)


def _kind(model: type[BaseModel]) -> str:
    """The `type` a model of a discriminated union is chosen by."""
    [kind] = get_args(model.model_fields["type"].annotation)
    return str(kind)


def _event_tabs() -> list[tuple[str, str, str, tuple[type[BaseModel], ...]]]:
    tabs = list(_EVENT_TABS)
    placed = {model for *_, models in tabs for model in models}
    # An event kind added to the model later gets a tab of its own, so the form never lacks it.
    for model in _union_members(EventTrigger):
        if model not in placed:
            tabs.append((f"{_kind(model).lower()}_event", model.__name__, _doc(model), (model,)))
    return tabs


def _action_tabs() -> list[tuple[str, type[BaseModel]]]:
    tabs = list(_ACTION_TABS)
    placed = {model for _, model in tabs}
    tabs += [(m.__name__, m) for m in _union_members(AnyAction) if m not in placed]
    return tabs


#: event kind -> the marker key of its tab; action kind -> its own name (the action's marker key)
_EVENT_MARKERS = {_kind(m): key for key, _, _, models in _event_tabs() for m in models}
_ACTION_MARKERS = {_kind(m): _kind(m) for _, m in _action_tabs()}


# --------------------------------------------------------------------------------------------
# The form's JSON schema, made from the Automation model's own (its descriptions, defaults,
# bounds and choices), in the shape the form can round-trip.


#: Labels pydantic's titles get wrong.
_TITLES = {"url": "URL", "collection_regex": "Collection regex", "run_name": "Run name"}


def _form_property(prop: JsonSchema) -> JsonSchema:
    """A model property as the form shows it: optional values plain (no "None" tab, no None
    default), positive integers with the input's minimum, any-JSON values as JSON text."""
    prop = dict(prop)
    options = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        prop = {**options[0], **prop}
    elif options:
        prop["anyOf"] = options
    if "default" in prop and prop["default"] is None:
        del prop["default"]
    if prop.get("format") == "duration":  # ('30m', as users write it, not ISO 8601's PT30M)
        del prop["format"]
    if prop.get("type") == "integer" and prop.get("exclusiveMinimum") == 0:
        del prop["exclusiveMinimum"]
        prop["minimum"] = 1
    if "$ref" in prop or not ({"type", "anyOf", "enum"} & prop.keys()):
        # Any JSON value (pydantic's JsonValue): the form would replace it with an empty JSON
        # editor when it opens; JSON text survives.
        prop.pop("$ref", None)
        prop.update(type="string", format="json-string")
    return prop


def _model_properties(
    models: Iterable[type[BaseModel]], skip: tuple[str, ...] = ("type",)
) -> tuple[dict[str, JsonSchema], list[str]]:
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for model in models:
        schema = model.model_json_schema()
        for name, prop in schema["properties"].items():
            if name not in skip:
                title = _TITLES.get(name) or prop.get("title") or name.replace("_", " ").title()
                properties.setdefault(name, {**_form_property(prop), "title": title})
        required += [r for r in schema.get("required", []) if r not in skip + tuple(required)]
    return properties, required


def _tab(
    title: str,
    description: str,
    models: tuple[type[BaseModel], ...],
    marker: tuple[str, JsonSchema] | None = None,
) -> JsonSchema:
    properties, required = _model_properties(models)
    if marker is not None:
        key, prop = marker
        properties = {key: prop, **properties}
        required = [key, *required]
    return {
        "title": title,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
    }


def _marker(title: str, models: tuple[type[BaseModel], ...]) -> JsonSchema:
    kinds = [_kind(m) for m in models]
    meanings = " ".join(f"{_kind(m)}: {_doc(m)}" for m in models)
    return {
        "title": title,
        "description": f"The {title.lower()}'s type in the YAML config. {meanings}",
        "type": "string",
        "enum": kinds,
        "default": kinds[0],
    }


def _choose(part: str) -> JsonSchema:
    """The tab a union starts on: nothing chosen, nothing filled in (see the module's docstring)."""
    return {
        "title": "Choose",
        "description": f"Choose the kind of {part} in the tabs above.",
        "type": "object",
        "properties": {},
    }


@cache
def _json_text_fields() -> dict[str, frozenset[str]]:
    """Event and action kind -> its fields the form holds as JSON text (any JSON value)."""
    models = [m for *_, ms in _event_tabs() for m in ms] + [m for _, m in _action_tabs()]
    return {
        _kind(model): frozenset(
            name
            for name, prop in _model_properties([model])[0].items()
            if prop.get("format") == "json-string"
        )
        for model in models
    }


@cache
def _form_schema() -> tuple[dict[str, JsonSchema], list[str]]:
    """The block's properties (in the form's order) and which of them are required."""
    top = Automation.model_json_schema()
    properties = {name: _form_property(prop) for name, prop in top["properties"].items()}
    properties["name"]["title"] = "Automation name"  # beside the block's own name
    properties["description"].pop("default")  # ""
    properties = {
        "disabled" if name == "enabled" else name: prop for name, prop in properties.items()
    }
    properties["disabled"] = {
        "title": "Disabled",
        "description": "A disabled automation is kept but never fires; off, it runs.",
        "type": "boolean",
    }
    properties["scope"] = {
        **_described(top, "scope"),
        "anyOf": [_tab(title, _doc(model), (model,)) for title, model in _SCOPE_TABS],
    }
    properties["event"] = {
        **_described(top, "event"),
        "anyOf": [
            _choose("event"),
            *(
                _tab(title, description, models, (key, _marker("Event", models)))
                for key, title, description, models in _event_tabs()
            ),
        ],
    }
    filters, _ = _model_properties([RunFilters])
    properties["filters"] = {
        **_described(top, "filters"),
        "title": "Run filters",
        "type": "object",
        "properties": filters,
    }
    default_cooldown = duration_text(Automation.model_fields["cooldown"].default)
    properties["cooldown"] = {
        **_described(top, "cooldown"),
        "description": (
            f"{top['properties']['cooldown']['description']} Run events only: '90s', '30m', "
            f"'24h', '2d' or a number of seconds; {default_cooldown} when left empty."
        ),
        "type": "string",
    }
    properties["action"] = {
        **_described(top, "action"),
        "anyOf": [
            _choose("action"),
            *(
                _tab(title, _doc(model), (model,), (_kind(model), _marker("Action", (model,))))
                for title, model in _action_tabs()
            ),
        ],
    }
    properties["budget"] = {
        **_described(top, "budget"),
        "title": "Budget",
        "type": "object",
        "properties": {
            "firings": {
                "title": "Firings",
                "description": "How many firings the period allows (at least 1).",
                "type": "integer",
                "minimum": 1,
            },
            "per": {
                "title": "Per",
                "description": "The period they are counted over: '1h', '1d', '30m', or seconds.",
                "type": "string",
            },
        },
    }
    return properties, list(top["required"])


def _described(schema: JsonSchema, name: str) -> JsonSchema:
    prop = schema["properties"][name]
    return {"title": prop.get("title", name.title()), "description": prop["description"]}


# --------------------------------------------------------------------------------------------
# What the form saved


class _Part(BaseModel):
    """A part of the form (scope, event, run filters, action) as the UI saved it, kept as given:
    `to_automation` judges it."""

    model_config = ConfigDict(extra="allow")


class _ActionPart(_Part):
    """The action as the UI saved it; its secrets are typed, so Prefect hides and keeps them."""

    access_token: SecretStr | None = Field(
        default=None, description=Webhook.model_fields["access_token"].description
    )
    secret: SecretStr | None = Field(
        default=None, description=Webhook.model_fields["secret"].description
    )

    @model_serializer(mode="wrap")
    def _without_empty_secrets(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A `secret: null` saved in a run_deployment action would make the form reopen it on the
        # webhook tab (the tab that shares the most keys with it).
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in (self.model_extra or {})}


def _given(part: _Part) -> dict[str, Any]:
    """What the form saved in a part: its declared fields that are set, and the rest."""
    return {
        **part.model_dump(exclude_none=True, exclude=set(part.model_extra or ())),
        **(part.model_extra or {}),
    }


def _about(name: str) -> str | None:
    return Automation.model_fields[name].description


class AutomationBlock(Block):
    """One W&B-style automation: scope + event (+ run filters) + action.

    Saved by `ml-automations apply FILE`, edited in the Prefect UI, read by the sensor.

    Example:
        ```python
        from prefect_ml_automations.blocks import AutomationBlock

        automation = AutomationBlock.load("BLOCK_NAME").to_automation()
        ```
    """

    _block_type_name: ClassVar[str] = "ML Automation"
    _block_type_slug: ClassVar[str] = "ml-automation"
    _description: ClassVar[str] = (
        "When a model gets an alias, a run fails or a metric crosses a line, run a deployment."
    )
    _logo_url: ClassVar[Any] = LOGO
    _documentation_url: ClassVar[Any] = DOCS

    name: str | None = Field(default=None, description=_about("name"))
    description: str | None = Field(default=None, description=_about("description"))
    disabled: bool | None = Field(
        default=None, description="A disabled automation is kept but never fires."
    )
    source: str | None = Field(default=None, description=_about("source"))
    scope: _Part | None = Field(default=None, description=_about("scope"))
    event: _Part | None = Field(default=None, description=_about("event"))
    filters: _Part | None = Field(default=None, description=_about("filters"))
    cooldown: str | None = Field(default=None, description=_about("cooldown"))
    budget: _Part | None = Field(default=None, description=_about("budget"))
    action: _ActionPart | None = Field(default=None, description=_about("action"))

    @field_serializer("description")
    def _text(self, description: str | None) -> str:
        # Never null: the edit page sends the values to be checked as a JSON schema, whose
        # "description" must be a string, and a null one makes it refuse to save.
        return description or ""

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool | None = True,
        ref_template: str = "#/definitions/{model}",
        schema_generator: type[GenerateJsonSchema] = GenerateJsonSchema,
        mode: JsonSchemaMode = "validation",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Prefect's block schema, with the form's properties (see the module's docstring)."""
        schema = super().model_json_schema(bool(by_alias), ref_template, schema_generator, mode)
        properties, required = copy.deepcopy(_form_schema())
        schema["properties"] = {
            name: {**prop, "position": position}
            for position, (name, prop) in enumerate(properties.items())
        }
        schema["required"] = required
        schema.pop("definitions", None)  # the parts' own models; the form's are inline
        return schema

    @classmethod
    def from_automation(cls, automation: Automation) -> AutomationBlock:
        """The block that holds `automation`, in the form's shape."""
        event = automation.event
        action = automation.action
        return cls(
            name=automation.name,
            description=automation.description,
            disabled=not automation.enabled,
            source=automation.source,
            scope=_Part(**automation.scope.model_dump(exclude_none=True)),
            event=_Part(**{_EVENT_MARKERS[event.type]: event.type}, **_form_fields(event)),
            filters=(
                _Part(**automation.filters.model_dump(exclude_none=True))
                if automation.filters is not None
                else None
            ),
            cooldown=duration_text(automation.cooldown),
            budget=(
                _Part(
                    firings=automation.budget.firings,
                    per=duration_text(automation.budget.per),
                )
                if automation.budget is not None
                else None
            ),
            action=_ActionPart(
                **{_ACTION_MARKERS[action.type]: action.type}, **_form_fields(action)
            ),
        )

    def to_automation(self) -> Automation:
        """The automation this block holds.

        Raises:
            ValueError: the saved data is not a valid automation; the message names each field
                and how to fix it.
        """
        legacy = (self.model_extra or {}).get("automation")
        if isinstance(legacy, dict) and all(
            getattr(self, name) is None for name in type(self).model_fields
        ):
            data = legacy  # saved before the form's shape: {"automation": {…as in YAML…}}
        else:
            data = self._automation_data()
        try:
            return Automation.model_validate(data)
        except ValidationError as exc:
            from prefect_ml_automations.config import _format_errors

            label = f"automation {data.get('name') or self._block_document_name or ''!r}"
            raise ValueError(" ".join(_format_errors(exc.errors(), label))) from None

    def _automation_data(self) -> dict[str, Any]:
        """The automation in the YAML config's shape."""
        data: dict[str, Any] = {
            name: value
            for name in ("name", "description", "source", "cooldown")
            if (value := getattr(self, name)) is not None
        }
        if self.disabled is not None:
            data["enabled"] = not self.disabled
        if self.scope is not None:
            data["scope"] = _given(self.scope)
        if self.filters is not None:
            data["filters"] = _given(self.filters)
        if self.budget is not None and (budget := _given(self.budget)):
            data["budget"] = budget
        if self.event is not None:
            data["event"] = self._tagged("event", _given(self.event), set(_EVENT_MARKERS.values()))
        if self.action is not None:
            data["action"] = self._tagged(
                "action", _given(self.action), set(_ACTION_MARKERS.values())
            )
        return data

    def _tagged(self, part: str, given: dict[str, Any], markers: set[str]) -> dict[str, Any]:
        """`{marker: KIND, …}` as the form saves it -> `{type: KIND, …}` as YAML has it, with
        its JSON texts read."""
        found = sorted(markers & given.keys())
        if len(found) > 1:
            raise ValueError(
                f"automation {self.name!r}: {part}: holds {', '.join(found)}; an {part} is of "
                "one kind, so keep one of them (in the Prefect UI: choose one tab)."
            )
        if not found:
            return given
        kind = given.pop(found[0])
        for name in _json_text_fields().get(kind, ()) & given.keys():
            if isinstance(given[name], str):
                given[name] = self._json(f"{part}.{name}", given[name])
        return {"type": kind, **given}

    def _json(self, field: str, text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"automation {self.name!r}: {field}: is not valid JSON ({exc.msg} at line "
                f"{exc.lineno}, column {exc.colno}); write a JSON value such as "
                '{"text": "${run_name}"}.'
            ) from None


def _form_fields(model: BaseModel) -> dict[str, Any]:
    """An event's or an action's fields as the form holds them (any JSON value as JSON text)."""
    kind = _kind(type(model))
    fields = model.model_dump(exclude={"type"}, exclude_none=True)
    for name in _json_text_fields()[kind] & fields.keys():
        fields[name] = json.dumps(fields[name], indent=2)
    return fields
