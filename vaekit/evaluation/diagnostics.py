"""Posterior-collapse and latent diagnostics from the encoder's posterior parameters."""

from __future__ import annotations

from typing import Any

import torch

from vaekit.distributions.priors import kl_standard_normal
from vaekit.evaluation.metrics import ACTIVE_THRESHOLD, active_units
from vaekit.models.vae import VAE


@torch.no_grad()
def kl_per_dimension(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
    """Mean over x of KL(q(z_j|x) || N(0,1)) per latent dim j, and posterior means. (L,), (N, L).

    KL_j = 1/2 (mu_j^2 + s_j^2 - 1 - log s_j^2); the sum over j is the ELBO's KL term.
    """
    kls, mus = [], []
    for s in range(0, len(x), batch_size):
        mu, log_var = model.encoder.params(x[s : s + batch_size])
        kls.append(kl_standard_normal(mu.double(), log_var.double()).sum(0))
        mus.append(mu)
    return torch.stack(kls).sum(0) / len(x), torch.cat(mus)


def latent_diagnostics(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Active units (Burda et al.: Cov_x(E_q[z_j]) > 0.01), KL per dimension, a collapse warning."""
    kl, mu = kl_per_dimension(model, x, batch_size)
    variance = mu.double().var(0)
    active = active_units(mu)
    n_active, n = int(active.sum()), len(active)
    out: dict[str, Any] = {
        "active_units": n_active, "latent_dim": n, "active_threshold": ACTIVE_THRESHOLD,
        "inactive_dims": [int(j) for j in torch.nonzero(~active).flatten()],
        "kl_per_dim": [round(float(v), 6) for v in kl],
        "cov_mean_per_dim": [round(float(v), 6) for v in variance],
        "warning": None,
    }
    if n_active < n / 2:
        out["warning"] = (f"posterior collapse: {n - n_active} of {n} latent units are inactive "
                          f"(KL ~ 0); the decoder ignores them. Consider a smaller --latent-dim, "
                          f"KL warm-up (--beta < 1 early) or a weaker decoder.")
    return out
