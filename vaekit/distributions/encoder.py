"""The encoder q(z|x[, c]) = N(mu, diag(sigma^2)): a network giving (mu, log sigma^2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaekit.numerics import reparameterize


def call_net(net: nn.Module, inputs: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``net(inputs)``, or ``net(inputs, c)`` for a conditional model (context c given)."""
    return net(inputs) if c is None else net(inputs, c)


def draw_z(q: Independent, k: int | None = None, eps: torch.Tensor | None = None
           ) -> torch.Tensor:
    """A reparameterized draw from a diagonal-Gaussian q: (B, L), or (k, B, L) with ``k``;
    from the global generator, or from the noise ``eps`` of that shape when given."""
    if eps is None:
        return q.rsample(() if k is None else (k,))
    return reparameterize(q.base_dist.loc, q.base_dist.scale, eps)


class GaussianEncoder(nn.Module):
    """Wraps a network ``net: (..., *x_shape) [, c] -> (..., 2L)`` into q(z|x[, c]).

    ``forward`` returns ``Independent(Normal(mu, sigma), 1)``; its ``rsample`` draws
    z = mu + sigma * eps, eps ~ N(0, I) (the reparameterization trick).
    """

    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def params(self, x: torch.Tensor, c: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2), each (..., L); at least float32, even under bf16 autocast."""
        out = call_net(self.net, x, c)
        if out.dtype in (torch.bfloat16, torch.float16):
            out = out.float()  # the KL and the noise stay in full precision
        mu, log_var = out.chunk(2, dim=-1)
        return mu, log_var

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Independent:
        mu, log_var = self.params(x, c)
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1)
