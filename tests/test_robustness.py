"""Issue 10: nothing a user types or a file contains may lose their work, eat their memory,
or end in a traceback.

Checkpoints with checksums (the newest valid one is used, and named), kill -9 anywhere and
resume exactly, divergence rolled back, runs killed before their first checkpoint, one-line
errors for bad sizes, run files and output locations, noise drawn chunk by chunk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit.api import train
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import CheckpointError, VaekitError
from vaekit.train import Callback, fit, setup_run, standard_callbacks

ROOT = Path(__file__).resolve().parents[1]
RING = ["--data", "ring:n=300", "--hidden", "16", "--latent-dim", "2", "--likelihood",
        "gaussian", "--batch-size", "64", "--device", "cpu", "--no-progress"]
DIGITS = ["--data", "digits", "--limit", "200", "--hidden", "32", "--latent-dim", "4",
          "--device", "cpu", "--no-progress"]
STEPS = 5  # ring:n=300 -> 270 training examples in batches of 64


def ring_cfg(epochs: int = 2, **train_opts) -> RunConfig:
    return RunConfig(DataConfig(name="ring:n=300"),
                     ModelConfig(latent_dim=2, arch={"name": "mlp", "hidden": [16]},
                                 likelihood="gaussian"),
                     TrainConfig(epochs=epochs, batch_size=64, device="cpu", **train_opts))


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def finite(ckpt: Path) -> bool:
    return all(bool(v.isfinite().all()) for v in weights(ckpt).values())


def manifest(ckpt: Path) -> dict:
    return json.loads((ckpt / "manifest.json").read_text())


def rehash(ckpt: Path) -> None:
    """Make the manifest match edited files (an edit the checksums cannot see)."""
    m = manifest(ckpt)
    for name, entry in m["files"].items():
        data = (ckpt / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (ckpt / "manifest.json").write_text(json.dumps(m))


def legacy(run: Path) -> Path:
    """The layout of vaekit 0.2.0: one checkpoint/ without a manifest."""
    for p in run.glob("checkpoint.*"):
        shutil.rmtree(p)
    (run / "checkpoint" / "manifest.json").unlink()
    return run


@pytest.fixture(scope="module", autouse=True)
def _no_html_report():
    """The HTML report that `train` and `evaluate` refresh is another feature's (its own
    tests); these tests are about the run's own files, and skip it to stay fast."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEKIT_NO_REPORT", "1")
        yield


@pytest.fixture(scope="module")
def ring3(tmp_path_factory) -> Path:
    """A ring run of 3 epochs with checkpoints every 2 steps (kept: the last 3)."""
    run = tmp_path_factory.mktemp("ring3") / "run"
    from vaekit.cli import main

    assert main(["train", *RING, "--epochs", "3", "--checkpoint-every", "2", "--out",
                 str(run)]) == 0
    return run


def copy_run(src: Path, tmp: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(src, tmp / name))


# ------------------------------------------------------------------ 1. checkpoints


