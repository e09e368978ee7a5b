"""Every fast path against the plain path: same loss and gradients within tolerance."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig, RunConfig, TrainConfig
from vaekit.evaluation import estimate_log_px
from vaekit.models import build_model
from vaekit.objectives import elbo, elbo_loss
from vaekit.train.trainer import loss_fn, make_optimizer

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian-gamma", "gaussian-diag"]


def _model(likelihood: str, shape=(3, 4)):
    torch.manual_seed(0)
    m = build_model(ModelConfig(latent_dim=3, hidden=[16], likelihood=likelihood,
                                data_shape=list(shape), gamma_init=0.3))
    if likelihood == "gaussian-diag":
        torch.nn.init.normal_(m.likelihood.log_var, std=0.5)
    return m


def _data(likelihood: str, n: int = 9, shape=(3, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, *shape, generator=g)
    return (x < 0.5).float() if likelihood == "bernoulli" else x


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_fused_elbo_loss_matches_elbo_and_its_gradients(likelihood):
    model, x = _model(likelihood), _data(likelihood)
    params = list(model.parameters())
    torch.manual_seed(7)
    fast = elbo_loss(model, x, beta=0.6)
    g_fast = torch.autograd.grad(fast, params)
    torch.manual_seed(7)  # the same noise eps
    plain = -elbo(model, x, beta=0.6).value.mean()
    g_plain = torch.autograd.grad(plain, params)
    assert fast.item() == pytest.approx(plain.item(), rel=1e-6)
    for a, b in zip(g_fast, g_plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_log_prob_sum_and_pairwise_match_the_distribution(likelihood):
    model, x = _model(likelihood), _data(likelihood)
    lik = model.likelihood
    z = torch.randn(5, 3)
    params = lik.decoder(z)  # (5, 3, 4)
    direct = lik(z).log_prob(x[:5])  # (5,)
    assert lik.log_prob_sum(params, x[:5]).item() == pytest.approx(direct.sum().item(), rel=1e-6)
    pair = lik.pairwise_log_prob(params, x)  # (9, 5)
    brute = lik(z.unsqueeze(0)).log_prob(x.unsqueeze(1))  # broadcast (9, 5)
    assert pair.shape == (9, 5)
    assert torch.allclose(pair, brute.double(), rtol=1e-6, atol=1e-4)


def test_trainer_loss_uses_the_fast_path_only_where_it_is_exact():
    model, x = _model("bernoulli"), _data("bernoulli")
    cfg = RunConfig(train=TrainConfig(kl="mc", beta=0.5))
    torch.manual_seed(3)
    mc = loss_fn(model, x, cfg)
    torch.manual_seed(3)
    assert mc.item() == pytest.approx(-elbo(model, x, 0.5, kl="mc").value.mean().item())
    cfg.train.kl = "analytic"
    torch.manual_seed(3)
    fast = loss_fn(model, x, cfg)
    torch.manual_seed(3)
    assert fast.item() == pytest.approx(-elbo(model, x, 0.5).value.mean().item(), rel=1e-6)


def test_fused_adam_matches_foreach_adam():
    ref, fused = _model("gaussian"), _model("gaussian")
    x = _data("gaussian")
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, foreach=True)
    opt = make_optimizer(fused, 1e-2)
    for step in range(5):
        for m, o in ((ref, opt_ref), (fused, opt)):
            torch.manual_seed(step)
            loss = elbo_loss(m, x)
            o.zero_grad()
            loss.backward()
            o.step()
    for a, b in zip(ref.parameters(), fused.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_direct_adam_step_is_bitwise_opt_step():
    from vaekit.train.optim import AdamStep

    ref, fast = _model("gaussian-gamma"), _model("gaussian-gamma")
    x = _data("gaussian-gamma")
    opt_ref, opt = make_optimizer(ref, 1e-2), make_optimizer(fast, 1e-2)
    step = AdamStep(opt)
    assert step.direct
    plain_calls, opt_step = [], opt.step
    opt.step = lambda: (plain_calls.append(1), opt_step())
    for i in range(6):
        for group in (*opt_ref.param_groups, *opt.param_groups):
            group["lr"] = 1e-2 / (i + 1)  # a schedule changes lr between steps
        for m, do_step in ((ref, opt_ref.step), (fast, step)):
            torch.manual_seed(i)
            m.zero_grad()
            elbo_loss(m, x).backward()
            do_step()
    assert plain_calls == [1]  # only the first step (it creates the state) is opt.step()
    for a, b in zip(ref.parameters(), fast.parameters(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt_ref.state_dict()["state"], opt.state_dict()["state"]
    for k in sa:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[k][key], sb[k][key]), (k, key)


def test_direct_adam_step_falls_back_where_it_would_differ():
    from vaekit.train.optim import AdamStep

    model = _model("gaussian")
    assert not AdamStep(torch.optim.Adam(model.parameters(), amsgrad=True, fused=True)).direct
    assert not AdamStep(torch.optim.SGD(model.parameters(), lr=0.1)).direct
    opt = make_optimizer(model, 1e-2)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    step = AdamStep(opt)
    for _ in range(2):
        model.zero_grad()
        elbo_loss(model, _data("gaussian")).backward()
        step()
    assert calls == [1, 1]  # hooks still run: the direct call is skipped


def test_bf16_autocast_loss_is_close_to_fp32():
    model, x = _model("bernoulli"), _data("bernoulli", n=64)
    torch.manual_seed(0)
    fp32 = elbo_loss(model, x).item()
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = elbo_loss(model, x)
    assert bf16.dtype == torch.float32  # the loss itself is reduced in fp32
    assert bf16.item() == pytest.approx(fp32, rel=2e-2)


def test_chunked_log_px_equals_unchunked():
    model = _model("bernoulli", shape=(12,))
    x = _data("bernoulli", n=20, shape=(12,))
    whole = estimate_log_px(model, x, 200, seed=1, batch_size=20, chunk_size=200)
    chunked = estimate_log_px(model, x, 200, seed=1, batch_size=3, chunk_size=17)
    assert torch.allclose(whole.log_px, chunked.log_px, rtol=1e-6, atol=1e-6)
    assert torch.allclose(whole.ess, chunked.ess, rtol=1e-5)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_hand_written_gradients_match_autograd(likelihood):
    from vaekit.train.fused import FusedELBO

    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=[16, 8], likelihood=likelihood,
                                    data_shape=[3, 4], gamma_init=0.3))
    if likelihood == "gaussian-diag":
        torch.nn.init.normal_(model.likelihood.log_var, std=0.5)
    x = _data(likelihood)
    torch.manual_seed(5)
    ref = elbo_loss(model, x, beta=0.7)
    ref.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    fused = FusedELBO(model)
    for _ in range(2):  # 2nd call: gradients written into the existing buffers, not added
        torch.manual_seed(5)
        got = fused(x, beta=0.7)
        assert got.item() == pytest.approx(ref.item(), rel=1e-6)
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.allclose(p.grad, want[name], rtol=1e-5, atol=1e-6), name


def test_fused_path_is_used_only_where_exact(tmp_path):
    from vaekit.train.fused import supports
    from vaekit.train.trainer import use_fused

    relu = build_model(ModelConfig(latent_dim=2, hidden=[8], data_shape=[5]))
    tanh = build_model(ModelConfig(latent_dim=2, hidden=[8], data_shape=[5], activation="tanh"))
    assert supports(relu) and not supports(tanh)
    cfg = RunConfig()
    assert use_fused(relu, cfg) and not use_fused(tanh, cfg)
    for change in ({"kl": "mc"}, {"objective": "iwae"}, {"compile": True}, {"fused": False}):
        other = RunConfig(train=TrainConfig(**change))
        assert not use_fused(relu, other), change
    assert use_fused(relu, RunConfig(train=TrainConfig(precision="bf16")))  # bf16 matmuls


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_bf16_hand_written_gradients_match_autocast(likelihood):
    from vaekit.train.fused import FusedELBO

    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=4, hidden=[64, 32], likelihood=likelihood,
                                    data_shape=[48], gamma_init=0.3))
    x = _data(likelihood, n=64, shape=(48,))
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = elbo_loss(model, x, beta=0.7)
    ref.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    got = FusedELBO(model, torch.bfloat16)(x, beta=0.7)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-2)
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32, name  # parameters and gradients stay fp32
        err = (p.grad - want[name]).norm() / want[name].norm()
        assert err < 0.02, (name, float(err))  # both round the matmuls to bf16 (~2e-3)


def test_training_with_and_without_the_fused_path_agrees(tmp_path):
    from vaekit.config import DataConfig
    from vaekit.train import train

    def run(fused: bool):
        cfg = RunConfig(data=DataConfig(name="digits", limit=300),
                        model=ModelConfig(latent_dim=4, hidden=[32]),
                        train=TrainConfig(epochs=2, batch_size=32, fused=fused, device="cpu"))
        return train(cfg, tmp_path / str(fused), progress=False)

    a, b = run(True), run(False)
    assert a.history[-1]["val_elbo"] == pytest.approx(b.history[-1]["val_elbo"], abs=1e-3)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-4), name
