"""Marginal-likelihood estimators against the closed form of the linear-Gaussian model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaekit.evaluation import estimate_log_px, mean_se
from vaekit.evaluation.diagnostics import latent_diagnostics
from vaekit.evaluation.estimators import _Running
from vaekit.evaluation.marginal import k_grid, marginal_likelihood
from vaekit.models import LinearGaussian


@pytest.fixture(scope="module")
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=6, latent=2, s=0.5, seed=3)


@pytest.fixture(scope="module")
def sharp() -> LinearGaussian:
    """D=20, s=0.2: the posterior (std ~0.1-0.4) is much narrower than the prior."""
    return LinearGaussian.random(d=20, latent=2, s=0.2, seed=3)


def test_exact_posterior_proposal_has_zero_variance(lg):
    x = lg.sample(50, seed=1)
    exact = lg.exact_log_px(x)
    for k in (1, 7, 100):
        est = estimate_log_px(lg.vae(), x, k, seed=k)
        assert (est.log_px - exact).abs().max() < 1e-6  # every estimate is exact
        assert torch.allclose(est.ess, torch.full_like(est.ess, float(k)), rtol=1e-6)


def test_perturbed_proposal_converges_to_closed_form(lg):
    x = lg.sample(200, seed=2)
    exact = lg.exact_log_px(x)
    model = lg.vae(shift=0.8, var_scale=2.5)
    err = {}
    for k in (10, 100, 5000):
        est = estimate_log_px(model, x, k, seed=0)
        err[k] = mean_se(est.log_px - exact)
    assert err[10][0] < -0.02  # Jensen: log of an unbiased estimate is biased low
    mean, se = err[5000]
    assert abs(mean) < max(4 * se, 2e-3)
    assert abs(err[5000][0]) < abs(err[100][0]) < abs(err[10][0])


def test_naive_estimator_converges_far_more_slowly_with_lower_ess(sharp):
    x = sharp.sample(200, seed=4)
    exact = sharp.exact_log_px(x)
    model = sharp.vae(shift=0.1, var_scale=2.0)
    k = 2000
    imp = estimate_log_px(model, x, k, "encoder", seed=0)
    naive = estimate_log_px(model, x, k, "prior", seed=0)
    naive_big = estimate_log_px(model, x, 100 * k, "prior", seed=1, chunk_size=20000)
    err_imp = abs(float((imp.log_px - exact).mean()))
    err_naive = abs(float((naive.log_px - exact).mean()))
    err_naive_big = abs(float((naive_big.log_px - exact).mean()))
    assert err_naive > 5 * err_imp
    assert err_naive_big < err_naive  # it does converge, slowly
    assert float(naive.ess.median()) < 0.2 * float(imp.ess.median())


def test_log_weights_of_magnitude_1e4_do_not_overflow():
    lw = -1e4 + torch.randn(50, 3, dtype=torch.float64)  # (K, N)
    run = _Running(3, torch.device("cpu"), ())
    run.add(lw[:20])
    run.add(lw[20:])
    want = torch.logsumexp(lw, 0)
    assert torch.isfinite(run.lse).all()
    assert torch.allclose(run.lse, want, atol=1e-9)
    assert torch.isfinite(run.ess()).all() and (run.ess() >= 1).all()
    # and end to end: a sharp likelihood far from the data gives log-weights ~ -1e4
    sharp = LinearGaussian.random(d=6, latent=2, s=0.05, seed=3)
    x = sharp.sample(20, seed=0) + 1.0
    exact = sharp.exact_log_px(x)
    assert exact.max() < -1e3
    est = estimate_log_px(sharp.vae(), x, 50)
    assert torch.isfinite(est.log_px).all()
    assert torch.allclose(est.log_px, exact, rtol=1e-6)


@pytest.mark.parametrize("proposal", ["encoder", "prior"])
def test_results_do_not_depend_on_batch_or_chunk_size(tiny_model, proposal):
    model = tiny_model(data_shape=(6,), likelihood="gaussian")
    x = torch.randn(37, 6)
    base = estimate_log_px(model, x, 64, proposal, seed=5, prefix_ks=(1, 10))
    for kw in ({"batch_size": 5, "chunk_size": 7}, {"batch_size": 37, "chunk_size": 64},
               {"memory_mb": 0.01}):
        other = estimate_log_px(model, x, 64, proposal, seed=5, prefix_ks=(1, 10), **kw)
        assert torch.allclose(base.log_px, other.log_px, rtol=1e-6, atol=1e-6)
        assert torch.allclose(base.ess, other.ess, rtol=1e-5)
        assert torch.allclose(base.prefix[10], other.prefix[10], rtol=1e-6, atol=1e-6)


def test_prefix_estimates_equal_separate_runs_of_smaller_k(tiny_model):
    model = tiny_model(data_shape=(6,), likelihood="gaussian")
    x = torch.randn(9, 6)
    full = estimate_log_px(model, x, 100, seed=2, prefix_ks=(10,))
    small = estimate_log_px(model, x, 10, seed=2)  # the first 10 samples are the same
    assert torch.allclose(full.prefix[10], small.log_px, atol=1e-6)


def test_marginal_report_gap_and_curve(sharp):
    x = sharp.sample(300, seed=5)
    model = sharp.vae(shift=0.1, var_scale=2.0)
    rep = marginal_likelihood(model, x, k=1000, k_naive=1000)
    exact = float(sharp.exact_log_px(x).mean())
    imp = rep["importance"]
    assert abs(imp["log_px"] - exact) < 4 * imp["log_px_se"] + 0.01
    curve = [rep["iwae_curve"][k] for k in ("1", "10", "100", "1000")]
    assert curve == sorted(curve)  # IWAE-k climbs towards log p(x)
    assert rep["elbo_gap"]["mean"] > 0.05  # KL(q || p(z|x)) > 0 for a perturbed encoder
    assert rep["naive"]["ess_median"] < imp["ess_median"]
    assert k_grid(1000)[:4] == [1, 2, 5, 10] and k_grid(1000)[-1] == 1000


class _IgnoringEncoder(nn.Module):
    """mu_j = 0 and log var_j = 0 for the ignored dims j: those latents carry nothing."""

    def __init__(self, d: int, latent: int, ignored: list[int]) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 2 * latent)
        mask = torch.ones(2 * latent)
        for j in ignored:
            mask[j] = mask[latent + j] = 0.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.mask


def test_active_units_are_exactly_the_used_dimensions(tiny_model):
    model = tiny_model(data_shape=(6,), latent_dim=5)
    ignored = [1, 3]
    model.encoder.net = _IgnoringEncoder(6, 5, ignored)
    with torch.no_grad():
        model.encoder.net.lin.weight.mul_(5.0)  # clearly active elsewhere
    d = latent_diagnostics(model, torch.randn(500, 6))
    assert d["inactive_dims"] == ignored
    assert d["active_units"] == 3
    assert all(d["kl_per_dim"][j] == 0.0 for j in ignored)
    assert all(d["kl_per_dim"][j] > 0.01 for j in (0, 2, 4))
    assert d["warning"] is None
    model.encoder.net = _IgnoringEncoder(6, 5, [0, 1, 2, 3])
    assert "posterior collapse" in latent_diagnostics(model, torch.randn(100, 6))["warning"]


def test_bits_per_dim_of_reported_estimates(lg):
    from vaekit.evaluation.marginal import summarize

    est = estimate_log_px(lg.vae(), lg.sample(10), 5)
    s = summarize(est, bpd_offset=6 * math.log(256), dim=6)
    assert s["bpd"] == pytest.approx((-s["log_px"] + 6 * math.log(256)) / (6 * math.log(2)))


def test_naive_standard_error_accounts_for_the_shared_samples(sharp):
    """The jackknife over groups of shared prior samples tracks the seed-to-seed spread of
    the naive estimate's mean, which the across-example s.e. alone misses."""
    x = sharp.sample(300, seed=5)
    model = sharp.vae(shift=0.1, var_scale=2.0)
    runs = [estimate_log_px(model, x, 2000, "prior", seed=s) for s in range(12)]
    means = torch.stack([r.log_px.mean() for r in runs])
    from vaekit.evaluation.marginal import summarize

    sums = [summarize(r, None, 20) for r in runs]
    spread = float(means.std())  # the true Monte-Carlo error of one run's mean
    jack = sum(s["log_px_se_mc"] for s in sums) / len(sums)
    assert 0.4 * spread < jack < 2.5 * spread, (jack, spread)
    assert all(s["log_px_se_total"] >= s["log_px_se"] for s in sums)


