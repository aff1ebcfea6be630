"""What every block type of the package shares: its logo and its documentation link."""

from __future__ import annotations

from typing import Any

#: Where the block types are documented (the block page's "docs" link).
DOCS = "https://github.com/prefect-ml-automations/prefect-ml-automations#readme"

#: The Prefect mark, for when no Prefect server address is known (it needs the internet).
REMOTE_LOGO = "https://raw.githubusercontent.com/PrefectHQ/prefect/main/ui/public/ico/android-chrome-192x192.png"
#: The same image as the Prefect server serves it with its UI.
_SERVED_ICON = "ico/android-chrome-192x192.png"


def logo_url() -> str:
    """The block types' logo: the Prefect mark that the Prefect server itself serves with its UI,
    at the address the UI reaches that server by (`PREFECT_UI_API_URL`, which defaults to
    `PREFECT_API_URL`), so the logo loads wherever the UI does — offline too.

    Prefect accepts only an absolute http(s) URL (its client reads `logo_url` as `HttpUrl`, so a
    `data:` URI or a relative path would break every later read of the block type), and the UI
    shows it as given in an `<img>`. Without a Prefect server's address (Prefect Cloud, or a
    relative API URL) the logo is the remote copy.
    """
    from prefect.settings import get_current_settings

    ui = get_current_settings().server.ui
    api_url = (ui.api_url or "").rstrip("/")
    if not api_url.startswith(("http://", "https://")) or not api_url.endswith("/api"):
        return REMOTE_LOGO
    base = "/".join(
        part for part in (api_url.removesuffix("/api"), ui.serve_base.strip("/")) if part
    )
    return f"{base}/{_SERVED_ICON}"


class _Logo:
    """A block's `_logo_url`, worked out each time Prefect reads it (when it registers the block
    type): the address depends on the settings in force then, not at import."""

    def __get__(self, instance: object, owner: Any = None) -> str:
        return logo_url()


#: Shown beside each block type in the Prefect UI (see `logo_url`).
LOGO: Any = _Logo()


class PlainForm:
    """A block whose form survives the Prefect UI's edit page: its JSON schema has no defaults
    and no "None" tabs (optional fields are plain), because the V2 UI fills a field's default —
    or null, for an `X | None` — in over the saved value when the edit page opens. The Python
    defaults stay: a field left empty in the form is omitted, and takes its default on load.

    Put it before `Block`: `class MLflowTrackerBlock(PlainForm, Block)`.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
        for name, prop in list(schema.get("properties", {}).items()):
            options = [o for o in prop.get("anyOf", []) if o != {"type": "null"}]
            if len(options) == 1:
                prop = {**options[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
            prop.pop("default", None)
            schema["properties"][name] = prop
        return schema
