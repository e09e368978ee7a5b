"""Priors: sampling, densities and KLs against torch.distributions and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.registry import PRIORS

L = 3


def _prior(name: str):
    torch.manual_seed(0)
    prior = PRIORS.build(PRIORS.options(name), L)
    with torch.no_grad():  # move learnable priors away from N(0, I)
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior


def _q(n: int = 4) -> Independent:
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(n, L, generator=g, dtype=torch.float64)
    sigma = torch.rand(n, L, generator=g, dtype=torch.float64) + 0.3
    return Independent(Normal(mu, sigma), 1)


@pytest.mark.parametrize("name", PRIORS.names())
def test_sample_and_log_prob_agree_with_the_distribution(name):
    prior = _prior(name).double()
    a = prior.sample(50_000, torch.Generator().manual_seed(2))
    b = prior.sample(50_000, torch.Generator().manual_seed(2))
    assert a.shape == (50_000, L) and a.dtype == torch.float64 and torch.equal(a, b)
    d = prior.distribution()
    z = torch.randn(7, L, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), d.log_prob(z))
    se = a.std(0) / math.sqrt(len(a))
    assert ((a.mean(0) - d.mean).abs() < 4 * se).all(), name  # samples come from p(z)
    assert ((a.var(0) / d.variance - 1).abs() < 0.05).all(), name


@pytest.mark.parametrize("name", PRIORS.names())
def test_kl_is_analytic_where_registered_and_unbiased_otherwise(name):
    prior, q = _prior(name).double(), _q()
    zs = q.sample((40_000,))
    mc = q.log_prob(zs) - prior.log_prob(zs)  # (40000, 4)
    mean, se = mc.mean(0), mc.std(0) / math.sqrt(len(mc))
    if prior.has_analytic_kl:
        exact = prior.kl(q)
        torch.testing.assert_close(exact, kl_divergence(q.base_dist, prior.distribution()
                                                        .base_dist).sum(-1))
        torch.testing.assert_close(prior.kl_per_dim(q).sum(-1), exact)
        assert ((mean - exact).abs() < 4 * se).all(), (mean, exact)
    else:  # one-sample Monte Carlo at the z the caller passes: log q(z) - log p(z)
        z = q.rsample()
        torch.testing.assert_close(prior.kl(q, z), q.log_prob(z) - prior.log_prob(z))
        assert prior.kl_per_dim(q) is None
        many = torch.stack([prior.kl(q) for _ in range(4000)])  # draws its own z
        assert ((many.mean(0) - mean).abs() < 4 * (se + many.std(0) / math.sqrt(4000))).all()


def test_standard_normal_kl_gradient_matches_autograd():
    from vaekit.distributions.priors import StandardNormal, kl_standard_normal

    mu = torch.randn(5, L, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(5, L, dtype=torch.float64, requires_grad=True)
    kl_standard_normal(mu, log_var).sum().backward()
    d_mu, d_lv = StandardNormal.kl_grad(mu.detach(), torch.exp(0.5 * log_var.detach()))
    torch.testing.assert_close(d_mu, mu.grad)
    torch.testing.assert_close(d_lv, log_var.grad)


def test_priors_without_a_density_are_refused_by_importance_sampling(tiny_model):
    from vaekit.distributions.priors import StandardNormal
    from vaekit.errors import VaekitError
    from vaekit.evaluation import estimate_log_px

    class SampleOnly(StandardNormal):
        """A prior that can only be sampled (e.g. an implicit one)."""

        has_log_prob = False

    model = tiny_model(data_shape=(6,), latent_dim=L)
    model.prior = SampleOnly(L)
    x = torch.randn(5, 6)
    with pytest.raises(VaekitError, match="needs the prior's log-density"):
        estimate_log_px(model, x, 10)
    naive = estimate_log_px(model, x, 10, proposal="prior")  # needs samples only
    assert torch.isfinite(naive.log_px).all()
