"""Prefect flows: the sensor cycle (what a scheduled deployment runs) and the sensor service."""

from prefect_ml_automations.flows.sensor import sensor_cycle, sensor_service

__all__ = ["sensor_cycle", "sensor_service"]