def test_checkpoints_carry_checksums_and_the_last_three_are_kept(ring3, tmp_path, cli):
    names = sorted(p.name for p in ring3.iterdir() if p.name.startswith("checkpoint"))
    assert names == ["checkpoint", "checkpoint.1", "checkpoint.2"]
    steps = [manifest(ring3 / n)["step"] for n in ("checkpoint", "checkpoint.1", "checkpoint.2")]
    assert steps == [15, 14, 12]  # epoch end 15; mid-epoch 14 and 12 (every 2 steps)
    m = manifest(ring3 / "checkpoint")
    for name, entry in m["files"].items():
        data = (ring3 / "checkpoint" / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    cfg = json.loads((ring3 / "config.json").read_text())
    assert m["model_config"] == cfg["model"] and m["epoch"] == 3
    res = cli("train", *RING, "--epochs", "1", "--checkpoint-every", "2", "--keep-checkpoints",
              "1", "--out", tmp_path / "one")
    assert res.code == 0, res.err
    assert [p.name for p in (tmp_path / "one").iterdir() if p.name.startswith("checkp")] == [
        "checkpoint"]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped-byte": lambda c: _flip(c / "model.safetensors"),
    "truncated": lambda c: (c / "trainer.safetensors").write_bytes(
        (c / "trainer.safetensors").read_bytes()[:100]),
    "trainer-json-edited": lambda c: (c / "trainer.json").write_text(
        (c / "trainer.json").read_text().replace('"epoch": 3', '"epoch": 2')),
    "manifest-garbage": lambda c: (c / "manifest.json").write_bytes(b"\xff\x00 not json"),
    "file-missing": lambda c: (c / "trainer.json").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_detected_and_the_previous_one_used(damage, ring3, tmp_path,
                                                                     cli):
    run = copy_run(ring3, tmp_path)
    DAMAGE[damage](run / "checkpoint")
    res = cli("evaluate", run, "--k", "2")
    assert res.code == 0, res.err
    assert "skipped checkpoint/" in res.err and "using checkpoint.1/ (epoch 2, step 14)" in res.err
    ev = json.loads((run / "eval-test.json").read_text())
    assert ev["checkpoint"]["dir"].endswith("checkpoint.1") and ev["checkpoint"]["step"] == 14


def test_resume_from_the_previous_checkpoint_is_exact_and_logged(ring3, tmp_path, cli):
    run = copy_run(ring3, tmp_path)
    _flip(run / "checkpoint" / "model.safetensors")
    res = cli("train", "--resume", run, "--no-progress")
    assert res.code == 0, res.err
    log = (run / "train.log").read_text()
    assert "skipped checkpoint/ (step 15): model.safetensors does not match its sha256" in log
    assert "resumed from checkpoint.1/ (epoch 2, step 14)" in log and "resumed from" in res.out
    assert same_weights(run / "checkpoint", ring3 / "checkpoint")  # step 14 -> 15 again
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_no_valid_checkpoint_is_one_line_and_nothing_changes(ring3, tmp_path, cli, snapshot):
    run = copy_run(ring3, tmp_path)
    for n in ("checkpoint", "checkpoint.1", "checkpoint.2"):
        _flip(run / n / "model.safetensors")
    before = snapshot(run)
    cli("evaluate", run, "--k", "2").assert_user_error("holds no valid checkpoint",
                                                        "checkpoint.2/ (step 12)")
    cli("train", "--resume", run, "--no-progress").assert_user_error("no valid checkpoint")
    cli("sample", run).assert_user_error("no valid checkpoint")
    assert snapshot(run) == before


def test_run_directories_of_earlier_versions_load_when_asked_with_a_note(ring3, tmp_path, cli,
                                                                         snapshot):
    run = legacy(copy_run(ring3, tmp_path))
    before = snapshot(run)  # no checksums: refused unless asked for by name, nothing written
    cli("sample", run, "-n", "4", "--out", tmp_path / "s.png").assert_user_error(
        "no manifest.json", "--allow-unverified")
    cli("train", "--resume", run, "--epochs", "4", "--no-progress").assert_user_error(
        "--allow-unverified")
    assert snapshot(run) == before and not (tmp_path / "s.png").exists()
    res = cli("sample", run, "-n", "4", "--out", tmp_path / "s.png", "--allow-unverified")
    assert res.code == 0, res.err
    assert "has no checksums" in res.err and "loaded unverified" in res.err
    res = cli("train", "--resume", run, "--epochs", "4", "--no-progress", "--allow-unverified")
    assert res.code == 0, res.err
    assert (run / "checkpoint" / "manifest.json").is_file()  # new checkpoints have one
    assert not (run / "checkpoint.1" / "manifest.json").exists()  # the old one rotated
    old = legacy(copy_run(ring3, tmp_path, "crashed-swap"))  # 0.2.0 crashed mid-swap
    (old / "checkpoint").rename(old / "checkpoint.old")
    assert cli("evaluate", old, "--k", "2", "--allow-unverified").code == 0


def _nan_weights(ckpt: Path) -> None:
    w = weights(ckpt)
    w[next(iter(w))][0] = float("nan")
    save_file(w, str(ckpt / "model.safetensors"))


def test_non_finite_weights_are_refused(ring3, tmp_path, cli, snapshot):
    run = legacy(copy_run(ring3, tmp_path))  # as 0.2.0 wrote a diverged run
    _nan_weights(run / "checkpoint")
    before = snapshot(run)
    for argv in (["evaluate", run, "--k", "2"], ["sample", run], ["reconstruct", run]):
        cli(*argv, "--allow-unverified").assert_user_error("non-finite weights")
    assert snapshot(run) == before
    run = copy_run(ring3, tmp_path, "rehashed")  # checksums that match NaN weights
    for n in ("checkpoint", "checkpoint.1", "checkpoint.2"):
        _nan_weights(run / n)
        rehash(run / n)
    cli("sample", run).assert_user_error("non-finite weights")


def test_finite_weights_whose_outputs_overflow_are_flagged(ring3, tmp_path, cli):
    run = copy_run(ring3, tmp_path)
    w = weights(run / "checkpoint")
    save_file({k: v * 1e20 if k.startswith("encoder") else v for k, v in w.items()},
              str(run / "checkpoint" / "model.safetensors"))
    rehash(run / "checkpoint")
    res = cli("evaluate", run, "--k", "2")
    assert res.code == 0, res.err
    assert res.err.startswith("warning: elbo, iwae") and "not finite" in res.err


# ------------------------------------------------------------------ kill -9 and resume


def _vaekit(run: Path, *args: str, fault: str = "") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAEKIT_NO_REPORT": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "faults.py"), fault, "train",
                             *RING, "--epochs", "3",
                             "--checkpoint-every", "2", "--out", str(run), *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def test_sigterm_saves_the_run_at_its_step_and_the_resume_is_identical(ring3, tmp_path, cli):
    """A scheduler's SIGTERM (and Ctrl-C) stops training at the next step boundary: the run
    is saved there, one line says so, exit code 128 + the signal; resumed, it ends with the
    weights of the uninterrupted run."""
    for sig, code in (("SIGTERM", 143), ("SIGINT", 130)):
        run = tmp_path / sig
        proc = _vaekit(run, fault=f"{sig}:7")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"interrupted by {sig} at epoch 2, "
                                                       "step 7: the run was saved there")
        assert f"--resume {run}" in lines[0]
        assert manifest(run / "checkpoint")["step"] == 7
        assert "interrupted by" in (run / "train.log").read_text()
        assert cli("train", "--resume", run, "--no-progress").code == 0
        assert same_weights(ring3 / "checkpoint", run / "checkpoint")


