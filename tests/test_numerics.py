"""vaekit.numerics against known answers: log-mean-exp, the streaming log-sum-exp at prefix
cuts, chunk coverage, the Gaussian log-density, the seed table and seeded splits."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent, Normal

from vaekit import numerics
from vaekit.numerics import (
    SEED_PURPOSES,
    RunningLogSumExp,
    chunks,
    cut_ranges,
    derive_seed,
    gaussian_log_prob,
    gaussian_log_prob_pairs,
    log_mean_exp,
    scaled_logsumexp,
    seeded_split,
    seeded_subset,
)


def test_log_mean_exp_is_logsumexp_minus_log_n():
    a = torch.randn(50, 7, dtype=torch.float64) * 30
    torch.testing.assert_close(log_mean_exp(a, 0), torch.logsumexp(a, 0) - math.log(50),
                               rtol=0, atol=0)
    torch.testing.assert_close(log_mean_exp(a, 1), torch.logsumexp(a, 1) - math.log(7),
                               rtol=0, atol=0)
    assert float(log_mean_exp(torch.full((4,), 3.0))) == pytest.approx(3.0)
    # rows that are log-sums of several terms: count is the number of terms
    groups = torch.stack([torch.logsumexp(a[:20], 0), torch.logsumexp(a[20:], 0)])
    torch.testing.assert_close(log_mean_exp(groups, 0, count=50), log_mean_exp(a, 0))


def test_log_mean_exp_of_huge_magnitudes_stays_finite():
    a = torch.tensor([-1e4, -1e4 + math.log(3.0)], dtype=torch.float64)
    assert float(log_mean_exp(a)) == pytest.approx(-1e4 + math.log(2.0))


@pytest.mark.parametrize("seed", range(5))
def test_streaming_log_sum_exp_equals_one_shot_at_random_prefix_cuts(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 400, (1,), generator=g))
    a = torch.randn(n, 3, generator=g, dtype=torch.float64) * 20 - 500
    chunk = int(torch.randint(1, 60, (1,), generator=g))
    cuts = sorted(set(torch.randint(1, n + 1, (5,), generator=g).tolist()))
    run = RunningLogSumExp(3, cuts=cuts)
    for k0, k1 in cut_ranges(n, chunk, cuts):
        run.add(a[k0:k1])
    assert run.seen == n and set(run.prefix) == set(cuts)
    torch.testing.assert_close(run.value, torch.logsumexp(a, 0), rtol=0, atol=1e-9)
    torch.testing.assert_close(run.mean(), log_mean_exp(a, 0), rtol=0, atol=1e-9)
    for k in cuts:
        torch.testing.assert_close(run.prefix[k], log_mean_exp(a[:k], 0), rtol=0, atol=1e-9)


def test_add_lse_counts_rows_and_returns_the_chunks_own_sum():
    a = torch.randn(10, 2, dtype=torch.float64)
    run, other = RunningLogSumExp((2,), cuts=[4]), RunningLogSumExp(2)
    lse = run.add(a[:4])
    other.add_lse(lse, 4)
    torch.testing.assert_close(lse, torch.logsumexp(a[:4], 0))
    assert other.seen == 4 and torch.equal(other.value, run.value)
    assert run.value.dtype == torch.float64  # float32 inputs are summed in float64 too
    assert RunningLogSumExp(2).add(a.float()).dtype == torch.float64


@pytest.mark.parametrize("n, size, start", [(0, 3, 0), (1, 1, 0), (10, 3, 0), (10, 10, 0),
                                            (10, 100, 0), (17, 4, 5), (5, 2, 5)])
def test_chunks_cover_the_range_once_in_order(n, size, start):
    got = list(chunks(n, size, start))
    rows = [i for lo, hi in got for i in range(lo, hi)]
    assert rows == list(range(start, n))
    assert all(0 < hi - lo <= size for lo, hi in got)
    assert all(hi - lo == size for lo, hi in got[:-1])  # only the last one is short


def test_chunks_refuse_a_size_below_one():
    for bad in (0, -3):
        with pytest.raises(ValueError, match="chunk size"):
            list(chunks(10, bad))
        with pytest.raises(ValueError, match="chunk size"):
            list(cut_ranges(10, bad))


@pytest.mark.parametrize("n, chunk, cuts", [(10, 4, [3]), (10, 4, [4, 8]), (10, 100, [1, 9]),
                                            (7, 2, []), (5, 5, [5]), (12, 5, [0, 3, 12, 40])])
def test_cut_ranges_break_at_multiples_of_the_chunk_and_at_every_cut(n, chunk, cuts):
    got = list(cut_ranges(n, chunk, cuts))
    borders = {hi for _, hi in got}
    want = {*range(chunk, n, chunk), *(c for c in cuts if 0 < c <= n), n}
    assert borders == want
    assert [i for lo, hi in got for i in range(lo, hi)] == list(range(n))
    assert all(0 < hi - lo <= chunk for lo, hi in got)


def test_cut_ranges_are_lazy():
    ranges = cut_ranges(10**15, 256, [10])
    assert [next(ranges) for _ in range(3)] == [(0, 10), (10, 256), (256, 512)]


def test_rows_in_budget_and_pair_bytes():
    assert numerics.rows_in_budget(1024, 1.0) == 1024
    assert numerics.rows_in_budget(3 * 2**20, 1.0) == 0
    assert numerics.pair_bytes(784, 10, 500) == 4 * (3 * 784 + 2 * 500 + 4 * 10)


def test_scaled_logsumexp_matches_logsumexp_for_every_scale():
    d = torch.rand(6, 40, dtype=torch.float64) * 50
    scales = [0.01, 0.5, 3.0]
    want = torch.stack([torch.logsumexp(-s * d, 1) for s in scales])
    torch.testing.assert_close(scaled_logsumexp(d.clone(), scales), want, rtol=1e-12, atol=0)


def test_gaussian_log_prob_against_torch_distributions():
    x, m = torch.randn(4, 3, 5), torch.randn(3, 5)
    for log_var in (torch.tensor(-0.7), torch.randn(5)):
        ref = Independent(Normal(m, torch.exp(0.5 * log_var)), 1).log_prob(x)
        torch.testing.assert_close(gaussian_log_prob(x, m, log_var, (5,)), ref)
        norm = (log_var.expand(5) + numerics.LOG_2PI).sum()
        torch.testing.assert_close(gaussian_log_prob(x, m, log_var, (5,), log_norm=norm), ref)
    ref = Independent(Normal(torch.zeros(5), 1.0), 1).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, None, None, (5,)), ref)
    img = torch.randn(2, 3, 4)  # a two-dim event: summed over both
    ref = Independent(Normal(torch.zeros(3, 4), 1.0), 2).log_prob(img)
    torch.testing.assert_close(gaussian_log_prob(img, None, None, (3, 4)), ref)


def test_gaussian_pairs_equal_the_broadcast_density():
    x, m = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    log_var = torch.randn(5, dtype=torch.float64)
    want = gaussian_log_prob(x[:, None], m[None], log_var, (5,))  # (N, K)
    torch.testing.assert_close(gaussian_log_prob_pairs(x, m, log_var), want)


def test_reparameterize_is_mu_plus_sigma_eps():
    mu, sigma, eps = torch.randn(3, 2), torch.rand(3, 2), torch.randn(5, 3, 2)
    assert torch.equal(numerics.reparameterize(mu, sigma, eps), mu + sigma * eps)


# the seed offsets in use before the table existed (vaekit 6063064): they must not move
LEGACY_OFFSETS = {
    "val": 0, "test": 1, "val-elbo": 0, "codes-train": 2, "codes-val": 3, "codes-test": 4,
    "init": 0, "val-split": 0, "data-order": 1, "sample-grid": 0,
    "elbo": 0, "importance": 1, "naive": 1, "stage2-codes": 5, "stage2-elbo": 6,
    "generation-labels": 7, "generation": 0, "kde-subset": 0, "parzen-draws": 0,
    "protocol-train": 1000, "protocol-val": 1001, "protocol-test": 1002, "kde-samples": 1003,
    "report-samples": 1, "report-draws": 2, "density-grid": 11, "density-test": 12,
    "sample": 0, "gradient-noise": 0, "feature-init": 0, "feature-order": 0,
    "dataset-split": 0, "toy-train": 0, "toy-test": 1, "toy-map": 1234, "init-from-data": 0,
    "mog-means": 0,
    "stage2-train": 0,  # added later; offset 0: train.seed 0 keeps stage 2's earlier seed
}


def test_the_seed_table_is_stable():
    assert {k: p.offset for k, p in SEED_PURPOSES.items()} == LEGACY_OFFSETS
    for purpose, offset in LEGACY_OFFSETS.items():
        assert derive_seed(7, purpose) == 7 + offset
    assert derive_seed(2**62, "kde-samples") == 2**62 + 1003  # no wrap-around


def test_purposes_drawn_from_one_base_seed_get_distinct_seeds():
    """Offset 0 is the base seed itself (its first consumers); every other offset is used by
    one purpose of that base only, so no two derived streams coincide."""
    by_base: dict[str, list[int]] = {}
    for p in SEED_PURPOSES.values():
        assert p.what and p.base
        if p.offset:
            by_base.setdefault(p.base, []).append(p.offset)
    for base, offsets in by_base.items():
        assert len(offsets) == len(set(offsets)), base


def test_an_unknown_purpose_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown seed purpose 'vall'.*val"):
        derive_seed(0, "vall")


@pytest.mark.parametrize("n, n_held", [(10, 3), (10, 0), (10, 10), (1, 1), (0, 0)])
def test_seeded_split_is_disjoint_complete_and_deterministic(n, n_held):
    held, kept = seeded_split(n, n_held, 5)
    assert len(held) == n_held and len(kept) == n - n_held
    assert sorted(torch.cat([held, kept]).tolist()) == list(range(n))
    again = seeded_split(n, n_held, 5)
    assert torch.equal(held, again[0]) and torch.equal(kept, again[1])
    # the same permutation the data pipeline has always drawn
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    assert torch.equal(held, perm[:n_held]) and torch.equal(kept, perm[n_held:])


def test_seeded_subset_and_permutation_from_a_generator():
    assert not torch.equal(seeded_subset(1000, 10, 0), seeded_subset(1000, 10, 1))
    sub = seeded_subset(100, 10, 3)
    assert len(set(sub.tolist())) == 10 and int(sub.max()) < 100
    g = torch.Generator().manual_seed(3)
    assert torch.equal(numerics.seeded_permutation(100, g)[:10], sub)
    assert not torch.equal(numerics.seeded_permutation(100, g), sub)  # g moved on


def test_numerics_sits_at_the_bottom_of_the_import_graph():
    """It imports nothing from vaekit but vaekit.errors: everything else may import it."""
    tree = ast.parse(Path(numerics.__file__).read_text())
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert {n for n in names if n.startswith("vaekit")} <= {"vaekit.errors"}
