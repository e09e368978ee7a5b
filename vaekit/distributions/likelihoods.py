"""Likelihoods p(x|z): a decoder network followed by an output distribution.

Every likelihood returns ``Independent(base, len(event_shape))`` so ``log_prob(x)`` is the
sum over data dimensions (the one reduction rule: sum over dimensions, mean over batch).

=================  =========================================  ============================
name               p(x|z)                                     learned beyond the decoder
=================  =========================================  ============================
bernoulli          prod_j Bernoulli(x_j; sigmoid(logit_j))    -
gaussian           N(x; mu(z), sigma^2 I), sigma fixed        -
gaussian-gamma     N(x; mu(z), gamma I) (Dai & Wipf 2019)     one scalar variance gamma
gaussian-diag      N(x; mu(z), diag(v)), v per dimension      D variances
=================  =========================================  ============================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal


class Likelihood(nn.Module):
    """Base: ``decoder: (..., L) -> (..., *event_shape)`` parameters, then a distribution."""

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.decoder, self.event_shape = decoder, tuple(event_shape)

    def forward(self, z: torch.Tensor) -> Independent:
        """p(x|z) with batch shape z.shape[:-1] and event shape ``event_shape``."""
        return self.distribution(self.decoder(z))

    def distribution(self, params: torch.Tensor) -> Independent:
        raise NotImplementedError

    def extra_metrics(self) -> dict[str, float]:
        """Learned noise parameters worth logging (e.g. gamma)."""
        return {}


class BernoulliLikelihood(Likelihood):
    """Factorized Bernoulli on logits: log p = sum_j x_j l_j - softplus(l_j)."""

    def distribution(self, params: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=params, validate_args=False), len(self.event_shape))


def _gaussian(mean: torch.Tensor, log_var: torch.Tensor, n_event: int) -> Independent:
    return Independent(Normal(mean, torch.exp(0.5 * log_var), validate_args=False), n_event)


class FixedGaussianLikelihood(Likelihood):
    """N(x; mu(z), sigma^2 I), sigma fixed.

    -log p(x|z) = |x - mu|^2 / (2 sigma^2) + D log(sigma sqrt(2 pi)).
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], sigma: float = 1.0) -> None:
        super().__init__(decoder, event_shape)
        self.register_buffer("log_var", torch.tensor(2 * math.log(sigma)))

    def distribution(self, params: torch.Tensor) -> Independent:
        return _gaussian(params, self.log_var, len(self.event_shape))


class GammaGaussianLikelihood(Likelihood):
    """N(x; mu(z), gamma I) with one learned variance gamma (Dai & Wipf 2019).

    As gamma -> 0 the model can concentrate on a data manifold; gamma is stored as log gamma.
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int],
                 gamma_init: float = 1.0) -> None:
        super().__init__(decoder, event_shape)
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma_init)))

    def distribution(self, params: torch.Tensor) -> Independent:
        return _gaussian(params, self.log_gamma, len(self.event_shape))

    def extra_metrics(self) -> dict[str, float]:
        return {"gamma": float(self.log_gamma.detach().exp())}


class DiagGaussianLikelihood(Likelihood):
    """N(x; mu(z), diag(v)) with a learned variance v_j per data dimension (not per z)."""

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int],
                 gamma_init: float = 1.0) -> None:
        super().__init__(decoder, event_shape)
        self.log_var = nn.Parameter(torch.full(self.event_shape, math.log(gamma_init)))

    def distribution(self, params: torch.Tensor) -> Independent:
        return _gaussian(params, self.log_var, len(self.event_shape))

    def extra_metrics(self) -> dict[str, float]:
        return {"mean_variance": float(self.log_var.detach().exp().mean())}


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": FixedGaussianLikelihood,
    "gaussian-gamma": GammaGaussianLikelihood,
    "gaussian-diag": DiagGaussianLikelihood,
}
