"""Priors p(z)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mu, e^log_var) || N(0, 1)) = 1/2 (mu^2 + e^log_var - 1 - log_var).

    Elementwise, same shape as ``mu``: sum over the last dim for the ELBO's KL term.
    """
    return 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var)


class StandardNormal(nn.Module):
    """p(z) = N(0, I_L). ``forward()`` gives the distribution; ``kl(q)`` the analytic KL."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("zero", torch.zeros(()), persistent=False)  # follows .to(device)

    def forward(self) -> Independent:
        loc = self.zero.expand(self.latent_dim)
        return Independent(Normal(loc, torch.ones_like(loc), validate_args=False), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) = -L/2 log(2 pi) - |z|^2 / 2, summed over the last dim. (...)."""
        return -0.5 * (z.pow(2).sum(-1) + self.latent_dim * math.log(2 * math.pi))

    def kl(self, q: Distribution) -> torch.Tensor:
        """KL(N(mu, diag s^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2). (...)."""
        base = q.base_dist if isinstance(q, Independent) else q
        mu, s = base.loc, base.scale
        return kl_standard_normal(mu, 2 * torch.log(s)).sum(-1)
