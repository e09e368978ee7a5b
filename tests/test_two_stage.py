"""Conv networks, learned gamma, the intrinsic-dimension diagnostic and the two-stage VAE."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaekit.api import load_model
from vaekit.config import DataConfig, ModelConfig, RunConfig, Stage2Config, TrainConfig
from vaekit.data import Batch
from vaekit.data.datasets import Dataset
from vaekit.data.pipeline import PreparedData, fixed_transform
from vaekit.data.transforms import protocol
from vaekit.distributions.priors import Prior
from vaekit.evaluation.diagnostics import USED_VARIANCE, latent_diagnostics, variance_gap
from vaekit.models import build_model
from vaekit.models.two_stage import CodeMixture, TwoStagePrior, TwoStageVAE
from vaekit.numerics import derive_seed
from vaekit.registry import LIKELIHOODS
from vaekit.report.rows import evaluation_notes, variance_split_note
from vaekit.report.text import format_diagnostics
from vaekit.train import fit, setup_run
from vaekit.train.stages import stage2_run_config, stage2_seed


@pytest.mark.parametrize("arch", ["conv", "resnet"])
@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (3, 32, 32), (27, 27), (3, 9, 13)])
def test_conv_networks_fit_any_image_size(arch, shape):
    for lik in ("bernoulli", "discretized-logistic"):
        cfg = ModelConfig(latent_dim=5, arch={"name": arch, "channels": [4, 8], "fc": 16},
                          likelihood=lik, data_shape=list(shape), data_levels=256)
        model = build_model(cfg)
        x = torch.rand(3, *shape)
        z = model.posterior(x).rsample((2,))  # (2, 3, 5): leading dims of any number
        params = model.likelihood.params(z)
        assert params.shape == (2, 3, *model.likelihood.param_shape(shape))
        assert model.likelihood.log_prob(z, x).shape == (2, 3)


def test_learned_gamma_density_and_its_optimum_is_the_mean_squared_error():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, likelihood={"name": "gaussian-gamma",
                                                              "gamma_init": 0.3},
                                    arch={"name": "mlp", "hidden": [8]}, data_shape=[5]))
    lik = model.likelihood
    z, x = torch.randn(7, 2), torch.randn(7, 5)
    mu = lik.params(z)
    ref = torch.distributions.Normal(mu, math.sqrt(0.3)).log_prob(x).sum(-1)
    torch.testing.assert_close(lik.log_prob(z, x), ref)
    # for fixed reconstructions d/d log gamma of sum log p vanishes at gamma = mean((x - mu)^2)
    mse = float((x - mu.detach()).pow(2).mean())
    with torch.no_grad():
        lik.log_gamma.fill_(math.log(mse))
    assert lik.extra_metrics()["gamma"] == pytest.approx(mse, rel=1e-5)
    grad, = torch.autograd.grad(lik.log_prob_params(mu.detach(), x).sum(), lik.log_gamma)
    assert abs(float(grad)) < 1e-4
    with torch.no_grad():
        lik.log_gamma.fill_(-100.0)  # bounded below: log-densities stay finite
    assert math.isfinite(float(lik.log_prob(z, x).sum().detach()))
    assert lik.extra_metrics()["gamma"] == pytest.approx(1e-6)


def test_gamma_falls_and_the_used_dimensions_recover_the_intrinsic_dimension():
    cfg = RunConfig(DataConfig(name="manifold:r=1,d=8,n=3000"),
                    ModelConfig(latent_dim=4, arch={"name": "mlp", "hidden": [64, 64]},
                                likelihood="gaussian-gamma"),
                    TrainConfig(epochs=40, batch_size=64, lr=3e-3, device="cpu"))
    run = setup_run(cfg)
    start = run.model.likelihood.extra_metrics()["gamma"]
    var = float(fixed_transform(run.data.train_raw, "none", None, 0).var(0).mean())
    assert start == pytest.approx(var / 10, rel=1e-5)  # gamma starts at 1/10 of the variance
    fit(run)
    end = run.model.likelihood.extra_metrics()["gamma"]
    assert end < start / 50  # by orders of magnitude (measured: 0.01 -> 4e-4)
    diag = latent_diagnostics(run.model, run.data.test)
    assert diag["used_dims"] == 1  # the manifold is 1-dimensional; k = 4
    gap = diag["variance_gap"]  # measured: x2,500 between 2e-4 and 0.55
    assert gap["split"] and gap["below"] == 1 and gap["ratio"] > 100, gap
    assert diag["gamma"] == pytest.approx(end)
    assert "split: 1 dimension below it" in variance_split_note(diag)


def test_the_variance_gap_finds_three_dimensions_of_a_3d_manifold():
    cfg = RunConfig(DataConfig(name="manifold:r=3,d=16,n=2000"),
                    ModelConfig(latent_dim=6, arch={"name": "mlp", "hidden": [64, 64]},
                                likelihood="gaussian-gamma"),
                    TrainConfig(epochs=25, batch_size=64, lr=3e-3, device="cpu"))
    run = fit(setup_run(cfg))
    diag = latent_diagnostics(run.model, run.data.test)
    gap = diag["variance_gap"]  # measured (n=3000, 40 epochs): x520 between 1.5e-3 and 0.76
    assert diag["used_dims"] == 3 and gap["split"] and gap["below"] == 3, gap
    assert gap["lower"] < USED_VARIANCE < gap["upper"]


def test_an_untrained_model_shows_no_split_of_the_posterior_variances():
    """Before training every posterior variance is about 1 (measured: 0.91-1.21, largest
    ratio x1.15): the count of "used" dimensions means nothing, and the report says so."""
    torch.manual_seed(0)
    for k in (4, 64):
        model = build_model(ModelConfig(latent_dim=k, likelihood="gaussian-gamma",
                                        arch={"name": "mlp", "hidden": [64]}, data_shape=[16]))
        diag = latent_diagnostics(model, torch.randn(500, 16))
        gap = diag["variance_gap"]
        assert not gap["split"] and 1 <= gap["ratio"] < 2, gap
        note = variance_split_note(diag)
        assert "no clear split" in note and "gamma" in note
        assert "no clear split" in format_diagnostics(diag)
        notes = evaluation_notes({"active_units": 0, "latent_dim": k, "diagnostics": diag})
        assert any("no clear split" in n for n in notes)


def test_the_variance_gap_is_the_largest_ratio_of_sorted_neighbours():
    v = torch.tensor([0.9, 1e-3, 0.5, 2e-3, 1.0])  # sorted: 1e-3 2e-3 | 0.5 0.9 1.0
    gap = variance_gap(v)
    assert gap["below"] == 2 and gap["ratio"] == pytest.approx(250) and gap["split"]
    assert (gap["lower"], gap["upper"]) == (pytest.approx(2e-3), pytest.approx(0.5))
    assert not variance_gap(torch.tensor([0.1, 0.5, 0.9]))["split"]  # x5 < x10
    assert variance_gap(torch.tensor([0.1, 0.5, 0.9]), threshold=4)["split"]
    one = variance_gap(torch.tensor([0.01]))
    assert one["ratio"] is None and not one["split"]
    assert variance_split_note({"variance_gap": one, "gamma": None}).startswith("no clear")
    assert variance_split_note({"used_dims": 3}) == ""  # a section written before the gap


def _cluster_codes(n: int, seed: int) -> torch.Tensor:
    """Codes (n, 2, 2) whose means form 4 tight clusters: far from N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    mu = centres[torch.randint(4, (n,), generator=g)] + 0.15 * torch.randn(n, 2, generator=g)
    return torch.stack([mu, torch.full_like(mu, 0.05)], 1)


