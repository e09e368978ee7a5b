"""The discretized logistic likelihood: a normalized pmf of the levels, exact against the
CDF difference, sampling on the grid, and end to end with exact bits/dim."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaekit.distributions.likelihoods import DiscretizedLogistic

K = 17  # levels of the bundled digits


def _dist(n: int = 6) -> DiscretizedLogistic:
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(n, generator=g, dtype=torch.float64) * 1.6 - 0.3  # also outside [0, 1]
    log_scale = torch.rand(n, generator=g, dtype=torch.float64) * 5 - 6
    return DiscretizedLogistic(loc, log_scale, K)


def test_the_levels_carry_probability_one_and_match_the_cdf_difference():
    d = _dist()
    grid = torch.arange(K, dtype=torch.float64) / (K - 1)  # (K,)
    lp = d.log_prob(grid[:, None])  # (K, n)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(6, dtype=torch.float64))
    h, s = 0.5 / (K - 1), d.log_scale.exp()

    def cdf(t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((t - d.loc) / s)

    direct = cdf(grid[:, None] + h) - cdf(grid[:, None] - h)
    direct[0], direct[-1] = cdf(grid[0] + h), 1 - cdf(grid[-1] - h)
    torch.testing.assert_close(lp.exp(), direct, rtol=1e-9, atol=1e-12)


def test_extreme_parameters_give_finite_values_and_gradients():
    loc = torch.tensor([-50.0, 50.0, 0.5, 0.5], requires_grad=True)
    log_scale = torch.tensor([-7.0, -7.0, -7.0, 8.0], requires_grad=True)
    x = torch.tensor([1.0, 0.0, 0.5, 0.25])  # far in either tail, and sharp or flat
    lp = DiscretizedLogistic(loc, log_scale, 256).log_prob(x)
    assert torch.isfinite(lp).all() and lp[0] < -1000 and lp[1] < -1000
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()


def test_samples_lie_on_the_levels_with_the_pmf_frequencies():
    d = _dist(3)
    torch.manual_seed(1)
    xs = d.sample((40_000,))  # (40000, 3)
    k = xs * (K - 1)
    assert torch.equal(k, k.round()) and xs.min() >= 0 and xs.max() <= 1
    probs = d.log_prob(torch.arange(K, dtype=torch.float64)[:, None] / (K - 1)).exp()
    freq = torch.stack([(k.round() == j).double().mean(0) for j in range(K)])
    assert (freq - probs).abs().max() < 0.015  # ~ 4 standard errors of a frequency
    se = xs.std(0) / math.sqrt(len(xs))
    assert ((xs.mean(0) - d.mean).abs() < 4 * se).all()


def test_training_and_evaluation_report_exact_bits_per_dim(tmp_path, cli):
    run = tmp_path / "dl"
    args = ["--data", "digits", "--limit", "200", "--hidden", "32", "--latent-dim", "4",
            "--device", "cpu", "--no-progress", "--likelihood", "discretized-logistic"]
    res = cli("train", *args, "--epochs", "2", "--out", run)
    assert res.code == 0, res.err
    assert "values scaled to [0,1]" in res.out and "exact bits/dim" in res.out
    assert cli("evaluate", run, "--k", "10", "--kde", "--kde-max-train", "100").code == 0
    ev = json.loads((run / "eval-test.json").read_text())
    assert ev["bpd_offset"] == 0.0 and ev["transform"] == "scale"
    assert ev["elbo_bpd"] == pytest.approx(-ev["elbo"] / (64 * math.log(2)), rel=1e-9)
    assert 0 < ev["elbo_bpd"] < math.log2(K)  # better than uniform over the 17 levels
    assert ev["kde"]["transform"] == "dequantize" and ev["kde"]["bpd"] is not None
    assert cli("sample", run, "-n", "8").code == 0
    cli("train", *args, "--transform", "dequantize", "--out", tmp_path / "x").assert_user_error(
        "--transform scale")
    cli("train", *args, "--data", "ring:n=100", "--out", tmp_path / "y").assert_user_error(
        "continuous")
