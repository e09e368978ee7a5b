"""The VAE: p(x, z) = p(z) p(x|z) with an encoder q(z|x)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent

from vaekit.distributions.encoder import GaussianEncoder
from vaekit.distributions.likelihoods import Likelihood
from vaekit.distributions.priors import StandardNormal


class VAE(nn.Module):
    """``VAE(encoder, likelihood, prior)``.

    - ``posterior(x)`` -> q(z|x), batch shape (B,), event (L,)
    - ``likelihood(z)`` -> p(x|z), batch shape z.shape[:-1], event ``event_shape``
    - ``prior`` -> p(z) with ``log_prob`` and analytic ``kl(q)``
    """

    def __init__(self, encoder: GaussianEncoder, likelihood: Likelihood,
                 prior: StandardNormal) -> None:
        super().__init__()
        self.encoder, self.likelihood, self.prior = encoder, likelihood, prior

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.likelihood.event_shape

    def posterior(self, x: torch.Tensor) -> Independent:
        return self.encoder(x)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x|z) + log p(z); z (..., B, L), x (B, *shape) -> (..., B)."""
        return self.likelihood.log_prob(z, x) + self.prior.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n new examples: z ~ p(z), then the mean of p(x|z) (or a draw). (n, *shape)."""
        device = self.prior.zero.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        px = self.likelihood(z)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at z = E_q[z|x]. (B, *shape)."""
        return self.likelihood(self.posterior(x).mean).mean
