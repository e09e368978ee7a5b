"""The marginal likelihood as seed 000 derives it, measured on a trained model.

    log p(x) = ELBO(x) + KL(q(z|x) || p(z|x))

- importance sampling with the encoder as proposal gives log p(x) (K samples);
- the naive estimator samples z from the prior and wastes almost every sample;
- gap(x) = log p_hat(x) - ELBO(x) estimates KL(q(z|x) || p(z|x)) per example;
- IWAE-k for growing k climbs from the ELBO (k = 1) towards log p(x).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.estimators import LogLikelihood, estimate_log_px
from vaekit.evaluation.metrics import elbo_terms, mean_se, to_bits_per_dim
from vaekit.models.vae import VAE


def k_grid(k: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to and including k."""
    grid = [m * 10**e for e in range(int(math.log10(max(k, 1))) + 1) for m in (1, 2, 5)]
    return sorted({g for g in grid if g <= k} | {k})


def summarize(est: LogLikelihood, bpd_offset: float | None, dim: int) -> dict[str, Any]:
    """Mean log p(x) with s.e., bits/dim, ESS median and 5th percentile, the curve over k."""
    mean, se = mean_se(est.log_px)
    ess = est.ess.double()
    stats = {str(k): mean_se(v) for k, v in sorted(est.prefix.items())}
    stats[str(est.k)] = (mean, se)
    return {"k": est.k, "proposal": est.proposal, "log_px": mean, "log_px_se": se,
            "bpd": to_bits_per_dim(-mean, bpd_offset, dim),
            "ess_median": float(ess.median()), "ess_p5": float(torch.quantile(ess, 0.05)),
            "ess_fraction_median": float(ess.median()) / est.k,
            "curve": {k: m for k, (m, _) in stats.items()},
            "curve_se": {k: s for k, (_, s) in stats.items()}}


def marginal_likelihood(model: VAE, data: Batch | torch.Tensor, k: int = 1000,
                        k_naive: int = 0, bpd_offset: float | None = None, seed: int = 0,
                        memory_mb: float = 1024.0) -> dict[str, Any]:
    """Importance-sampled and (optionally) naive log p(x), the ELBO gap and the IWAE curve."""
    x = as_batch(data)
    dim = math.prod(model.event_shape)
    elbo = elbo_terms(model, x, seed=seed)["elbo"]  # (N,) one-sample ELBO per example
    out: dict[str, Any] = {}
    est = estimate_log_px(model, x, k, "encoder", seed=seed, memory_mb=memory_mb,
                          prefix_ks=k_grid(k))
    out["importance"] = summarize(est, bpd_offset, dim)
    gap = est.log_px - elbo.double()
    out["elbo_gap"] = dict(zip(("mean", "se"), mean_se(gap), strict=True))
    out["elbo_gap"]["note"] = "log p_hat(x) - ELBO(x): an estimate of KL(q(z|x) || p(z|x))"
    out["iwae_curve"] = {kk: out["importance"]["curve"][kk] for kk in ("1", "10", "100", "1000")
                         if kk in out["importance"]["curve"]}
    if k_naive > 0:
        naive = estimate_log_px(model, x, k_naive, "prior", seed=seed + 1, memory_mb=memory_mb,
                                prefix_ks=k_grid(k_naive))
        out["naive"] = summarize(naive, bpd_offset, dim)
    return out
