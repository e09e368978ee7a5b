"""Objectives as functions of (model, x): per-example values, shape (B,)."""

from vaekit.objectives.elbo import ELBOTerms, elbo, elbo_loss, iwae_bound, log_weights

__all__ = ["ELBOTerms", "elbo", "elbo_loss", "iwae_bound", "log_weights"]
