"""The markdown report: each firing, and its window drawn as a small SVG."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

from prefect_ml_automations.decisions import Firing
from prefect_ml_automations.report import markdown_report, sparkline


def test_a_metric_firing_shows_its_window_as_a_plot() -> None:
    firing = Firing(
        firing_id="x",
        automation="good-accuracy",
        event_type="RUN_METRIC",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        project="p",
        run_id="r1",
        run_name="sweep-1",
        metric="acc",
        step=4,
        value=0.63,
        metric_values=[0.61, 0.62, 0.64, 0.63, 0.65],
        metric_filter="average(acc, 5) > 0.6",
    )
    text = markdown_report([firing])
    assert "## good-accuracy · RUN_METRIC · run 'r1' (sweep-1)" in text
    assert "`average(acc, 5) > 0.6` → **0.63**" in text
    [data] = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text)
    svg = base64.b64decode(data).decode()
    assert svg == sparkline([0.61, 0.62, 0.64, 0.63, 0.65])
    assert svg.count(",") == 5  # five points on the line


def test_the_plot_spans_the_values() -> None:
    svg = sparkline([0.0, 1.0], width=100, height=20)
    assert 'points="4.0,16.0 96.0,4.0"' in svg
    assert sparkline([]) == ""