def test_unconverged_estimates_are_flagged_and_iwae_k_is_on_the_curve(ring_run, cli, tmp_path):
    out = tmp_path / "e.json"
    res = cli("evaluate", ring_run, "--k", "10", "--loglik", "50", "--naive", "30",
              "--json", out)
    assert res.code == 0, res.err
    import json

    r = json.loads(out.read_text())
    m = r["marginal"]
    assert r["iwae"] == m["importance"]["curve"]["10"]  # one computation, one number
    gap = m["importance"]["log_px"] - r["elbo"]
    assert gap == pytest.approx(m["elbo_gap"]["mean"], abs=1e-9)  # the printed ELBO's draw
    assert "warning" in m["importance"] and "warning" in m["naive"]
    sharp = LinearGaussian.random(d=20, latent=2, s=0.05, seed=3)
    xs = sharp.sample(100, seed=0)
    est = estimate_log_px(sharp.vae(shift=0.5, var_scale=4.0), xs, 1000, "prior", seed=0,
                          prefix_ks=(100,))
    from vaekit.evaluation.marginal import summarize

    s = summarize(est, None, 20)
    assert "median ESS" in s["warning"] and "still rose" in s["warning"]
    assert "larger K" in s["warning"]
    exact = sharp.vae()  # the exact posterior as proposal: converged, no warning
    ok = summarize(estimate_log_px(exact, xs, 100, prefix_ks=(10,)), None, 20)
    assert ok["warning"] is None


