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
import torch.nn.functional as F
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

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over the event dims; equals ``self(z).log_prob(x)``.

        z (..., L), x broadcastable to (..., *event_shape) -> (...). Subclasses may compute it
        with fewer passes over memory (it is the inner loop of every log p(x) estimator).
        """
        return self(z).log_prob(x)

    def distribution(self, params: torch.Tensor) -> Independent:
        raise NotImplementedError

    def pairwise_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n | z_k) for every pair: params (K, *event), x (N, *event) -> (N, K).

        The base version broadcasts (memory N*K*D); subclasses use one matmul in float64.
        """
        return self.distribution(params.unsqueeze(0)).log_prob(x.unsqueeze(1))

    def log_prob_sum(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum over batch and data dims of log p(x|z): the training loss's fast path. ()."""
        return self.distribution(params).log_prob(x).sum()

    def extra_metrics(self) -> dict[str, float]:
        """Learned noise parameters worth logging (e.g. gamma)."""
        return {}


class BernoulliLikelihood(Likelihood):
    """Factorized Bernoulli on logits: log p = sum_j x_j l_j - softplus(l_j)."""

    def distribution(self, params: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=params, validate_args=False), len(self.event_shape))

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """For binary x: log p(x|z) = sum_j x_j l_j - sum_j softplus(l_j), two reading
        passes and one softplus over the logits (the fewest on CPU, where log p(x) by
        importance sampling spends ~1/6 of its time here); otherwise the distribution's
        -BCE(logits, x)."""
        if not bool(((x == 0) | (x == 1)).all()):
            return super().log_prob(z, x)
        logits = self.decoder(z)  # (..., *event)
        dims = tuple(range(-len(self.event_shape), 0))
        return (logits * x).sum(dims) - F.softplus(logits).sum(dims)

    def pairwise_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_j x_nj l_kj - softplus(l_kj) = (X L^T)_nk - sum_j softplus(l_kj). (N, K)."""
        logits = params.flatten(1).double()  # (K, D)
        return x.flatten(1).double() @ logits.T - F.softplus(logits).sum(-1)

    def log_prob_sum(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-sum BCE(logits, x) in one fused kernel (forward and backward)."""
        return -F.binary_cross_entropy_with_logits(params, x, reduction="sum")


class GaussianLikelihood(Likelihood):
    """Base of the Gaussian likelihoods: N(x; mu(z), diag(exp(noise_log_var())))."""

    def noise_log_var(self) -> torch.Tensor:
        """log variance, broadcastable to ``event_shape``."""
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> Independent:
        scale = torch.exp(0.5 * self.noise_log_var())
        return Independent(Normal(params, scale, validate_args=False), len(self.event_shape))

    def pairwise_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-1/2 sum_j w_j (x_nj - mu_kj)^2 - 1/2 sum_j log(2 pi / w_j), w = 1/variance,
        expanded as |x|_w^2 - 2 x.(w mu) + |mu|_w^2 so the cross term is one matmul. (N, K)."""
        mu, xf = params.flatten(1).double(), x.flatten(1).double()  # (K, D), (N, D)
        log_var = self.noise_log_var().double().expand(self.event_shape).reshape(-1)  # (D,)
        w = torch.exp(-log_var)
        sq = (xf.pow(2) @ w)[:, None] - 2 * xf @ (mu * w).T + (mu.pow(2) @ w)[None, :]
        return -0.5 * (sq + (log_var + math.log(2 * math.pi)).sum())

    def log_prob_sum(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-1/2 [sum (x - mu)^2 / v + B sum_j log(2 pi v_j)], without a distribution object."""
        log_var = self.noise_log_var().expand(self.event_shape)
        n = x.numel() // log_var.numel()  # batch size B
        sq = ((x - params).pow(2) * torch.exp(-log_var)).sum()
        return -0.5 * (sq + n * (log_var.sum() + log_var.numel() * math.log(2 * math.pi)))


class FixedGaussianLikelihood(GaussianLikelihood):
    """N(x; mu(z), sigma^2 I), sigma fixed.

    -log p(x|z) = |x - mu|^2 / (2 sigma^2) + D log(sigma sqrt(2 pi)).
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], sigma: float = 1.0) -> None:
        super().__init__(decoder, event_shape)
        self.register_buffer("log_var", torch.tensor(2 * math.log(sigma)))

    def noise_log_var(self) -> torch.Tensor:
        return self.log_var


class GammaGaussianLikelihood(GaussianLikelihood):
    """N(x; mu(z), gamma I) with one learned variance gamma (Dai & Wipf 2019).

    As gamma -> 0 the model can concentrate on a data manifold; gamma is stored as log gamma.
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int],
                 gamma_init: float = 1.0) -> None:
        super().__init__(decoder, event_shape)
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma_init)))

    def noise_log_var(self) -> torch.Tensor:
        return self.log_gamma

    def extra_metrics(self) -> dict[str, float]:
        return {"gamma": float(self.log_gamma.detach().exp())}


class DiagGaussianLikelihood(GaussianLikelihood):
    """N(x; mu(z), diag(v)) with a learned variance v_j per data dimension (not per z)."""

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int],
                 gamma_init: float = 1.0) -> None:
        super().__init__(decoder, event_shape)
        self.log_var = nn.Parameter(torch.full(self.event_shape, math.log(gamma_init)))

    def noise_log_var(self) -> torch.Tensor:
        return self.log_var

    def extra_metrics(self) -> dict[str, float]:
        return {"mean_variance": float(self.log_var.detach().exp().mean())}


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": FixedGaussianLikelihood,
    "gaussian-gamma": GammaGaussianLikelihood,
    "gaussian-diag": DiagGaussianLikelihood,
}
