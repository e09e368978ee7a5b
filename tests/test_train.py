"""Training: determinism, logs, checkpoints, and exact resume (epoch boundary and mid-epoch)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import vaekit.api as api
from vaekit.api import load_model, train
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.train import Callback, setup_run
from vaekit.train.checkpoint import load_run_config

RING = ["--data", "ring:n=300", "--hidden", "16", "--latent-dim", "2", "--batch-size", "32",
        "--likelihood", "gaussian-gamma", "--device", "cpu", "--no-progress"]
DIGITS = ["--data", "digits", "--limit", "200", "--hidden", "32", "--latent-dim", "4",
          "--device", "cpu", "--no-progress"]
STEPS_PER_EPOCH = 9  # ring:n=300 -> 270 training examples (10% validation), batches of 32


def ring_cfg(epochs: int = 2, **train) -> RunConfig:
    return RunConfig(DataConfig(name="ring:n=300"),
                     ModelConfig(latent_dim=2, arch={"name": "mlp", "hidden": [16]},
                                 likelihood="gaussian-gamma"),
                     TrainConfig(epochs=epochs, batch_size=32, device="cpu", **train))


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 4
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def history(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_is_deterministic_and_logs_each_epoch(tmp_path):
    a = train(ring_cfg(2), tmp_path / "a", progress=False)
    b = train(ring_cfg(2), tmp_path / "b", progress=False)
    c = train(ring_cfg(2, seed=1), tmp_path / "c", progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert not any(torch.equal(wa[k], wc[k]) for k in wa)  # another seed, other weights
    rows = history(tmp_path / "a")
    assert [r["epoch"] for r in rows] == [1, 2] and rows == a.history
    for r in rows:
        for key in ("train_loss", "val_elbo", "val_kl", "gamma"):
            assert torch.isfinite(torch.tensor(r[key])), key
        assert r["val_kl"] >= 0 and r["gamma"] > 0
    assert [r["val_elbo"] for r in rows] == [r["val_elbo"] for r in b.history]
    csv = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert csv[0].split(",")[:3] == ["epoch", "step", "train_loss"] and len(csv) == 3
    # the saved run rebuilds the trained model
    model, cfg = load_model(tmp_path / "a")
    assert cfg.model.data_shape == [2] and cfg.model.latent_dim == 2
    x = a.data.test[:5]
    torch.testing.assert_close(model.reconstruct(x), a.model.reconstruct(x))
    assert len(c.history) == 2


def test_resume_at_epoch_boundary_is_bitwise_identical(tmp_path, cli):
    assert cli("train", *RING, "--epochs", "2", "--out", tmp_path / "A").code == 0
    assert cli("train", *RING, "--epochs", "1", "--out", tmp_path / "B").code == 0
    assert len(history(tmp_path / "B")) == 1
    res = cli("train", "--resume", tmp_path / "B", "--epochs", "2", "--no-progress")
    assert res.code == 0, res.err
    assert_same_weights(tmp_path / "A", tmp_path / "B")
    ha, hb = history(tmp_path / "A"), history(tmp_path / "B")
    assert len(hb) == 2
    for ra, rb in zip(ha, hb, strict=True):
        assert (ra["train_loss"], ra["val_elbo"]) == (rb["train_loss"], rb["val_elbo"])
    # optimizer moments too
    ta = load_file(str(tmp_path / "A" / "checkpoint" / "trainer.safetensors"))
    tb = load_file(str(tmp_path / "B" / "checkpoint" / "trainer.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in ta if k.startswith("opt."))
    # resuming a finished run trains nothing and changes nothing
    before = weights(tmp_path / "B")
    assert cli("train", "--resume", tmp_path / "B", "--no-progress").code == 0
    after = weights(tmp_path / "B")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_with_dynamic_binarization_is_bitwise_identical(tmp_path, cli):
    assert cli("train", *DIGITS, "--epochs", "2", "--out", tmp_path / "A").code == 0
    assert cli("train", *DIGITS, "--epochs", "1", "--out", tmp_path / "B").code == 0
    assert cli("train", "--resume", tmp_path / "B", "--epochs", "2", "--no-progress").code == 0
    assert_same_weights(tmp_path / "A", tmp_path / "B")


def test_resume_then_two_more_epochs_is_bitwise_identical(tmp_path):
    train(ring_cfg(3), tmp_path / "A", progress=False)
    train(ring_cfg(1), tmp_path / "B", progress=False)
    train(ring_cfg(3), tmp_path / "B", resume=True, progress=False)
    assert_same_weights(tmp_path / "A", tmp_path / "B")


class Interrupt(Callback):
    """Raise KeyboardInterrupt once step ``n_steps`` and its callbacks are done (the next
    step's loss is never computed), as a Ctrl-C there would."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps

    def on_step_end(self, run, loss) -> None:
        if run.state.step >= self.n_steps:
            raise KeyboardInterrupt


def interrupt_after(monkeypatch, n_steps: int) -> None:
    """Every training run started from now on (train(), the CLI) stops after n_steps."""
    standard = api.standard_callbacks

    def with_interrupt(*args, **kwargs):
        return [*standard(*args, **kwargs), Interrupt(n_steps)]

    monkeypatch.setattr(api, "standard_callbacks", with_interrupt)  # what api.train calls


def test_mid_epoch_resume_is_bitwise_identical(tmp_path, monkeypatch):
    ref = train(ring_cfg(2), tmp_path / "A", progress=True)
    interrupt_after(monkeypatch, 14)  # checkpoints at steps 4, 8 (9 = end of epoch 1), 12
    with pytest.raises(KeyboardInterrupt):
        train(ring_cfg(2), tmp_path / "B", progress=True, checkpoint_every=4)
    monkeypatch.undo()
    counters = json.loads((tmp_path / "B" / "checkpoint" / "trainer.json").read_text())
    assert (counters["epoch"], counters["step"], counters["step_in_epoch"]) == (1, 12, 3)
    assert len(history(tmp_path / "B")) == 1
    assert not (tmp_path / "B" / "checkpoint.new").exists()
    res = train(load_run_config(tmp_path / "B"), tmp_path / "B", resume=True, progress=True,
                checkpoint_every=4)
    assert_same_weights(tmp_path / "A", tmp_path / "B")
    assert [r["val_elbo"] for r in res.history] == [r["val_elbo"] for r in ref.history]
    assert [r["step"] for r in res.history] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    # the interrupted epoch's loss is the mean over all its examples, as without the stop
    assert [r["train_loss"] for r in res.history] == pytest.approx(
        [r["train_loss"] for r in ref.history], rel=1e-6)


def test_cli_interrupt_exits_130_and_resumes(tmp_path, cli, monkeypatch):
    assert cli("train", *RING, "--epochs", "2", "--out", tmp_path / "A").code == 0
    interrupt_after(monkeypatch, STEPS_PER_EPOCH + 2)  # during epoch 2
    res = cli("train", *RING, "--epochs", "2", "--out", tmp_path / "B")
    monkeypatch.undo()
    assert res.code == 130
    assert f"--resume {tmp_path / 'B'}" in res.err.splitlines()[-1]
    assert len(history(tmp_path / "B")) == 1
    assert cli("train", "--resume", tmp_path / "B", "--no-progress").code == 0
    assert_same_weights(tmp_path / "A", tmp_path / "B")


def test_step_counter_without_progress_bar(tmp_path):
    res = train(ring_cfg(2), tmp_path / "A", progress=False)
    assert [r["step"] for r in res.history] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]


