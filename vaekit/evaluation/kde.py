"""Kernel density baselines: a Gaussian KDE of the training data, and Parzen windows.

Isotropic Gaussian kernel of std h on x in R^d with centres c_1..c_n:
    p(x) = 1/(n h^d) sum_i K((x - c_i)/h),     K(u) = (2 pi)^(-d/2) exp(-|u|^2 / 2)
    log p(x) = logsumexp_i(-|x - c_i|^2 / (2 h^2)) - log n - (d/2) log(2 pi h^2)
Distances come from |x|^2 - 2 x.c + |c|^2 (one matmul per block, clamped at 0, after
subtracting the centres' mean), batched over x and chunked over the centres with a running
float64 log-sum-exp, so memory is O(batch * chunk) whatever n and N.

For binary data (the Bernoulli protocol) a density on R^d is not comparable with a pmf, so
``kernel="bernoulli"`` uses the product-Bernoulli kernel with flip probability eps:
    K(x, c) = prod_j eps^[x_j != c_j] (1 - eps)^[x_j == c_j]
    log p(x) = logsumexp_i(-H(x, c_i) log((1 - eps)/eps)) - log n + d log(1 - eps)
with H the Hamming distance, which equals |x - c|^2 on {0, 1}^d: the same matmul serves.

The KDE baseline fits the centres to the training set, picks h on a validation split and
reports test log p(x) in nats/example (and bits/dim). The Parzen-window estimate (Breuleux
et al. 2009; used by older GAN papers) puts the centres on a model's samples instead: it is
biased and very sensitive to h and to the number of samples, so it comes with a note on both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vaekit import distributed
from vaekit.evaluation.metrics import mean_se, to_bits_per_dim
from vaekit.numerics import (
    DISTANCE_BATCH,
    KDE_CHUNK,
    RunningLogSumExp,
    chunks,
    cut_ranges,
    derive_seed,
    scaled_logsumexp,
    seeded_subset,
)

SCOTT_SPAN = (-1.5, 0.5)  # default grid: Scott's h times 10^[-1.5, 0.5]
KERNELS = ("gaussian", "bernoulli")


def _kernel(kernel: str, hs: Sequence[float], d: int) -> tuple[list[float], list[float]]:
    """(scale s_h, log normalizer) per bandwidth: log K = -s_h |x - c|^2 + log normalizer."""
    if kernel == "gaussian":
        return [0.5 / (h * h) for h in hs], [-0.5 * d * math.log(2 * math.pi * h * h) for h in hs]
    if kernel == "bernoulli":
        if max(hs) >= 0.5:
            raise ValueError(f"Bernoulli-kernel bandwidths (flip probabilities) must be < 0.5, "
                             f"got {max(hs)}")
        return [math.log((1 - e) / e) for e in hs], [d * math.log1p(-e) for e in hs]
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(N, *shape) -> (N, d), as floats."""
    x = x.reshape(len(x), -1)
    return x if x.is_floating_point() else x.float()


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """|x_b - c_i|^2 = |x_b|^2 - 2 x_b.c_i + |c_i|^2, clamped at 0. (B, d), (C, d) -> (B, C)."""
    d2 = x @ c.T
    d2.mul_(-2).add_((x * x).sum(1)[:, None]).add_((c * c).sum(1)[None, :])
    return d2.clamp_min_(0)


