"""Parametric baselines: the Gaussian and PPCA fits against scipy / scikit-learn, PPCA's
stationarity, PPCA as a vaekit VAE on real data, `evaluate --baselines`, and a linear VAE
that reaches the exact log-likelihood of the PPCA model that drew its data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from torch.distributions import LowRankMultivariateNormal

from vaekit.config import DataConfig
from vaekit.data.pipeline import prepare_data
from vaekit.evaluation import estimate_log_px
from vaekit.evaluation.baselines import fit_gaussian, fit_ppca
from vaekit.models import LinearGaussian
from vaekit.objectives import elbo
from vaekit.registry import LIKELIHOODS
from vaekit.rundir import RunDir


def _correlated(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ A + 3.0


def test_gaussian_fit_is_the_sample_moments_and_its_log_prob_is_scipys():
    x = _correlated(60, 4)
    fit = fit_gaussian(x)
    xn = x.numpy()
    cov = np.cov(xn, rowvar=False, bias=True)  # maximum likelihood: 1/N
    assert np.allclose(fit.cov.numpy(), cov, atol=1e-12)
    ref = multivariate_normal(xn.mean(0), cov).logpdf(xn[:10])
    assert np.allclose(fit.log_prob(x[:10]).numpy(), ref, rtol=0, atol=1e-9)


def test_ppca_fit_matches_scikit_learn_and_its_log_prob_is_scipys():
    x = _correlated(200, 6, seed=1)
    n = len(x)
    fit = fit_ppca(x, 2)
    pca = PCA(n_components=2).fit(x.numpy())  # sklearn's moments divide by N - 1
    assert fit.sigma2 == pytest.approx(pca.noise_variance_ * (n - 1) / n, rel=1e-10)
    cov = (fit.W @ fit.W.T).numpy() + fit.sigma2 * np.eye(6)
    assert np.allclose(cov, pca.get_covariance() * (n - 1) / n, atol=1e-9)
    ref = multivariate_normal(fit.mean.numpy(), cov).logpdf(x[:10].numpy())
    assert np.allclose(fit.log_prob(x[:10]).numpy(), ref, rtol=0, atol=1e-9)
    gram = fit.W.T @ fit.W  # orthogonal columns: the exact posterior is diagonal
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-10)


def test_closed_form_ppca_is_a_stationary_point_of_its_likelihood():
    x = _correlated(300, 5, seed=2)
    fit = fit_ppca(x, 2)
    mean, W = fit.mean.clone().requires_grad_(), fit.W.clone().requires_grad_()
    log_s2 = torch.tensor(math.log(fit.sigma2), dtype=torch.float64, requires_grad=True)

    def mean_log_lik() -> torch.Tensor:
        dist = LowRankMultivariateNormal(mean, W, log_s2.exp().expand(5))
        return dist.log_prob(x).mean()

    grads = torch.autograd.grad(mean_log_lik(), (mean, W, log_s2))
    assert max(float(g.abs().max()) for g in grads) < 1e-9
    with torch.no_grad():
        W.mul_(1.1)  # away from the fit the gradient is not 0
    assert float(torch.autograd.grad(mean_log_lik(), W)[0].abs().max()) > 1e-2


def test_ppca_as_a_vaekit_vae_gives_the_exact_log_likelihood_on_digits():
    # dequantized 8x8 digits
    data = prepare_data(DataConfig(name="digits"), LIKELIHOODS.get("gaussian").build, 0)
    fit = fit_ppca(data.train_raw.double() / data.levels, 4)  # any x in [0,1]^64 will do
    x = data.test.x[:100].reshape(100, -1).double()
    exact = fit.log_prob(x)
    vae = fit.vae()  # exact (diagonal) posterior as encoder: log p(x, z) - log q(z|x) = log p(x)
    # at every z (the likelihood keeps log sigma^2 as a float32 buffer: ~4e-6 nats off)
    assert torch.allclose(elbo(vae, x, kl="mc").value, exact, rtol=0, atol=1e-5)
    est = estimate_log_px(vae, x, k=50, seed=0)  # every importance weight equals p(x)
    assert torch.allclose(est.log_px, exact, rtol=0, atol=1e-5)
    assert float(est.ess.min()) == pytest.approx(50)
    assert torch.allclose(fit.linear_gaussian().exact_log_px(x), exact, rtol=0, atol=1e-8)


def test_evaluate_baselines_on_dequantized_and_on_binarized_digits(cli, tmp_path):
    args = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "1",
            "--device", "cpu", "--no-progress"]
    gauss, binary = tmp_path / "gauss", tmp_path / "binary"
    assert cli("train", *args, "--likelihood", "gaussian", "--out", gauss).code == 0
    assert cli("train", *args, "--out", binary).code == 0
    res = cli("evaluate", gauss, "--k", "0", "--baselines")
    assert res.code == 0, res.err
    b = json.loads((gauss / "eval-test.json").read_text())["baselines"]
    rows = {r["name"]: r for r in b["rows"]}
    assert list(rows) == ["gaussian", "ppca"] and rows["ppca"]["latent_dim"] == 4
    offset = 64 * math.log(17)  # dequantized 17-level pixels: -log P <= -log p + D log 17
    for r in rows.values():
        assert r["bpd"] == pytest.approx((-r["log_px"] + offset) / (64 * math.log(2)))
    # PPCA is a constrained Gaussian: its training likelihood cannot exceed the full one's
    assert rows["gaussian"]["train_log_px"] > rows["ppca"]["train_log_px"]
    assert "full-covariance Gaussian" in res.out and "probabilistic PCA" in res.out
    res = cli("evaluate", binary, "--k", "0", "--baselines")
    b = json.loads((binary / "eval-test.json").read_text())["baselines"]
    assert [r["name"] for r in b["rows"]] == ["bernoulli-independent"]
    assert "not a pmf" in b["note"] and b["rows"][0]["bpd"] == pytest.approx(
        -b["rows"][0]["log_px"] / (64 * math.log(2)))


def test_linear_vae_reaches_the_exact_log_likelihood_of_ppca_data(cli, tmp_path):
    lg = LinearGaussian.random(6, 2, s=0.5, seed=0, orthogonal=False)
    x = lg.sample(5000, seed=1).float().numpy()
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "train.npy", x[:3000])
    np.save(tmp_path / "data" / "test.npy", x[3000:])
    # gamma started above the noise variance 0.25 (from below, 12 epochs are not enough:
    # -7.66 vs the exact -7.55; 40 epochs reach -7.555)
    (tmp_path / "linear.yaml").write_text("model:\n  arch: {name: mlp, hidden: []}\n"
                                          "  likelihood: {name: gaussian-gamma, gamma_init: 1.0}\n")
    run = tmp_path / "run"  # linear encoder and decoder, one learned variance: PPCA's family
    res = cli("train", "--data", tmp_path / "data", "--config", tmp_path / "linear.yaml",
              "--likelihood", "gaussian-gamma", "--latent-dim", "2", "--epochs", "12",
              "--lr", "0.02", "--batch-size", "64", "--lr-schedule", "cosine",
              "--val-fraction", "0", "--device", "cpu", "--no-progress", "--out", run)
    assert res.code == 0, res.err
    rd = RunDir.open(run, "cpu")
    model, _cfg, data = rd.model, rd.cfg, rd.data
    exact = float(lg.exact_log_px(data.test.x).mean())  # -7.548 nats/example
    est = float(estimate_log_px(model, data.test, k=1000, seed=0).log_px.mean())
    assert abs(est - exact) < 0.03  # measured -0.008 nats/example (12 epochs, 2000 test points)
