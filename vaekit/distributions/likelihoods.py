"""Likelihoods p(x|z[, c]): a decoder network followed by an output distribution.

Each likelihood owns its math exactly once: ``log_prob_params`` is THE log-density (summed
over the event dimensions: the one reduction rule), ``pairwise_log_prob`` the same for every
(example, sample) pair by a matmul, ``nll_and_grad`` its closed-form gradient for the fast
path. It also declares what it needs from the data (class-level, read by the data layer and
the evaluation): the decoder's parameter shape, the default transform, the values it
accepts, the bits/dim offset and the KDE kernel of a comparable baseline.

=================  =========================================  ============================
name               p(x|z)                                     learned beyond the decoder
=================  =========================================  ============================
bernoulli          prod_j Bernoulli(x_j; sigmoid(logit_j))    -
gaussian           N(x; mu(z), sigma^2 I), sigma fixed        -
gaussian-gamma     N(x; mu(z), gamma I) (Dai & Wipf 2019)     one scalar variance gamma
gaussian-diag      N(x; mu(z), diag(v)), v per dimension      D variances
discretized-       logistic(mu(z), s(z)) integrated over      - (mean and scale per
  logistic         each of the data's levels (PixelCNN++)       dimension from the decoder)
=================  =========================================  ============================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, constraints

from vaekit.distributions.encoder import call_net
from vaekit.errors import ConfigError, DataError
from vaekit.numerics import LOG_2PI, gaussian_log_prob, gaussian_log_prob_pairs
from vaekit.registry import LIKELIHOODS, Options

Grads = dict[nn.Parameter, torch.Tensor]


class Likelihood(nn.Module):
    """Base: ``decoder: (..., L) [, c] -> (..., *param_shape)``, then a distribution."""

    # ---- declarations about the data (class-level: no instance needed)

    @classmethod
    def param_shape(cls, event_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the decoder's output for one example."""
        return tuple(event_shape)

    @classmethod
    def default_transform(cls, levels: int | None) -> str:
        """The data transform under which this is a proper likelihood (``--transform auto``)."""
        return "dequantize" if levels else "none"

    @classmethod
    def check_data(cls, x: torch.Tensor, transform: str, levels: int | None, what: str) -> None:
        """Raise :class:`DataError` when stored values ``x`` cannot be modelled."""

    @classmethod
    def bpd_offset(cls, transform: str, levels: int | None, dim: int) -> float | None:
        """Nats added to -log p(x) for a discrete-data NLL; None when bits/dim do not apply."""
        return None

    @classmethod
    def kde_protocol(cls, transform: str, levels: int | None,
                     dim: int) -> tuple[str, str, float | None]:
        """(kernel, data transform, bits/dim offset) of a KDE baseline comparable with this
        likelihood: a Gaussian kernel on the same data by default."""
        return "gaussian", transform, GaussianLikelihood.bpd_offset(transform, levels, dim)

    pairwise_is_matmul = False  # pairwise_log_prob is one matmul (memory N*K), not N*K*D

    @classmethod
    def protocol_note(cls, transform: str, levels: int | None) -> str:
        """What the reported numbers mean under ``transform`` (for the protocol line)."""
        return "no bits/dim"

    # ---- the model

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int],
                 levels: int | None = None) -> None:
        """``levels``: quantization levels of the data (256 for 8-bit), None if continuous."""
        super().__init__()
        self.decoder, self.event_shape = decoder, tuple(event_shape)
        self.levels = levels or None
        self.event_dims = tuple(range(-len(self.event_shape), 0))

    def params(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for z (..., L) [and context c]: (..., *param_shape)."""
        return call_net(self.decoder, z, c)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x|z) with batch shape z.shape[:-1] and event shape ``event_shape``."""
        return self.distribution(self.params(z, c))

    def log_prob(self, z: torch.Tensor, x: torch.Tensor,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|z[, c]) summed over the event dims: z (..., L), x (..., *event) -> (...)."""
        return self.log_prob_params(self.params(z, c), x)

    def log_prob_params(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The log-density from decoder outputs; equals ``distribution(params).log_prob(x)``."""
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> Distribution:
        """A ``torch.distributions`` object (``mean``, ``sample``, ``log_prob``)."""
        raise NotImplementedError

    def pairwise_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n | z_k) for every pair: params (K, *param), x (N, *event) -> (N, K).

        The base version broadcasts (memory N*K*D); subclasses use one matmul in float64.
        """
        return self.log_prob_params(params.unsqueeze(0), x.unsqueeze(1))

    def nll_and_grad(self, params: torch.Tensor, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, Grads]:
        """(-sum log p, d / d params, {noise parameter: d / d parameter}) for a flattened
        batch params (B, P), x (B, D): the fast path's closed-form gradient."""
        raise NotImplementedError

    def noise_parameters(self) -> list[nn.Parameter]:
        """Learned parameters of the output distribution itself (e.g. log gamma)."""
        return []

    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent initialization from training examples x (N, *event), called once
        when a new model is set up (a checkpoint overwrites it on resume)."""

    def extra_metrics(self) -> dict[str, float]:
        """Learned noise parameters worth logging (e.g. gamma)."""
        return {}


# ============================================================================ Bernoulli


@dataclass
class BernoulliOptions(Options):
    name: str = "bernoulli"


@LIKELIHOODS.register("bernoulli", BernoulliOptions,
                      "factorized Bernoulli on logits (binary or binarized data)")
class BernoulliLikelihood(Likelihood):
    """Factorized Bernoulli on logits l: log p(x|z) = sum_j x_j l_j - softplus(l_j).

    (-BCE(l, x) = x l - softplus(l) for every x, so one formula serves all callers.)
    """

    @classmethod
    def default_transform(cls, levels: int | None) -> str:
        return "binarize"

    @classmethod
    def check_data(cls, x: torch.Tensor, transform: str, levels: int | None, what: str) -> None:
        if transform not in ("binarize", "none"):
            raise DataError(f"transform {transform!r} makes no sense with a Bernoulli likelihood",
                            "use --transform binarize (or auto)")
        if transform == "none" and not bool(((x == 0) | (x == 1)).all()):
            raise DataError(f"{what} has values other than 0 and 1: as Bernoulli targets they "
                            "are not a normalized likelihood", "use --transform binarize (or auto)")
        if levels:
            return
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{what} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1], "
                            "which a Bernoulli likelihood cannot model",
                            "rescale the data to [0, 1] or use --likelihood gaussian")

    @classmethod
    def bpd_offset(cls, transform: str, levels: int | None, dim: int) -> float | None:
        return 0.0  # a pmf of binary data: check_data admits nothing else

    @classmethod
    def kde_protocol(cls, transform: str, levels: int | None,
                     dim: int) -> tuple[str, str, float | None]:
        return "bernoulli", transform, 0.0  # the product-Bernoulli kernel: a pmf too

    pairwise_is_matmul = True

    @classmethod
    def protocol_note(cls, transform: str, levels: int | None) -> str:
        return "Bernoulli pmf of binary data, bits/dim exact"

    def log_prob_params(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # two reading passes and one softplus over the logits: the fewest on CPU
        return (params * x).sum(self.event_dims) - F.softplus(params).sum(self.event_dims)

    def distribution(self, params: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=params, validate_args=False), len(self.event_shape))

    def pairwise_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_j x_nj l_kj - softplus(l_kj) = (X L^T)_nk - sum_j softplus(l_kj). (N, K)."""
        logits = params.flatten(1).double()  # (K, D)
        return x.flatten(1).double() @ logits.T - F.softplus(logits).sum(-1)

    def nll_and_grad(self, params: torch.Tensor, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, Grads]:
        """-sum log p = sum softplus(l) - x . l;  d / d l = sigmoid(l) - x."""
        nll = F.softplus(params).sum() - torch.dot(x.reshape(-1), params.reshape(-1))
        return nll, torch.sigmoid(params).sub_(x), {}