def _energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean()
                 - torch.cdist(b, b).mean())


@torch.no_grad()
def test_stage_two_samples_match_a_non_gaussian_aggregate_posterior():
    train, val, test = _cluster_codes(3000, 0), _cluster_codes(300, 1), _cluster_codes(2000, 2)
    lik = LIKELIHOODS.get("gaussian-gamma").build

    def draw(codes: torch.Tensor, seed: int) -> Batch:
        return Batch(fixed_transform(codes, "posterior-sample", None, seed))

    data = PreparedData(Dataset("codes", train, test, None, "test"), "posterior-sample", train,
                        None, draw(val, 1), draw(test, 2),
                        protocol("posterior-sample", lik, None, 1), lik, val)
    cfg = RunConfig(DataConfig(name="codes", transform="posterior-sample"),
                    ModelConfig(latent_dim=2, likelihood={"name": "gaussian-gamma",
                                                          "gamma_init": 0.04},
                                arch={"name": "mlp", "hidden": [64, 64], "skip": True}),
                    TrainConfig(epochs=30, batch_size=64, lr=3e-3, device="cpu"))
    with torch.enable_grad():
        stage2 = fit(setup_run(cfg, data=data)).model
    z2 = TwoStagePrior(stage2).sample(2000, torch.Generator().manual_seed(0))
    gauss = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    target = data.test.x
    d2, dn = _energy_distance(z2, target), _energy_distance(gauss, target)
    assert d2 < 0.25 * dn, (d2, dn)  # measured: 0.06 vs 0.79
    mix = CodeMixture.fit(train[:, 0], components=4)
    dm = _energy_distance(mix.sample(2000, torch.Generator().manual_seed(2)), target)
    assert dm < 0.25 * dn  # the ex-post mixture captures it too


