"""The linear-Gaussian VAE, whose log p(x) is known in closed form: a yardstick for estimators.

    z ~ N(0, I_L),   x | z ~ N(W z + b, s^2 I_D)   =>   x ~ N(b, W W^T + s^2 I_D)
    p(z | x) = N(m, C),  C = (I + W^T W / s^2)^{-1},  m = C W^T (x - b) / s^2

vaekit's encoder is a diagonal Gaussian, so the true posterior is representable exactly when
W^T W is diagonal (orthogonal columns); otherwise :meth:`LinearGaussian.vae` gets the
mean-field approximation: the diagonal Gaussian closest to p(z|x) in KL(q || p), with the
exact mean and variances 1 / diag(C^-1) (not diag C, which is wider), whose ELBO is strictly
below log p(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vaekit.distributions import FixedGaussianLikelihood, GaussianEncoder, StandardNormal
from vaekit.models.vae import VAE
from vaekit.numerics import seeded_generator


@dataclass
class LinearGaussian:
    """Parameters W (D, L), b (D,), noise std s of the linear-Gaussian model."""

    W: torch.Tensor
    b: torch.Tensor
    s: float

    @classmethod
    def random(cls, d: int, latent: int, s: float = 0.5, seed: int = 0,
               orthogonal: bool = True) -> LinearGaussian:
        """A random model; ``orthogonal`` columns make the true posterior diagonal."""
        g = seeded_generator(seed)
        W = torch.randn(d, latent, generator=g, dtype=torch.float64)
        if orthogonal:
            q, _ = torch.linalg.qr(W)
            W = q * torch.linspace(2.0, 0.5, latent, dtype=torch.float64)  # column scales
        return cls(W, torch.randn(d, generator=g, dtype=torch.float64), s)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + s^2 I)."""
        d = self.W.shape[0]
        cov = self.W @ self.W.T + self.s**2 * torch.eye(d, dtype=self.W.dtype)
        return MultivariateNormal(self.b, cov)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form log p(x) (N,) for x (N, D)."""
        return self.marginal().log_prob(x.to(self.W.dtype))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n draws of x (N, D) from p(x), seeded."""
        return _seeded_sample(self.marginal(), n, seed)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z|x) = N(m, C): m (N, L), C (L, L)."""
        latent = self.W.shape[1]
        C = torch.linalg.inv(torch.eye(latent, dtype=self.W.dtype) + self.W.T @ self.W / self.s**2)
        m = (x.to(self.W.dtype) - self.b) @ self.W @ C / self.s**2
        return m, C

    def mean_field_var(self) -> torch.Tensor:
        """(L,) variances of the KL(q || p(z|x))-optimal diagonal posterior: 1 / diag(C^-1),
        C^-1 = I + W^T W / s^2 (equal to diag C when W^T W is diagonal)."""
        return 1.0 / (1.0 + (self.W * self.W).sum(0) / self.s**2)

    def vae(self, shift: float = 0.0, var_scale: float = 1.0) -> VAE:
        """A float64 vaekit VAE of this model with the mean-field posterior as encoder,
        optionally with its mean shifted by ``shift`` and its variance scaled by ``var_scale``."""
        d, latent = self.W.shape
        decoder = nn.Linear(latent, d).double()
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
        encoder = GaussianEncoder(_MeanFieldPosterior(self, shift, var_scale), latent)
        return VAE(encoder, FixedGaussianLikelihood(decoder, (d,), sigma=self.s),
                   StandardNormal(latent)).double()


def _seeded_sample(dist: MultivariateNormal, n: int, seed: int) -> torch.Tensor:
    g = seeded_generator(seed)
    eps = torch.randn(n, dist.loc.shape[0], generator=g, dtype=dist.loc.dtype)
    return dist.loc + eps @ dist.scale_tril.T


class _MeanFieldPosterior(nn.Module):
    """x -> (m, log var) of the mean-field posterior: the exact mean, the KL-optimal
    variances (shifted / widened on request)."""

    def __init__(self, model: LinearGaussian, shift: float, var_scale: float) -> None:
        super().__init__()
        self.model, self.shift, self.log_scale = model, shift, math.log(var_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, _ = self.model.posterior(x)
        log_var = torch.log(self.model.mean_field_var()) + self.log_scale
        return torch.cat([m + self.shift, log_var.expand_as(m)], dim=-1)
