"""Shared fixtures and helpers: seeded RNGs, tiny models, in-process CLI runs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.cli import main
from vaekit.config import ModelConfig
from vaekit.models import build_model

# Tiny models run fastest on one thread; more threads only contend for the (2) CPU cores.
torch.set_num_threads(1)
# `vaekit train` and `evaluate` end by writing RUN_DIR/report.html (seconds of figures per
# run); tests/test_report.py turns it back on where it checks reports, the others skip it.
os.environ.setdefault("VAEKIT_NO_REPORT", "1")

# tiny runs: ~300 points of the ring, a 16-unit MLP, 2 latent dimensions
RING_ARGS = ["--data", "ring:n=300", "--hidden", "16", "--latent-dim", "2", "--device", "cpu",
             "--no-progress"]
DIGITS_ARGS = ["--data", "digits", "--limit", "200", "--hidden", "32", "--latent-dim", "4",
               "--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global RNG states."""
    torch.manual_seed(0)
    np.random.seed(0)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def assert_user_error(self, *fragments: str) -> None:
        """Exit code 2; stderr is exactly one line ``error: ...``, no traceback."""
        assert self.code == 2, (self.code, self.err)
        assert self.err.endswith("\n")
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: ")
        assert "Traceback" not in self.err
        assert len(lines[0]) > len("error: ") + 10  # says what is wrong
        for text in fragments:
            assert text in lines[0], (text, lines[0])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli("train", "--data", ...)`` runs ``vaekit.cli.main`` in-process."""

    def run(*argv: str | Path) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in argv])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def _tiny_model(data_shape=(6,), likelihood: str = "gaussian", latent_dim: int = 2,
                hidden=(8,), seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=latent_dim, likelihood=likelihood, data_shape=list(data_shape),
                      arch={"name": "mlp", "hidden": list(hidden), "activation": "tanh"})
    return build_model(cfg)


@pytest.fixture
def tiny_model() -> Callable[..., torch.nn.Module]:
    """Factory of small random MLP VAEs built through the model registry."""
    return _tiny_model


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       os.stat(p).st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[str, int]]]:
    """``snapshot(dir)``: relative path -> (sha256, mtime_ns) of every file under ``dir``."""
    return _snapshot


@pytest.fixture(scope="session")
def ring_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained ring run (gaussian likelihood), shared read-only by several tests."""
    run = tmp_path_factory.mktemp("shared") / "ring-run"
    torch.manual_seed(0)
    code = main(["train", *RING_ARGS, "--likelihood", "gaussian", "--epochs", "1",
                 "--out", str(run)])
    assert code == 0
    return run