# ============================================================================ Gaussians


class GaussianLikelihood(Likelihood):
    """Base of the Gaussian likelihoods: N(x; mu(z), diag(exp(noise_log_var())))."""

    pairwise_is_matmul = True
    min_log_var = -math.inf  # learned variances are bounded below (gamma_min)

    @classmethod
    def bpd_offset(cls, transform: str, levels: int | None, dim: int) -> float | None:
        """Dequantized data live in [0,1]^D with cells of volume levels^-D, so
        -log P(pixels) <= -log p(x) + D log(levels)."""
        return dim * math.log(levels) if transform == "dequantize" and levels else None

    @classmethod
    def protocol_note(cls, transform: str, levels: int | None) -> str:
        if transform == "dequantize":
            return "Gaussian density of dequantized data: bits/dim are discrete-data upper bounds"
        if transform == "none" and not levels:
            return "Gaussian density of continuous data, in nats"
        return ("a Gaussian density of discrete values is NOT a normalized likelihood of the "
                "data: no bits/dim (use --transform dequantize)")

    def noise_log_var(self) -> torch.Tensor:
        """log variance, broadcastable to ``event_shape``."""
        raise NotImplementedError

    def log_prob_params(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-1/2 sum_j [(x_j - mu_j)^2 / v_j + log(2 pi v_j)]."""
        return gaussian_log_prob(x, params, self.noise_log_var(), self.event_shape)

    def distribution(self, params: torch.Tensor) -> Independent:
        scale = torch.exp(0.5 * self.noise_log_var())
        return Independent(Normal(params, scale, validate_args=False), len(self.event_shape))

    def pairwise_log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-1/2 sum_j w_j (x_nj - mu_kj)^2 - 1/2 sum_j log(2 pi / w_j), w = 1/variance,
        expanded as |x|_w^2 - 2 x.(w mu) + |mu|_w^2 so the cross term is one matmul. (N, K)."""
        mu, xf = params.flatten(1).double(), x.flatten(1).double()  # (K, D), (N, D)
        log_var = self.noise_log_var().double().expand(self.event_shape).reshape(-1)  # (D,)
        return gaussian_log_prob_pairs(xf, mu, log_var)

    def nll_and_grad(self, params: torch.Tensor, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, Grads]:
        """-sum log p = 1/2 [sum (x - mu)^2 / v + B sum_j log(2 pi v_j)] (the batch sum of
        ``gaussian_log_prob``, negated, in one pass with its gradient);
        d / d mu = (mu - x) / v;  d / d log v_j = 1/2 (B - sum_b (x_bj - mu_bj)^2 / v_j)."""
        log_var = self.noise_log_var().detach()
        v = log_var.expand(self.event_shape).reshape(-1)  # (D,)
        inv = torch.exp(-v)
        diff = params - x  # (B, D)
        sq = diff.pow(2)
        B, D = x.shape
        nll = 0.5 * ((sq * inv).sum() + B * (v.sum() + D * LOG_2PI))
        grads = {}
        for p in self.noise_parameters():  # the learned log variance, scalar or (D,)
            d_v = 0.5 * (B - (sq * inv).sum(0))  # (D,)
            d_p = d_v.sum() if p.dim() == 0 else d_v.reshape(p.shape)
            grads[p] = d_p * (p.detach() > self.min_log_var)  # 0 where the bound holds it
        return nll, diff.mul_(inv), grads


@dataclass
class FixedGaussianOptions(Options):
    name: str = "gaussian"
    sigma: float = 1.0  # std of p(x|z), data units

    def validate(self) -> None:
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma}", "pass e.g. --sigma 0.1")


