"""The sensor as Prefect flows, and what each cycle shows in the Prefect UI.

Every cycle that did something leaves a table artifact (`ml-automations-sensor`) of what it
evaluated, fired, held back and delivered, and emits a Prefect event per delivered firing
(`ml.automation.firing.finished` / `.failed`), so Prefect automations can react to them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from prefect_ml_automations.automations.actions import emit_firing_event
from prefect_ml_automations.config import load_config
from prefect_ml_automations.sensor import CycleReport, Sensor, summary

ARTIFACT_KEY = "ml-automations-sensor"
REPORT_KEY = "ml-automations-report"


async def publish(report: CycleReport, *, sensor: str = "default") -> None:
    """Write the cycle's table artifact and its firing events (nothing for an idle cycle)."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

    from prefect_ml_automations.report import markdown_report

    if report.idle:
        return
    if report.fired:
        await acreate_markdown_artifact(
            markdown_report(report.fired),
            key=REPORT_KEY,
            description="What fired, with its window.",
        )
    await acreate_table_artifact(
        table=report.table()
        or [{"automation": "", "event": "", "subject": "", "status": "", "detail": ""}],
        key=ARTIFACT_KEY,
        description=f"Sensor {sensor!r}: {summary(report)}.",
    )
    for delivery in report.deliveries:
        if delivery.status in ("finished", "failed"):
            emit_firing_event(
                f"ml.automation.firing.{delivery.status}",
                delivery.firing,
                {"result": delivery.result, "error": delivery.error},
            )


@flow(name="ml-automations-sensor", log_prints=True)
async def sensor_cycle(config_file: str | None = None, sensor: str = "default") -> dict[str, int]:
    """One sensor cycle: evaluate new events, record firings, act. The automations come from
    `config_file`, or — without one — from the blocks `ml-automations apply` saved."""
    if config_file is None:
        from prefect_ml_automations.blocks import load_config_from_blocks

        config = await load_config_from_blocks()
    else:
        config = load_config(config_file)
    report = await Sensor(config, name=sensor).cycle()
    await publish(report, sensor=sensor)
    get_run_logger().info(summary(report))
    return {
        "events": report.events,
        "fired": len(report.fired),
        "finished": sum(d.status == "finished" for d in report.deliveries),
        "failed": sum(d.status == "failed" for d in report.deliveries),
    }


@flow(name="ml-automations-sensor-service", log_prints=True)
async def sensor_service(config_file: str, interval: float = 30.0, sensor: str = "default") -> None:
    """The sensor as one long-running flow run: cycles until cancelled, each busy cycle leaving
    its artifact on this run. Woken early by pushes when it runs beside the receiver."""
    from prefect_ml_automations.runner import sensor_loop, wake_event

    config = load_config(config_file)
    await sensor_loop(Sensor(config, name=sensor), interval=interval, wake=wake_event(sensor))


def sensor_deployment(config_file: Path, *, interval: float, name: str = "sensor") -> Any:
    """The sensor as a deployment that runs one cycle every `interval` seconds (for `serve`)."""
    return sensor_cycle.to_deployment(
        name,
        interval=interval,
        parameters={"config_file": str(config_file.resolve())},
        description="The ml-automations sensor: one cycle per run.",
    )