def test_code_mixture_density_matches_scikit_learn():
    from sklearn.mixture import GaussianMixture

    codes = _cluster_codes(500, 3)[:, 0]
    mix = CodeMixture.fit(codes, components=3, seed=1)
    gm = GaussianMixture(3, covariance_type="full", random_state=1, reg_covar=1e-6).fit(
        codes.double().numpy())
    z = torch.randn(20, 2)
    torch.testing.assert_close(mix.log_prob(z).double(),
                               torch.from_numpy(gm.score_samples(z.double().numpy())),
                               rtol=1e-4, atol=1e-4)


def test_two_stage_run_end_to_end(tmp_path, cli):
    run = tmp_path / "ts"
    args = ["--data", "manifold:r=1,d=8,n=600", "--likelihood", "gaussian-gamma",
            "--latent-dim", "3", "--hidden", "32", "--epochs", "2", "--device", "cpu",
            "--no-progress"]
    res = cli("train", *args, "--two-stage", "--stage2-epochs", "1", "--out", run)
    assert res.code == 0, res.err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["stage2"]["train"]["epochs"] == 1 and cfg["stage2"]["model"]["arch"]["skip"]
    assert (run / "stage2" / "checkpoint" / "model.safetensors").is_file()
    model, _ = load_model(run)
    assert isinstance(model, TwoStageVAE) and model.stage2.latent_dim == 3
    assert cfg["stage2"]["noise"] and model.prior.noise  # the faithful draw by default
    assert json.loads((run / "stage2" / "config.json").read_text())["train"]["seed"] == 0
    assert model.sample(4).shape == (4, 8)
    res = cli("evaluate", run, "--k", "5", "--generation", "50")
    assert res.code == 0, res.err
    ev = json.loads((run / "eval-test.json").read_text())
    assert math.isfinite(ev["elbo"]) and math.isfinite(ev["two_stage"]["stage2_elbo"])
    assert set(ev["generation"]) >= {"two_stage", "stage1_prior"}
    assert "two-stage VAE" in res.out
    # stage 2 continues (more epochs) on the same codes; stage 1 is unchanged
    before = load_model(run, stage1=True)[0].state_dict()
    res = cli("train", "--resume", run, "--no-progress")
    assert res.code == 0, res.err
    s2_path = run / "stage2" / "config.json"  # begun with another seed (as before the
    s2_cfg = json.loads(s2_path.read_text())  # seed followed --seed): it keeps that seed
    s2_cfg["train"]["seed"] = 7
    s2_path.write_text(json.dumps(s2_cfg))
    res = cli("train", "--stage2", run, "--stage2-epochs", "2", "--no-progress")
    assert res.code == 0, res.err
    assert len((run / "stage2" / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads(s2_path.read_text())["train"]["seed"] == 7
    after = load_model(run, stage1=True)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    cli("train", "--stage2", run, "--lr", "0.1").assert_user_error("stage-2 settings")
    cfg["stage2"]["noise"] = False  # a saved run keeps what its config.json says
    (run / "config.json").write_text(json.dumps(cfg))
    assert not load_model(run)[0].prior.noise


def test_the_stage_two_seed_follows_the_cli_seed(tmp_path, cli):
    run = tmp_path / "seeded"
    res = cli("train", "--data", "manifold:r=1,d=4,n=200", "--likelihood", "gaussian-gamma",
              "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--device", "cpu",
              "--no-progress", "--no-report", "--seed", "5", "--two-stage",
              "--stage2-epochs", "1", "--out", run)
    assert res.code == 0, res.err
    assert json.loads((run / "stage2" / "config.json").read_text())["train"]["seed"] == 5


@pytest.mark.parametrize(("gamma_init", "collapses"), [(None, False), (0.6, True)])
def test_the_default_learned_variance_does_not_collapse_on_the_ring(gamma_init, collapses):
    """Started at the data's variance (0.6 here) the ring collapses to its prior; the
    default start, 1/10 of it, keeps the latents in use (issue: KL 0.000 after 40 epochs)."""
    from vaekit.train.callbacks import Validate

    cfg = RunConfig(DataConfig(name="ring:n=3000"),
                    ModelConfig(latent_dim=2, arch={"name": "mlp", "hidden": [64, 64]},
                                likelihood={"name": "gaussian-gamma", "gamma_init": gamma_init}),
                    TrainConfig(epochs=15, batch_size=64, device="cpu"))
    run = fit(setup_run(cfg), [Validate()])
    kl = run.history[-1]["val_kl"]
    assert (kl < 0.2) if collapses else (kl > 1.0), kl  # measured 0.06 and 1.9 nats


def test_the_calibrated_decoder_uses_the_batch_mse_in_training_and_its_average_after():
    """gaussian-calibrated (Rybkin et al. 2021): in training the log-density is the
    Gaussian's at gamma* = the batch's mean squared error (its closed-form optimum), and the
    gradient with respect to the decoder means is that of a fixed gamma = gamma*; outside
    training the running gamma is used, so the density of test data does not depend on them."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, likelihood={"name": "gaussian-calibrated",
                                                              "momentum": 0.5},
                                    arch={"name": "mlp", "hidden": [8]}, data_shape=[5]))
    lik = model.likelihood
    lik.init_from_data(torch.randn(100, 5) * 2)  # var ~ 4: running gamma starts ~0.4
    start = lik.extra_metrics()["gamma"]
    assert 0.2 < start < 0.8
    z, x = torch.randn(7, 2), torch.randn(7, 5)
    mu = lik.params(z).detach().requires_grad_()
    mse = float((x - mu.detach()).pow(2).mean())
    model.train()
    lp = lik.log_prob_params(mu, x)
    ref = torch.distributions.Normal(mu, math.sqrt(mse)).log_prob(x).sum(-1)
    torch.testing.assert_close(lp, ref)
    (g,) = torch.autograd.grad(lp.sum(), mu)
    torch.testing.assert_close(g, (x - mu.detach()) / mse)  # gamma held at gamma*
    assert lik.extra_metrics()["gamma"] == pytest.approx(math.exp(0.5 * math.log(start)
                                                                  + 0.5 * math.log(mse)))
    model.eval()  # evaluation: the running gamma, whatever the batch
    running = lik.extra_metrics()["gamma"]
    ref = torch.distributions.Normal(mu.detach(), math.sqrt(running)).log_prob(x).sum(-1)
    torch.testing.assert_close(lik.log_prob_params(mu.detach(), x), ref)
    assert lik.extra_metrics()["gamma"] == running  # scoring does not move it


def test_the_calibrated_decoder_trains_to_a_gamma_near_the_reconstruction_error():
    cfg = RunConfig(DataConfig(name="ring:n=2000"),
                    ModelConfig(latent_dim=2, arch={"name": "mlp", "hidden": [32, 32]},
                                likelihood="gaussian-calibrated"),
                    TrainConfig(epochs=8, batch_size=64, device="cpu"))
    run = fit(setup_run(cfg))
    val = run.data.val.x
    with torch.no_grad():
        mse = float((run.model.reconstruct(val) - val).pow(2).mean())
    gamma = run.model.likelihood.extra_metrics()["gamma"]
    assert 0.5 < gamma / mse < 2.0, (gamma, mse)
    assert run.fast_path.startswith("off")  # the fast path does not know it: refused


class _FixedU(Prior):
    """A stage-2 prior that returns the same u every draw: isolates p2(z|u)'s noise."""

    def __init__(self, u: torch.Tensor) -> None:
        super().__init__(u.shape[0])
        self.u = u

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.u.expand(n, -1)


@torch.no_grad()
def test_the_default_sampler_adds_stage_two_noise_of_variance_gamma_z():
    """For a fixed u, z = decoder2(u) + sqrt(gamma_z) eps: the residuals r = z - decoder2(u)
    (n, k) have sum(r^2) / gamma_z ~ chi^2 with n k degrees of freedom (a 1e-6 two-sided
    band), mean 0 and no correlation between dimensions. The mean sampler (noise off)
    gives r = 0, and a sampler that used gamma_z as the std would scale the sum by gamma_z."""
    from scipy.stats import chi2

    torch.manual_seed(0)
    gamma_z, n, k = 0.04, 20000, 4
    stage2 = build_model(ModelConfig(latent_dim=3, likelihood={"name": "gaussian-gamma",
                                                               "gamma_init": gamma_z},
                                     arch={"name": "mlp", "hidden": [16], "skip": True},
                                     data_shape=[k]))
    u = torch.randn(3)
    stage2.prior = _FixedU(u)
    mean = stage2.likelihood(u.expand(n, -1)).mean  # (n, k) decoder2(u), one row n times
    assert Stage2Config().noise  # the faithful draw is the default, in config and model
    prior = TwoStageVAE(build_model(ModelConfig(latent_dim=k, data_shape=[5])), stage2).prior
    r = prior.sample(n, torch.Generator().manual_seed(1)) - mean  # (n, k)
    stat, dof = float(r.double().pow(2).sum()) / gamma_z, n * k
    assert chi2.ppf(5e-7, dof) < stat < chi2.ppf(1 - 5e-7, dof), stat / dof
    assert r.mean(0).abs().max() < 5 * math.sqrt(gamma_z / n)
    cov = torch.cov(r.T.double())  # (k, k) ~ gamma_z I
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max() < 5 * gamma_z / math.sqrt(n)
    still = TwoStagePrior(stage2, noise=False).sample(n, torch.Generator().manual_seed(1))
    assert torch.equal(still, mean)  # the mean sampler: no spread at all (statistic 0)


def test_stage_two_is_seeded_by_the_runs_seed():
    """Stage 2's seed is train.seed + stage2.train.seed: seed 0 keeps the seed stage 2 had
    before (its own, default 0) and --seed moves it."""
    def seed(run_seed: int, own: int = 0) -> int:
        s2 = Stage2Config(train=TrainConfig(epochs=1, seed=own))
        cfg = RunConfig(train=TrainConfig(seed=run_seed), stage2=s2)
        assert stage2_seed(cfg) == stage2_run_config(cfg).train.seed
        return stage2_run_config(cfg).train.seed

    assert seed(0) == 0 and seed(0, own=4) == 4  # as before this purpose existed
    assert seed(3) == derive_seed(3, "stage2-train") == 3 and seed(3, own=4) == 7
    assert seed(1) != seed(2)