def test_checkpoint_every_without_progress_bar(tmp_path, monkeypatch):
    interrupt_after(monkeypatch, 14)
    with pytest.raises(KeyboardInterrupt):
        train(ring_cfg(2), tmp_path / "B", progress=False, checkpoint_every=4)
    counters = json.loads((tmp_path / "B" / "checkpoint" / "trainer.json").read_text())
    assert (counters["epoch"], counters["step_in_epoch"]) == (1, 3)


def test_checkpoint_falls_back_to_previous_after_crashed_save(tmp_path):
    train(ring_cfg(1), tmp_path / "A", progress=False)
    (tmp_path / "A" / "checkpoint").rename(tmp_path / "A" / "checkpoint.old")
    model, _ = load_model(tmp_path / "A")
    w = weights_from(tmp_path / "A" / "checkpoint.old")
    assert torch.equal(model.state_dict()["likelihood.log_gamma"], w["likelihood.log_gamma"])


def weights_from(ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


@pytest.mark.parametrize("objective", [{"name": "iwae", "k": 3}, {"name": "elbo", "kl": "mc"}])
def test_iwae_objective_and_mc_kl_train(tmp_path, objective):
    res = train(ring_cfg(1, objective=objective), tmp_path / "A", progress=False)
    assert res.fast_path.startswith("off (objective")
    row = res.history[0]
    assert torch.isfinite(torch.tensor(row["train_loss"])) and row["train_loss"] > 0
    assert row["val_elbo"] < 0 and row["val_kl"] >= 0


def test_lr_warmup_without_progress_bar(tmp_path):
    train(ring_cfg(2, warmup_steps=5, lr=1e-2), tmp_path / "A", progress=False)
    counters = json.loads((tmp_path / "A" / "checkpoint" / "trainer.json").read_text())
    assert counters["param_groups"][0]["lr"] == pytest.approx(1e-2)


def test_lr_warmup_with_progress_bar(tmp_path):
    train(ring_cfg(2, warmup_steps=5, lr=1e-2), tmp_path / "A", progress=True)
    counters = json.loads((tmp_path / "A" / "checkpoint" / "trainer.json").read_text())
    assert counters["param_groups"][0]["lr"] == pytest.approx(1e-2)
    train(ring_cfg(2, lr_schedule="cosine", lr=1e-2), tmp_path / "B", progress=True)
    counters = json.loads((tmp_path / "B" / "checkpoint" / "trainer.json").read_text())
    last = 2 * STEPS_PER_EPOCH - 1  # lr of the last step: 1/2 (1 + cos(pi * 17/18)) * lr
    assert counters["param_groups"][0]["lr"] == pytest.approx(
        1e-2 * 0.5 * (1 + math.cos(math.pi * last / (2 * STEPS_PER_EPOCH))))


def test_on_epoch_hook_and_cosine_without_total_steps(tmp_path):
    from vaekit.train.step import lr_at

    seen = []
    res = train(ring_cfg(2), tmp_path / "A", progress=False,
                on_epoch=lambda row, model: seen.append((row["epoch"], model.training)))
    assert seen == [(1, False), (2, False)]  # called after validation (eval mode)
    assert len(res.history) == 2
    cfg = ring_cfg(1, lr_schedule="cosine", warmup_steps=10, lr=1e-2)
    assert lr_at(4, 0, cfg) == pytest.approx(5e-3)  # warm-up
    assert lr_at(50, 0, cfg) == pytest.approx(1e-2)  # unknown total: no decay to 0
    assert lr_at(55, 100, cfg) == pytest.approx(5e-3)  # half-way through the cosine


def test_conditional_run_resumes_bitwise_and_samples_each_class(tmp_path, cli):
    args = [*DIGITS, "--conditional", "--prior", "gaussian"]
    assert cli("train", *args, "--epochs", "2", "--out", tmp_path / "A").code == 0
    assert cli("train", *args, "--epochs", "1", "--out", tmp_path / "B").code == 0
    res = cli("train", "--resume", tmp_path / "B", "--epochs", "2", "--no-progress")
    assert res.code == 0, res.err
    assert_same_weights(tmp_path / "A", tmp_path / "B")
    w = weights(tmp_path / "A")
    assert w["condition.embed.weight"].shape == (10, 16) and "prior.loc" in w
    log = (tmp_path / "B" / "train.log").read_text()
    assert "resumed at epoch 1" in log and "fast path: off (prior LearnedGaussian" in log
    assert "labels 0-9" in log
    assert cli("sample", tmp_path / "A", "-n", "6", "--label", "7").code == 0
    cli("sample", tmp_path / "A", "--label", "10").assert_user_error("0..9")


def test_python_resume_refuses_a_different_config(tmp_path):
    from vaekit.errors import CheckpointError

    train(ring_cfg(1), tmp_path / "A", progress=False)
    other = ring_cfg(2)
    other.train.lr = 0.5
    with pytest.raises(CheckpointError, match=r"train\.lr = 0\.5 does not match"):
        train(other, tmp_path / "A", resume=True, progress=False)
    res = train(ring_cfg(2), tmp_path / "A", resume=True, progress=False)  # epochs may change
    assert len(res.history) == 2


def test_warmup_as_a_fraction_and_kl_annealing(tmp_path):
    from vaekit.train.step import beta_at, lr_at, schedule_notes

    cfg = ring_cfg(1, warmup_fraction=0.25, lr=1e-2, beta=0.5, beta_warmup_steps=4)
    assert lr_at(0, 100, cfg) == pytest.approx(1e-2 / 25)  # 25 of 100 steps
    assert lr_at(0, 1000, cfg) == pytest.approx(1e-2 / 250)  # scales with the run
    assert [beta_at(i, cfg) for i in (0, 1, 3, 10)] == [0.125, 0.25, 0.5, 0.5]
    assert schedule_notes(ring_cfg(1, warmup_steps=500), 9)[0].startswith(
        "WARNING: the learning-rate warm-up (500 steps) does not finish")
    both = ring_cfg(1, warmup_steps=5, warmup_fraction=0.5)  # e.g. a preset's fraction + a flag
    assert lr_at(0, 100, both) == pytest.approx(1e-3 / 5)  # the explicit steps win
    # KL annealing is recorded and resumes exactly in the middle of its warm-up
    train(ring_cfg(2, beta_warmup_steps=12), tmp_path / "A", progress=False)
    train(ring_cfg(1, beta_warmup_steps=12), tmp_path / "B", progress=False)
    train(ring_cfg(2, beta_warmup_steps=12), tmp_path / "B", resume=True, progress=False)
    assert_same_weights(tmp_path / "A", tmp_path / "B")
    log = (tmp_path / "A" / "train.log").read_text()
    assert "warmed up over 12 steps" in log and "-ELBO(beta warming up" in log


def test_burda_schedule_steps_down_by_10_to_the_minus_one_seventh_per_stage():
    """Burda et al. (2015): stage i trains 3^i epochs at lr 10^(-i/7); 3,280 epochs in all."""
    from vaekit.train.step import burda_stage, lr_at

    cfg = ring_cfg(3280, lr=1e-3, lr_schedule="burda")
    steps_per_epoch = 5
    total = 3280 * steps_per_epoch
    starts = [(3**i - 1) // 2 for i in range(8)]  # 0, 1, 4, 13, 40, 121, 364, 1093
    for i, first in enumerate(starts):
        for epoch in (first, first + 3**i - 1):  # the stage's first and last epoch
            assert burda_stage(epoch) == i
            lr = lr_at(epoch * steps_per_epoch + steps_per_epoch - 1, total, cfg)
            assert lr == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12)
    assert burda_stage(3279) == 7 and burda_stage(3280) == 8


def test_adam_eps_reaches_the_optimizer(tmp_path):
    run = setup_run(ring_cfg(1, adam_eps=1e-4))
    assert {g["eps"] for g in run.optimizer.param_groups} == {1e-4}
