"""Priors p(z): the interface every objective and estimator asks, and the registered priors.

A prior knows its ``latent_dim``, draws ``sample(n, generator)``, gives ``log_prob(z)``
(where it has a density) and ``kl(q, z)``: the analytic KL(q || p) where the prior has one,
otherwise the one-sample Monte-Carlo estimate log q(z) - log p(z) at the caller's z.

=================  ============================================  ====================
name               p(z)                                          KL(q || p)
=================  ============================================  ====================
standard-normal    N(0, I)                                       analytic
gaussian           N(m, diag(s^2)), m and s learned              analytic
mog                sum_c pi_c N(m_c, diag(s_c^2)), all learned   Monte Carlo
=================  ============================================  ====================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from vaekit.errors import ConfigError, VaekitError
from vaekit.numerics import derive_seed, gaussian_log_prob, reparameterize, seeded_generator
from vaekit.registry import PRIORS, Options


class Prior(nn.Module):
    """Base of the priors. Subclasses implement ``distribution`` (or ``sample`` and
    ``log_prob``) and, where they can, ``analytic_kl``."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # follows .to(device) / .double(): the device and dtype of samples
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def distribution(self) -> Distribution:
        """p(z) as a ``torch.distributions`` object with event shape (L,)."""
        raise NotImplementedError

    def forward(self) -> Distribution:
        return self.distribution()

    @property
    def has_analytic_kl(self) -> bool:
        """True where ``kl(q)`` is a closed form, False where it is a one-sample estimate."""
        return type(self).analytic_kl is not Prior.analytic_kl

    @property
    def has_log_prob(self) -> bool:
        """False for a prior that can be sampled but has no density."""
        return True

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), summed over the last dim. (...)."""
        return self.distribution().log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z), (n, L), from ``generator`` (the global one when None)."""
        eps = self._randn(n, generator)
        d = self.distribution()
        base = d.base_dist if isinstance(d, Independent) else d
        return reparameterize(base.loc, base.scale, eps)

    def _draw_device(self, generator: torch.Generator | None) -> torch.device:
        """Random numbers are drawn where the generator lives, then moved to the prior."""
        return generator.device if generator is not None else self.anchor.device

    def _randn(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        eps = torch.randn(n, self.latent_dim, generator=generator,
                          device=self._draw_device(generator))
        return eps.to(self.anchor.device, self.anchor.dtype)

    def analytic_kl(self, q: Distribution) -> torch.Tensor | None:
        """KL(q || p) in closed form, (...), or None where there is none."""
        return None

    def kl(self, q: Distribution, z: torch.Tensor | None = None,
           analytic: bool = True) -> torch.Tensor:
        """KL(q(z|x) || p(z)): the closed form where the prior has one (and ``analytic``),
        otherwise the one-sample estimate log q(z) - log p(z) at ``z`` (drawn from q when not
        given). (...)."""
        exact = self.analytic_kl(q) if analytic else None
        if exact is not None:
            return exact
        z = q.rsample() if z is None else z
        return q.log_prob(z) - self.log_prob(z)

    def kl_per_dim(self, q: Distribution) -> torch.Tensor | None:
        """KL per latent dimension (..., L) for a prior that factorizes over them, else None."""
        return None

    def check_log_prob(self, what: str) -> None:
        """Refuse clearly where ``what`` needs log p(z) and this prior has none."""
        if not self.has_log_prob:
            raise VaekitError(f"{what} needs the prior's log-density, and the "
                              f"{type(self).__name__} prior has none",
                              "use the naive estimator (--naive), or a prior with a density")


def _diag(q: Distribution) -> Normal:
    """The Normal under a diagonal-Gaussian posterior ``Independent(Normal, 1)``."""
    base = q.base_dist if isinstance(q, Independent) else q
    if not isinstance(base, Normal):
        raise TypeError(f"expected a diagonal Gaussian posterior, got {type(q).__name__}")
    return base


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mu, e^log_var) || N(0, 1)) = 1/2 (mu^2 + e^log_var - 1 - log_var)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var)


@dataclass
class StandardNormalOptions(Options):
    name: str = "standard-normal"


@PRIORS.register("standard-normal", StandardNormalOptions, "N(0, I), analytic KL")
class StandardNormal(Prior):
    """p(z) = N(0, I_L), with the analytic KL and its gradient (used by the fast path)."""

    def distribution(self) -> Independent:
        loc = self.anchor.expand(self.latent_dim)
        return Independent(Normal(loc, torch.ones_like(loc), validate_args=False), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) = -L/2 log(2 pi) - |z|^2 / 2, summed over the last dim. (...)."""
        return gaussian_log_prob(z, None, None, (self.latent_dim,))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._randn(n, generator)

    def kl_per_dim(self, q: Distribution) -> torch.Tensor:
        """1/2 (mu_j^2 + s_j^2 - 1 - log s_j^2) for q = N(mu, diag s^2). (..., L)."""
        base = _diag(q)
        return kl_standard_normal(base.loc, 2 * torch.log(base.scale))

    def analytic_kl(self, q: Distribution) -> torch.Tensor:
        return self.kl_per_dim(q).sum(-1)

    @staticmethod
    def kl_grad(mu: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """d KL / d mu = mu and d KL / d log s^2 = (s^2 - 1) / 2, per example and dim."""
        return mu, std.pow(2).sub_(1).mul_(0.5)


@dataclass
class GaussianPriorOptions(Options):
    name: str = "gaussian"


@PRIORS.register("gaussian", GaussianPriorOptions,
                 "N(m, diag(s^2)) with learned m and s, analytic KL")
class LearnedGaussian(Prior):
    """p(z) = N(m, diag(s^2)) with learned mean m and log std (initialized at N(0, I))."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))

    def distribution(self) -> Independent:
        return Independent(Normal(self.loc, self.log_scale.exp(), validate_args=False), 1)

    def kl_per_dim(self, q: Distribution) -> torch.Tensor:
        return kl_divergence(_diag(q), self.distribution().base_dist)

    def analytic_kl(self, q: Distribution) -> torch.Tensor:
        return self.kl_per_dim(q).sum(-1)


@dataclass
class MixturePriorOptions(Options):
    name: str = "mog"
    components: int = 10

    def validate(self) -> None:
        if self.components < 1:
            raise ConfigError(f"a mixture needs >= 1 component, got {self.components}",
                              "set model.prior.components to e.g. 10")


@PRIORS.register("mog", MixturePriorOptions,
                 "mixture of diagonal Gaussians, all parameters learned, Monte-Carlo KL")
class MixtureOfGaussians(Prior):
    """p(z) = sum_c pi_c N(z; m_c, diag(s_c^2)); means spread by a fixed-seed N(0, I) draw."""

    def __init__(self, latent_dim: int, components: int = 10) -> None:
        super().__init__(latent_dim)
        g = seeded_generator(derive_seed(0, "mog-means"))
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, latent_dim, generator=g))
        self.log_scale = nn.Parameter(torch.zeros(components, latent_dim))

    def distribution(self) -> MixtureSameFamily:
        parts = Independent(Normal(self.loc, self.log_scale.exp(), validate_args=False), 1)
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), parts,
                                 validate_args=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Component c ~ Categorical(pi), then z = m_c + s_c eps. (n, L)."""
        probs = torch.softmax(self.logits.detach(), 0).to(self._draw_device(generator))
        c = torch.multinomial(probs, n, replacement=True, generator=generator)
        c = c.to(self.loc.device)
        return reparameterize(self.loc[c], self.log_scale[c].exp(), self._randn(n, generator))
