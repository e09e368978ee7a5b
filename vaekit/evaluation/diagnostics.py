"""Posterior-collapse and latent diagnostics from the encoder's posterior parameters."""

from __future__ import annotations

from typing import Any

import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.metrics import ACTIVE_THRESHOLD, active_units
from vaekit.models.vae import VAE


@torch.no_grad()
def kl_per_dimension(model: VAE, data: Batch | torch.Tensor, batch_size: int = 1000
                     ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean over x of KL(q(z_j|x) || p(z_j)) per latent dim j (the prior's own per-dimension
    KL; None for a prior that does not factorize over dimensions), and the posterior means.
    (L,) or None, (N, L). For N(0, I): KL_j = 1/2 (mu_j^2 + s_j^2 - 1 - log s_j^2).
    """
    data = as_batch(data)
    kls, mus = [], []
    for s in range(0, len(data), batch_size):
        part = data[s : s + batch_size]
        q = model.posterior(part.x, model.context(part.y))
        kl = model.prior.kl_per_dim(q)
        kls.append(None if kl is None else kl.double().sum(0))
        mus.append(q.mean)
    kl = None if kls[0] is None else torch.stack(kls).sum(0) / len(data)
    return kl, torch.cat(mus)


def latent_diagnostics(model: VAE, data: Batch | torch.Tensor,
                       batch_size: int = 1000) -> dict[str, Any]:
    """Active units (Burda et al.: Cov_x(E_q[z_j]) > 0.01), KL per dimension, a collapse warning."""
    kl, mu = kl_per_dimension(model, data, batch_size)
    variance = mu.double().var(0)
    active = active_units(mu)
    n_active, n = int(active.sum()), len(active)
    out: dict[str, Any] = {
        "active_units": n_active, "latent_dim": n, "active_threshold": ACTIVE_THRESHOLD,
        "inactive_dims": [int(j) for j in torch.nonzero(~active).flatten()],
        "kl_per_dim": None if kl is None else [round(float(v), 6) for v in kl],
        "cov_mean_per_dim": [round(float(v), 6) for v in variance],
        "warning": None,
    }
    if n_active < n / 2:
        out["warning"] = (f"posterior collapse: {n - n_active} of {n} latent units are inactive "
                          f"(KL ~ 0); the decoder ignores them. Consider a smaller --latent-dim, "
                          f"KL warm-up (--beta < 1 early) or a weaker decoder.")
    return out
