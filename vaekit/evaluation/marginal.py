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
from vaekit.evaluation.estimators import LogLikelihood, estimate_log_px, jackknife_se
from vaekit.evaluation.metrics import elbo_terms, mean_se, to_bits_per_dim
from vaekit.models.vae import VAE
from vaekit.numerics import derive_seed


def k_grid(k: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to and including k."""
    grid = [m * 10**e for e in range(int(math.log10(max(k, 1))) + 1) for m in (1, 2, 5)]
    return sorted({g for g in grid if g <= k} | {k})


ESS_FRACTION_WARN = 0.01  # a median ESS below 1% of K: the estimate is not to be trusted


def summarize(est: LogLikelihood, bpd_offset: float | None, dim: int) -> dict[str, Any]:
    """Mean log p(x) with its standard error, bits/dim, ESS median and 5th percentile, the
    curve over k and a convergence check.

    ``log_px_se`` is the spread across examples; for the naive estimator, whose K prior
    samples are shared by all examples, their Monte-Carlo error is correlated across
    examples, so ``log_px_se_mc`` adds a delete-a-group jackknife over the samples and
    ``log_px_se_total`` combines both.
    """
    mean, se = mean_se(est.log_px)
    ess = est.ess.double()
    stats = {str(k): mean_se(v) for k, v in sorted(est.prefix.items())}
    stats[str(est.k)] = (mean, se)
    out = {"k": est.k, "proposal": est.proposal, "log_px": mean, "log_px_se": se,
           "bpd": to_bits_per_dim(-mean, bpd_offset, dim),
           "ess_median": float(ess.median()), "ess_p5": float(torch.quantile(ess, 0.05)),
           "ess_fraction_median": float(ess.median()) / est.k,
           "curve": {k: m for k, (m, _) in stats.items()},
           "curve_se": {k: s for k, (_, s) in stats.items()}}
    if est.leave_out is not None:
        out["log_px_se_mc"] = jackknife_se(est.leave_out)
        out["log_px_se_total"] = math.hypot(se, out["log_px_se_mc"])
    out["warning"] = convergence_warning(est, out)
    return out


def convergence_warning(est: LogLikelihood, summary: dict[str, Any]) -> str | None:
    """Why the estimate should not be read as log p(x) yet, or None: a median ESS below 1%
    of K, or an estimate still rising over the last decade of K by more than its error."""
    problems = []
    if summary["ess_fraction_median"] < ESS_FRACTION_WARN:
        problems.append(f"the median ESS is {summary['ess_median']:.1f} of K = {est.k}")
    k10 = est.k // 10
    if k10 >= 1 and k10 in est.prefix:
        rise, rise_se = mean_se(est.log_px - est.prefix[k10])  # paired, per example
        err = max(rise_se, summary.get("log_px_se_mc", 0.0))
        if rise > max(err, 1e-4):  # 1e-4 nats: below it, float rounding
            problems.append(f"it still rose by {rise:.3f} nats (± {err:.3f}) from K = {k10} "
                            f"to K = {est.k}")
    if not problems:
        return None
    fix = ("use a larger K" if est.proposal == "prior" else
           "use a larger K, or a better encoder (train longer)")
    return f"not converged: {'; '.join(problems)}; {fix}"


def marginal_likelihood(model: VAE, data: Batch | torch.Tensor, k: int = 1000,
                        k_naive: int = 0, bpd_offset: float | None = None, seed: int = 0,
                        memory_mb: float = 1024.0, elbo_seed: int | None = None,
                        extra_ks: list[int] | tuple[int, ...] = ()) -> dict[str, Any]:
    """Importance-sampled and (optionally) naive log p(x), the ELBO gap and the IWAE curve.

    The gap is taken against the one-sample ELBO drawn with ``elbo_seed`` (default
    ``seed``): pass the seed of a reported ELBO so that log p(x) - ELBO is the printed gap.
    """
    x = as_batch(data)
    dim = math.prod(model.event_shape)
    elbo_seed = seed if elbo_seed is None else elbo_seed
    elbo = elbo_terms(model, x, seed=elbo_seed)["elbo"]  # (N,) the same draw as reported
    out: dict[str, Any] = {}
    est = estimate_log_px(model, x, k, "encoder", seed=seed, memory_mb=memory_mb,
                          prefix_ks=sorted({*k_grid(k), *extra_ks}))
    out["importance"] = summarize(est, bpd_offset, dim)
    gap = est.log_px - elbo.double()
    out["elbo_gap"] = dict(zip(("mean", "se"), mean_se(gap), strict=True))
    out["elbo_gap"]["note"] = ("log p_hat(x) - ELBO(x) (the ELBO's own draw): an estimate of "
                               "KL(q(z|x) || p(z|x))")
    out["iwae_curve"] = {kk: out["importance"]["curve"][kk] for kk in ("1", "10", "100", "1000")
                         if kk in out["importance"]["curve"]}
    if k_naive > 0:
        naive = estimate_log_px(model, x, k_naive, "prior", seed=derive_seed(seed, "naive"),
                                memory_mb=memory_mb, prefix_ks=k_grid(k_naive))
        out["naive"] = summarize(naive, bpd_offset, dim)
    return out
