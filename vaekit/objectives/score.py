"""The ELBO with the score-function (REINFORCE) gradient for the encoder.

With z_1..z_k ~ q(z|x) drawn WITHOUT the reparameterization trick (no gradient flows through
z) and the learning signal

    f_i = log p(x|z_i) + beta (log p(z_i) - log q(z_i|x))          (one-sample beta-ELBO)

the gradient estimates are

    encoder phi:        1/k sum_i (f_i - b_i) grad_phi log q(z_i|x)      (score function)
    decoder, prior:     1/k sum_i grad_theta [log p(x|z_i) + beta log p(z_i)]

Both are unbiased for the gradient of the beta-ELBO (E_q[grad_phi log q] = 0, so the term
that f_i's own dependence on phi adds has mean zero and is dropped, and so is any baseline
b_i that does not depend on z_i). Baselines: ``none`` (b_i = 0); ``loo``, the leave-one-out
mean b_i = 1/(k-1) sum_{j != i} f_j (Kool et al. 2019; needs k >= 2); and a caller's
``offset`` (e.g. a running mean of past signals, see :mod:`vaekit.evaluation.gradients`).

The estimator needs no differentiable sampler, but its variance is far larger than the
reparameterized one's: train with ``--objective elbo-score`` to watch it fall behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.distributions.encoder import draw_z
from vaekit.errors import ConfigError
from vaekit.models.vae import VAE
from vaekit.registry import OBJECTIVES, Options

BASELINES = ("none", "loo")


@dataclass
class ScoreTerms:
    """Per-example terms, (B,), of a k-sample score-function ELBO estimate."""

    value: torch.Tensor  # 1/k sum_i f_i: the k-sample (beta-)ELBO estimate, Monte-Carlo KL
    surrogate: torch.Tensor  # its gradient is the score-function gradient estimate
    signal: torch.Tensor  # f_i (k, B), detached


def leave_one_out(f: torch.Tensor) -> torch.Tensor:
    """b_i = 1/(k-1) sum_{j != i} f_j over the sample dim 0 of f (k, B). (k, B)."""
    k = f.shape[0]
    return (f.sum(0, keepdim=True) - f) / (k - 1)


def score_terms(model: VAE, batch: Batch | torch.Tensor, k: int, beta: float = 1.0,
                baseline: str = "none", offset: torch.Tensor | float = 0.0) -> ScoreTerms:
    """The k-sample score-function estimate of the (beta-)ELBO and its surrogate.

    surrogate_b = 1/k sum_i [log p(x|z_i) + beta log p(z_i) + (f_i - b_i - offset) log q(z_i|x)]
    with (f_i - b_i - offset) detached and z_i ~ q(z|x) detached; ``offset`` is a scalar or
    (B,) constant baseline that must not depend on these z_i.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline == "loo" and k < 2:
        raise ValueError("the leave-one-out baseline needs k >= 2 samples")
    batch = as_batch(batch)
    c = model.context(batch.y)
    q = model.posterior(batch.x, c)
    z = draw_z(q, k).detach()  # (k, B, L): no path from z back to the encoder
    log_px_z = model.likelihood.log_prob(z, batch.x, c)  # (k, B)
    log_pz, log_qz = model.prior.log_prob(z), q.log_prob(z)  # (k, B)
    f = (log_px_z + beta * (log_pz - log_qz)).detach()  # learning signal (k, B)
    b = leave_one_out(f) if baseline == "loo" else torch.zeros_like(f)
    surrogate = log_px_z + beta * log_pz + (f - b - offset) * log_qz  # (k, B)
    return ScoreTerms(f.mean(0), surrogate.mean(0), f)


# ============================================================================ training loss


@dataclass
class ScoreOptions(Options):
    name: str = "elbo-score"
    k: int = 10  # samples per example (``--iwae-k`` sets it from the CLI)
    baseline: str = "loo"  # none | loo (leave-one-out mean of the other samples' signals)

    def validate(self) -> None:
        if self.baseline not in BASELINES:
            raise ConfigError(f"unknown score-function baseline {self.baseline!r}",
                              f"use one of {', '.join(BASELINES)}")
        need = 2 if self.baseline == "loo" else 1
        if self.k < need:
            raise ConfigError(f"the score-function ELBO with baseline {self.baseline} needs "
                              f"k >= {need} samples, got {self.k}", "pass e.g. --iwae-k 10")


@OBJECTIVES.register("elbo-score", ScoreOptions,
                     "the ELBO with the score-function (REINFORCE) encoder gradient")
def elbo_score_loss(model: VAE, batch: Batch | torch.Tensor, beta: float = 1.0, k: int = 10,
                    baseline: str = "loo") -> torch.Tensor:
    """-mean_b ELBO_b (k samples, Monte-Carlo KL) in nats per example, whose gradient is
    -mean_b grad surrogate_b: the score-function estimate for the encoder, the usual
    gradient for the decoder and prior."""
    t = score_terms(model, batch, k, beta, baseline)
    # value of the ELBO estimate, gradient of the surrogate
    return -(t.value + (t.surrogate - t.surrogate.detach())).mean()
