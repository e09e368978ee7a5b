"""Gaussian KDE / Parzen-window baselines: exactness, convergence, chunking, stability."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.neighbors import KernelDensity

from vaekit.evaluation.kde import (
    gaussian_kde_log_density,
    kde_baseline,
    log_density_grid,
    parzen_log_likelihood,
    parzen_sensitivity_note,
    select_bandwidth,
)

TRUE_MEAN_LOG_DENSITY = -0.5 * math.log(2 * math.pi * math.e)  # E log N(x; 0, 1) = -1.4189


def naive_log_density(x: torch.Tensor, c: torch.Tensor, h: float) -> torch.Tensor:
    """Direct float64 reference: differences, no expansion, no chunks."""
    x, c = x.double().reshape(len(x), -1), c.double().reshape(len(c), -1)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    n, d = c.shape
    return (torch.logsumexp(-d2 / (2 * h * h), 1) - math.log(n)
            - 0.5 * d * math.log(2 * math.pi * h * h))


def test_matches_sklearn_isotropic_kernel_in_3d():
    g = torch.Generator().manual_seed(0)
    c, x = torch.randn(400, 3, generator=g, dtype=torch.float64), torch.randn(
        150, 3, generator=g, dtype=torch.float64)
    for h in (0.3, 0.6, 2.0):  # sklearn's tree loses the far tails at smaller h
        ours = gaussian_kde_log_density(x, c, h, batch_size=64, chunk=97).numpy()
        ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(c.numpy()).score_samples(x.numpy())
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
    ours = gaussian_kde_log_density(x, c, 0.05, batch_size=64, chunk=97)
    torch.testing.assert_close(ours, naive_log_density(x, c, 0.05), rtol=1e-12, atol=0)


def test_matches_scipy_gaussian_kde_in_1d():
    rng = np.random.default_rng(1)
    data, x = rng.normal(2.0, 3.0, 500), np.linspace(-10, 14, 200)
    for h in (0.3, 1.0):
        ref = stats.gaussian_kde(data, bw_method=h / data.std(ddof=1)).logpdf(x)
        ours = gaussian_kde_log_density(torch.from_numpy(x)[:, None],
                                        torch.from_numpy(data)[:, None], h).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-8)


def test_log_density_approaches_truth_as_n_grows():
    g = torch.Generator().manual_seed(2)
    m = 5000  # stratified N(0, 1) test points: their mean log-density is the truth to 1e-4
    test = torch.from_numpy(stats.norm.ppf((np.arange(m) + 0.5) / m))[:, None]
    val = torch.randn(1000, 1, generator=g, dtype=torch.float64)
    errors = []
    for n in (100, 1000, 10000):
        train = torch.randn(n, 1, generator=g, dtype=torch.float64)
        r = kde_baseline(train, val, test, candidates=np.geomspace(0.05, 1.0, 8), refine=6)
        errors.append(abs(r.log_lik - TRUE_MEAN_LOG_DENSITY))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_chunk_and_batch_size_invariance(dtype, tol):
    """Same numbers to ``tol`` (relative to max(1, |log p|): float32 distances near 1e2)."""
    g = torch.Generator().manual_seed(3)
    c, x = torch.randn(1000, 5, generator=g).to(dtype), torch.randn(300, 5, generator=g).to(dtype)
    hs = [0.2, 0.7, 3.0]
    ref = log_density_grid(x, c, hs, [10, 1000], batch_size=1024, chunk=4096)
    for batch, chunk in ((7, 250), (33, 7), (300, 999)):
        got = log_density_grid(x, c, hs, [10, 1000], batch_size=batch, chunk=chunk)
        for k in (10, 1000):
            assert torch.allclose(got[k], ref[k], rtol=tol, atol=tol)
    for j, h in enumerate(hs):  # the prefix k' uses exactly the first k' centres
        torch.testing.assert_close(ref[10][j], naive_log_density(x, c[:10], h), rtol=tol,
                                   atol=tol)
        torch.testing.assert_close(ref[1000][j], naive_log_density(x, c, h), rtol=tol,
                                   atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_far_from_all_centres_are_finite(dtype):
    g = torch.Generator().manual_seed(4)
    c = (0.01 * torch.randn(50, 2, generator=g)).to(dtype)
    x = torch.tensor([[1e3, 0.0], [0.0, -1e3], [7e2, 7e2]], dtype=dtype)
    got = gaussian_kde_log_density(x, c, 0.1, chunk=16)
    assert torch.isfinite(got).all()
    assert (got < -4e7).all()  # ~ -1e6 / (2 * 0.1^2)
    torch.testing.assert_close(got, naive_log_density(x, c, 0.1), rtol=1e-6, atol=0)


def _clusters(seed: int = 5, sigma: float = 0.7) -> tuple[torch.Tensor, torch.Tensor, float]:
    """10 centres 100 apart, validation points around them: h* = sqrt(mean |v - c|^2 / d)."""
    g = torch.Generator().manual_seed(seed)
    train = torch.stack([100.0 * torch.arange(10.0), torch.zeros(10)], 1).double()
    idx = torch.randint(0, 10, (400,), generator=g)
    noise = sigma * torch.randn(400, 2, generator=g, dtype=torch.float64)
    return train, train[idx] + noise, math.sqrt(float((noise**2).sum(1).mean()) / 2)


def test_select_bandwidth_finds_the_optimum():
    train, val, h_star = _clusters()
    h, table = select_bandwidth(train, val)
    assert abs(h / h_star - 1) < 0.03
    hs, lls = zip(*table, strict=True)
    assert list(hs) == sorted(hs) and len(hs) >= 30 and max(lls) == dict(table)[h]
    h_ext, table_ext = select_bandwidth(train, val, candidates=[0.02, 0.04])  # grid too low
    assert abs(h_ext / h_star - 1) < 0.07 and max(t[0] for t in table_ext) > h_star


def test_kde_baseline_reports_units_and_subsample():
    g = torch.Generator().manual_seed(6)
    data = torch.rand(1200, 4, 4, generator=g)
    r = kde_baseline(data[:800], data[800:1000], data[1000:], bpd_offset=16 * math.log(256),
                     max_train=300, seed=1)
    assert (r.n_train, r.n_val, r.n_test, r.dim) == (300, 200, 200, 16)
    assert r.bpd == pytest.approx((-r.log_lik + 16 * math.log(256)) / (16 * math.log(2)))
    assert 0 < r.log_lik_se < 1 and r.seconds > 0 and "bits/dim" in r.summary()
    again = kde_baseline(data[:800], data[800:1000], data[1000:], max_train=300, seed=1)
    assert again.log_lik == r.log_lik and again.bpd is None


def test_parzen_grid_and_sensitivity_note():
    g = torch.Generator().manual_seed(7)
    samples = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    test = torch.randn(300, 2, generator=g, dtype=torch.float64)
    hs = [1.0, 0.05, 0.2, 0.5]
    r = parzen_log_likelihood(samples, test, hs, n_samples_list=[20, 200, 2000])
    assert r.bandwidths == sorted(hs) and r.n_samples == [20, 200, 2000]
    assert r.log_lik.shape == r.log_lik_se.shape == (3, 4)
    for i, n in enumerate(r.n_samples):
        for j, h in enumerate(r.bandwidths):
            ref = float(gaussian_kde_log_density(test, samples[:n], h).mean())
            assert r.log_lik[i, j].item() == pytest.approx(ref, abs=1e-10)
    assert r.log_lik[-1].max() > r.log_lik[0].max()  # more samples help the best h
    note = parzen_sensitivity_note(r)
    spread = float(r.log_lik[-1].max() - r.log_lik[-1].min())
    move = float(r.log_lik[-1].max() - r.log_lik[0].max())
    assert f"{spread:.3g} nats/example" in note and f"{move:+.3g}" in note
    assert "n = 20 to n = 2000" in note and "[0.05, 1]" in note
    assert len(re.findall(r"\d+\.\d+", note)) >= 4
    one = parzen_log_likelihood(samples, test, hs, n_samples_list=[2000])
    assert "not measured" in parzen_sensitivity_note(one)


def test_bernoulli_kernel_is_a_normalized_pmf_and_matches_the_direct_formula():
    from itertools import product

    from vaekit.evaluation.kde import kde_baseline, log_density_grid

    g = torch.Generator().manual_seed(0)
    centers = (torch.rand(30, 4, generator=g) < 0.3).double()
    cube = torch.tensor(list(product([0.0, 1.0], repeat=4)), dtype=torch.float64)  # all 16
    eps = 0.15
    logp = log_density_grid(cube, centers, [eps], kernel="bernoulli")[30][0]
    assert float(torch.logsumexp(logp, 0)) == pytest.approx(0.0, abs=1e-12)  # sums to one
    ham = (cube[:, None, :] != centers[None]).sum(-1).double()  # (16, 30)
    direct = torch.logsumexp(ham * math.log(eps) + (4 - ham) * math.log(1 - eps), 1) - math.log(30)
    assert torch.allclose(logp, direct, atol=1e-12)
    with pytest.raises(ValueError, match=r"< 0\.5"):
        log_density_grid(cube, centers, [0.6], kernel="bernoulli")
    val, test = (torch.rand(50, 4, generator=g) < 0.3).double(), cube
    res = kde_baseline(centers, val, test, bpd_offset=0.0, kernel="bernoulli")
    assert 0 < res.bandwidth < 0.5 and res.kernel == "bernoulli"
    assert res.bpd == pytest.approx(-res.log_lik / (4 * math.log(2)))
