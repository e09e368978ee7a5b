"""Estimators of log p(x) by importance sampling, batched over examples and chunked over K.

Encoder proposal (importance sampling; one draw of the IWAE-K bound):
    log p(x) ~= log 1/K sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x)
Prior proposal (the naive estimator of seed 000 section 3 / Doersch):
    log p(x) ~= log 1/K sum_k p(x|z_k),               z_k ~ p(z)
Both keep running log-sum-exps, so memory does not grow with K, and report the effective
sample size ESS = (sum_k w_k)^2 / sum_k w_k^2 of each example's K weights (1 <= ESS <= K).
The encoder proposal's noise is drawn chunk by chunk (``NoiseWindow``): any K fits in the
memory budget. Long estimations show a progress bar (on a terminal).

The prior proposal does not depend on x, so its K samples are shared by all examples and
p(x_n|z_k) for all pairs comes from ``Likelihood.pairwise_log_prob`` (one matmul for the
Bernoulli and Gaussian likelihoods): still K iid samples per example, as the estimator
requires; conditional models are refused (their p(x|z, y) differs per example).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.data.batch import Batch, as_batch
from vaekit.errors import VaekitError
from vaekit.limits import pair_bytes
from vaekit.models.vae import VAE
from vaekit.noise import IndexedNoise, NoiseWindow
from vaekit.numerics import (
    CACHE_PAIRS,
    PRIOR_BATCH_BROADCAST,
    PRIOR_BATCH_MATMUL,
    PRIOR_CHUNK,
    RunningLogSumExp,
    chunks,
    cut_ranges,
    log_mean_exp,
    rows_in_budget,
    seeded_generator,
)
from vaekit.objectives.elbo import log_weights

PROPOSALS = ("encoder", "prior")
JACKKNIFE_GROUPS = 10  # groups of shared prior samples for the naive estimator's error
PROGRESS_PAIRS = 50_000_000  # (sample, example) pairs from which a bar shows (~10 s on 2 cores)


@dataclass
class LogLikelihood:
    """Per-example estimates; every tensor is (N,) in nats."""

    log_px: torch.Tensor  # log-mean-exp of all K weights
    ess: torch.Tensor  # effective sample size of the K weights, in [1, K]
    k: int
    proposal: str
    prefix: dict[int, torch.Tensor] = field(default_factory=dict)  # k' -> estimate from first k'
    # prior proposal: the mean estimate with each of G sample groups left out (G,) (jackknife)
    leave_out: torch.Tensor | None = None


class _Running:
    """Running log sum w (with the log-mean-exp at the prefix sizes ``ks``) and log sum w^2
    of n examples' weights, and log sum w per group of samples when ``groups`` > 0."""

    def __init__(self, n: int, device: torch.device, ks: Sequence[int], groups: int = 0) -> None:
        self.w = RunningLogSumExp(n, device, ks)
        self.w2 = RunningLogSumExp(n, device)
        self.groups = [RunningLogSumExp(n, device) for _ in range(groups)]

    def add(self, lw: torch.Tensor, group: int | None = None) -> None:
        """lw (c, n): log-weights of the next c samples of every example (of ``group``)."""
        lw = lw.double()
        lse = self.w.add(lw)
        self.w2.add(2 * lw)
        if group is not None:
            self.groups[group].add_lse(lse, lw.shape[0])

    @property
    def lse(self) -> torch.Tensor:
        """log sum_k w_k (n,)."""
        return self.w.value

    def ess(self) -> torch.Tensor:
        """(sum w)^2 / sum w^2 = exp(2 log sum w - log sum w^2). (n,)."""
        return torch.exp(2 * self.w.value - self.w2.value)

    def group_lse(self) -> torch.Tensor:
        """log sum w per group (G, n)."""
        return torch.stack([g.value for g in self.groups])