def test_mean_field_posterior_is_the_kl_optimal_diagonal():
    """KL(q || p(z|x)) over diagonal q with the exact mean is minimized by variances
    1 / diag(C^-1); diag(C) is worse whenever W^T W is not diagonal, equal when it is."""
    from torch.distributions import MultivariateNormal, kl_divergence

    def kl(lg: LinearGaussian, var: torch.Tensor) -> float:
        m, C = lg.posterior(torch.zeros(1, lg.W.shape[0], dtype=lg.W.dtype))
        q = MultivariateNormal(m[0], torch.diag(var))
        return float(kl_divergence(q, MultivariateNormal(m[0], C)))

    lg = LinearGaussian.random(d=6, latent=3, s=0.5, seed=0, orthogonal=False)
    opt = lg.mean_field_var()
    _, C = lg.posterior(torch.zeros(1, 6, dtype=lg.W.dtype))
    assert kl(lg, opt) < kl(lg, torch.diagonal(C)) - 1e-3
    for scale in (0.9, 1.1):  # a minimum along every direction of the variances
        for j in range(3):
            v = opt.clone()
            v[j] *= scale
            assert kl(lg, v) > kl(lg, opt)
    ortho = LinearGaussian.random(d=6, latent=3, s=0.5, seed=0, orthogonal=True)
    _, C = ortho.posterior(torch.zeros(1, 6, dtype=ortho.W.dtype))
    torch.testing.assert_close(ortho.mean_field_var(), torch.diagonal(C))
