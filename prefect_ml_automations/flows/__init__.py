"""Prefect flows: the sensor cycle (what a scheduled deployment runs)."""

from prefect_ml_automations.flows.sensor import publish, sensor_cycle, sensor_service

__all__ = ["publish", "sensor_cycle", "sensor_service"]
