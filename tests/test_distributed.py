"""Issue 13: data-parallel training and evaluation on torch.distributed (gloo, 2 CPU
processes on loopback, started by the tests themselves: with torchrun for the CLI, by
hand with torchrun's environment for the Python API)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RING = ["--data", "ring:n=2000", "--hidden", "16", "--latent-dim", "2", "--likelihood",
        "gaussian", "--batch-size", "32", "--device", "cpu", "--no-progress", "--no-report"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch build has no torch.distributed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "VAEKIT_NO_REPORT": "1",
            "VAEKIT_DIST_TIMEOUT": "60", **extra}


def torchrun(*args, n: int = 2, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node n -m vaekit ARGS`` on loopback."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "vaekit",
           *map(str, args)]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout,
                          cwd=kw.get("cwd", ROOT))


def ranks(mode: str, *args: str, n: int = 2) -> list[tuple[int, str]]:
    """tests/ddp_worker.py on n ranks with the environment torchrun sets: (exit code,
    stderr) per rank."""
    port, procs = str(free_port()), []
    for r in range(n):
        e = env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "ddp_worker.py"),
                                       mode, *args], env=e, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


def same_tensors(a: Path, b: Path) -> list[str]:
    """Keys whose tensors differ (bitwise) between two safetensors files."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return [k for k in ta if not torch.equal(ta[k], tb[k])]


@pytest.mark.parametrize("n", [613, 609])
def test_two_ranks_of_batch_b_take_the_steps_of_one_process_with_batch_2b(tmp_path, n):
    """One epoch of n examples: with 613 the last global batch of 5 splits 2 + 3, so each
    rank's loss must be weighted by its share; with 609 it is 1 row, and rank 0 has none.
    The encoder's variance is ~4e-18, so each rank's own reparameterization noise no longer
    matters; what remains is float32 rounding of the gradient sums (DDP adds the two ranks'
    halves; one process sums all rows at once), ~1 ulp per step through 20 Adam steps:
    tolerance 1e-6 on weights of size ~1 (measured 6e-8; without the share weighting the
    difference is 1e-3)."""
    assert ranks("fit", str(tmp_path / "two.st"), "16", str(n)) == [(0, ""), (0, "")]
    assert ranks("fit", str(tmp_path / "one.st"), "32", str(n), n=1) == [(0, "")]
    two, one = load_file(str(tmp_path / "two.st")), load_file(str(tmp_path / "one.st"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6, msg=key)
    assert any((one[k] != 0).any() for k in one)


def _floats(a, b, path=""):
    """Every float of two JSON trees, side by side (timings excluded)."""
    if isinstance(a, dict):
        for k in a:
            if k not in ("seconds", "train_seconds"):
                yield from _floats(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            yield from _floats(u, v, f"{path}[{i}]")
    elif isinstance(a, float):
        yield path, a, b


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "digits"
    from vaekit.cli import main

    assert main(["train", "--data", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs",
                 "2", "--device", "cpu", "--no-progress", "--no-report", "--out", str(run)]) == 0
    return run


def test_distributed_evaluation_equals_one_process(digits_run, tmp_path, monkeypatch):
    """Importance sampling, the naive estimator, IWAE, ELBO, KDE/Parzen and the generation
    scores on 2 ranks (each a block of the test examples, gathered in order) give the
    single-process figures: every number to 1e-9 relative (what differs is only how rows
    are batched through the matmuls)."""
    opts = ["--loglik", "64", "--naive", "200", "--kde", "--kde-max-train", "300",
            "--generation", "150", "--no-report"]
    res = torchrun("evaluate", digits_run, *opts, "--json", tmp_path / "two.json")
    assert res.returncode == 0, res.stderr[-2000:]
    from vaekit.cli import main

    assert main(["evaluate", str(digits_run), *opts, "--json", str(tmp_path / "one.json")]) == 0
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    pairs = list(_floats(one, two))
    assert len(pairs) > 50 and "generation" in one and "kde" in one
    bad = [(p, a, b) for p, a, b in pairs
           if not (math.isnan(a) and math.isnan(b)) and abs(a - b) > 1e-9 * max(1.0, abs(a))]
    assert not bad


def test_a_two_rank_run_resumes_on_one_rank_and_finishes(tmp_path):
    run = tmp_path / "r"
    res = torchrun("train", *RING, "--epochs", "1", "--out", run)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["batch_size"], saved["world_size"]) == (32, 2)
    log = (run / "train.log").read_text()
    assert "data parallel: 2 ranks (gloo), batch 32 per rank = 64 per step" in log
    from vaekit.cli import main

    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())["train"]
    assert (cfg["batch_size"], cfg["world_size"]) == (64, 1)  # the global batch is kept
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["step"] * 2 == rows[1]["step"]  # same steps per epoch
    assert "resumed on 1 rank(s), saved on 2" in (run / "train.log").read_text()


