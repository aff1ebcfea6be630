"""A small headless-Chromium driver over the DevTools protocol, for the tests of the Prefect UI.

No browser download is possible here (the machine is offline), so the tests drive the system's
Chromium directly; `websockets` (a Prefect dependency) carries the protocol. Input goes through
`Input.dispatchMouseEvent` / `Input.insertText`, so the page sees real pointer and input events
(Radix menus open on `pointerdown`, React reads `input` events), as a user's would.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None when none is installed."""
    if explicit := os.environ.get("CHROMIUM"):
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_CANDIDATES:
        if found := shutil.which(name):
            return found
    return None


#: Key modifiers for `Page.press`.
CTRL, SHIFT = 2, 8


class BrowserError(RuntimeError):
    """The page did not do what the test expected (the message says what was awaited)."""


class Page:
    """One tab, attached through a flattened DevTools session."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self._session = session_id

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self._browser.send(method, params, session_id=self._session)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def evaluate(self, expression: str, *, arg: Any = None) -> Any:
        """The value of a JavaScript expression; with `arg`, the expression is a function of it."""
        if arg is not None:
            expression = f"({expression})({json.dumps(arg)})"
        answer = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript failed: {text}\n{expression[:500]}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, *, arg: Any = None, what: str, timeout: float = 15) -> Any:
        """Polls until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        if arg is None:
            # An element found is "truthy" (a DOM node can not be returned by value).
            expression = f"(() => {{ const v = ({expression}); return v instanceof Node || v }})()"
        while True:
            value = self.evaluate(expression, arg=arg)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"Timed out after {timeout:g}s waiting for {what} on "
                    f"{self.evaluate('location.href')}; the page logged: "
                    f"{self._browser.console_messages()[-5:]}"
                )
            time.sleep(0.05)

    def click_at(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click(self, element_js: str, *, what: str) -> None:
        """Clicks the element that `element_js` (an expression) finds, where it shows: the first
        point of it, from its centre out, that nothing covers (a toast, a popover)."""
        point = self.wait_for(
            f"""(() => {{
                const el = {element_js};
                if (!el) return null;
                el.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = el.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return null;
                for (const [fx, fy] of [[.5, .5], [.2, .5], [.8, .5], [.1, .3], [.1, .7]]) {{
                    const x = r.x + r.width * fx, y = r.y + r.height * fy;
                    const hit = document.elementFromPoint(x, y);
                    if (hit && (el === hit || el.contains(hit) || hit.contains(el))) return {{x, y}};
                }}
                return null;
            }})()""",
            what=what,
        )
        self.click_at(point["x"], point["y"])

    def settle(self) -> None:
        """Waits until the page has rendered what it was given (two animation frames)."""
        self.evaluate(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => "
            "setTimeout(r, 50))))"
        )

    def insert_text(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def press(self, key: str, *, modifiers: int = 0) -> None:
        """Presses a key (Enter, Escape, Backspace, Delete, End, or a letter), with modifiers
        (`CTRL`, `SHIFT`)."""
        codes = {"Enter": 13, "Escape": 27, "Tab": 9, "Backspace": 8, "Delete": 46, "End": 35}
        common = {
            "key": key,
            "code": key if key in codes else f"Key{key.upper()}",
            "windowsVirtualKeyCode": codes.get(key) or ord(key.upper()),
            "modifiers": modifiers,
        }
        # A key that types (Enter) goes down as "keyDown", which also sends its keypress: what
        # activates a focused button.
        extra = {"type": "keyDown", "text": "\r"} if key == "Enter" else {"type": "rawKeyDown"}
        self.send("Input.dispatchKeyEvent", **common, **extra)
        self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))


