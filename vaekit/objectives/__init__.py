"""Objectives as functions of (model, batch): per-example values, shape (B,), and the
registered training losses."""

from vaekit.objectives.elbo import (
    ELBOTerms,
    elbo,
    elbo_loss,
    iwae_bound,
    iwae_loss,
    log_weights,
)

__all__ = ["ELBOTerms", "elbo", "elbo_loss", "iwae_bound", "iwae_loss", "log_weights"]