def test_a_second_writer_of_a_run_is_refused_naming_the_holder(ring3, tmp_path, cli, snapshot):
    run = copy_run(ring3, tmp_path)
    holder = subprocess.Popen(  # another process holding the run, as a running `train` would
        [sys.executable, "-c", "import sys, time; from vaekit.io import DirectoryLock; "
         f"lock = DirectoryLock({str(run)!r}, 'run').acquire(); print('held', flush=True); "
         "time.sleep(120)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        cli("train", "--resume", run, "--epochs", "4", "--no-progress").assert_user_error(
            "is in use by another vaekit process", f"pid {holder.pid}")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    assert cli("train", "--resume", run, "--epochs", "4", "--no-progress").code == 0


def test_kill_9_anywhere_then_resume_gives_identical_weights(ring3, tmp_path, cli):
    """SIGKILL at every stage of a checkpoint save (the fault hook), during the first save,
    and at a random moment; each run resumed (again and again) ends with ring3's weights."""
    faults = {"model-3": "model:3", "trainer-4": "trainer:4", "manifest-5": "manifest:5",
              "rotate-6": "rotate:6", "rotate-last": "rotate:9", "first-save": "trainer:1",
              "before-config": ""}
    procs = {name: _vaekit(tmp_path / name, fault=f) for name, f in faults.items()}
    time.sleep(random.Random(0).uniform(2.0, 3.0))
    procs["before-config"].kill()  # a timed kill, anywhere
    for name, p in procs.items():
        _, err = p.communicate(timeout=120)
        assert p.returncode in (-9, 0), (name, err)
        if name != "before-config":
            assert p.returncode == -9, (name, err)
    assert not (tmp_path / "first-save" / "checkpoint").exists()  # killed in its first save
    for name in faults:
        run = tmp_path / name
        if not (run / "config.json").exists():  # killed before it wrote anything: run again
            res = cli("train", *RING, "--epochs", "3", "--checkpoint-every", "2", "--out", run)
        else:
            res = cli("train", "--resume", run, "--checkpoint-every", "2", "--no-progress")
        assert res.code == 0, (name, res.err)
        assert same_weights(run / "checkpoint", ring3 / "checkpoint"), name
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
        assert not (run / "checkpoint.new").exists()  # an interrupted rotation is finished


# ------------------------------------------------------------------ 2. divergence


class Poison(Callback):
    """Puts a NaN into the weights once, after step ``at`` (a bad step)."""

    def __init__(self, at: int) -> None:
        self.at, self.done = at, False

    def on_step_end(self, run, loss) -> None:
        if run.state.step == self.at and not self.done:
            self.done = True
            with torch.no_grad():
                next(run.model.parameters())[0] = float("nan")


def test_an_injected_nan_is_rolled_back_and_the_run_completes(tmp_path):
    run = setup_run(ring_cfg(3), tmp_path / "A")
    fit(run, [*standard_callbacks(run, progress=False), Poison(STEPS + 2)])
    assert [r["epoch"] for r in run.history] == [1, 2, 3]
    assert all(bool(p.isfinite().all()) for p in run.model.parameters())
    assert finite(tmp_path / "A" / "checkpoint")
    log = (tmp_path / "A" / "train.log").read_text()
    # the NaN weight makes step 8's loss NaN: caught there (CPU), back to the epoch-1 end
    assert ("diverged: the training loss is nan at step 8; rolled back to epoch 1, step 5 "
            "with the learning rate halved (x0.5; roll-back 1 of 3)") in log
    counters = json.loads((tmp_path / "A" / "checkpoint" / "trainer.json").read_text())
    assert counters["rollbacks"] == 1 and counters["param_groups"][0]["lr"] == 5e-4
    assert counters["param_groups"][0]["lr_scale"] == 0.5


def test_without_per_step_checks_the_epoch_end_check_rolls_back(tmp_path):
    """As on a GPU: no check per step; the poisoned weights are found at the epoch end, and
    a run without a directory returns to its in-memory state of the last epoch end."""
    cfg = ring_cfg(3, lr_schedule="cosine")
    run = setup_run(cfg)
    fit(run, [Poison(STEPS + 2)])
    assert len(run.history) == 3 and run.rollbacks == 1
    assert all(bool(p.isfinite().all()) for p in run.model.parameters())
    assert run.optimizer.param_groups[0]["lr_scale"] == 0.5
    from vaekit.train.step import lr_at

    last = run.total_steps - 1  # the scheduled lr of the last step, halved
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.5 * lr_at(last, run.total_steps, cfg))


