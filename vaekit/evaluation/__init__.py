"""Evaluation: log p(x) estimators, metrics, diagnostics."""

from vaekit.evaluation.estimators import LogLikelihood, estimate_log_px
from vaekit.evaluation.metrics import active_units, elbo_terms, evaluate, mean_se

__all__ = ["LogLikelihood", "active_units", "elbo_terms", "estimate_log_px", "evaluate",
           "mean_se"]
