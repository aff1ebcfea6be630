"""A sensor process for the exactly-once tests: cycles in small bites until there is no work."""

from __future__ import annotations

import asyncio
import sys

from prefect_ml_automations.config import load_config
from prefect_ml_automations.sensor import Sensor


def main(config_file: str) -> None:
    sensor = Sensor(load_config(config_file))
    quiet = 0
    while quiet < 5:
        report = sensor.evaluate(limit=7)
        report.deliveries = asyncio.run(sensor.deliver())
        quiet = quiet + 1 if report.idle else 0


if __name__ == "__main__":
    main(sys.argv[1])