@LIKELIHOODS.register("gaussian", FixedGaussianOptions, "N(x; mu(z), sigma^2 I), sigma fixed")
class FixedGaussianLikelihood(GaussianLikelihood):
    """N(x; mu(z), sigma^2 I), sigma fixed.

    -log p(x|z) = |x - mu|^2 / (2 sigma^2) + D log(sigma sqrt(2 pi)).
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], levels: int | None = None,
                 *, sigma: float = 1.0) -> None:
        super().__init__(decoder, event_shape, levels)
        self.register_buffer("log_var", torch.tensor(2 * math.log(sigma)))

    def noise_log_var(self) -> torch.Tensor:
        return self.log_var


@dataclass
class LearnedVarianceOptions(Options):
    name: str = "gaussian-gamma"
    gamma_init: float | None = None  # initial variance; None: 1/10 of the data's variance
    gamma_min: float = 1e-6  # lower bound of the learned variance (log-densities stay finite)
    gamma_lr: float | None = 0.01  # Adam lr of log gamma (constant); None: the model's lr

    def validate(self) -> None:
        if not self.gamma_min > 0:
            raise ConfigError(f"gamma_min must be positive, got {self.gamma_min}",
                              "e.g. model.likelihood.gamma_min: 1e-6")
        if self.gamma_init is not None and not (self.gamma_init >= self.gamma_min
                                                and math.isfinite(self.gamma_init)):
            raise ConfigError(f"gamma_init must be a finite number >= gamma_min "
                              f"({self.gamma_min:g}), got {self.gamma_init}",
                              "pass e.g. --gamma-init 0.1, or leave it out to start from the "
                              "data's variance")
        if self.gamma_lr is not None and not 0 < self.gamma_lr < 1:
            raise ConfigError(f"gamma_lr must be in (0, 1), got {self.gamma_lr}",
                              "e.g. model.likelihood.gamma_lr: 0.01 (null: the model's --lr)")


@dataclass
class DiagVarianceOptions(LearnedVarianceOptions):
    name: str = "gaussian-diag"


class LearnedVarianceLikelihood(GaussianLikelihood):
    """A Gaussian whose variance is learned as a log-parameter of ``shape`` (named
    ``param_name`` in checkpoints), bounded below by ``gamma_min``.

    Two defaults keep the variance from being the bottleneck of a short run:
    - it starts at ``gamma_init`` or, when that is None, at 1/10 of the training data's
      variance (``init_from_data``): reconstruction then outweighs the KL from the first step
      and the latents are used (started at the data's variance, a low-dimensional model falls
      into the posterior-collapse optimum, where gamma = that variance: measured on the ring,
      which collapses from gamma = var and not from var/2);
    - log gamma has an Adam learning rate of its own, ``gamma_lr`` (constant, outside the
      model's schedule): Adam moves a parameter by about lr per step, so at the weights' lr
      of 1e-3 log gamma would need thousands of steps to reach the reconstruction error;
      at 0.01 it takes a few hundred (``noise_lr``, read by the optimizer's set-up).
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], levels: int | None,
                 param_name: str, shape: Sequence[int], gamma_init: float | None,
                 gamma_min: float, gamma_lr: float | None) -> None:
        super().__init__(decoder, event_shape, levels)
        self.gamma_init, self.param_name, self.noise_lr = gamma_init, param_name, gamma_lr
        self.min_log_var = math.log(gamma_min)
        start = torch.full(tuple(shape), math.log(gamma_init or 1.0))
        setattr(self, param_name, nn.Parameter(start))

    def noise_log_var(self) -> torch.Tensor:
        return getattr(self, self.param_name).clamp(min=self.min_log_var)

    def noise_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, self.param_name)]

    def init_from_data(self, x: torch.Tensor) -> None:
        """gamma = 1/10 of the per-dimension variance of x (its mean, for one gamma)."""
        if self.gamma_init is not None:
            return
        var = x.double().var(0).reshape(self.event_shape) / 10
        var = var.clamp_min(math.exp(self.min_log_var))
        (param,) = self.noise_parameters()
        with torch.no_grad():
            param.copy_(var.log() if param.dim() else var.mean().log())


