"""Shared numerics, written once: log-mean-exp (one-shot and streaming, with prefix cuts),
chunked iteration under one memory model, the diagonal-Gaussian log-density and draw,
seeded subsets and splits, and every seed a component derives from a user's seed.

This module sits at the bottom of the import graph (it imports torch, and from vaekit at
most ``vaekit.errors``): the estimators, KDE, metrics, generation, baselines, gradients,
objectives, distributions and models call it. Chunk borders, chunk sizes and the order of
the float operations below are those of the code they replaced (seeded figures stay
bit-identical): change one and figures move in their last digits.

Log-mean-exp over K values a_k (a row of log-weights, log-kernels, ...):

    lme(a) = log 1/K sum_k exp(a_k) = logsumexp(a) - log K

streamed chunk by chunk as  s <- logaddexp(s, logsumexp(chunk)),  in float64.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import torch

LOG_2PI = math.log(2 * math.pi)
MIB = 2**20  # bytes of the memory budgets (``memory_mb``)
FLOAT_BYTES = 4  # float32 activations

# ---------------------------------------------------------------- default chunk sizes
# Rows per pass of the evaluation loops. Each one fixes how float sums are grouped or how
# noise is drawn, so changing one changes figures in their last digits: they stay fixed.
EVAL_BATCH = 1000  # examples per encoder/decoder pass: ELBO terms, codes, diagnostics, samples
FEATURE_BATCH = 2000  # images per pass of the feature classifier
DISTANCE_BATCH = 1024  # query rows per distance matmul (KDE points, k-NN radii and coverage)
KDE_CHUNK = 4096  # KDE centres per block of the running log-sum-exp
BASELINE_ROWS = 4096  # rows per pass of the baselines' moments and log-densities
INCEPTION_BATCH = 200  # images per Inception pass
CACHE_PAIRS = 4096  # (sample, example) pairs per decoder pass that stay cache-friendly on CPU
PRIOR_BATCH_MATMUL = 2048  # examples per pass of the prior proposal, matmul likelihoods
PRIOR_BATCH_BROADCAST = 64  # the same, likelihoods that broadcast (batch, chunk, D)
PRIOR_CHUNK = 1024  # most shared prior samples per decoder pass
GRADIENT_PAIRS = 16384  # (sample, example) pairs per pass of a reference gradient


# ---------------------------------------------------------------- summaries


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error across examples."""
    v = v.double()
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def to_bits_per_dim(nll_nats: float, offset: float | None, dim: int) -> float | None:
    """(-log p(x) + offset) / (D ln 2); None when bits/dim do not apply."""
    return None if offset is None else (nll_nats + offset) / (dim * math.log(2))


# ---------------------------------------------------------------- chunked iteration


def chunks(stop: int, size: int, start: int = 0) -> Iterator[tuple[int, int]]:
    """[lo, hi) ranges of at most ``size`` rows covering [start, stop), in order."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for lo in range(start, stop, size):
        yield lo, min(lo + size, stop)


def cat_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               size: int) -> torch.Tensor:
    """torch.cat of ``fn`` over the row chunks of x: fn(x[lo:hi]) for every chunk."""
    return torch.cat([fn(x[lo:hi]) for lo, hi in chunks(len(x), size)])


def cut_ranges(n: int, chunk: int, cuts: Iterable[int] = ()) -> Iterator[tuple[int, int]]:
    """[k0, k1) ranges of at most ``chunk`` rows that also break at every cut: the borders
    are the multiples of ``chunk``, the cuts in (0, n] and n (lazily: nothing of size n is
    built). A streaming sum snapshotted at k1 then holds exactly the first k1 rows."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    last = 0
    for border in heapq.merge(range(chunk, n, chunk), sorted(cuts), (n,)):
        if last < border <= n:
            yield last, border
            last = border


def rows_in_budget(bytes_per_row: float, memory_mb: float) -> int:
    """How many rows of ``bytes_per_row`` fit in ``memory_mb`` MiB (may be 0)."""
    return int(memory_mb * MIB / bytes_per_row)


