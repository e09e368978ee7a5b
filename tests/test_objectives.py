"""ELBO, IWAE and KL against closed forms and a model with an exact log p(x).

Monte-Carlo checks compare against a tolerance of 4 standard errors computed from the draws.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaekit.distributions import GaussianEncoder, StandardNormal
from vaekit.evaluation import estimate_log_px
from vaekit.models import LinearGaussian
from vaekit.objectives import elbo, iwae_bound, log_weights


def mean_se(v: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    v = v.double()
    return v.mean(dim), v.std(dim) / math.sqrt(v.shape[dim])


# ---------------------------------------------------------------- analytic KL


def test_analytic_kl_matches_torch_and_monte_carlo():
    L = 3
    prior = StandardNormal(L)
    mu = torch.randn(5, L, dtype=torch.float64)
    sigma = torch.rand(5, L, dtype=torch.float64) * 1.5 + 0.2
    q = Independent(Normal(mu, sigma), 1)
    ours = prior.kl(q)
    assert ours.shape == (5,)
    torch.testing.assert_close(ours, kl_divergence(q, prior().expand((5,))).to(ours.dtype),
                               atol=1e-5, rtol=0)
    # prior.log_prob is the density of prior()
    z = torch.randn(7, L)
    torch.testing.assert_close(prior.log_prob(z), prior().log_prob(z), atol=1e-5, rtol=0)
    # Monte Carlo: mean of log q(z) - log p(z), z ~ q
    zs = q.sample((100_000,))
    mc, se = mean_se(q.log_prob(zs) - prior.log_prob(zs))
    assert (se < 0.05).all()
    assert ((mc - ours).abs() < 4 * se).all(), (mc, ours, se)


def test_elbo_mc_and_analytic_kl_agree_in_expectation(tiny_model):
    model = tiny_model(data_shape=(6,))
    x = torch.randn(4, 6)
    reps = 20_000
    with torch.no_grad():
        analytic = elbo(model, x, kl="analytic")
        mc = elbo(model, x.repeat(reps, 1), kl="mc")
    kl_mean, kl_se = mean_se(mc.kl.view(reps, 4))
    assert (analytic.kl > 0).all()
    assert ((kl_mean - analytic.kl.double()).abs() < 4 * kl_se).all(), (kl_mean, analytic.kl)
    # the whole objective, too: same E_q[log p(x|z)], same KL in expectation
    val_mean, val_se = mean_se(mc.value.view(reps, 4))
    ref_mean, ref_se = mean_se(elbo(model, x.repeat(reps, 1), kl="analytic").value.view(reps, 4))
    assert ((val_mean - ref_mean).abs() < 4 * (val_se**2 + ref_se**2).sqrt()).all()
    # beta weights the KL only
    torch.manual_seed(3)
    t1 = elbo(model, x, beta=1.0)
    torch.manual_seed(3)
    t2 = elbo(model, x, beta=0.25)
    torch.testing.assert_close(t2.value, t1.log_px_z - 0.25 * t1.kl)


# ------------------------------------------------------- reparameterization


class FixedParams(nn.Module):
    """An encoder 'network' whose output is one parameter tensor, whatever x is."""

    def __init__(self, params: torch.Tensor) -> None:
        super().__init__()
        self.p = nn.Parameter(params.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p + 0 * x.sum()


def test_reparameterized_gradients_match_closed_form():
    """E_q[sum z^2] = sum(mu^2 + sigma^2): d/dmu = 2 mu, d/dsigma = 2 sigma."""
    L, groups, n = 3, 100, 2000  # 200k samples; one gradient estimate per group
    mu0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    sigma0 = torch.tensor([0.3, 1.2, 0.7], dtype=torch.float64)
    mu = mu0.repeat(groups, 1).requires_grad_()
    sigma = sigma0.repeat(groups, 1).requires_grad_()
    z = Independent(Normal(mu, sigma), 1).rsample((n,))  # (n, groups, L)
    z.pow(2).sum(-1).mean(0).sum().backward()
    for grad, exact in ((mu.grad, 2 * mu0), (sigma.grad, 2 * sigma0)):
        est, se = mean_se(grad)
        assert ((est - exact).abs() < 4 * se).all(), (est, exact, se)
        torch.testing.assert_close(est, exact, rtol=0.02, atol=0.02)

    # the same through vaekit's GaussianEncoder, parameterized by (mu, log sigma^2):
    # d/dmu = 2 mu and d/dlog sigma^2 = 2 sigma * sigma / 2 = sigma^2
    params = torch.cat([mu0, torch.log(sigma0**2)]).repeat(groups, 1)
    enc = GaussianEncoder(FixedParams(params), L)
    q = enc(torch.zeros(groups, 1, dtype=torch.float64))
    assert isinstance(q, Independent) and q.event_shape == (L,) and q.batch_shape == (groups,)
    q.rsample((n,)).pow(2).sum(-1).mean(0).sum().backward()
    g_mu, se_mu = mean_se(enc.net.p.grad[:, :L])
    g_lv, se_lv = mean_se(enc.net.p.grad[:, L:])
    assert ((g_mu - 2 * mu0).abs() < 4 * se_mu).all()
    assert ((g_lv - sigma0**2).abs() < 4 * se_lv).all()
    torch.testing.assert_close(g_lv, sigma0**2, rtol=0.03, atol=0.02)


# ------------------------------------------- linear-Gaussian: exact log p(x)

D, L, S = 5, 2, 0.5  # data dim, latent dim, noise std


def linear_gaussian():
    """W with orthogonal columns (so the true posterior is diagonal), 4 data points, log p(x)."""
    lg = LinearGaussian.random(D, L, s=S, seed=42)
    x = lg.sample(4, seed=1)
    cov = lg.W @ lg.W.T + S**2 * torch.eye(D, dtype=torch.float64)
    log_px = MultivariateNormal(lg.b, cov).log_prob(x)  # the closed form, computed here
    return lg, x, log_px


def test_true_posterior_gives_log_px_with_zero_variance():
    lg, x, log_px = linear_gaussian()
    W, b, model = lg.W, lg.b, lg.vae()
    C = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + W.T @ W / S**2)
    assert (C - torch.diag(torch.diagonal(C))).abs().max() < 1e-12  # diagonal, as assumed
    with torch.no_grad():
        q = model.posterior(x)
        torch.testing.assert_close(q.base_dist.loc, (x - b) @ W @ C / S**2)
        torch.testing.assert_close(q.base_dist.scale**2, torch.diagonal(C).expand(4, L))
        reps = 200
        one_sample = elbo(model, x.repeat(reps, 1), kl="mc").value.view(reps, 4)
        assert (one_sample - log_px).abs().max() < 1e-4  # every draw, not just on average
        assert (log_weights(model, x, 300) - log_px).abs().max() < 1e-4
        assert (iwae_bound(model, x, 50) - log_px).abs().max() < 1e-4
        est = estimate_log_px(model, x, 64)
        assert (est.log_px - log_px).abs().max() < 1e-4
        assert (est.ess - 64).abs().max() < 1e-6  # equal weights
        # with the analytic KL the one-sample ELBO varies but is log p(x) on average
        ana = elbo(model, x.repeat(20_000, 1), kl="analytic").value.view(20_000, 4)
        m, se = mean_se(ana)
        assert (ana.std(0) > 0.1).all()
        assert ((m - log_px).abs() < 4 * se).all()


def test_elbo_below_iwae_below_log_px_and_iwae_tightens_with_k():
    lg, x, log_px = linear_gaussian()
    model = lg.vae(shift=0.3, var_scale=1.5)
    reps, ks = 300, (1, 10, 100, 1000)
    xr = x.repeat(reps, 1)
    with torch.no_grad():
        gap_elbo, se_elbo = mean_se((log_px.repeat(reps) - elbo(model, xr).value).flatten())
        gaps = {k: mean_se((log_px.repeat(reps) - iwae_bound(model, xr, k, chunk=250)).flatten())
                for k in ks}
    # ELBO = IWAE_1 in expectation, both clearly below log p(x)
    assert gap_elbo > 0.5 and gaps[1][0] > 0.5
    assert abs(gap_elbo - gaps[1][0]) < 4 * math.hypot(se_elbo, gaps[1][1])
    # the bound tightens with k
    for k_lo, k_hi in ((1, 10), (10, 100)):
        (g_lo, s_lo), (g_hi, s_hi) = gaps[k_lo], gaps[k_hi]
        assert g_lo - g_hi > 4 * math.hypot(s_lo, s_hi), (k_lo, k_hi, gaps)
    assert gaps[1000][0] < gaps[100][0] + 3 * math.hypot(gaps[100][1], gaps[1000][1])
    # every IWAE_k <= log p(x) (up to MC error); IWAE_1000 is tight
    for k in ks:
        assert gaps[k][0] > -4 * gaps[k][1], (k, gaps[k])
    assert abs(gaps[1000][0]) < 0.05
    assert gap_elbo > gaps[1000][0] + 0.5

    # the evaluation estimator: independent noise tables per seed, 8 rows of each x per call
    per_seed = {k: [] for k in ks}
    with torch.no_grad():
        for seed in range(25):
            est = estimate_log_px(model, x.repeat(8, 1), 1000, seed=seed, prefix_ks=(1, 10, 100))
            for k in ks:
                v = est.log_px if k == 1000 else est.prefix[k]
                per_seed[k].append((log_px.repeat(8) - v).mean())
            assert ((est.ess >= 1) & (est.ess <= 1000)).all()
    egaps = {k: mean_se(torch.stack(v)) for k, v in per_seed.items()}
    assert egaps[1][0] > 0.5
    assert abs(egaps[1][0] - gap_elbo) < 4 * math.hypot(egaps[1][1], se_elbo)
    for k_lo, k_hi in ((1, 10), (10, 100)):
        assert egaps[k_lo][0] - egaps[k_hi][0] > 4 * math.hypot(egaps[k_lo][1], egaps[k_hi][1])
    diff, diff_se = mean_se(torch.stack(per_seed[100]) - torch.stack(per_seed[1000]))
    assert diff > -3 * diff_se  # nested samples: IWAE_1000 >= IWAE_100 on average
    assert egaps[1000][0] > -4 * egaps[1000][1]
    assert abs(egaps[1000][0]) < 0.05


# ------------------------------------------------------------ IWAE_1 = ELBO


def test_iwae_one_sample_equals_elbo_in_expectation(tiny_model):
    model = tiny_model(data_shape=(6,), likelihood="gaussian")
    x = torch.randn(5, 6)
    reps = 20_000
    with torch.no_grad():
        iw = iwae_bound(model, x.repeat(reps, 1), 1).view(reps, 5)
        el = elbo(model, x.repeat(reps, 1), kl="mc").value.view(reps, 5)
    (m1, s1), (m2, s2) = mean_se(iw), mean_se(el)
    assert ((m1 - m2).abs() < 4 * (s1**2 + s2**2).sqrt()).all(), (m1, m2)
    assert (s1 < 0.1).all()


def test_iwae_and_elbo_equal_per_sample_with_the_same_noise(tiny_model):
    model = tiny_model(data_shape=(6,), likelihood="gaussian", latent_dim=3)
    x = torch.randn(5, 6)
    eps = torch.randn(1, 5, 3)
    with torch.no_grad():
        lw = log_weights(model, x, 1, eps=eps)  # (1, 5)
        # by hand: z = mu + sigma eps; log p(x|z) + log p(z) - log q(z|x), all Gaussians
        mu, log_var = model.encoder.params(x)
        z = mu + torch.exp(0.5 * log_var) * eps[0]
        dec_mean = model.likelihood.decoder(z)
        sig2 = math.exp(float(model.likelihood.log_var))  # sigma^2 = 1 by default
        log_px_z = (-0.5 * (x - dec_mean).pow(2) / sig2
                    - 0.5 * math.log(2 * math.pi * sig2)).sum(-1)
        log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_qz = (-0.5 * eps[0].pow(2) - 0.5 * log_var - 0.5 * math.log(2 * math.pi)).sum(-1)
        manual = log_px_z + log_pz - log_qz
        torch.testing.assert_close(lw[0], manual, atol=1e-5, rtol=1e-5)
        # IWAE_1 and the mc-KL ELBO draw the same noise after the same seed: equal per sample
        torch.manual_seed(7)
        iw = iwae_bound(model, x, 1)
        torch.manual_seed(7)
        el = elbo(model, x, kl="mc")
        torch.manual_seed(7)
        eps7 = torch.randn(1, 5, 3)
    torch.testing.assert_close(iw, el.value, atol=1e-5, rtol=0)
    torch.testing.assert_close(iw, log_weights(model, x, 1, eps=eps7)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(el.value, el.log_px_z - el.kl)
    # IWAE computed in chunks of 3 samples is the same bound: equal in expectation
    with torch.no_grad():
        a = iwae_bound(model, x.repeat(2000, 1), 10).view(2000, 5)
        b = iwae_bound(model, x.repeat(2000, 1), 10, chunk=3).view(2000, 5)
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    assert ((ma - mb).abs() < 4 * (sa**2 + sb**2).sqrt()).all()
