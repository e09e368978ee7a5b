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


# ---------------------------------------------------------------------------- markers
# `pytest -m "not slow"` for quick feedback; `-m integration` for the end-to-end tests. The
# default run (scripts/test.sh, CI) runs all. Marked here by node id, from the --durations
# of scripts/test.sh on 2 cores (slow: >= 10 s there), so that the test files stay as they
# are; tests/test_cuda.py marks its own (cuda).
SLOW = {
    "tests/test_robustness.py::test_kill_9_anywhere_then_resume_gives_identical_weights",
    "tests/test_distributed.py::test_a_killed_two_rank_run_resumed_on_two_ranks_ends_identical",
    "tests/test_report.py::test_ring_demo_learns_the_ring_and_shows_the_naive_estimator_fail",
    "tests/test_distributed.py::test_two_ranks_of_batch_b_take_the_steps_of_one_process_with_"
    "batch_2b",
    "tests/test_distributed.py::test_a_two_rank_run_resumes_on_one_rank_and_finishes",
    "tests/test_readme.py::test_readme_python_example_runs",
    "tests/test_distributed.py::test_distributed_evaluation_equals_one_process",
    "tests/test_report.py::test_evaluate_refreshes_the_report_with_the_estimator_comparison",
    "tests/test_two_stage.py::test_stage_two_samples_match_a_non_gaussian_aggregate_posterior",
    "tests/test_distributed.py::test_a_rank_that_dies_stops_rank_0_with_one_clear_line",
    "tests/test_runtime.py::test_users_setting_is_kept",
}
# end to end through other processes: torchrun jobs, killed and resumed runs, a browser,
# fresh interpreters
INTEGRATION_FILES = {"test_distributed.py", "test_readme.py"}
INTEGRATION = {
    "tests/test_robustness.py::test_kill_9_anywhere_then_resume_gives_identical_weights",
    "tests/test_report.py::test_report_renders_in_chromium_without_errors_or_overflow",
    "tests/test_runtime.py::test_the_cli_chooses_a_policy_before_torch_loads",
    "tests/test_runtime.py::test_users_setting_is_kept",
    "tests/test_cli.py::test_python_m_vaekit_help",
    "tests/test_cuda.py::test_one_nccl_rank_under_torchrun",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = item.nodeid.split("[")[0]  # all parameters of a test alike
        if test in SLOW:
            item.add_marker(pytest.mark.slow)
        if test in INTEGRATION or item.path.name in INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)