@torch.no_grad()
def log_density_grid(x: torch.Tensor, centers: torch.Tensor, bandwidths: Sequence[float],
                     prefixes: Sequence[int] | None = None, batch_size: int = DISTANCE_BATCH,
                     chunk: int = KDE_CHUNK, kernel: str = "gaussian") -> dict[int, torch.Tensor]:
    """KDE log p(x_n) for every bandwidth and every prefix of the centres.

    x (N, *shape), centers (n, *shape) -> {n': (H, N) float64}, where n' runs over
    ``prefixes`` (default: [n]) and row j uses bandwidth h_j and the first n' centres.
    One distance matmul per (batch, chunk) block serves all bandwidths and prefixes.
    Inside ``distributed.sharded()`` each rank computes a block of the points x.
    """
    n_points = len(x)
    a, b = distributed.local_rows(n_points)
    x = _flat(x)[a:b]
    c = _flat(centers).to(x.device, x.dtype)
    n, d = c.shape
    if x.shape[1] != d:
        raise ValueError(f"x has {x.shape[1]} dims per example, centers have {d}")
    hs = [float(h) for h in bandwidths]
    if not hs or min(hs) <= 0:
        raise ValueError(f"bandwidths must be positive, got {hs}")
    cuts = sorted({int(k) for k in (prefixes or [n])})
    if cuts[0] < 1 or cuts[-1] > n:
        raise ValueError(f"prefixes must lie in [1, {n}], got {cuts}")
    shift = c.mean(0, dtype=torch.float64).to(x.dtype)  # smaller |x|^2: less cancellation
    c = c - shift
    scales, norms = _kernel(kernel, hs, d)
    log_norm = torch.tensor(norms, dtype=torch.float64, device=x.device)[:, None]
    out = {k: torch.empty(len(hs), len(x), dtype=torch.float64, device=x.device) for k in cuts}
    for lo, hi in chunks(len(x), batch_size):
        xb = x[lo:hi] - shift
        lse = RunningLogSumExp((len(hs), len(xb)), x.device, cuts)  # (H, B) over the centres
        for k0, k1 in cut_ranges(n, chunk, cuts):
            # logsumexp_i(-s_h |x_b - c_i|^2) over this block of centres, every bandwidth
            lse.add_lse(scaled_logsumexp(_sq_dist(xb, c[k0:k1]), scales), k1 - k0)
        for k in cuts:  # log p = logsumexp - log n' + log normalizer, first n' centres
            out[k][:, lo:hi] = lse.prefix[k] + log_norm
    return {k: distributed.gather_rows(v, n_points, dim=1) for k, v in out.items()}


def gaussian_kde_log_density(x: torch.Tensor, centers: torch.Tensor, bandwidth: float,
                             batch_size: int = DISTANCE_BATCH,
                             chunk: int = KDE_CHUNK) -> torch.Tensor:
    """log p(x_n) under the Gaussian KDE with kernel std ``bandwidth``. (N,) float64, nats.

    log p(x) = logsumexp_i(-|x - c_i|^2 / (2 h^2)) - log n - (d/2) log(2 pi h^2),
    with x (N, *shape) and centers (n, *shape) flattened to d dims.
    """
    grid = log_density_grid(x, centers, [bandwidth], None, batch_size, chunk)
    return next(iter(grid.values()))[0]


def scott_bandwidth(x: torch.Tensor) -> float:
    """Scott's rule for an isotropic kernel: h = sigma n^(-1/(d+4)), sigma^2 = mean_j Var x_j."""
    x = _flat(x).double()
    n, d = x.shape
    sigma = float(x.var(0).mean().sqrt()) if n > 1 else 0.0
    return (sigma if sigma > 0 else 1.0) * n ** (-1.0 / (d + 4))


def default_bandwidths(train: torch.Tensor, num: int = 20,
                       span: tuple[float, float] = SCOTT_SPAN,
                       kernel: str = "gaussian") -> list[float]:
    """``num`` log-spaced bandwidths: Scott's h times 10^[span[0], span[1]] (Gaussian), or
    flip probabilities from 1e-4 to 0.4 (Bernoulli)."""
    if kernel == "bernoulli":
        return torch.logspace(-4, math.log10(0.4), num, dtype=torch.float64).tolist()
    h = scott_bandwidth(train)
    return [h * 10**e for e in torch.linspace(*span, num, dtype=torch.float64).tolist()]


