"""Estimators of log p(x) by importance sampling, batched over examples and chunked over K.

Encoder proposal (importance sampling, IWAE):
    log p(x) ~= log 1/K sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x)
Prior proposal (the naive estimator of seed 000 / Doersch):
    log p(x) ~= log 1/K sum_k p(x|z_k),               z_k ~ p(z)
Both are computed with running log-sum-exps, so memory does not grow with K, and report
the effective sample size ESS = (sum w)^2 / sum w^2 of the K normalized weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from vaekit.evaluation.noise import IndexedNoise
from vaekit.models.vae import VAE
from vaekit.objectives.elbo import log_weights

PROPOSALS = ("encoder", "prior")


@dataclass
class LogLikelihood:
    """Per-example estimates; every tensor is (N,) in nats."""

    log_px: torch.Tensor  # log-mean-exp of all K weights
    ess: torch.Tensor  # effective sample size of the K weights, in [1, K]
    k: int
    proposal: str
    prefix: dict[int, torch.Tensor] = field(default_factory=dict)  # k' -> estimate from first k'


def plan_chunks(n_pairs_budget: int, n_examples: int, k: int) -> tuple[int, int]:
    """(examples per batch, samples per chunk) so that batch * chunk <= n_pairs_budget."""
    batch = max(1, min(n_examples, n_pairs_budget // max(k, 1) or 1, 1024))
    chunk = max(1, min(k, n_pairs_budget // batch))
    return batch, chunk


def pair_bytes(model: VAE) -> int:
    """Rough bytes of activations per (sample, example) pair in a decoder pass."""
    n_hidden = sum(m.out_features for m in model.likelihood.decoder.modules()
                   if isinstance(m, torch.nn.Linear))
    return 4 * (3 * math.prod(model.event_shape) + 2 * n_hidden + 4 * model.latent_dim)


@torch.no_grad()
def _chunk_log_weights(model: VAE, x: torch.Tensor, q, eps: torch.Tensor,
                       proposal: str) -> torch.Tensor:
    """log w for one chunk of noise eps (c, B, L) -> (c, B)."""
    if proposal == "prior":
        return model.likelihood(eps).log_prob(x)  # z = eps ~ N(0, I): w = p(x|z)
    return log_weights(model, x, eps.shape[0], eps=eps, q=q)


@torch.no_grad()
def estimate_log_px(model: VAE, x: torch.Tensor, k: int, proposal: str = "encoder",
                    seed: int = 0, memory_mb: float = 1024.0,
                    prefix_ks: Sequence[int] = (), batch_size: int | None = None,
                    chunk_size: int | None = None) -> LogLikelihood:
    """Importance-sampled log p(x) with K samples for every row of ``x`` (N, *shape).

    Same seed -> same numbers, whatever ``memory_mb``, ``batch_size`` or ``chunk_size``.
    ``prefix_ks`` also reports the estimate from the first k' samples (k' <= K): for the
    encoder proposal that is one draw of the IWAE-k' bound.
    """
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    device = x.device
    noise = IndexedNoise(model.latent_dim, k, seed, device)
    budget = int(memory_mb * 2**20 / pair_bytes(model))
    b_auto, c_auto = plan_chunks(budget, len(x), k)
    batch, chunk = batch_size or b_auto, chunk_size or min(k, c_auto)
    cuts = sorted({kk for kk in prefix_ks if 0 < kk < k})  # chunk borders at the prefixes
    out = {kk: torch.empty(len(x), device=device) for kk in [*cuts, k]}
    ess = torch.empty(len(x), device=device)
    for s in range(0, len(x), batch):
        xb = x[s : s + batch]
        idx = torch.arange(s, s + len(xb))
        q = model.posterior(xb) if proposal == "encoder" else None
        lse = torch.full((len(xb),), -math.inf, device=device)  # log sum w
        lse2 = lse.clone()  # log sum w^2
        for k0, k1 in _chunks(k, chunk, cuts):
            lw = _chunk_log_weights(model, xb, q, noise(idx, k0, k1), proposal)
            lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
            if k1 in out:
                out[k1][s : s + len(xb)] = lse - math.log(k1)
        ess[s : s + len(xb)] = torch.exp(2 * lse - lse2)
    log_px = out.pop(k)
    return LogLikelihood(log_px, ess, k, proposal, out)


def _chunks(k: int, chunk: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """[k0, k1) ranges of at most ``chunk`` samples that also break at every cut."""
    borders = sorted({*range(0, k, chunk), *cuts, k})
    return list(itertools.pairwise(borders))
