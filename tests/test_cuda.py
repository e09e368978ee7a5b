"""The CUDA path: models and batches on the GPU, data kept there, exact resume with the CUDA
RNG in the checkpoint, one NCCL rank under torchrun, bf16 / compile / channels_last steps, and
the log p(x) estimators agreeing with the CPU within Monte-Carlo error.

Marked ``cuda`` (``pytest -m cuda``; ``scripts/gpu_check.sh`` runs them on a GPU); on a
machine without a CUDA GPU every test here skips, saying so. ``VAEKIT_CUDA_TESTS_ON=cpu``
runs the same tests on the CPU instead, to check the tests themselves where there is no GPU.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_ARGS
from safetensors.torch import load_file

from vaekit.api import train
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import Batch
from vaekit.evaluation import estimate_log_px
from vaekit.models import build_model
from vaekit.objectives import elbo
from vaekit.train import Callback, fit, setup_run, standard_callbacks

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.device(os.environ.get("VAEKIT_CUDA_TESTS_ON", "cuda"))  # cpu: test the tests
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA GPU (torch.cuda.is_available() is False); "
                              "scripts/gpu_check.sh runs these on a GPU"),
]
GPU_ARGS = [a if a != "cpu" else CUDA.type for a in DIGITS_ARGS]  # --device cuda


@pytest.fixture(autouse=True)
def _bf16_on_a_test_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    if CUDA.type == "cpu":  # bf16 is refused on a CPU without bf16 matmuls (tests/test_bf16.py)
        monkeypatch.setenv("VAEKIT_ALLOW_SLOW_BF16", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_cfg(epochs: int = 2, **train_fields) -> RunConfig:
    return RunConfig(DataConfig(name="digits", limit=300),
                     ModelConfig(latent_dim=4, arch={"name": "mlp", "hidden": [32]}),
                     TrainConfig(**{"epochs": epochs, "batch_size": 32, "device": CUDA.type,
                                    **train_fields}))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []


@pytest.mark.parametrize("arch", [{"name": "mlp", "hidden": [32]},
                                  {"name": "conv", "channels": [8, 16], "fc": 32}])
def test_model_and_batch_round_trip(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=4, arch=arch, likelihood="bernoulli", data_shape=[28, 28])
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = (torch.rand(8, 28, 28) < 0.3).float()
    eps = torch.randn(8, 4)
    ref = elbo(model, x, eps=eps).value
    gpu, batch = model.to(CUDA), Batch(x).to(CUDA)
    assert batch.x.device.type == CUDA.type
    assert {p.device.type for p in gpu.parameters()} == {CUDA.type}
    got = elbo(gpu, batch.x, eps=eps.to(CUDA)).value
    assert got.device.type == CUDA.type
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-3)
    back = gpu.to("cpu")
    assert all(torch.equal(before[k], v) for k, v in back.state_dict().items())


def test_the_whole_dataset_lives_on_the_gpu_and_training_stays_there():
    run = setup_run(digits_cfg(1))
    assert run.device.type == CUDA.type
    assert {run.data.train_raw.device.type, run.data.val.x.device.type,
            run.data.test.x.device.type} == {CUDA.type}
    fit(run)
    assert {p.device.type for p in run.model.parameters()} == {CUDA.type}
    assert math.isfinite(run.history[-1]["train_loss"])


class Interrupt(Callback):
    """Stop (as Ctrl-C would) once step ``n`` and its callbacks are done."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step_end(self, run, loss) -> None:
        if run.state.step >= self.n:
            raise KeyboardInterrupt