def pair_bytes(data_dim: int, latent_dim: int, hidden: int) -> int:
    """Bytes of float32 activations per (sample, example) pair in a decoder pass: three
    data-sized tensors (output, target, log-density terms), two per hidden unit (pre- and
    post-activation) and four latent-sized ones (eps, z, log q, log p):
    4 (3 D + 2 H + 4 L), H the summed widths of the decoder's dense layers."""
    return FLOAT_BYTES * (3 * data_dim + 2 * hidden + 4 * latent_dim)


# ---------------------------------------------------------------- log-mean-exp


def log_mean_exp(a: torch.Tensor, dim: int = 0, count: int | None = None) -> torch.Tensor:
    """logsumexp(a, dim) - log n: log 1/n sum_k exp(a_k). ``count`` is n when the rows of
    ``a`` are themselves log-sums of several terms (default: a.shape[dim])."""
    return torch.logsumexp(a, dim) - math.log(a.shape[dim] if count is None else count)


class RunningLogSumExp:
    """log sum_k exp(a_k) over rows that arrive chunk by chunk, in float64, with the
    log-mean-exp of the first k' rows kept for every cut k' (``prefix``).

    value (shape,) = logaddexp(value, logsumexp(chunk, 0)) after each chunk; memory does
    not grow with the number of rows. Feed chunks whose borders include the cuts
    (:func:`cut_ranges`).
    """

    def __init__(self, shape: Sequence[int] | int, device: torch.device | str = "cpu",
                 cuts: Iterable[int] = ()) -> None:
        self.value = torch.full(_shape(shape), -math.inf, dtype=torch.float64, device=device)
        self.seen, self.cuts = 0, set(cuts)
        self.prefix: dict[int, torch.Tensor] = {}  # k' -> log-mean-exp of the first k' rows

    def add(self, a: torch.Tensor) -> torch.Tensor:
        """Add the rows of a (c, *shape); returns their own log-sum-exp (*shape)."""
        lse = torch.logsumexp(a.double(), 0)
        self.add_lse(lse, a.shape[0])
        return lse

    def add_lse(self, lse: torch.Tensor, count: int) -> None:
        """Add ``count`` rows given by their log-sum-exp lse (*shape)."""
        self.value = torch.logaddexp(self.value, lse)
        self.seen += count
        if self.seen in self.cuts:
            self.prefix[self.seen] = self.value - math.log(self.seen)

    def mean(self) -> torch.Tensor:
        """log-mean-exp of all rows so far: value - log(seen)."""
        return self.value - math.log(self.seen)


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def scaled_logsumexp(d: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """logsumexp_i(-s d_bi) over dim 1 of non-negative d (B, C), for every scale s > 0:
    (H, B) float64. The largest term is the smallest d_bi for every s, so after
    subtracting it exp(-s (d - min d)) <= 1; one buffer serves all scales. ``d`` is
    overwritten (d - min d)."""
    d_min = d.amin(1)
    d.sub_(d_min[:, None])
    buf, d_min = torch.empty_like(d), d_min.double()
    rows = []
    for s in scales:
        rows.append(torch.mul(d, -s, out=buf).exp_().sum(1).double().log_() - s * d_min)
    return torch.stack(rows)


# ---------------------------------------------------------------- diagonal Gaussians


def reparameterize(mu: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps: a draw of N(mu, diag(sigma^2)) from standard-normal noise eps
    (the reparameterization trick); eps (..., B, L) broadcasts against mu, sigma (B, L)."""
    return mu + sigma * eps


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor | None, log_var: torch.Tensor | None,
                      event_shape: Sequence[int],
                      log_norm: torch.Tensor | None = None) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_var))) summed over the trailing ``event_shape`` dims:

        -1/2 [sum_j (x_j - m_j)^2 / v_j + sum_j log(2 pi v_j)]

    ``mean`` None: 0; ``log_var`` None: 0 (unit variances); log_var broadcasts to the event
    shape (a scalar, or one per dimension). x and mean broadcast: (..., *event) -> (...).
    ``log_norm``: sum_j log(2 pi v_j) when the caller has it in closed form (D (log v +
    log 2 pi) for one shared variance v); by default sum_j log v_j + D log 2 pi.
    """
    dims = tuple(range(-len(event_shape), 0))
    diff = x if mean is None else x - mean
    sq = diff.pow(2) if log_var is None else diff.pow(2) * torch.exp(-log_var)
    sq = sq.sum(dims)
    if log_norm is not None:
        return -0.5 * (sq + log_norm)
    norm = math.prod(event_shape) * LOG_2PI
    if log_var is None:
        return -0.5 * (sq + norm)
    return -0.5 * (sq + log_var.expand(tuple(event_shape)).sum() + norm)


def gaussian_log_prob_pairs(x: torch.Tensor, mean: torch.Tensor,
                            log_var: torch.Tensor) -> torch.Tensor:
    """:func:`gaussian_log_prob` for every (x_n, mean_k) pair: x (N, D), mean (K, D),
    log_var (D,) -> (N, K). With w = 1/variance the squares expand as
    |x|_w^2 - 2 x.(w m) + |m|_w^2, so the cross term is one matmul (memory N K, not N K D)."""
    w = torch.exp(-log_var)
    sq = (x.pow(2) @ w)[:, None] - 2 * x @ (mean * w).T + (mean.pow(2) @ w)[None, :]
    return -0.5 * (sq + (log_var + LOG_2PI).sum())


# ---------------------------------------------------------------- seeds


class SeedPurpose(NamedTuple):
    """What a derived seed draws: ``seed + offset`` of the seed named by ``base``."""

    offset: int
    base: str
    what: str


_DATA, _TRAIN, _EVAL = "data.eval_seed", "train.seed", "evaluation seed"
_REPORT, _FIXED = "report seed", "fixed (0)"
SEED_PURPOSES: dict[str, SeedPurpose] = {
    "val": SeedPurpose(0, _DATA, "the fixed transformed draw of the validation split"),
    "test": SeedPurpose(1, _DATA, "the fixed transformed draw of the test split"),
    "val-elbo": SeedPurpose(0, _DATA, "the noise of the validation ELBO during training"),
    "codes-train": SeedPurpose(2, _DATA, "two-stage: the fixed draw of the training images "
                               "encoded into stage-2 data"),
    "codes-val": SeedPurpose(3, _DATA, "two-stage: the fixed draw z ~ q1(z|x) of the "
                             "validation codes"),
    "codes-test": SeedPurpose(4, _DATA, "two-stage: the fixed draw z ~ q1(z|x) of the test "
                              "codes"),
    "init": SeedPurpose(0, _TRAIN, "the global seed before the model is built (weights)"),
    "val-split": SeedPurpose(0, _TRAIN, "the permutation that holds out the validation set"),
    "data-order": SeedPurpose(1, _TRAIN, "the loader's generator: epoch order, dynamic "
                              "transforms"),
    "sample-grid": SeedPurpose(0, _TRAIN, "the samples logged during training"),
    "stage2-train": SeedPurpose(0, _TRAIN, "two-stage: the seed stage 2 trains with (its "
                                "init, data order, noise), plus the stage2 section's own "
                                "train.seed (default 0; before this purpose stage 2 ran at "
                                "that seed alone, so train.seed 0 keeps its numbers)"),
    "elbo": SeedPurpose(0, _EVAL, "the indexed noise of the one-sample ELBO terms"),
    "importance": SeedPurpose(1, _EVAL, "the indexed noise of importance-sampled log p(x) and "
                              "IWAE-k"),
    "naive": SeedPurpose(1, "importance-sampling seed", "the prior samples of the naive "
                         "estimator (evaluation seed + 2 in `vaekit evaluate`)"),
    "stage2-codes": SeedPurpose(5, _EVAL, "two-stage: the draw z ~ q1(z|x) of the evaluated "
                                "split's codes"),
    "stage2-elbo": SeedPurpose(6, _EVAL, "two-stage: the noise of stage 2's ELBO of those "
                               "codes"),
    "generation-labels": SeedPurpose(7, _EVAL, "the labels of a conditional model's scored "
                                     "samples"),
    "generation": SeedPurpose(0, _EVAL, "the generator of the samples scored for generation "
                              "quality"),
    "kde-subset": SeedPurpose(0, _EVAL, "the subset of training examples used as KDE centres "
                              "(then a conditional model's Parzen labels)"),
    "parzen-draws": SeedPurpose(0, _EVAL, "the global seed before the Parzen samples x ~ "
                                "p(x|z) are drawn"),
    "protocol-train": SeedPurpose(1000, _EVAL, "baselines: the fixed draw of the training "
                                  "data under the comparable protocol"),
    "protocol-val": SeedPurpose(1001, _EVAL, "baselines: the same for the validation data"),
    "protocol-test": SeedPurpose(1002, _EVAL, "baselines: the same for the evaluated split"),
    "kde-samples": SeedPurpose(1003, _EVAL, "the fixed transform of the Parzen samples into "
                               "the KDE's data space"),
    "report-samples": SeedPurpose(1, _REPORT, "the generator of the samples figure"),
    "report-draws": SeedPurpose(2, _REPORT, "the draws x ~ p(x|z) of the 2-D density figure"),
    "density-grid": SeedPurpose(11, _REPORT, "both estimators of log p(x) on the 2-D grid"),
    "density-test": SeedPurpose(12, _REPORT, "both estimators' mean log p(x) of test data"),
    "sample": SeedPurpose(0, "sample --seed", "the generator of `vaekit sample`'s draws"),
    "gradient-noise": SeedPurpose(0, "gradient-study seed", "the global seed of the latent "
                                  "noise of every gradient estimate"),
    "feature-init": SeedPurpose(0, "Recipe.seed", "the feature classifier's weights"),
    "feature-order": SeedPurpose(0, "Recipe.seed", "the feature classifier's batch order"),
    "dataset-split": SeedPurpose(0, _FIXED, "the held-out test split of a one-split dataset"),
    "toy-train": SeedPurpose(0, _FIXED, "a generated dataset's training draws"),
    "toy-test": SeedPurpose(1, _FIXED, "a generated dataset's test draws"),
    "toy-map": SeedPurpose(1234, _FIXED, "the fixed random map of the generated manifolds"),
    "init-from-data": SeedPurpose(0, _FIXED, "the transformed examples that initialize a "
                                  "likelihood from data"),
    "mog-means": SeedPurpose(0, _FIXED, "the initial component means of the mixture prior"),
}


def derive_seed(seed: int, purpose: str) -> int:
    """The seed of ``purpose`` (a key of :data:`SEED_PURPOSES`): ``seed + offset``, where
    ``seed`` is the purpose's base seed. Offset 0 is the base seed itself."""
    try:
        return seed + SEED_PURPOSES[purpose].offset
    except KeyError:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: "
                         f"{', '.join(sorted(SEED_PURPOSES))}") from None


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A new generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def seeded_permutation(n: int, seed: int | torch.Generator) -> torch.Tensor:
    """A random permutation of range(n) (n,) from ``seed`` (a CPU generator seeded with it)
    or from a generator, on the generator's device."""
    g = seed if isinstance(seed, torch.Generator) else seeded_generator(seed)
    return torch.randperm(n, generator=g, device=g.device)


def seeded_subset(n: int, size: int, seed: int | torch.Generator) -> torch.Tensor:
    """``size`` distinct indices of range(n) (the first of a seeded permutation). (size,)."""
    return seeded_permutation(n, seed)[:size]


def seeded_split(n: int, n_held: int, seed: int | torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(held, kept): a seeded permutation of range(n) cut after its first ``n_held``
    indices; disjoint, together all of range(n)."""
    perm = seeded_permutation(n, seed)
    return perm[:n_held], perm[n_held:]