def test_a_non_finite_state_is_never_saved(tmp_path):
    from vaekit.train import DivergenceError

    run = setup_run(ring_cfg(1), tmp_path / "A")
    with torch.no_grad():
        next(run.model.parameters())[0] = float("inf")
    with pytest.raises(DivergenceError, match="not finite"):
        run.checkpoint()
    assert not any(p.name.startswith("checkpoint") for p in (tmp_path / "A").iterdir())


class PoisonAlways(Callback):
    """Every step from ``at`` on is bad: a run that diverges whatever its learning rate."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, run, loss) -> None:
        if run.state.step >= self.at:
            with torch.no_grad():
                next(run.model.parameters())[0] = float("nan")


def test_a_run_that_always_diverges_stops_with_its_last_finite_checkpoint(tmp_path, cli,
                                                                          monkeypatch):
    import vaekit.api as api

    standard = api.standard_callbacks
    monkeypatch.setattr(api, "standard_callbacks",
                        lambda *a, **k: [*standard(*a, **k), PoisonAlways(STEPS + 3)])
    run = tmp_path / "div"
    res = cli("train", *RING, "--epochs", "3", "--checkpoint-every", "2", "--out", run)
    monkeypatch.undo()
    res.assert_user_error("training diverged", "after 3 roll-backs", "the last finite "
                          "checkpoint, checkpoint/ (epoch 1, step 8)", "is intact", "--lr")
    log = (run / "train.log").read_text()
    assert log.count("rolled back to epoch 1, step 8") == 3 and "x0.125" in log
    ckpts = [p for p in run.iterdir() if p.name.startswith("checkpoint")]
    assert len(ckpts) == 3 and all(finite(p) for p in ckpts)
    assert manifest(run / "checkpoint")["step"] == 8
    res = cli("evaluate", run, "--k", "2")
    assert res.code == 0, res.err
    ev = json.loads((run / "eval-test.json").read_text())
    assert all(abs(ev[k]) < 1e6 for k in ("elbo", "iwae"))


# ------------------------------------------------------------------ 3. dead ends


def _killed_before_first_checkpoint(run: Path) -> None:
    """What a run killed during its first epoch leaves: config, log, a half-written save."""
    run.mkdir()
    ring_cfg(2).save(run / "config.json")
    (run / "train.log").write_text("2026-01-01 00:00:00 started at epoch 0, step 0\n")
    (run / "checkpoint.new").mkdir()
    (run / "checkpoint.new" / "model.safetensors").write_bytes(b"partial")
    (run / ".metrics.jsonl.x1y2.tmp").write_text("{")


def test_a_run_killed_before_its_first_checkpoint_resumes_or_reruns(tmp_path, cli):
    ref = train(ring_cfg(2), tmp_path / "ref", progress=False)
    _killed_before_first_checkpoint(tmp_path / "A")
    res = cli("train", "--resume", tmp_path / "A", "--no-progress")
    assert res.code == 0, res.err
    assert "holds no checkpoint yet" in res.out and "starts from step 0" in res.out
    assert same_weights(tmp_path / "A" / "checkpoint", tmp_path / "ref" / "checkpoint")
    assert not (tmp_path / "A" / "checkpoint.new").exists()
    _killed_before_first_checkpoint(tmp_path / "B")
    res = cli("train", *RING, "--epochs", "2", "--out", tmp_path / "B")
    assert res.code == 0, res.err
    assert "held only what an earlier run wrote before its first checkpoint" in res.out
    assert not list((tmp_path / "B").glob(".*.tmp"))
    assert len(ref.history) == 2


def test_a_directory_with_anything_else_is_still_refused(tmp_path, cli, snapshot):
    _killed_before_first_checkpoint(tmp_path / "A")
    (tmp_path / "A" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    cli("train", *RING, "--out", tmp_path / "A").assert_user_error("not empty")
    assert snapshot(tmp_path) == before


def test_resume_rebuilds_the_metrics_files_from_the_checkpoint(ring3, tmp_path):
    from vaekit.train.callbacks import MetricsFiles
    from vaekit.train.checkpoint import load_run_config

    run_dir = copy_run(ring3, tmp_path)
    for n in ("checkpoint", "checkpoint.1", "checkpoint.2"):  # leave the epoch-2 end only
        shutil.rmtree(run_dir / n)
    shutil.copytree(ring3 / "checkpoint.2", run_dir / "checkpoint")  # step 12: epoch 2 + 2
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    cfg = load_run_config(run_dir)
    run = setup_run(cfg, run_dir, resume=True)
    MetricsFiles().on_fit_start(run)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 3


# ------------------------------------------------------------------ 4. one-line errors


def _edit_json(run: Path, name: str, edit) -> Path:
    path = run / name
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    return run


def _set(path: str, value):
    def edit(d: dict) -> None:
        *parents, key = path.split(".")
        for p in parents:
            d = d[p]
        d[key] = value
    return edit


def _cfg_edit(path: str, value):
    return lambda r, t: ["evaluate", _edit_json(copy_run(r, t), "config.json",
                                                _set(path, value)), "--k", "2"]


def _trainer_edit(path: str, value):  # a legacy checkpoint: no checksum to catch the edit
    return lambda r, t: ["train", "--resume", _edit_json(legacy(copy_run(r, t)),
                                                         "checkpoint/trainer.json",
                                                         _set(path, value)), "--no-progress",
                         "--allow-unverified"]


def _optimizer_of_another_shape(r: Path, t: Path) -> list:
    run = legacy(copy_run(r, t))
    path = run / "checkpoint" / "trainer.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("exp_avg"))
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(path))
    return ["train", "--resume", run, "--no-progress", "--allow-unverified"]


def _optimizer_tensor_renamed(r: Path, t: Path) -> list:
    run = legacy(copy_run(r, t))
    path = run / "checkpoint" / "trainer.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("exp_avg"))
    tensors[key + "_renamed"] = tensors.pop(key)
    save_file(tensors, str(path))
    return ["train", "--resume", run, "--no-progress", "--allow-unverified"]


def _bytes(name: str, data: bytes, make_legacy: bool = False):
    def make(r: Path, t: Path) -> list:
        run = copy_run(r, t)
        if make_legacy:
            legacy(run)
        (run / name).write_bytes(data)
        return ["evaluate", run, "--k", "2", *(["--allow-unverified"] if make_legacy else [])]
    return make


def _dangling(t: Path, name: str) -> Path:
    (t / name).symlink_to(t / "nowhere" / "x")
    return t / name


BAD = {  # name -> (argv builder (ring3, tmp), fragment of the error line)
    "latent-dim-1e9": (lambda r, t: ["train", *RING, "--latent-dim", "1000000000",
                                     "--out", t / "new"], "parameters"),
    "hidden-2e9": (lambda r, t: ["train", *RING, "--hidden", "2000000000", "--out", t / "new"],
                   "--hidden"),
    "iwae-k-1e8": (lambda r, t: ["train", *RING, "--objective", "iwae", "--iwae-k", "100000000",
                                 "--out", t / "new"], "--iwae-k"),
    "sample-n-1e9": (lambda r, t: ["sample", copy_run(r, t), "-n", "1000000000"],
                     "-n 1,000,000,000 samples"),
    "evaluate-naive-huge": (lambda r, t: ["evaluate", copy_run(r, t), "--naive", "10000000000"],
                            "--memory-mb"),
    "evaluate-generation-huge": (lambda r, t: ["evaluate", copy_run(r, t), "--generation",
                                               "100000000000000"], "--generation"),
    "seed-beyond-64-bits": (lambda r, t: ["train", *RING, "--seed", str(2**64), "--out",
                                          t / "new"], "seed"),
    "seed-negative": (lambda r, t: ["train", *RING, "--seed", "-1", "--out", t / "new"], "seed"),
    "sample-seed-huge": (lambda r, t: ["sample", copy_run(r, t), "--seed", str(2**70)],
                         "--seed"),
    "evaluate-seed-huge": (lambda r, t: ["evaluate", copy_run(r, t), "--seed", str(2**64)],
                           "--seed"),
    "config-file-not-utf8": (lambda r, t: ((t / "c.yaml").write_bytes(b"model: \xff\xfe\n"),
                                           ["train", "--config", t / "c.yaml", *RING, "--out",
                                            t / "new"])[1], "cannot parse"),
    "config-json-not-utf8": (_bytes("config.json", b"{\"data\": \xff}"), "config.json"),
    "trainer-json-not-utf8": (_bytes("checkpoint/trainer.json", b"\xff\xfe{", True),
                              "trainer.json"),
    "config-json-null": (_cfg_edit("model.latent_dim", None), "model.latent_dim"),
    "config-json-wrong-type": (_cfg_edit("train.batch_size", "many"), "batch_size"),
    "config-json-negative-shape": (_cfg_edit("model.data_shape", [-2]), "data_shape"),
    "config-json-activation-edited": (_cfg_edit("model.arch.activation", "tanh"),
                                      "model.arch.activation = 'tanh' does not match"),
    "config-json-version-9": (_cfg_edit("version", "9.0.0"), "vaekit 9.0.0"),
    "config-json-version-garbage": (_cfg_edit("version", "banana"), "version"),
    "trainer-epoch-negative": (_trainer_edit("epoch", -5), "epoch = -5"),
    "trainer-epoch-100": (_trainer_edit("epoch", 100), "epoch = 100"),
    "trainer-epoch-null": (_trainer_edit("epoch", None), "epoch = None"),
    "trainer-step-in-epoch-huge": (_trainer_edit("step_in_epoch", 10**12), "step_in_epoch"),
    "trainer-history-wrong-type": (_trainer_edit("history", "lost"), "history"),
    "trainer-optimizer-other-shape": (_optimizer_of_another_shape, "has shape (3, 3)"),
    "trainer-optimizer-tensor-renamed": (_optimizer_tensor_renamed, "other entries than Adam's"),
    "sample-out-dangling-symlink": (lambda r, t: ["sample", copy_run(r, t), "--out",
                                                  _dangling(t, "s.png")], "symbolic link"),
    "evaluate-json-dangling-symlink": (lambda r, t: ["evaluate", copy_run(r, t), "--json",
                                                     _dangling(t, "e.json")], "symbolic link"),
    "train-out-dangling-symlink": (lambda r, t: ["train", *RING, "--out",
                                                 _dangling(t, "run")], "symbolic link"),
    "train-out-under-a-file": (lambda r, t: ((t / "f").write_text("x"),
                                             ["train", *RING, "--out", t / "f" / "run"])[1],
                               "cannot create the run directory"),
    "gradients-json-is-run-state": (lambda r, t: ["gradients", (run := copy_run(r, t)),
                                                  "--json", run / "config.json"],
                                    "would overwrite the run's own state"),
    "evaluate-json-other-runs-manifest": (
        lambda r, t: ["evaluate", copy_run(r, t), "--force", "--json",
                      copy_run(r, t, "other") / "checkpoint" / "manifest.json"], "would overwrite"),
    "gradients-json-exists": (lambda r, t: ((t / "g.json").write_text("{}"),
                                            ["gradients", copy_run(r, t), "--json",
                                             t / "g.json"])[1], "already exists"),
    "sample-out-into-other-runs-checkpoint": (
        lambda r, t: ["sample", copy_run(r, t), "--force", "--out",
                      copy_run(r, t, "other") / "checkpoint" / "s.png"], "would overwrite"),
    "train-epochs-0": (lambda r, t: ["train", *RING, "--epochs", "0", "--out", t / "new"],
                       "at least one epoch"),
    "latent-dim-2-to-63": (lambda r, t: ["train", *RING, "--latent-dim", str(2**63), "--out",
                                         t / "new"], "out of range"),
    "hidden-1e20": (lambda r, t: ["train", *RING, "--hidden", "99999999999999999999", "--out",
                                  t / "new"], "out of range"),
    "epochs-2-to-31": (lambda r, t: ["train", *RING, "--epochs", str(2**31), "--out",
                                     t / "new"], "beyond the largest size"),
    "beta-1e308": (lambda r, t: ["train", *RING, "--beta", "1e308", "--out", t / "new"],
                   "beta must be in"),
    "config-yaml-int-key": (lambda r, t: ((t / "c.yaml").write_text("model: {1: 2}\n"),
                                          ["train", "--config", t / "c.yaml", *RING, "--out",
                                           t / "new"])[1], "not a name"),
    "config-toml-huge-int": (lambda r, t: ((t / "c.toml").write_text(
        "[model]\nlabel_dim = 9223372036854775807\n"), ["train", "--config", t / "c.toml",
                                                         *RING, "--out", t / "new"])[1],
        "beyond the largest size"),
    "evaluate-kde-no-centres": (lambda r, t: ["evaluate", copy_run(r, t), "--kde",
                                              "--kde-max-train", "0"], "--kde-max-train"),
    "evaluate-generation-1": (lambda r, t: ["evaluate", copy_run(r, t), "--generation", "1"],
                              "too few samples"),
    "evaluate-memory-mb-1e308": (lambda r, t: ["evaluate", copy_run(r, t), "--memory-mb",
                                               "1e308"], "--memory-mb"),
    "evaluate-k-1e9": (lambda r, t: ["evaluate", copy_run(r, t), "--k", "1000000000"],
                       "beyond it no estimate finishes"),
    "gradients-repeats-2-to-31": (lambda r, t: ["gradients", copy_run(r, t), "--repeats",
                                                str(2**31)], "--repeats"),
    "evaluate-unverified-checkpoint": (lambda r, t: ["evaluate", legacy(copy_run(r, t))],
                                       "--allow-unverified"),
    "keep-checkpoints-0": (lambda r, t: ["train", *RING, "--keep-checkpoints", "0", "--out",
                                         t / "new"], "--keep-checkpoints"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_loses_nothing(case, ring3, tmp_path, cli, snapshot):
    build, fragment = BAD[case]
    argv = build(ring3, tmp_path)
    before, shared = snapshot(tmp_path), snapshot(ring3)
    res = cli(*argv)
    res.assert_user_error(fragment)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten
    assert not (tmp_path / "new").exists()
    assert snapshot(ring3) == shared


def test_debug_shows_the_traceback(tmp_path, cli):
    argv = ["train", *RING, "--latent-dim", "1000000000", "--out", tmp_path / "new"]
    cli(*argv).assert_user_error("parameters")
    with pytest.raises(VaekitError, match="parameters"):
        cli("--debug", *argv)
    with pytest.raises(VaekitError, match="parameters"):
        cli(*argv, "--debug")


def test_a_full_or_read_only_location_is_one_line_and_keeps_the_checkpoint(ring3, tmp_path,
                                                                           cli, monkeypatch,
                                                                           snapshot):
    import vaekit.io

    run = copy_run(ring3, tmp_path)
    before = {n: snapshot(run / n) for n in ("checkpoint", "checkpoint.1", "checkpoint.2")}
    real = vaekit.io.os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vaekit.io.os, "fsync", full)
    res = cli("train", "--resume", run, "--epochs", "4", "--no-progress")
    res.assert_user_error("No space left on device", "free some space")
    monkeypatch.setattr(vaekit.io.os, "fsync", real)
    assert not list(run.rglob("*.tmp"))
    # the config write failed first: nothing of the checkpoints changed
    assert {n: snapshot(run / n) for n in before} == before

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(args[0]))

    monkeypatch.setattr("vaekit.train.checkpoint.write_synced", read_only)
    res = cli("train", "--resume", run, "--epochs", "4", "--no-progress")
    res.assert_user_error("Read-only file system")
    monkeypatch.undo()
    assert {n: snapshot(run / n) for n in before} == before  # a failed save lost nothing
    assert cli("train", "--resume", run, "--epochs", "4", "--no-progress").code == 0


def test_an_internal_error_is_one_line_too(tmp_path, cli, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("vaekit.cli.configure", bug)
    res = cli("train", *RING, "--out", tmp_path / "x")
    assert res.code == 1 and len(res.err.splitlines()) == 1
    assert "internal error ZeroDivisionError" in res.err and "--debug" in res.err


def test_python_resume_checks_the_checkpoint_position(ring3, tmp_path):
    run = legacy(copy_run(ring3, tmp_path))
    _edit_json(run, "checkpoint/trainer.json", _set("step", 7))
    with pytest.raises(CheckpointError, match="do not fit this run's 5 steps per epoch"):
        setup_run(RunConfig.load(run / "config.json"), run, resume=True, allow_unverified=True)


# ------------------------------------------------------------------ 5. noise per chunk


def test_noise_rows_do_not_depend_on_chunks_and_keep_the_first_block():
    from vaekit.noise import IndexedNoise, NoiseWindow, _splitmix64

    noise, idx = IndexedNoise(3, seed=5), torch.tensor([0, 7, 123456])
    full = noise.rows(idx, 0, 700)  # (700, 3, 3)
    rng = random.Random(0)
    for _ in range(20):
        k0 = rng.randrange(700)
        k1 = rng.randrange(k0 + 1, 701)
        assert torch.equal(noise.rows(idx, k0, k1), full[k0:k1])
    window, k0 = NoiseWindow(noise, idx), 0
    while k0 < 700:
        k1 = min(700, k0 + rng.randrange(1, 90))
        assert torch.equal(window.get(k0, k1), full[k0:k1])
        assert window.hi - window.lo <= (k1 - k0) + 2 * 128  # bounded, whatever K
        k0 = k1
    g = torch.Generator().manual_seed(_splitmix64((5 << 32) ^ 7) >> 1)  # vaekit 0.2.0's rows
    assert torch.equal(full[:16, 1], torch.randn(16 * 3, generator=g).view(16, 3))
    assert not torch.equal(full[16:32, 0], full[16:32, 1])


def test_the_estimator_draws_noise_per_chunk_for_any_k(tiny_model, monkeypatch):
    from vaekit import numerics
    from vaekit.evaluation import estimators
    from vaekit.noise import IndexedNoise

    model = tiny_model().eval()
    x = torch.randn(3, 6)
    drawn = []
    rows = IndexedNoise.rows

    def spy(self, idx, k0, k1):
        drawn.append(k1 - k0)
        return rows(self, idx, k0, k1)

    monkeypatch.setattr(IndexedNoise, "rows", spy)
    est = estimators.estimate_log_px(model, x, 20000, chunk_size=64, prefix_ks=[10, 1000])
    assert max(drawn) <= 64 + 2 * 128 and sum(drawn) < 20000 + 3 * 128
    monkeypatch.undo()
    ref = estimators.estimate_log_px(model, x, 20000, chunk_size=5000, prefix_ks=[10, 1000])
    torch.testing.assert_close(est.log_px, ref.log_px, rtol=0, atol=1e-9)
    torch.testing.assert_close(est.prefix[1000], ref.prefix[1000], rtol=0, atol=1e-9)
    ranges = numerics.cut_ranges(10**15, 256, [10])  # lazy: nothing of size K is built
    assert [next(ranges) for _ in range(3)] == [(0, 10), (10, 256), (256, 512)]


def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path):
    from vaekit.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        (tmp_path / "b.json").write_text("{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "a.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------ 6. hostile run files

RUN_FILES = ["config.json", "checkpoint/trainer.json", "checkpoint/manifest.json",
             "eval-test.json", "command.txt", "metrics.jsonl", "train.log"]


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_fifo_as_a_run_file_never_hangs(name, ring3, tmp_path):
    """Every file vaekit reads goes through the bounded reader: a FIFO (no writer: a plain
    open would block forever) is refused or skipped, each command ends, one line."""
    run = copy_run(ring3, tmp_path)
    (run / "eval-test.json").write_text("{}")
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    for argv in (["report", run], ["evaluate", run, "--k", "2"], ["sample", run, "-n", "2"],
                 ["train", "--resume", run, "--epochs", "4"]):
        res = subprocess.run([sys.executable, "-m", "vaekit", *map(str, argv)], cwd=ROOT,
                             capture_output=True, text=True, timeout=90,
                             env={**os.environ, "VAEKIT_NO_REPORT": "1"})
        assert res.returncode in (0, 2), (argv, res.stderr)
        assert "Traceback" not in res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == (res.returncode == 2), (argv, res.stderr)


EDITED = {  # metrics.jsonl / eval-test.json as a hand or a broken program left them
    "metrics-string": ("metrics.jsonl", '{"epoch": 1, "step": "many"}\n'),
    "metrics-null-row": ("metrics.jsonl", "null\n"),
    "metrics-no-epoch": ("metrics.jsonl", '{"step": 5, "train_loss": 3.0}\n'),
    "metrics-not-utf8": ("metrics.jsonl", b'{"epoch": 1, "x": "\xff"}\n'),
    "metrics-deep": ("metrics.jsonl", "[" * 5000 + "]" * 5000 + "\n"),
    "eval-strings": ("eval-test.json", '{"elbo": "high", "n_examples": 3}'),
    "eval-section-garbage": ("eval-test.json", None),  # a valid file with a broken section
    "eval-deep": ("eval-test.json", '{"a": ' * 3000 + "1" + "}" * 3000),
}


@pytest.mark.parametrize("case", list(EDITED))
def test_hand_edited_run_files_are_one_line_or_skipped(case, ring3, tmp_path, cli):
    run = copy_run(ring3, tmp_path)
    assert cli("evaluate", run, "--k", "2", "--no-report").code == 0
    name, content = EDITED[case]
    if content is None:  # the marginal section replaced by nonsense of the right type
        ev = json.loads((run / name).read_text())
        ev["marginal"] = {"importance": {"k": "x"}}
        content = json.dumps(ev)
    (run / name).write_bytes(content.encode() if isinstance(content, str) else content)
    res = cli("report", run)
    assert res.code in (0, 2), res.err
    if res.code == 2:
        res.assert_user_error(name)
    else:  # shown without the file's figures, with a note or a warning in the page
        assert "internal error" not in res.err
    res = cli("evaluate", run, "--k", "2")  # rewrites what it can, keeps nothing broken
    assert res.code == 0, res.err
    json.loads((run / "eval-test.json").read_text())


def test_world_size_garbage_is_one_line(ring3, tmp_path, cli, monkeypatch):
    for value in ("abc", "-1", "99999999999999999999"):
        monkeypatch.setenv("WORLD_SIZE", value)
        cli("train", *RING, "--out", tmp_path / "new").assert_user_error("WORLD_SIZE")
        cli("evaluate", ring3).assert_user_error("WORLD_SIZE")
    assert not (tmp_path / "new").exists()