def plan_chunks(n_pairs_budget: int, n_examples: int, k: int) -> tuple[int, int]:
    """(examples per batch, samples per chunk) with batch * chunk <= the pair budget.

    Measured on 2 CPU cores: passes of ~2-4k pairs run fastest (larger ones fall out of
    cache), so the budget is an upper bound, not a target. Batches hold >= 16 examples.
    """
    pairs = max(1, min(n_pairs_budget, CACHE_PAIRS))
    batch = max(1, min(n_examples, max(16, pairs // max(k, 1))))
    chunk = max(1, min(k, pairs // batch))
    return batch, chunk


def plan_prior_chunks(model: VAE, n_examples: int, k: int, memory_mb: float) -> tuple[int, int]:
    """(examples per batch, shared samples per chunk) of the prior proposal: a matmul form
    of log p(x_n|z_k) holds (batch, chunk) float64s, a broadcast one about ten float32
    temporaries of (batch, chunk, D) (the discretized logistic's, measured)."""
    d = math.prod(model.event_shape)
    matmul = model.likelihood.pairwise_is_matmul
    batch = min(n_examples, PRIOR_BATCH_MATMUL if matmul else PRIOR_BATCH_BROADCAST)
    row = 8 * (batch + 2 * d) if matmul else 40 * d * (batch + 1)  # bytes per shared sample
    return batch, max(1, min(k, PRIOR_CHUNK, rows_in_budget(row, memory_mb)))


def _bar(total: int, k: int, progress: bool | None) -> tqdm:
    """A progress bar over (sample, example) pairs: shown when ``progress``, or (None) on a
    terminal when there are at least PROGRESS_PAIRS."""
    disable = (not progress) if progress is not None else (
        None if total >= PROGRESS_PAIRS and distributed.world().main else True)
    return tqdm(total=total, disable=disable, unit="pair", unit_scale=True, leave=False,
                desc=f"log p(x), K={k:,}", mininterval=1.0)


def _finish(parts: list[_Running], k: int, proposal: str, cuts: list[int], n: int,
            group_sizes: Sequence[int] = ()) -> LogLikelihood:
    """Join the batches' running sums into per-example estimates of all n examples (of all
    ranks inside ``distributed.sharded()``: gathered in order)."""
    def cat(ts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
        return distributed.gather_rows(torch.cat(ts, dim), n, dim)

    out = LogLikelihood(cat([p.w.mean() for p in parts]), cat([p.ess() for p in parts]),
                        k, proposal, {c: cat([p.w.prefix[c] for p in parts]) for c in cuts})
    if group_sizes:
        out.leave_out = _leave_one_group_out(cat([p.group_lse() for p in parts], 1),
                                             group_sizes, k)
    return out


def _leave_one_group_out(glse: torch.Tensor, sizes: Sequence[int], k: int) -> torch.Tensor:
    """Mean over examples of the estimate without group g, for every g: glse (G, N) -> (G,)."""
    out = []
    for g, size in enumerate(sizes):
        others = torch.cat([glse[:g], glse[g + 1 :]])
        out.append(log_mean_exp(others, 0, count=k - size).mean())  # others: group sums
    return torch.stack(out)


def jackknife_se(leave_out: torch.Tensor) -> float:
    """Delete-a-group jackknife standard error of a mean estimate from its G leave-one-group-
    out values: sqrt((G - 1) / G * sum_g (theta_-g - mean)^2)."""
    g = len(leave_out)
    return float(((g - 1) / g * (leave_out - leave_out.mean()).pow(2).sum()).sqrt())


@torch.no_grad()
def _encoder_estimate(model: VAE, data: Batch, k: int, seed: int, batch: int, chunk: int,
                      cuts: list[int], progress: bool | None = None) -> LogLikelihood:
    model.prior.check_log_prob("importance sampling of log p(x)")
    noise = IndexedNoise(model.latent_dim, seed, data.device)
    parts = []
    a, b = distributed.local_rows(len(data))  # a block of the examples on each rank
    with _bar((b - a) * k, k, progress) as bar:
        for lo, hi in chunks(b, batch, a):
            part = data[lo:hi]
            q = model.posterior(part.x, model.context(part.y))  # one encoder pass per example
            window = NoiseWindow(noise, torch.arange(lo, hi))
            run = _Running(len(part), data.device, cuts)
            for k0, k1 in cut_ranges(k, chunk, cuts):
                e = window.get(k0, k1)  # (c, B, L) contiguous: drawn for this chunk only
                run.add(log_weights(model, part, k1 - k0, eps=e, q=q))  # (c, B)
                bar.update((k1 - k0) * len(part))
            parts.append(run)
    return _finish(parts, k, "encoder", cuts, len(data))


@torch.no_grad()
def _prior_estimate(model: VAE, data: Batch, k: int, seed: int, batch: int, chunk: int,
                    cuts: list[int], progress: bool | None = None) -> LogLikelihood:
    if model.conditional:
        raise VaekitError("the naive estimator shares its prior samples across examples, "
                          "which a conditional model (p(x|z, y)) does not allow",
                          "use importance sampling (--loglik) for conditional models")
    a, b = distributed.local_rows(len(data))  # a block of the examples on each rank
    x = data.x[a:b]
    z = model.prior.sample(k, seeded_generator(seed)).to(x.device)  # (K, L), shared
    # the shared samples fall into G contiguous groups, for a jackknife of the Monte-Carlo
    # error of the mean estimate (its errors are correlated across examples)
    n_groups = min(JACKKNIFE_GROUPS, k)
    starts = [g * k // n_groups for g in range(n_groups + 1)]
    rows = list(chunks(len(x), batch))
    parts = [_Running(hi - lo, x.device, cuts, n_groups) for lo, hi in rows]
    with _bar(len(x) * k, k, progress) as bar:
        for k0, k1 in cut_ranges(k, chunk, [*cuts, *starts[1:-1]]):
            params = model.likelihood.params(z[k0:k1])  # (c, *param): one decoder pass a chunk
            group = next(g for g in range(n_groups) if starts[g] <= k0 < starts[g + 1])
            for run, (lo, hi) in zip(parts, rows, strict=True):
                lw = model.likelihood.pairwise_log_prob(params, x[lo:hi])  # (B, c)
                run.add(lw.T, group)
            bar.update((k1 - k0) * len(x))
    sizes = [b - a for a, b in itertools.pairwise(starts)] if n_groups > 1 else []
    return _finish(parts, k, "prior", cuts, len(data), sizes)


@torch.no_grad()
def estimate_log_px(model: VAE, data: Batch | torch.Tensor, k: int, proposal: str = "encoder",
                    seed: int = 0, memory_mb: float = 1024.0,
                    prefix_ks: Sequence[int] = (), batch_size: int | None = None,
                    chunk_size: int | None = None, progress: bool | None = None
                    ) -> LogLikelihood:
    """Estimate log p(x[|y]) with K importance samples for every example of ``data``.

    Same seed -> same numbers (up to float rounding), whatever ``memory_mb``,
    ``batch_size`` or ``chunk_size``. ``prefix_ks`` also reports the estimate from the first
    k' < K samples: for the encoder proposal, one draw of the IWAE-k' bound. ``progress``:
    a progress bar (None: on a terminal, for long estimations).
    """
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model.eval()
    data = as_batch(data)
    cuts = sorted({kk for kk in prefix_ks if 0 < kk < k})
    if proposal == "prior":
        b_auto, c_auto = plan_prior_chunks(model, len(data), k, memory_mb)
        return _prior_estimate(model, data, k, seed, batch_size or b_auto, chunk_size or c_auto,
                               cuts, progress)
    b_auto, c_auto = plan_chunks(rows_in_budget(pair_bytes(model), memory_mb), len(data), k)
    return _encoder_estimate(model, data, k, seed, batch_size or b_auto, chunk_size or c_auto,
                             cuts, progress)
