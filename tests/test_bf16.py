"""bf16 only where it is fast: a CPU without bf16 matrix instructions (bf16 emulated, ~7x
slower than fp32 on this project's AVX2 host) refuses ``--precision bf16`` with one line
before anything is written, unless VAEKIT_ALLOW_SLOW_BF16=1; the bf16 math itself is still
trained and checked here with that escape hatch."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DIGITS_ARGS

from vaekit import runtime
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import ConfigError
from vaekit.runtime import SLOW_BF16_ENV, check_precision, cpu_flags
from vaekit.train import setup_run

X86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma {}\n\n"


@pytest.fixture
def no_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without bf16 matmuls, and no escape hatch set."""
    monkeypatch.setattr(runtime, "cpu_bf16_matmul", lambda: False)
    monkeypatch.delenv(SLOW_BF16_ENV, raising=False)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    plain, native = tmp_path / "plain", tmp_path / "native"
    plain.write_text(X86.format("avx512f"))
    native.write_text(X86.format("avx512f avx512_bf16"))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\n")
    assert "avx2" in cpu_flags(str(plain)) and not cpu_flags(str(plain)) & {"avx512_bf16"}
    assert "avx512_bf16" in cpu_flags(str(native))
    assert "bf16" in cpu_flags(str(arm))
    assert cpu_flags(str(tmp_path / "missing")) is None


def test_bf16_is_refused_on_a_cpu_without_bf16_matmuls(no_bf16_cpu, cli, tmp_path):
    out = tmp_path / "run"
    res = cli("train", *DIGITS_ARGS, "--epochs", "1", "--precision", "bf16", "--out", out)
    res.assert_user_error("--precision bf16 on this CPU would run about 7x slower",
                          "use --precision fp32", f"{SLOW_BF16_ENV}=1")
    assert not out.exists()  # refused before the run directory was made


def test_what_the_check_allows(no_bf16_cpu, monkeypatch):
    check_precision("fp32", "cpu")  # fp32 is never refused
    with pytest.raises(ConfigError, match="no bf16 matrix instructions"):
        check_precision("bf16", "cpu")
    check_precision("bf16", "cpu", has_bf16=lambda: True)  # native bf16 (AVX512-BF16, AMX)
    check_precision("bf16", "cpu", has_bf16=lambda: None)  # flags unreadable: not refused
    monkeypatch.setenv(SLOW_BF16_ENV, "0")
    with pytest.raises(ConfigError):
        check_precision("bf16", "cpu")
    monkeypatch.setenv(SLOW_BF16_ENV, "1")
    check_precision("bf16", "cpu")


def test_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")
    with pytest.raises(ConfigError, match="the GPU Old GPU does not support bfloat16"):
        check_precision("bf16", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    check_precision("bf16", torch.device("cuda"))


@pytest.mark.parametrize("fused", [True, False])
def test_bf16_training_steps_with_the_escape_hatch(no_bf16_cpu, monkeypatch, fused):
    """The bf16 math still runs (and is tested) on such a CPU when asked for explicitly:
    hand-written bf16 gradients (fast path) and autocast + autograd."""
    monkeypatch.setenv(SLOW_BF16_ENV, "1")
    cfg = RunConfig(DataConfig(name="digits", limit=200),
                    ModelConfig(latent_dim=4, arch={"name": "mlp", "hidden": [32]}),
                    TrainConfig(epochs=1, batch_size=50, device="cpu", precision="bf16",
                                fused=fused))
    run = setup_run(cfg)
    assert run.fast_path == ("on" if fused else "off (turned off (--no-fused))")
    before = [p.detach().clone() for p in run.model.parameters()]
    losses = [float(run.step(batch, i)) for i, batch in enumerate(run.loader.epoch())]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses)
    assert all(not torch.equal(a, p) for a, p in zip(before, run.model.parameters(),
                                                       strict=True))
