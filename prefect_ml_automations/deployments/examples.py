"""Example downstream flows, the kind an automation starts: retrain, and deploy a model version.

python -m prefect_ml_automations.deployments.examples   # serves both as `…/demo`
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, serve


@flow(name="train-model", log_prints=True)
def train_model(reason: str = "", run_name: str = "") -> str:
    """Retrain (here: pretend to), because an automation said so."""
    time.sleep(0.5)
    message = f"retrained because {reason or 'asked'}" + (
        f" (after run {run_name})" if run_name else ""
    )
    get_run_logger().info(message)
    return message


@flow(name="deploy-model", log_prints=True)
def deploy_model(model_version: str = "") -> str:
    """Deploy a model version (here: pretend to)."""
    time.sleep(0.5)
    message = f"deployed {model_version or 'the model'}"
    get_run_logger().info(message)
    return message


def main() -> None:
    train: Any = train_model.to_deployment("demo", description="Retrain, for ml-automations.")
    deploy: Any = deploy_model.to_deployment("demo", description="Deploy, for ml-automations.")
    serve(
        train,
        deploy,
        pause_on_shutdown=False,
        print_starting_message=False,
    )


if __name__ == "__main__":
    main()
