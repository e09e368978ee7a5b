"""Contracts that every registry entry keeps: it builds from its options, trains one step,
survives a checkpoint round trip with identical outputs, and the fast path either equals
autograd (loss and every gradient) or refuses, and says why."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn

from vaekit.api import load_model
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import Batch
from vaekit.models import VAE, build_model
from vaekit.noise import IndexedNoise
from vaekit.objectives import elbo, log_weights
from vaekit.registry import ALL, LIKELIHOODS, NETWORKS, OBJECTIVES, PRIORS
from vaekit.train import fit, setup_run, standard_callbacks
from vaekit.train.fast import FastELBO, FastPathRefusedError, applies, fast_elbo
from vaekit.train.step import loss_fn

ENTRIES = [(reg, name) for reg in ALL for name in reg.names()]


@pytest.mark.parametrize(("registry", "name"), ENTRIES,
                         ids=[f"{r.kind}:{n}" for r, n in ENTRIES])
def test_options_are_the_builders_keyword_arguments(registry, name):
    entry = registry.get(name)
    opts = registry.options(name)
    assert opts.name == name and entry.description
    opts.validate()
    params = inspect.signature(entry.build).parameters
    for field in dataclasses.fields(opts):
        if field.name != "name":
            assert field.name in params, (name, field.name)  # built as build(..., field=value)


def _config(tmp_overrides: dict) -> RunConfig:
    """A tiny run on 65 digits (8x8, 17 levels, labels), 3 steps of batch 32."""
    model = {"latent_dim": 3, "arch": {"name": "mlp", "hidden": [16]}, **tmp_overrides.get("model",
                                                                                           {})}
    return RunConfig(DataConfig(name="digits", limit=72, val_fraction=0.1),
                     ModelConfig(**model),
                     TrainConfig(**{"epochs": 1, "batch_size": 32, "device": "cpu", "lr": 1e-2,
                                    **tmp_overrides.get("train", {})}))


CASES = {f"{reg.kind}:{name}": {key: {field: name}}
         for reg, key, field in ((LIKELIHOODS, "model", "likelihood"),
                                 (PRIORS, "model", "prior"), (NETWORKS, "model", "arch"),
                                 (OBJECTIVES, "train", "objective"))
         for name in reg.names()}
CASES["model:conditional"] = {"model": {"conditional": True}}
CASES["model:conditional-mog"] = {"model": {"conditional": True, "prior": "mog"}}
CASES["network:mlp-tanh"] = {"model": {"arch": {"name": "mlp", "hidden": [16],
                                                "activation": "tanh"}}}
CASES["network:mlp-linear"] = {"model": {"arch": {"name": "mlp", "hidden": []}}}
CASES["network:mlp-skip"] = {"model": {"arch": {"name": "mlp", "hidden": [16, 8], "skip": True}}}
CASES["network:conv-small"] = {"model": {"arch": {"name": "conv", "channels": [4], "fc": 16}}}
CASES["network:resnet-conditional"] = {"model": {"arch": {"name": "resnet", "channels": [4, 8],
                                                          "fc": 16}, "conditional": True}}


def _outputs(model: nn.Module, test: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic outputs: the ELBO with fixed noise and samples of a seeded generator."""
    eps = IndexedNoise(model.latent_dim, seed=3).block(torch.arange(len(test)), 1)[0]
    with torch.no_grad():
        value = elbo(model, test, eps=eps).value
    y = None if not model.conditional else torch.arange(5) % 10
    return value, model.sample(5, generator=torch.Generator().manual_seed(1), y=y)


@pytest.mark.parametrize("case", list(CASES))
def test_every_entry_trains_round_trips_and_fast_path_is_exact_or_refuses(case, tmp_path):
    cfg = _config(CASES[case])
    run = setup_run(cfg, tmp_path / "run")
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    fit(run, standard_callbacks(run, progress=False))
    assert run.state.step == len(run.loader) == 3 and len(run.history) == 1
    for n, p in run.model.named_parameters():
        assert torch.isfinite(p).all(), n
    assert any(not torch.equal(before[n], p) for n, p in run.model.named_parameters())
    # checkpoint round trip: a run directory alone rebuilds the same model
    run.checkpoint()
    loaded, _ = load_model(tmp_path / "run")
    test = run.data.test[:16]
    for a, b in zip(_outputs(run.model.eval(), test), _outputs(loaded, test), strict=True):
        assert torch.equal(a, b), case
    # the fast path: exact, or refused with a reason in the run log
    _check_fast_path(run.model, cfg, run.data.test[:24])
    assert f"fast path: {run.fast_path}" in (tmp_path / "run" / "train.log").read_text()