def _mean_log_density(val: torch.Tensor, train: torch.Tensor, hs: Sequence[float],
                      batch_size: int, chunk: int, kernel: str) -> dict[float, float]:
    """{h: mean_n log p_h(val_n)}; Bernoulli flip probabilities >= 0.5 are skipped."""
    hs = [h for h in hs if kernel != "bernoulli" or h < 0.5]
    if not hs:
        return {}
    grid = next(iter(log_density_grid(val, train, hs, None, batch_size, chunk,
                                      kernel).values()))
    return dict(zip(hs, grid.mean(1).tolist(), strict=True))


def select_bandwidth(train: torch.Tensor, val: torch.Tensor,
                     candidates: Sequence[float] | None = None, refine: int = 10,
                     max_extend: int = 3, batch_size: int = DISTANCE_BATCH,
                     chunk: int = KDE_CHUNK, kernel: str = "gaussian"
                     ) -> tuple[float, list[tuple[float, float]]]:
    """Bandwidth maximizing the mean validation log-likelihood, and the table [(h, mean)].

    Grid search over ``candidates`` (default: :func:`default_bandwidths`); if the best lies
    on an edge the grid is extended that way (up to ``max_extend`` times, 5 steps each);
    then ``refine`` log-spaced points between the best's neighbours are tried too.
    Each stage is one pass over (val, train), all its bandwidths at once.
    """
    hs = sorted(candidates) if candidates is not None else default_bandwidths(train,
                                                                               kernel=kernel)
    table = _mean_log_density(val, train, hs, batch_size, chunk, kernel)
    for _ in range(max_extend):
        keys, best = sorted(table), max(table, key=table.__getitem__)
        if len(keys) < 2 or keys[0] < best < keys[-1]:
            break
        step = keys[0] / keys[1] if best == keys[0] else keys[-1] / keys[-2]
        more = _mean_log_density(val, train, [best * step**k for k in range(1, 6)],
                                 batch_size, chunk, kernel)
        if not more:  # nothing valid beyond this edge (Bernoulli: eps < 0.5)
            break
        table |= more
    keys, best = sorted(table), max(table, key=table.__getitem__)
    i = keys.index(best)
    if refine > 0 and len(keys) > 1:
        lo = keys[i - 1] if i > 0 else best**2 / keys[1]
        hi = keys[i + 1] if i + 1 < len(keys) else best**2 / keys[-2]
        fine = torch.logspace(math.log10(lo), math.log10(hi), refine + 2, dtype=torch.float64)
        table |= _mean_log_density(val, train, fine[1:-1].tolist(), batch_size, chunk, kernel)
        best = max(table, key=table.__getitem__)
    return best, sorted(table.items())


@dataclass
class KDEResult:
    """Gaussian-KDE baseline on a test split; log-likelihoods in nats/example."""

    bandwidth: float
    log_lik: float  # mean test log p(x)
    log_lik_se: float  # its standard error across test examples
    bpd: float | None  # (-log_lik + bpd_offset) / (d ln 2), when an offset is given
    val_log_lik: float  # mean validation log p(x) at the chosen bandwidth
    n_train: int  # centres used (after max_train)
    n_val: int
    n_test: int
    dim: int
    table: list[tuple[float, float]]  # (h, mean validation log p(x)), sorted by h
    seconds: float
    kernel: str = "gaussian"

    def summary(self) -> str:
        """One line for reports."""
        h = "h" if self.kernel == "gaussian" else "flip probability"
        s = (f"{self.kernel.capitalize()}-kernel KDE baseline ({h} = {self.bandwidth:.4g} "
             f"chosen on {self.n_val} validation "
             f"examples, {self.n_train} training centres): test log p(x) = {self.log_lik:.3f} "
             f"± {self.log_lik_se:.3f} nats/example")
        return s + (f", {self.bpd:.4f} bits/dim" if self.bpd is not None else "")


