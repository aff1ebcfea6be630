"""A cycle's markdown report for the Prefect UI: each firing, and a small plot of the window of
values (or the z-score baseline) that made it fire, as an inline SVG — look, don't read.
"""

from __future__ import annotations

import base64
from html import escape

from prefect_ml_automations.decisions import Firing


def sparkline(
    values: list[float], *, width: int = 240, height: int = 48, last: str = "#2563eb"
) -> str:
    """An SVG polyline of `values`, the last point marked.

    >>> sparkline([1.0, 2.0, 3.0]).startswith("<svg")
    True
    """
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (width - 8) / max(len(values) - 1, 1)

    def point(i: int, v: float) -> tuple[float, float]:
        return 4 + i * step, height - 4 - (v - low) / span * (height - 8)

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, v) for i, v in enumerate(values)))
    x, y = point(len(values) - 1, values[-1])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><polyline fill="none" stroke="#64748b" stroke-width="1.5" '
        f'points="{points}"/><circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{last}"/></svg>'
    )


def markdown_report(fired: list[Firing]) -> str:
    """Markdown for the firings of a cycle; metric firings get their window plotted."""
    lines = ["# ml-automations: what fired", ""]
    for firing in fired:
        where = firing.subject
        title = f"{firing.automation} · {firing.event_type} · {where}"
        lines.append(f"## {escape(title, quote=False)}")
        if firing.metric_filter:
            value = f" → **{firing.value:.4g}**" if firing.value is not None else ""
            lines.append(f"`{firing.metric_filter.replace('`', chr(39))}`{value}")
        if firing.metric_values:
            svg = sparkline(firing.metric_values)
            data = base64.b64encode(svg.encode()).decode()
            what = (
                "baseline runs' latest values"
                if firing.event_type == "RUN_METRIC_ZSCORE"
                else "window"
            )
            shown = ", ".join(f"{v:.4g}" for v in firing.metric_values)
            lines += ["", f"![{what}](data:image/svg+xml;base64,{data})", "", f"{what}: {shown}"]
        lines.append("")
    return "\n".join(lines)
