"""Every fast path against the plain path: same loss and gradients within tolerance."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig, RunConfig, TrainConfig
from vaekit.data import Batch
from vaekit.evaluation import estimate_log_px
from vaekit.models import build_model
from vaekit.objectives import elbo, elbo_loss
from vaekit.train.fast import FastELBO, applies
from vaekit.train.fast.adam import AdamStep
from vaekit.train.step import loss_fn, make_optimizer

LIKELIHOODS = ["bernoulli", "gaussian", "gaussian-gamma", "gaussian-diag"]


def _config(likelihood: str, shape=(3, 4), hidden=(16,), latent: int = 3) -> ModelConfig:
    lik = {"name": likelihood, **({"gamma_init": 0.3} if "-" in likelihood else {})}
    return ModelConfig(latent_dim=latent, arch={"name": "mlp", "hidden": list(hidden)},
                       likelihood=lik, data_shape=list(shape))


def _model(likelihood: str, shape=(3, 4), hidden=(16,), latent: int = 3):
    torch.manual_seed(0)
    m = build_model(_config(likelihood, shape, hidden, latent))
    if likelihood == "gaussian-diag":
        torch.nn.init.normal_(m.likelihood.log_var, std=0.5)
    return m


def _data(likelihood: str, n: int = 9, shape=(3, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, *shape, generator=g)
    return (x < 0.5).float() if likelihood == "bernoulli" else x


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_log_prob_and_pairwise_match_the_distribution(likelihood):
    model, x = _model(likelihood), _data(likelihood)
    lik = model.likelihood
    z = torch.randn(5, 3)
    params = lik.params(z)  # (5, 3, 4)
    direct = lik(z).log_prob(x[:5])  # (5,) torch.distributions
    torch.testing.assert_close(lik.log_prob_params(params, x[:5]), direct, rtol=1e-6, atol=1e-4)
    pair = lik.pairwise_log_prob(params, x)  # (9, 5)
    brute = lik(z.unsqueeze(0)).log_prob(x.unsqueeze(1))  # broadcast (9, 5)
    assert pair.shape == (9, 5)
    assert torch.allclose(pair, brute.double(), rtol=1e-6, atol=1e-4)


def test_trainer_loss_is_the_registered_objective():
    model, x = _model("bernoulli"), _data("bernoulli")
    cfg = RunConfig(train=TrainConfig(objective={"name": "elbo", "kl": "mc"}, beta=0.5))
    torch.manual_seed(3)
    mc = loss_fn(model, Batch(x), cfg)
    torch.manual_seed(3)
    assert mc.item() == pytest.approx(-elbo(model, x, 0.5, kl="mc").value.mean().item())
    cfg = RunConfig(train=TrainConfig(objective={"name": "iwae", "k": 4}))
    torch.manual_seed(3)
    iw = loss_fn(model, Batch(x), cfg)
    from vaekit.objectives import iwae_bound

    torch.manual_seed(3)
    assert iw.item() == pytest.approx(-iwae_bound(model, x, 4).mean().item())


def _ops(fn) -> set[str]:
    """Names of the aten ops that ``fn()`` ran (torch's profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


def test_fused_adam_matches_foreach_adam():
    ref, fused = _model("gaussian"), _model("gaussian")
    x = _data("gaussian")
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, foreach=True)
    opt = make_optimizer(fused, 1e-2)
    assert all(g["fused"] and not g["foreach"] for g in opt.param_groups)  # no fallback
    for step in range(5):
        for m, o in ((ref, opt_ref), (fused, opt)):
            torch.manual_seed(step)
            loss = elbo_loss(m, x)
            o.zero_grad()
            loss.backward()
            ran = _ops(o.step)
            # the single-kernel update ran for make_optimizer's Adam, and only there
            assert ("aten::_fused_adam_" in ran) == (o is opt), sorted(ran)
    for a, b in zip(ref.parameters(), fused.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_direct_adam_step_is_bitwise_opt_step():
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
    model = _model(likelihood, hidden=(16, 8))
    x = _data(likelihood)
    torch.manual_seed(5)
    ref = elbo_loss(model, x, beta=0.7)
    ref.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    fast = FastELBO(model)
    for _ in range(2):  # 2nd call: gradients written into the existing buffers, not added
        torch.manual_seed(5)
        got = fast(Batch(x), beta=0.7)
        assert got.item() == pytest.approx(ref.item(), rel=1e-6)
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.allclose(p.grad, want[name], rtol=1e-5, atol=1e-6), name


def test_fast_path_applies_only_where_exact():
    relu = _model("bernoulli", shape=(5,), latent=2, hidden=(8,))
    cfg = RunConfig()
    assert applies(relu, cfg) is None
    tanh = build_model(ModelConfig(latent_dim=2, arch={"name": "mlp", "hidden": [8],
                                                       "activation": "tanh"}, data_shape=[5]))
    assert applies(tanh, cfg) is None  # every type is covered: the networks are checked next
    from vaekit.train.fast import fast_elbo

    assert fast_elbo(relu, cfg)[1] == "on"
    assert fast_elbo(tanh, cfg)[1].startswith("off (the encoder or decoder is not")
    refusals = {"mc": {"objective": {"name": "elbo", "kl": "mc"}},
                "iwae": {"objective": "iwae"}, "compile": {"compile": True},
                "--no-fused": {"fused": False}}
    for fragment, change in refusals.items():
        reason = applies(relu, RunConfig(train=TrainConfig(**change)))
        assert reason is not None and fragment in reason, (change, reason)
    assert "world size 2" in applies(relu, cfg, world_size=2)
    assert applies(relu, RunConfig(train=TrainConfig(precision="bf16"))) is None  # bf16 matmuls


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_bf16_hand_written_gradients_match_autocast(likelihood):
    model = _model(likelihood, shape=(48,), hidden=(64, 32), latent=4)
    x = _data(likelihood, n=64, shape=(48,))
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = elbo_loss(model, x, beta=0.7)
    ref.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    got = FastELBO(model, torch.bfloat16)(Batch(x), beta=0.7)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-2)
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32, name  # parameters and gradients stay fp32
        err = (p.grad - want[name]).norm() / want[name].norm()
        assert err < 0.02, (name, float(err))  # both round the matmuls to bf16 (~2e-3)


def test_training_with_and_without_the_fused_path_agrees(tmp_path):
    from vaekit.api import train
    from vaekit.config import DataConfig

    def run(fused: bool):
        cfg = RunConfig(data=DataConfig(name="digits", limit=300),
                        model=ModelConfig(latent_dim=4, arch={"name": "mlp", "hidden": [32]}),
                        train=TrainConfig(epochs=2, batch_size=32, fused=fused, device="cpu"))
        return train(cfg, tmp_path / str(fused), progress=False)

    a, b = run(True), run(False)
    assert a.fast_path == "on" and b.fast_path == "off (turned off (--no-fused))"
    assert a.history[-1]["val_elbo"] == pytest.approx(b.history[-1]["val_elbo"], abs=1e-3)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-4), name