class Browser:
    """A headless Chromium process and one DevTools connection to it."""

    def __init__(self, executable: str, *, width: int = 1400, height: int = 1000) -> None:
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self._size = (width, height)
        self._ws: ClientConnection = connect(self._devtools_url(), max_size=None)

    def _devtools_url(self) -> str:
        assert self._process.stderr is not None
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line and self._process.poll() is not None:
                break
            seen.append(line)
            if match := re.search(r"DevTools listening on (ws://\S+)", line):
                return match[1]
        self.close()
        raise RuntimeError("Chromium did not start:\n" + "".join(seen[-20:]))

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        self._ws.send(json.dumps(message))
        while True:
            answer = json.loads(self._ws.recv(timeout=60))
            if answer.get("id") == message["id"]:
                if "error" in answer:
                    raise BrowserError(f"{method} failed: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.append(answer)
                del self._events[:-200]

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        page.send("Page.enable")
        page.send("Runtime.enable")
        width, height = self._size
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return page

    def console_errors(self) -> list[str]:
        """Uncaught exceptions the pages reported so far."""
        return [
            e["params"]["exceptionDetails"].get("exception", {}).get("description", "")
            for e in self._events
            if e.get("method") == "Runtime.exceptionThrown"
        ]

    def console_messages(self) -> list[str]:
        """What the pages logged with console.error / console.warn so far."""
        return [
            " ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"])
            for e in self._events
            if e.get("method") == "Runtime.consoleAPICalled"
            and e["params"]["type"] in ("error", "warning")
        ]

    def close(self) -> None:
        try:
            if hasattr(self, "_ws"):
                self._ws.close()
        finally:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            shutil.rmtree(self._profile, ignore_errors=True)


@contextmanager
def chromium(executable: str) -> Iterator[Browser]:
    browser = Browser(executable)
    try:
        yield browser
    finally:
        browser.close()


# --------------------------------------------------------------------------------------------
# Prefect's schema form (the V2 UI), driven as a user would: by the labels it shows.

#: Finds a field by the labels on the way to it (the form shows " (Optional)" after optional
#: ones): `{label, container, input}`, where `input` is what the label points at.
_FIELD_JS = """
function __field(path) {
    let container = document.querySelector('form');
    let label = null;
    for (const name of path) {
        const own = label;
        label = [...container.querySelectorAll('label')].find(
            l => l !== own && l.textContent.replace(/ \\(Optional\\)$/, '') === name);
        if (!label) return null;
        container = label.closest('.group') || label.parentElement;
    }
    return {label, container, input: label && document.getElementById(label.htmlFor)};
}
function __panelInput(path) {
    const panel = __field(path)?.container.querySelector('[role=tabpanel]');
    return panel && panel.querySelector(
        'textarea, input, button[role=switch], button[aria-label^="Select "], .cm-content');
}
"""

JsonSchema = dict[str, Any]


