"""Measuring a model against labels: metrics (scikit-learn), threshold calibration, the HTML report."""

from inspector.evaluation.metrics import SUMMARY_KEYS, Evaluation, OutcomeCounts, evaluate, outcome_counts
from inspector.evaluation.predictions import Prediction, match_verdicts, read_verdicts, run_inspector, write_verdicts

__all__ = [
    "SUMMARY_KEYS",
    "Evaluation",
    "OutcomeCounts",
    "Prediction",
    "evaluate",
    "match_verdicts",
    "outcome_counts",
    "read_verdicts",
    "run_inspector",
    "write_verdicts",
]
