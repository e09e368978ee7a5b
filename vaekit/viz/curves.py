"""Moved to :mod:`vaekit.report.plots`."""

from vaekit.report.plots import ESTIMATOR_LABELS as LABELS
from vaekit.report.plots import save_loglik_curve

__all__ = ["LABELS", "save_loglik_curve"]
