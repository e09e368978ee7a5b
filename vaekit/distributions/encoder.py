"""The encoder q(z|x) = N(mu(x), diag(sigma^2(x))): a network giving (mu, log sigma^2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal


class GaussianEncoder(nn.Module):
    """Wraps a network ``net: (..., *x_shape) -> (..., 2L)`` into q(z|x).

    ``forward`` returns ``Independent(Normal(mu, sigma), 1)``; ``rsample`` draws
    z = mu + sigma * eps, eps ~ N(0, I) (the reparameterization trick).
    """

    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2), each (..., L); at least float32, even under bf16 autocast."""
        out = self.net(x)
        if out.dtype in (torch.bfloat16, torch.float16):
            out = out.float()  # the KL and the noise stay in full precision
        mu, log_var = out.chunk(2, dim=-1)
        return mu, log_var

    def forward(self, x: torch.Tensor) -> Independent:
        mu, log_var = self.params(x)
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1)