def kde_baseline(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor,
                 bpd_offset: float | None = None, max_train: int | None = None, seed: int = 0,
                 candidates: Sequence[float] | None = None, refine: int = 10,
                 batch_size: int = DISTANCE_BATCH, chunk: int = KDE_CHUNK,
                 kernel: str = "gaussian") -> KDEResult:
    """KDE on ``train`` (optionally ``max_train`` of it, seeded), bandwidth chosen on ``val``,
    scored on ``test``. All (N, *shape) on one device; float32 is fine, sums are float64.
    """
    t0 = time.perf_counter()
    if max_train is not None and max_train < len(train):
        rows = seeded_subset(len(train), max_train, derive_seed(seed, "kde-subset"))
        train = train[rows.to(train.device)]
    h, table = select_bandwidth(train, val, candidates, refine, batch_size=batch_size,
                                chunk=chunk, kernel=kernel)
    ll = log_density_grid(test, train, [h], None, batch_size, chunk, kernel)[len(train)][0]
    mean, se = mean_se(ll)
    dim = _flat(test[:1]).shape[1]
    return KDEResult(h, mean, se, to_bits_per_dim(-mean, bpd_offset, dim), dict(table)[h],
                     len(train), len(val), len(test), dim, table, time.perf_counter() - t0,
                     kernel)


@dataclass
class ParzenResult:
    """Parzen-window log-likelihoods of a test set under KDEs centred on model samples."""

    bandwidths: list[float]  # H, ascending
    n_samples: list[int]  # S, ascending: row s uses the first n_samples[s] samples
    log_lik: torch.Tensor  # (S, H) mean test log p(x), nats/example
    log_lik_se: torch.Tensor  # (S, H) standard errors across test examples
    n_test: int
    dim: int


def parzen_log_likelihood(samples: torch.Tensor, test: torch.Tensor, bandwidths: Sequence[float],
                          n_samples_list: Sequence[int] | None = None,
                          batch_size: int = DISTANCE_BATCH, chunk: int = KDE_CHUNK,
                          kernel: str = "gaussian") -> ParzenResult:
    """Parzen-window estimate of a model's log-likelihood from its samples, on a grid.

    For every h in ``bandwidths`` and n in ``n_samples_list`` (default: n/100, n/10, n of
    the n samples) the mean over ``test`` of log p(x) under the Gaussian KDE of the first
    n samples. One pass: the chunks over samples break at every n.
    """
    n = len(samples)
    ns = sorted({int(k) for k in (n_samples_list or [n // 100, n // 10, n]) if int(k) > 0})
    hs = sorted(float(h) for h in bandwidths)
    grid = log_density_grid(test, samples, hs, ns, batch_size, chunk, kernel)
    stats = [[mean_se(row) for row in grid[k]] for k in ns]
    mean = torch.tensor([[m for m, _ in r] for r in stats], dtype=torch.float64)
    se = torch.tensor([[s for _, s in r] for r in stats], dtype=torch.float64)
    return ParzenResult(hs, ns, mean, se, len(test), _flat(test[:1]).shape[1])


def parzen_sensitivity_note(result: ParzenResult) -> str:
    """Two sentences quantifying how much the Parzen estimate moves with h and n."""
    ll, hs, ns = result.log_lik, result.bandwidths, result.n_samples
    last = ll[-1]
    j = int(last.argmax())
    s = (f"Parzen-window estimates span {float(last.max() - last.min()):.3g} nats/example "
         f"across bandwidths h in [{hs[0]:.3g}, {hs[-1]:.3g}] at n = {ns[-1]} samples "
         f"(best h = {hs[j]:.3g}: {float(last[j]):.3f} nats/example)")
    if len(ns) > 1:
        move = float(last.max() - ll[0].max())
        s += (f" and their best value moves by {move:+.3g} nats/example going from "
              f"n = {ns[0]} to n = {ns[-1]} samples")
    else:
        s += "; the dependence on the number of samples was not measured"
    return s + ". Treat them as a rough, biased diagnostic, not a likelihood."
