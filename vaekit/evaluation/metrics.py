"""Standard evaluation figures of a trained VAE on a data split.

All values are means over examples in nats per example, with their standard errors, plus
bits/dim where the data protocol gives a discrete-data likelihood.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.estimators import estimate_log_px
from vaekit.models.vae import VAE
from vaekit.numerics import EVAL_BATCH, derive_seed, mean_se, to_bits_per_dim
from vaekit.objectives.elbo import elbo_terms

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): unit u is active if Cov_x(E_q[z_u]) > 0.01


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """Boolean (L,): Cov_x(E_q[z_u | x]) > threshold, from posterior means mu (N, L)."""
    return mu.double().var(dim=0) > threshold


@torch.no_grad()
def evaluate(model: VAE, data: Batch | torch.Tensor, iwae_k: int = 100,
             bpd_offset: float | None = None, batch_size: int = EVAL_BATCH,
             memory_mb: float = 1024.0, seed: int = 0) -> dict[str, Any]:
    """ELBO, IWAE-k bound, reconstruction term, KL and active units on ``data`` (N, *shape);
    the ELBO's noise from ``seed`` ("elbo"), IWAE-k's from seed + 1 ("importance")."""
    model.eval()
    x = as_batch(data)
    dim = math.prod(model.event_shape)
    t = elbo_terms(model, x, batch_size, derive_seed(seed, "elbo"))
    out: dict[str, Any] = {"n_examples": len(x), "data_dim": dim}
    for key in ("elbo", "log_px_z", "kl"):
        out[key], out[key + "_se"] = mean_se(t[key])
    out["elbo_bpd"] = to_bits_per_dim(-out["elbo"], bpd_offset, dim)
    out["kl_estimator"] = "analytic" if model.prior.has_analytic_kl else "one-sample Monte Carlo"
    if iwae_k > 0:
        est = estimate_log_px(model, x, iwae_k, "encoder", seed=derive_seed(seed, "importance"),
                              memory_mb=memory_mb)
        out["iwae_k"] = iwae_k
        out["iwae"], out["iwae_se"] = mean_se(est.log_px)
        out["iwae_bpd"] = to_bits_per_dim(-out["iwae"], bpd_offset, dim)
    active = active_units(t["mu"])
    out["active_units"], out["latent_dim"] = int(active.sum()), model.latent_dim
    out.update({f"likelihood_{k}": v for k, v in model.likelihood.extra_metrics().items()})
    return out
