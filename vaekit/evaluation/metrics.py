"""Standard evaluation figures of a trained VAE on a data split.

All values are means over examples in nats per example, with their standard errors, plus
bits/dim where the data protocol gives a discrete-data likelihood.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaekit import distributed
from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.estimators import estimate_log_px
from vaekit.evaluation.noise import IndexedNoise
from vaekit.models.vae import VAE
from vaekit.numerics import EVAL_BATCH, chunks, derive_seed
from vaekit.objectives.elbo import elbo

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): unit u is active if Cov_x(E_q[z_u]) > 0.01


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error across examples."""
    v = v.double()
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def to_bits_per_dim(nll_nats: float, offset: float | None, dim: int) -> float | None:
    """(-log p(x) + offset) / (D ln 2); None when bits/dim do not apply."""
    return None if offset is None else (nll_nats + offset) / (dim * math.log(2))


@torch.no_grad()
def elbo_terms(model: VAE, data: Batch | torch.Tensor, batch_size: int = EVAL_BATCH,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-example one-sample ELBO, E_q[log p(x|z)] estimate, KL and E_q[z]: ``elbo`` with
    fixed noise (example i's noise depends on (seed, i) only). (N,), (N, L) for ``mu``.
    Inside ``distributed.sharded()`` each rank computes a block of the examples."""
    data = as_batch(data)
    noise = IndexedNoise(model.latent_dim, seed, data.device)
    parts: dict[str, list[torch.Tensor]] = {"elbo": [], "log_px_z": [], "kl": [], "mu": []}
    a, b = distributed.local_rows(len(data))
    for lo, hi in chunks(b, batch_size, a):
        t = elbo(model, data[lo:hi], eps=noise.block(torch.arange(lo, hi), 1)[0])  # (B, L) noise
        for key, val in (("elbo", t.value), ("log_px_z", t.log_px_z), ("kl", t.kl),
                         ("mu", t.posterior.mean)):
            parts[key].append(val)
    return {k: distributed.gather_rows(torch.cat(v), len(data)) for k, v in parts.items()}


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
