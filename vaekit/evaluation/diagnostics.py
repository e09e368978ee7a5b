"""Posterior-collapse and latent diagnostics from the encoder's posterior parameters."""

from __future__ import annotations

from typing import Any

import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.metrics import ACTIVE_THRESHOLD, active_units
from vaekit.models.vae import VAE
from vaekit.numerics import EVAL_BATCH, chunks

USED_VARIANCE = 0.1  # a latent dimension is "used" when its mean posterior variance is below
# the sorted mean posterior variances split in two (used / unused) when their largest
# consecutive ratio is at least this: one order of magnitude between the two groups
SPLIT_RATIO = 10.0


@torch.no_grad()
def kl_per_dimension(model: VAE, data: Batch | torch.Tensor, batch_size: int = EVAL_BATCH
                     ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean over x of KL(q(z_j|x) || p(z_j)) per latent dim j (the prior's own per-dimension
    KL; None for a prior that does not factorize over dimensions), and the posterior means.
    (L,) or None, (N, L). For N(0, I): KL_j = 1/2 (mu_j^2 + s_j^2 - 1 - log s_j^2).
    """
    kl, mu, _ = posterior_statistics(model, data, batch_size)
    return kl, mu


@torch.no_grad()
def posterior_statistics(model: VAE, data: Batch | torch.Tensor, batch_size: int = EVAL_BATCH
                         ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(mean KL per dimension or None, posterior means (N, L), mean posterior variance per
    dimension (L,)) over the examples of ``data``."""
    data = as_batch(data)
    kls, mus, variances = [], [], []
    for lo, hi in chunks(len(data), batch_size):
        part = data[lo:hi]
        q = model.posterior(part.x, model.context(part.y))
        kl = model.prior.kl_per_dim(q)
        kls.append(None if kl is None else kl.double().sum(0))
        mus.append(q.mean)
        variances.append(q.variance.double().sum(0))
    kl = None if kls[0] is None else torch.stack(kls).sum(0) / len(data)
    return kl, torch.cat(mus), torch.stack(variances).sum(0) / len(data)


def variance_gap(post_var: torch.Tensor, threshold: float = SPLIT_RATIO) -> dict[str, Any]:
    """The largest gap of the sorted mean posterior variances v_(1) <= ... <= v_(k) (L,):

        i* = argmax_i log v_(i+1) - log v_(i),   ratio = v_(i*+1) / v_(i*)

    ``below`` = i* dimensions lie under it (v_(i*) = ``lower``, v_(i*+1) = ``upper``).
    ``split`` when ratio >= ``threshold``: only then do the variances fall into a used and
    an unused group, and ``below`` estimates the intrinsic dimension (Dai & Wipf 2019);
    with fewer than 2 dimensions, or all used or all unused, there is no gap to find."""
    v = post_var.double().clamp_min(1e-300).sort().values  # (L,) ascending
    out: dict[str, Any] = {"ratio": None, "below": None, "lower": None, "upper": None,
                           "split": False, "threshold": threshold}
    if len(v) < 2:
        return out
    log_gaps = v.log().diff()  # (L - 1,) log v_(i+1) - log v_(i)
    i = int(log_gaps.argmax())
    out.update(ratio=round(float(log_gaps[i].exp()), 4), below=i + 1,
               lower=round(float(v[i]), 6), upper=round(float(v[i + 1]), 6))
    out["split"] = out["ratio"] >= threshold
    return out


def latent_diagnostics(model: VAE, data: Batch | torch.Tensor,
                       batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """Active units (Burda et al.: Cov_x(E_q[z_j]) > 0.01), KL per dimension, a collapse
    warning, and the dimensions the model uses in the sense of Dai & Wipf (2019): as the
    decoder variance gamma -> 0, the posterior variance of a used dimension falls far below
    1 and that of an unused one stays near 1, so their count estimates the intrinsic
    dimension of the data (for a model that has converged): ``variance_gap`` says whether
    the variances have split in two (:func:`variance_gap`), beside the decoder's ``gamma``
    (None for a likelihood without one)."""
    kl, mu, post_var = posterior_statistics(model, data, batch_size)
    variance = mu.double().var(0)
    used = post_var < USED_VARIANCE
    active = active_units(mu)
    n_active, n = int(active.sum()), len(active)
    out: dict[str, Any] = {
        "active_units": n_active, "latent_dim": n, "active_threshold": ACTIVE_THRESHOLD,
        "inactive_dims": [int(j) for j in torch.nonzero(~active).flatten()],
        "kl_per_dim": None if kl is None else [round(float(v), 6) for v in kl],
        "cov_mean_per_dim": [round(float(v), 6) for v in variance],
        "posterior_variance_per_dim": [round(float(v), 6) for v in post_var],
        "used_dims": int(used.sum()), "used_threshold": USED_VARIANCE,
        "variance_gap": variance_gap(post_var),
        "gamma": model.likelihood.extra_metrics().get("gamma"),
        "warning": None,
    }
    if n_active < n / 2:
        out["warning"] = (f"posterior collapse: {n - n_active} of {n} latent units are inactive "
                          f"(KL ~ 0); the decoder ignores them. Consider a smaller --latent-dim, "
                          f"KL annealing (--beta-warmup-steps) or a weaker decoder.")
    return out