def _kill_when(proc: subprocess.Popen, run: Path, step: int, limit: float = 120) -> int:
    """SIGKILL the whole torchrun job once a checkpoint of at least ``step`` exists."""
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        try:
            at = json.loads((run / "checkpoint" / "manifest.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            at = -1
        if at >= step:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return at
        time.sleep(0.05)
    raise AssertionError("the run ended before it could be killed")


def test_a_killed_two_rank_run_resumed_on_two_ranks_ends_identical(tmp_path):
    """kill -9 of every process mid-run, then --resume on 2 ranks: the same weights and
    optimizer state, bit for bit, as an uninterrupted 2-rank run (every rank's noise
    generator is in the checkpoint)."""
    args = [*RING, "--epochs", "15", "--checkpoint-every", "10"]
    ref = torchrun("train", *args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "vaekit",
           "train", *args, "--out", str(run)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
    at = _kill_when(proc, run, 40)
    assert at < 15 * 29  # killed before the end (29 steps an epoch)
    res = torchrun("train", "--resume", run, "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("model.safetensors", "trainer.safetensors"):
        assert same_tensors(tmp_path / "ref" / "checkpoint" / name,
                            run / "checkpoint" / name) == []


def test_ranks_given_different_settings_are_refused():
    out = ranks("mismatch")
    assert [code for code, _ in out] == [2, 2]
    assert "the configuration differs between ranks" in out[0][1]


def test_a_rank_that_dies_stops_rank_0_with_one_clear_line():
    t0 = time.time()
    (code0, err0), (code1, _) = ranks("die")
    assert code1 == 3 and code0 == 1
    assert time.time() - t0 < 60  # no hang (the stated timeout is VAEKIT_DIST_TIMEOUT)
    assert "rank 0 lost the other ranks of the job" in err0.strip().splitlines()[-1]


def test_commands_that_do_not_run_data_parallel_say_so(digits_run, cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cli("sample", digits_run, "-n", "4").assert_user_error("does not run under torchrun")


def test_a_resume_on_other_ranks_keeps_the_saved_global_batch(tmp_path):
    """Whatever world size the caller's config names (the CLI's saved one, or the Python
    default of 1, or stage 2's copy of stage 1's), the saved global batch of 32 x 2 is kept;
    another per-rank batch is refused by the resume policy, not silently replaced."""
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig, resume_config
    from vaekit.errors import CheckpointError, ConfigError

    def cfg(batch: int, world: int = 1) -> RunConfig:
        return RunConfig(DataConfig(name="ring"), ModelConfig(),
                         TrainConfig(batch_size=batch, world_size=world))

    saved = cfg(32, 2)
    for given in (cfg(32), cfg(32, 2), cfg(64), None, {"train": {"batch_size": 64}}):
        for size, per_rank in ((1, 64), (2, 32), (4, 16)):
            c, notes = resume_config(saved, given, size, tmp_path)
            assert (c.train.batch_size, c.train.world_size) == (per_rank, size)
            assert bool(notes) == (size != 2)
    assert (saved.train.batch_size, saved.train.world_size) == (32, 2)  # a copy was resolved
    with pytest.raises(CheckpointError, match=r"train\.batch_size = 48 does not match"):
        resume_config(saved, cfg(48), 1, tmp_path)
    with pytest.raises(ConfigError, match="cannot be split evenly across 3 ranks"):
        resume_config(saved, cfg(32), 3, tmp_path)