class SchemaForm:
    """Fills Prefect's schema form from a JSON schema and the values wanted, field by field."""

    def __init__(self, page: Page, schema: JsonSchema) -> None:
        self.page = page
        self.schema = schema

    def fill(self, values: dict[str, Any]) -> None:
        self._object(self.schema, values, ())

    # ---- finding things

    def _find(self, path: tuple[str, ...], what: str = "input") -> str:
        """A JavaScript expression for the field at `path` (its input, container or label)."""
        if path and path[-1] == "\0panel":
            return f"(() => {{ {_FIELD_JS} return __panelInput({json.dumps(list(path[:-1]))}) }})()"
        return f"(() => {{ {_FIELD_JS} return __field({json.dumps(list(path))})?.{what} }})()"

    def _resolve(self, prop: JsonSchema) -> JsonSchema:
        if "$ref" in prop:
            name = prop["$ref"].rsplit("/", 1)[-1]
            return {
                **self.schema["definitions"][name],
                **{k: v for k, v in prop.items() if k != "$ref"},
            }
        return prop

    @staticmethod
    def title(prop: JsonSchema, name: str) -> str:
        """The label the form shows for a property (as the UI derives it)."""
        names = {
            "null": "None",
            "string": "str",
            "boolean": "bool",
            "integer": "int",
            "number": "float",
            "array": "list",
            "object": "dict",
        }
        return str(prop.get("title") or prop.get("format") or names.get(prop.get("type", ""), name))

    # ---- filling

    def _object(self, schema: JsonSchema, values: dict[str, Any], path: tuple[str, ...]) -> None:
        properties = schema.get("properties", {})
        ordered = sorted(properties.items(), key=lambda item: item[1].get("position", 0))
        for name, prop in ordered:
            if name in values:
                prop = self._resolve(prop)
                self._field((*path, self.title(prop, name)), prop, values[name])

    def _field(self, path: tuple[str, ...], prop: JsonSchema, value: Any) -> None:
        options = prop.get("anyOf") or prop.get("oneOf")
        if options:
            options = [self._resolve(o) for o in options]
            index = _option_for(options, value)
            option = options[index]
            self._click_tab(path, self.title(option, f"option {index}"))
            if option.get("type") == "object" and option.get("properties"):
                self._object(option, value, path)
            elif option.get("type") != "null":
                self._primitive((*path, "\0panel"), option, value)
            return
        if prop.get("type") == "object" and prop.get("properties"):
            self._object(prop, value, path)
        elif prop.get("type") == "object" or prop.get("format") == "json-string":
            text = value if isinstance(value, str) else json.dumps(value)
            self._json(path, text)
        elif prop.get("type") == "array":
            self._array(path, prop, value)
        else:
            self._primitive(path, prop, value)

    def _primitive(self, path: tuple[str, ...], prop: JsonSchema, value: Any) -> None:
        element = self._find(path)
        if "enum" in prop:
            self._choose(path, [value])
        elif prop.get("type") == "boolean":
            checked = self.page.wait_for(
                f"{element}?.getAttribute('data-state')", what=f"the switch {path}"
            )
            if (checked == "checked") != bool(value):
                self.page.click(element, what=f"the switch {path}")
        elif prop.get("format") == "json-string":
            self._json(path, value)
        else:
            self._type(element, "" if value is None else str(value), what=str(path))

    def _type(self, element: str, text: str, *, what: str) -> None:
        self.page.click(element, what=what)
        self.page.evaluate(f"{element}.select()")
        if text:
            self.page.insert_text(text)
        else:
            self.page.press("Backspace")

    def _json(self, path: tuple[str, ...], text: str) -> None:
        editor = f"{self._find(path, 'container')}?.querySelector('.cm-content')"
        self.page.click(editor, what=f"the JSON editor {path}")
        self.page.press("a", modifiers=CTRL)  # select all: the typing replaces it
        self.page.insert_text(text)
        # The editor may close a bracket it saw opened: drop whatever follows what was typed.
        self.page.press("End", modifiers=CTRL | SHIFT)
        self.page.press("Delete")
        typed = self.page.evaluate(f"{editor}.innerText")
        if json.loads(typed) != json.loads(text):
            raise BrowserError(f"The JSON editor {path} holds {typed!r}, not {text!r}.")

    def _choose(self, path: tuple[str, ...], wanted: list[Any], *, multiple: bool = False) -> None:
        trigger = self._find(path)
        self.page.click(trigger, what=f"the select {path}")
        for value in wanted:
            option = (
                "[...document.querySelectorAll('[role=option]')]"
                f".find(o => o.textContent.trim() === {json.dumps(str(value))})"
            )
            if multiple and self.page.evaluate(
                f"{option}?.getAttribute('data-checked') === 'true'"
            ):
                continue
            self.page.click(option, what=f"the option {value!r} of {path}")
        if multiple:
            self.page.press("Escape")
        self.page.wait_for(
            "!document.querySelector('[role=listbox]')", what=f"the select {path} to close"
        )

    def _array(self, path: tuple[str, ...], prop: JsonSchema, values: list[Any]) -> None:
        items = self._resolve(prop.get("items", {}))
        if "enum" in items:
            self._choose(path, values, multiple=True)
            return
        container = self._find(path, "container")
        for index, value in enumerate(values):
            add = (
                f"[...{container}.querySelectorAll('button')]"
                ".find(b => b.textContent.trim() === 'Add item')"
            )
            self.page.click(add, what=f"'Add item' of {path}")
            item = f"{container}.querySelectorAll('textarea, input')[{index}]"
            self._type(item, str(value), what=f"item {index} of {path}")

    def _click_tab(self, path: tuple[str, ...], title: str) -> None:
        tab = (
            f"[...{self._find(path, 'container')}.querySelector('[role=tablist]').children]"
            f".find(t => t.textContent.trim() === {json.dumps(title)})"
        )
        if self.page.evaluate(f"{tab}?.getAttribute('aria-selected') !== 'true'"):
            self.page.click(tab, what=f"the tab {title!r} of {path}")
            self.page.wait_for(
                f"{tab}?.getAttribute('aria-selected') === 'true'", what=f"the tab {title!r}"
            )


def _option_for(options: list[JsonSchema], value: Any) -> int:
    """Which tab of a union a user picks for a value: the object option that has every key of
    it (markers make that one), else the option of the value's JSON type."""
    if isinstance(value, dict):
        for index, option in enumerate(options):
            if set(value) <= set(option.get("properties", {})):
                return index
    kinds = {
        type(None): "null",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        list: "array",
        dict: "object",
    }
    kind = kinds[type(value)]
    for index, option in enumerate(options):
        if option.get("type") == kind or (kind == "integer" and option.get("type") == "number"):
            return index
    raise AssertionError(f"No option of {options} takes {value!r}.")