def test_resume_is_bitwise_identical_on_cuda(tmp_path):
    """N steps straight vs stopped after a mid-epoch checkpoint and resumed: the same
    weights, bit for bit (the CUDA RNG of the noise and of the binarization is restored)."""
    ref = train(digits_cfg(2), tmp_path / "A", progress=False)
    run = setup_run(digits_cfg(2), tmp_path / "B")
    with pytest.raises(KeyboardInterrupt):
        fit(run, [*standard_callbacks(run, progress=False, checkpoint_every=3), Interrupt(14)])
    counters = json.loads((tmp_path / "B" / "checkpoint" / "trainer.json").read_text())
    # 9 steps per epoch, checkpoints every 3: the last one inside epoch 2, at step 12
    assert (counters["epoch"], counters["step"], counters["step_in_epoch"]) == (1, 12, 3)
    res = train(digits_cfg(2), tmp_path / "B", resume=True, progress=False, checkpoint_every=3)
    assert_same_weights(tmp_path / "A", tmp_path / "B")
    assert [r["val_elbo"] for r in res.history] == [r["val_elbo"] for r in ref.history]


def test_one_nccl_rank_under_torchrun(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "vaekit", "train",
           *GPU_ARGS, "--epochs", "1", "--out", str(tmp_path / "run")]
    env = {**os.environ, "VAEKIT_NO_REPORT": "1", "VAEKIT_DIST_TIMEOUT": "120"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"device {CUDA.type}" in log, log
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.parametrize("fields", [{"precision": "bf16"},
                                    {"precision": "bf16", "fused": False},
                                    {"compile": True}],
                         ids=["bf16-fast-path", "bf16-autocast", "compile"])
def test_bf16_and_compiled_steps_train(fields):
    """A few steps of each variant: finite losses, every weight moved, and the loss of the
    first step close to the fp32 eager one (same seed, same batch)."""
    losses = {}
    for name, extra in (("fp32", {}), ("variant", fields)):
        run = setup_run(digits_cfg(1, **extra))
        before = [p.detach().clone() for p in run.model.parameters()]
        losses[name] = [float(run.step(b, i)) for i, b in enumerate(run.loader.epoch())]
        assert all(math.isfinite(v) for v in losses[name])
        assert all(not torch.equal(a, p) for a, p in zip(before, run.model.parameters(),
                                                           strict=True))
    assert losses["variant"][0] == pytest.approx(losses["fp32"][0], rel=0.02)


def test_channels_last_conv_step_on_cuda():
    cfg = digits_cfg(1, channels_last=True)
    cfg.model = ModelConfig(latent_dim=4, arch={"name": "conv", "channels": [8, 16], "fc": 32})
    run = setup_run(cfg)
    losses = [float(run.step(b, i)) for i, b in enumerate(run.loader.epoch())]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] + 5


@pytest.mark.parametrize("proposal", ["encoder", "prior"])
def test_estimators_on_cuda_equal_the_cpu_within_monte_carlo_error(proposal):
    """Mean log p(x) over the test digits with K samples on CUDA and on the CPU: within 5
    Monte-Carlo standard errors, measured from the spread of 4 CPU seeds (the prior
    proposal shares its samples across examples, so examples are not independent)."""
    run = setup_run(RunConfig(DataConfig(name="digits"),
                              ModelConfig(latent_dim=4, arch={"name": "mlp", "hidden": [32]}),
                              TrainConfig(epochs=3, batch_size=64, device="cpu")))
    fit(run)
    model, test, k = run.model, run.data.test, 200
    cpu = torch.tensor([float(estimate_log_px(model, test, k, proposal, seed=s,
                                              progress=False).log_px.mean())
                        for s in range(4)], dtype=torch.float64)
    gpu = estimate_log_px(model.to(CUDA), test.to(CUDA), k, proposal, seed=0,
                          progress=False).log_px
    assert gpu.device.type == CUDA.type and gpu.shape == (len(test),)
    assert torch.isfinite(gpu).all()
    mc_se = float(cpu.std()) * math.sqrt(1 + 1 / len(cpu))  # sd of (one draw - mean of 4)
    diff = float(gpu.double().mean().cpu()) - float(cpu.mean())
    assert abs(diff) <= 5 * mc_se + 1e-3, (diff, mc_se, cpu.tolist())