@LIKELIHOODS.register("gaussian-gamma", LearnedVarianceOptions,
                      "N(x; mu(z), gamma I), one learned variance gamma (Dai & Wipf 2019)")
class GammaGaussianLikelihood(LearnedVarianceLikelihood):
    """N(x; mu(z), gamma I) with one learned variance gamma (Dai & Wipf 2019).

    As gamma -> 0 the model can concentrate on a data manifold; gamma is stored as log gamma.
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], levels: int | None = None,
                 *, gamma_init: float | None = None, gamma_min: float = 1e-6,
                 gamma_lr: float | None = 0.01) -> None:
        super().__init__(decoder, event_shape, levels, "log_gamma", (), gamma_init, gamma_min,
                         gamma_lr)

    def extra_metrics(self) -> dict[str, float]:
        return {"gamma": float(self.noise_log_var().detach().exp())}


@LIKELIHOODS.register("gaussian-diag", DiagVarianceOptions,
                      "N(x; mu(z), diag(v)), a learned variance per data dimension")
class DiagGaussianLikelihood(LearnedVarianceLikelihood):
    """N(x; mu(z), diag(v)) with a learned variance v_j per data dimension (not per z)."""

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], levels: int | None = None,
                 *, gamma_init: float | None = None, gamma_min: float = 1e-6,
                 gamma_lr: float | None = 0.01) -> None:
        super().__init__(decoder, event_shape, levels, "log_var", event_shape, gamma_init,
                         gamma_min, gamma_lr)

    def extra_metrics(self) -> dict[str, float]:
        return {"mean_variance": float(self.noise_log_var().detach().exp().mean())}


@dataclass
class CalibratedOptions(Options):
    name: str = "gaussian-calibrated"
    gamma_min: float = 1e-6  # lower bound of the variance (log-densities stay finite)
    momentum: float = 0.99  # of the running variance used outside training

    def validate(self) -> None:
        if not self.gamma_min > 0:
            raise ConfigError(f"gamma_min must be positive, got {self.gamma_min}",
                              "e.g. model.likelihood.gamma_min: 1e-6")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}",
                              "e.g. model.likelihood.momentum: 0.99")


@LIKELIHOODS.register("gaussian-calibrated", CalibratedOptions,
                      "N(x; mu(z), gamma* I), gamma* = the batch's mean squared error "
                      "(calibrated decoder, Rybkin et al. 2021)")
class CalibratedGaussianLikelihood(GaussianLikelihood):
    """N(x; mu(z), gamma I) with gamma at its closed-form optimum for the current
    reconstructions: gamma* = mean_j (x_j - mu_j)^2 over the batch (the "calibrated
    decoder" of Rybkin, Daniilidis & Levine 2021, sigma-VAE), bounded below by gamma_min.

    In training, gamma* is computed from each batch and held constant for the gradient (at
    the optimum d loss / d gamma = 0, so the gradient with respect to mu is the same either
    way); a running average of it (``momentum`` per step, started at 1/10 of the data's
    variance) is the fixed gamma of evaluation, sampling and log p(x), which must not depend
    on the data being scored. Nothing about the variance is learned by Adam.
    """

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int], levels: int | None = None,
                 *, gamma_min: float = 1e-6, momentum: float = 0.99) -> None:
        super().__init__(decoder, event_shape, levels)
        self.min_log_var, self.momentum = math.log(gamma_min), momentum
        self.register_buffer("log_gamma", torch.zeros(()))  # the running gamma, as log

    def init_from_data(self, x: torch.Tensor) -> None:
        """Start the running gamma at 1/10 of the data's variance (as the learned ones)."""
        var = float(x.double().var(0).mean()) / 10
        self.log_gamma.fill_(max(math.log(max(var, 1e-300)), self.min_log_var))

    def noise_log_var(self) -> torch.Tensor:
        return self.log_gamma

    def log_prob_params(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return super().log_prob_params(params, x)
        with torch.no_grad():  # gamma* of this batch (all samples of all examples)
            mse = (x - params).pow(2).mean().clamp_min(math.exp(self.min_log_var))
            log_gamma = mse.log()
            self.log_gamma.mul_(self.momentum).add_((1 - self.momentum) * log_gamma)
        norm = math.prod(self.event_shape) * (log_gamma + LOG_2PI)  # D log(2 pi gamma*)
        return gaussian_log_prob(x, params, log_gamma, self.event_shape, log_norm=norm)

    def extra_metrics(self) -> dict[str, float]:
        return {"gamma": float(self.log_gamma.exp())}


# ============================================================================ discretized logistic


class DiscretizedLogistic(Distribution):
    """A logistic(mu, s) discretized to the levels x_k = k / (K - 1), k = 0..K-1, of [0, 1]:

        P(x_k) = F(x_k + h) - F(x_k - h),  h = 1 / (2 (K - 1)),  F = sigmoid((. - mu) / s)

    with the first and last bins extended to -inf and +inf, so the K probabilities sum to 1
    (Salimans et al. 2017, PixelCNN++, one mixture component). Computed in logs as
    log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - e^(b - a)).
    """

    arg_constraints: ClassVar = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, levels: int) -> None:
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        h, inv_s = 0.5 / (self.levels - 1), torch.exp(-self.log_scale)
        a, b = (x - self.loc + h) * inv_s, (x - self.loc - h) * inv_s  # bin edges, standardized
        log_cdf_a, log_sf_b = -F.softplus(-a), -F.softplus(b)  # log F(x + h), log 1 - F(x - h)
        inside = log_cdf_a + log_sf_b + torch.log(-torch.expm1(-2 * h * inv_s))
        return torch.where(x < h, log_cdf_a, torch.where(x > 1 - h, log_sf_b, inside))

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = sum_{k=1}^{K-1} P(x >= x_k) / (K - 1), P(x >= x_k) = 1 - F(x_k - h)."""
        edges = (torch.arange(1, self.levels, device=self.loc.device) - 0.5) / (self.levels - 1)
        z = (self.loc.unsqueeze(-1) - edges) * torch.exp(-self.log_scale).unsqueeze(-1)
        return torch.sigmoid(z).sum(-1) / (self.levels - 1)

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        """A logistic draw mu + s log(u / (1 - u)), rounded to the nearest level."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device).clamp_(1e-6, 1 - 1e-6)
            draw = self.loc + self.log_scale.exp() * (u.log() - (-u).log1p())
            k = (draw * (self.levels - 1)).round_().clamp_(0, self.levels - 1)
            return k / (self.levels - 1)


@dataclass
class DiscretizedLogisticOptions(Options):
    name: str = "discretized-logistic"


@LIKELIHOODS.register("discretized-logistic", DiscretizedLogisticOptions,
                      "discretized logistic on the data's levels (PixelCNN++), exact bits/dim")
class DiscretizedLogisticLikelihood(Likelihood):
    """A pmf of quantized data (e.g. 8-bit pixels scaled by --transform scale): per
    dimension a logistic with the decoder's mean and log-scale (clamped at -7, as in
    PixelCNN++) integrated over each level's bin. No dequantization, exact bits/dim."""

    MIN_LOG_SCALE = -7.0

    @classmethod
    def param_shape(cls, event_shape: Sequence[int]) -> tuple[int, ...]:
        return (2, *event_shape)  # mean, log-scale

    @classmethod
    def default_transform(cls, levels: int | None) -> str:
        return "scale"

    @classmethod
    def check_data(cls, x: torch.Tensor, transform: str, levels: int | None, what: str) -> None:
        if not levels:
            raise DataError(f"{what} is continuous, and the discretized logistic models "
                            "quantized values", "use --likelihood gaussian-gamma for it")
        if transform != "scale":
            raise DataError(f"transform {transform!r} does not fit the discretized logistic, "
                            "a pmf of the stored levels", "use --transform scale (or auto)")

    @classmethod
    def bpd_offset(cls, transform: str, levels: int | None, dim: int) -> float | None:
        return 0.0  # a pmf of the levels themselves

    @classmethod
    def kde_protocol(cls, transform: str, levels: int | None,
                     dim: int) -> tuple[str, str, float | None]:
        return "gaussian", "dequantize", dim * math.log(levels)  # same units: discrete bits

    @classmethod
    def protocol_note(cls, transform: str, levels: int | None) -> str:
        return f"discretized logistic pmf of the {levels} levels: exact bits/dim"

    def __init__(self, decoder: nn.Module, event_shape: Sequence[int],
                 levels: int | None = None) -> None:
        if not levels or levels < 2:
            raise ConfigError("the discretized logistic needs quantized data (levels >= 2)",
                              "train it on integer data, e.g. 8-bit images")
        super().__init__(decoder, event_shape, levels)

    def distribution(self, params: torch.Tensor) -> Independent:
        loc, log_scale = params.unbind(-len(self.event_shape) - 1)  # (..., *event) each
        log_scale = log_scale.clamp(min=self.MIN_LOG_SCALE)
        return Independent(DiscretizedLogistic(loc, log_scale, self.levels),
                           len(self.event_shape))

    def log_prob_params(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.distribution(params).log_prob(x)
