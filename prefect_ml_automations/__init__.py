"""W&B-style Automations for Prefect."""
