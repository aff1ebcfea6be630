"""The pure core: judges events against automations (SPEC §3), with no clock, I/O or Prefect."""

from prefect_ml_automations.evaluator.batch import EventBatch
from prefect_ml_automations.evaluator.engine import Evaluation, Evaluator
from prefect_ml_automations.evaluator.state import EvaluatorState

__all__ = ["Evaluation", "Evaluator", "EvaluatorState", "EventBatch"]
