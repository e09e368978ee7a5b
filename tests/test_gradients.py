"""Gradient estimators against a linear-Gaussian toy whose ELBO gradient is exact, the
score-function training objective, and `vaekit gradients`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vaekit.config import RunConfig
from vaekit.data import Batch
from vaekit.distributions import FixedGaussianLikelihood, GaussianEncoder, StandardNormal
from vaekit.errors import ConfigError
from vaekit.evaluation.gradients import (
    ESTIMATORS,
    draw_gradients,
    flat_grads,
    gradient_study,
    parameter_groups,
)
from vaekit.models import VAE, LinearGaussian
from vaekit.objectives.score import elbo_score_loss, score_terms
from vaekit.registry import OBJECTIVES
from vaekit.report.plots import variance_figure
from vaekit.train.fast import applies

D, L, SIGMA = 3, 2, 0.5
REPEATS = 300


def _toy(seed: int = 0) -> tuple[VAE, Batch]:
    """Linear encoder and decoder, N(0, I) prior, fixed sigma: 4 examples in R^3."""
    g = torch.Generator().manual_seed(seed)
    enc, dec = nn.Linear(D, 2 * L), nn.Linear(L, D)
    with torch.no_grad():
        for p in (*enc.parameters(), *dec.parameters()):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    model = VAE(GaussianEncoder(enc, L), FixedGaussianLikelihood(dec, (D,), sigma=SIGMA),
                StandardNormal(L)).double()
    return model, Batch(torch.randn(4, D, generator=g, dtype=torch.float64))


def _exact_elbo(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """mean_b ELBO in closed form, q = N(m, diag v), p(x|z) = N(W z + b, s^2 I):
    E_q log p(x|z) = -D/2 log(2 pi s^2) - (|x - W m - b|^2 + sum_j v_j |W_:j|^2) / (2 s^2)."""
    mu, log_var = model.encoder.params(x)
    W, b = model.likelihood.decoder.weight, model.likelihood.decoder.bias
    sq = (x - mu @ W.T - b).pow(2).sum(-1) + (log_var.exp() * W.pow(2).sum(0)).sum(-1)
    rec = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - sq / (2 * SIGMA**2)
    kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
    return (rec - kl).mean()


def _exact_gradient(model: VAE, batch: Batch) -> dict[str, torch.Tensor]:
    return flat_grads({g: _exact_elbo(model, batch.x) for g in ("encoder", "decoder")},
                      parameter_groups(model))


UNBIASED = [("reparam", 1), ("reparam-mc", 1), ("score", 1), ("score-loo", 5),
            ("score-mean", 5), ("iwae", 1), ("iwae-stl", 1), ("iwae-dreg", 1)]


@pytest.fixture(scope="module")
def toy_draws() -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """REPEATS gradient estimates of each estimator on the toy (~3 s in all)."""
    model, batch = _toy()
    out = {}
    for name, s in {*UNBIASED, ("score", 5), ("reparam", 5)}:
        torch.manual_seed(1)
        out[name, s] = draw_gradients(model, batch, name, s, REPEATS)
    return out


@pytest.mark.parametrize(("name", "samples"), UNBIASED)
def test_estimator_is_unbiased_for_the_exact_elbo_gradient(toy_draws, name, samples):
    truth = _exact_gradient(*_toy())
    for group, draws in toy_draws[name, samples].items():
        se = draws.std(0) / math.sqrt(REPEATS)
        z = (draws.mean(0) - truth[group]) / se
        assert z.abs().max() < 4, (group, z)  # every coordinate within 4 standard errors


def test_reparameterization_beats_score_function_and_baselines_reduce_its_variance(toy_draws):
    var = {key: float(d["encoder"].var(0).sum()) for key, d in toy_draws.items()}
    # measured (300 repeats, S = 5): reparam 14, score 730, leave-one-out 230, running mean 230
    assert var["reparam", 5] < 0.1 * var["score", 5]
    assert var["score-loo", 5] < 0.5 * var["score", 5]
    assert var["score-mean", 5] < 0.6 * var["score", 5]
    assert var["reparam", 5] == pytest.approx(var["reparam", 1] / 5, rel=0.3)  # 1/S averaging


def test_dreg_matches_the_iwae_gradient_and_stl_is_biased_for_k_above_1():
    model, batch = _toy()
    draws = {}
    for name in ("iwae", "iwae-stl", "iwae-dreg"):
        torch.manual_seed(2)  # the same noise for all three: paired differences
        draws[name] = draw_gradients(model, batch, name, 5, REPEATS)

    def z(name: str) -> torch.Tensor:
        diff = draws[name]["encoder"] - draws["iwae"]["encoder"]
        return diff.mean(0) / (diff.std(0) / math.sqrt(REPEATS))

    assert z("iwae-dreg").abs().max() < 4  # unbiased: E[DReG] = grad IWAE-5
    assert z("iwae-stl").abs().max() > 10  # Tucker et al. 2018: STL is biased for IWAE-k, k > 1
    for name in ("iwae-stl", "iwae-dreg"):  # the decoder gradient is the IWAE one exactly
        assert torch.equal(draws[name]["decoder"], draws["iwae"]["decoder"])
    enc_var = {n: float(d["encoder"].var(0).sum()) for n, d in draws.items()}
    assert enc_var["iwae-dreg"] < enc_var["iwae"]  # measured 15 vs 23


def test_stl_and_dreg_have_zero_variance_at_the_true_posterior():
    lg = LinearGaussian.random(D, L, s=SIGMA, seed=3)  # orthogonal W: diagonal posterior
    dec = nn.Linear(L, D).double()
    with torch.no_grad():
        dec.weight.copy_(lg.W)
        dec.bias.copy_(lg.b)
    likelihood = FixedGaussianLikelihood(dec, (D,), sigma=SIGMA).double()
    s2 = float(likelihood.log_var.exp())  # sigma^2 as the likelihood stores it
    C = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + lg.W.T @ lg.W / s2)
    enc = nn.Linear(D, 2 * L).double()
    with torch.no_grad():  # the exact posterior: m = C W^T (x - b) / s^2, log v = log diag C
        enc.weight.copy_(torch.cat([C @ lg.W.T / s2, torch.zeros(L, D, dtype=torch.float64)]))
        enc.bias.copy_(torch.cat([-(C @ lg.W.T @ lg.b) / s2, torch.diagonal(C).log()]))
    model = VAE(GaussianEncoder(enc, L), likelihood, StandardNormal(L)).double()
    x = lg.sample(4, seed=4)
    for name in ("iwae-stl", "iwae-dreg"):
        assert draw_gradients(model, x, name, 5, 20)["encoder"].abs().max() < 1e-10
    assert draw_gradients(model, x, "iwae", 5, 20)["encoder"].var(0).sum() > 1e-2


def test_gradient_study_rows_definitions_and_figure():
    model, batch = _toy()
    res = gradient_study(model, batch, samples=(1, 10), repeats=40, reference=2000)
    assert len(res["rows"]) == 2 * (2 * len(ESTIMATORS) - 1)  # no leave-one-out at S = 1
    assert res["parameters"] == {"encoder": D * 2 * L + 2 * L, "decoder": L * D + D}
    row = {(r["estimator"], r["samples"], r["group"]): r for r in res["rows"]}
    reparam = row["reparam", 10, "encoder"]
    assert reparam["variance"] == pytest.approx(row["reparam", 1, "encoder"]["variance"] / 10,
                                                rel=0.5)
    assert reparam["cosine"] > 0.9 and reparam["snr"] > 1
    assert row["score", 1, "encoder"]["cosine"] < reparam["cosine"]
    json.dumps(res)  # JSON-able
    fig = variance_figure(res)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == len(ESTIMATORS)


# ---------------------------------------------------------------- the training objective


def test_elbo_score_objective_value_gradient_and_fast_path_refusal():
    model, batch = _toy()
    torch.manual_seed(5)
    loss = elbo_score_loss(model, batch, k=4, baseline="loo")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.manual_seed(5)
    t = score_terms(model, batch, 4, baseline="loo")
    assert float(loss.detach()) == pytest.approx(-float(t.value.mean()), rel=1e-12)
    same = torch.autograd.grad(-t.surrogate.mean(), list(model.parameters()))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(grads, same, strict=True))
    with torch.no_grad():  # the value is the Monte-Carlo ELBO: the exact one within 4 s.e.
        values = torch.stack([score_terms(model, batch, 100).value.mean() for _ in range(20)])
    assert abs(values.mean() - _exact_elbo(model, batch.x)) < 4 * values.std() / math.sqrt(20)
    cfg = RunConfig.from_dict({"train": {"objective": {"name": "elbo-score"}}})
    assert applies(model, cfg) == "objective elbo-score(k=10, baseline=loo) has no hand-written " \
                                  "gradient"


def test_elbo_score_options_are_checked():
    with pytest.raises(ConfigError, match="k >= 2"):
        OBJECTIVES.options("elbo-score", k=1).validate()
    with pytest.raises(ConfigError, match="baseline"):
        OBJECTIVES.options("elbo-score", baseline="mean").validate()
    OBJECTIVES.options("elbo-score", k=1, baseline="none").validate()


# ---------------------------------------------------------------- the CLI


def test_vaekit_gradients_writes_table_json_and_figure(ring_run, cli, tmp_path):
    out, fig = tmp_path / "g.json", tmp_path / "g.png"
    res = cli("gradients", ring_run, "--samples", "1", "4", "--repeats", "4", "--batch-size",
              "32", "--reference", "40", "--json", out, "--out", fig)
    assert res.code == 0, res.err
    g = json.loads(out.read_text())
    assert g["samples"] == [1, 4] and g["batch_size"] == 32 and g["repeats"] == 4
    assert len(g["rows"]) == 2 * (2 * len(ESTIMATORS) - 1)
    assert all(-1 <= r["cosine"] <= 1 and r["variance"] >= 0 for r in g["rows"])
    assert fig.stat().st_size > 1000
    for text in ("score-loo", "iwae-dreg", "tr Cov", "SNR"):
        assert text in res.out
    cli("gradients", ring_run, "--repeats", "1").assert_user_error("--repeats")
    cli("gradients", ring_run, "--samples", "0").assert_user_error("--samples")
