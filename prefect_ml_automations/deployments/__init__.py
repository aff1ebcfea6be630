"""Deployments: example downstream flows that automations start (`train-model`, `deploy-model`)."""