def _check_fast_path(model: nn.Module, cfg: RunConfig, batch: Batch) -> None:
    fast, status = fast_elbo(model, cfg)
    if fast is None:
        assert status.startswith("off (") and len(status) > 10, status
        return
    assert status == "on"
    model.train()
    params = dict(model.named_parameters())
    torch.manual_seed(11)
    ref = loss_fn(model, batch, cfg)
    grads = torch.autograd.grad(ref, list(params.values()))
    torch.manual_seed(11)
    got = fast(batch, cfg.train.beta)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for (name, p), g in zip(params.items(), grads, strict=True):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6), name


# ---------------------------------------------------- the fast path refuses what it does not know


class MyVAE(VAE):
    """A user's subclass: could change any step of the objective."""


def _digits_batch(n: int = 16) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch((torch.rand(n, 8, 8, generator=g) < 0.5).float(), torch.arange(n) % 10)


def _refusing_model(case: str) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, arch={"name": "mlp", "hidden": [16]}, data_shape=[8, 8],
                      prior="gaussian" if case == "learned-prior" else "standard-normal",
                      conditional=case == "conditional", num_classes=10)
    model = build_model(cfg)
    if case == "subclass":
        model = MyVAE(model.encoder, model.likelihood, model.prior)
    return model


@pytest.mark.parametrize(("case", "reason"), [("learned-prior", "prior LearnedGaussian"),
                                              ("conditional", "conditional model"),
                                              ("subclass", "model type MyVAE")])
def test_fast_path_refuses_and_every_parameter_trains_through_autograd(case, reason):
    model, cfg = _refusing_model(case), RunConfig()
    assert reason in applies(model, cfg)
    fast, status = fast_elbo(model, cfg)
    assert fast is None and reason in status
    loss = loss_fn(model, _digits_batch(), cfg)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # every parameter learns


def test_fast_path_refuses_frozen_parameters():
    model = _refusing_model("none")
    model.likelihood.decoder.requires_grad_(False)  # e.g. a fine-tuning user freezes it
    with pytest.raises(FastPathRefusedError, match="frozen"):
        FastELBO(model)


def test_fast_path_refuses_a_parameter_it_would_not_write():
    model = _refusing_model("none")
    model.likelihood.extra = nn.Parameter(torch.zeros(3))  # e.g. a user's added scale
    assert applies(model, RunConfig()) is None  # every type is known ...
    with pytest.raises(FastPathRefusedError, match=r"likelihood\.extra"):
        FastELBO(model)  # ... but it would not write this gradient
    assert "likelihood.extra" in fast_elbo(model, RunConfig())[1]


# ---------------------------------------------------------------- the one ELBO, by hand


def test_elbo_with_injected_noise_equals_a_hand_computation():
    torch.manual_seed(0)
    model = _refusing_model("none").double()
    batch = _digits_batch(6)
    x = batch.x.double()
    eps = torch.randn(6, 3, dtype=torch.float64)
    t = elbo(model, x, beta=0.3, eps=eps)
    mu, log_var = model.encoder.params(x)
    z = mu + torch.exp(0.5 * log_var) * eps
    logits = model.likelihood.decoder(z)
    log_px_z = (x * logits - torch.nn.functional.softplus(logits)).sum((1, 2))
    kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(1)
    torch.testing.assert_close(t.log_px_z, log_px_z, rtol=0, atol=1e-12)
    torch.testing.assert_close(t.kl, kl, rtol=0, atol=1e-12)
    torch.testing.assert_close(t.value, log_px_z - 0.3 * kl, rtol=0, atol=1e-12)
    # IWAE with k = 1 on the same noise is the ELBO with a one-sample KL, per example
    lw = log_weights(model, x, 1, eps=eps[None])[0]
    mc = elbo(model, x, kl="mc", eps=eps)
    torch.testing.assert_close(lw, mc.value, rtol=0, atol=1e-12)
    log_q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(mc.kl, log_q - log_p, rtol=0, atol=1e-12)


def test_conditional_model_uses_the_labels():
    model = _refusing_model("conditional")
    batch = _digits_batch(10)
    with pytest.raises(ValueError, match="labels"):
        elbo(model, batch.x)  # no y: refused, not silently unconditional
    eps = torch.zeros(10, 3)
    a = elbo(model, batch, eps=eps).value
    b = elbo(model, Batch(batch.x, (batch.y + 1) % 10), eps=eps).value
    assert not torch.allclose(a, b)  # the labels change p(x|z, y) and q(z|x, y)
    one = model.sample(4, y=3, generator=torch.Generator().manual_seed(0))
    also = model.sample(4, y=torch.full((4,), 3), generator=torch.Generator().manual_seed(0))
    assert one.shape == (4, 8, 8) and torch.equal(one, also)
