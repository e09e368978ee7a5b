"""The command line end to end (in-process), config files, and one-line errors on bad input."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vaekit.data.idx import write_idx

RING = ["--data", "ring:n=300", "--hidden", "16", "--latent-dim", "2", "--likelihood", "gaussian",
        "--device", "cpu", "--no-progress"]
DIGITS = ["--data", "digits", "--limit", "200", "--hidden", "32", "--latent-dim", "4",
          "--device", "cpu", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 500 and path.read_bytes()[:8] == PNG


def test_python_m_vaekit_help():
    res = subprocess.run([sys.executable, "-m", "vaekit", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for command in ("train", "evaluate", "sample", "reconstruct", "data"):
        assert command in res.stdout


def test_version_and_data_list(cli, capsys):
    res = cli("--version")
    assert res.code == 0 and "vaekit 0." in res.out
    res = cli("data", "list")
    assert res.code == 0
    for name in ("fashion-mnist", "mnist", "digits", "ring", "manifold"):
        assert name in res.out


def test_ring_train_evaluate_sample_reconstruct(tmp_path, cli):
    run = tmp_path / "RUN"
    res = cli("train", *RING, "--epochs", "2", "--likelihood", "gaussian-gamma", "--out", run)
    assert res.code == 0, res.err
    assert "run directory" in res.out and "final validation ELBO" in res.out
    for name in ("config.json", "checkpoint/model.safetensors", "checkpoint/trainer.safetensors",
                 "checkpoint/trainer.json", "metrics.jsonl", "metrics.csv"):
        assert (run / name).is_file(), name
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["val_elbo"]) and r["gamma"] > 0 for r in rows)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["likelihood"]["name"] == "gaussian-gamma"
    assert cfg["model"]["data_shape"] == [2]
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["name"] == "ring:n=300"

    res = cli("evaluate", run, "--k", "10")
    assert res.code == 0, res.err
    ev = json.loads((run / "eval-test.json").read_text())
    assert ev["n_examples"] == 60 and ev["iwae_k"] == 10 and ev["latent_dim"] == 2
    assert math.isfinite(ev["elbo"]) and math.isfinite(ev["iwae"])
    assert ev["elbo"] <= ev["iwae"]
    assert ev["elbo_se"] > 0 and ev["kl"] >= 0
    assert ev["elbo"] == pytest.approx(ev["log_px_z"] - ev["kl"], abs=1e-6)
    assert ev["elbo_bpd"] is None  # continuous data: no bits/dim
    assert ev["likelihood_gamma"] == pytest.approx(rows[-1]["gamma"], rel=1e-6)
    assert "IWAE-10" in res.out

    res = cli("sample", run, "-n", "16")
    assert res.code == 0, res.err
    assert is_png(run / "samples.png")
    samples = np.load(run / "samples.npy")
    assert samples.shape == (16, 2) and np.isfinite(samples).all()
    res = cli("reconstruct", run, "-n", "8")
    assert res.code == 0, res.err
    assert is_png(run / "reconstructions.png")
    # same seed, same samples
    assert cli("sample", run, "-n", "16", "--out", tmp_path / "again.png").code == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), samples)


def test_digits_bernoulli_end_to_end(tmp_path, cli):
    run = tmp_path / "RUN"
    res = cli("train", *DIGITS, "--epochs", "1", "--out", run)
    assert res.code == 0, res.err
    assert "binarized" in res.out
    res = cli("evaluate", run, "--k", "10")
    assert res.code == 0, res.err
    ev = json.loads((run / "eval-test.json").read_text())
    assert ev["n_examples"] == 359 and ev["data_dim"] == 64  # 20% of 1797
    assert ev["elbo"] < 0 and ev["elbo"] <= ev["iwae"]
    # binarized data: bits/dim = -ELBO / (64 ln 2), no offset
    assert ev["elbo_bpd"] == pytest.approx(-ev["elbo"] / (64 * math.log(2)), rel=1e-9)
    assert 0 < ev["iwae_bpd"] <= ev["elbo_bpd"]
    assert cli("sample", run, "-n", "16").code == 0
    assert is_png(run / "samples.png")
    samples = np.load(run / "samples.npy")
    assert samples.shape == (16, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert cli("reconstruct", run, "-n", "8").code == 0
    assert is_png(run / "reconstructions.png")
    assert cli("evaluate", run, "--k", "5", "--split", "val").code == 0
    assert json.loads((run / "eval-val.json").read_text())["n_examples"] == 20


CONFIG_TEXT = {
    "yaml": ("data:\n  name: 'ring:n=200'\nmodel:\n  latent_dim: 3\n  arch: {hidden: [8]}\n"
             "  likelihood: gaussian\ntrain:\n  epochs: 1\n  batch_size: 50\n  lr: 0.002\n"),
    "toml": ('[data]\nname = "ring:n=200"\n[model]\nlatent_dim = 3\nlikelihood = "gaussian"\n'
             '[model.arch]\nhidden = [8]\n[train]\nepochs = 1\nbatch_size = 50\nlr = 0.002\n'),
}


@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_config_file_with_flag_overrides(tmp_path, cli, fmt):
    path = tmp_path / f"cfg.{fmt}"
    path.write_text(CONFIG_TEXT[fmt])
    run = tmp_path / "RUN"
    res = cli("train", "--config", path, "--latent-dim", "2", "--batch-size", "25",
              "--device", "cpu", "--no-progress", "--out", run)
    assert res.code == 0, res.err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["name"] == "ring:n=200"  # from the file
    assert cfg["model"]["arch"]["hidden"] == [8]
    assert cfg["model"]["likelihood"] == {"name": "gaussian", "sigma": 1.0}
    assert cfg["train"]["lr"] == 0.002 and cfg["train"]["epochs"] == 1
    assert cfg["model"]["latent_dim"] == 2 and cfg["train"]["batch_size"] == 25  # flags win
    assert cfg["train"]["seed"] == 0 and cfg["data"]["val_fraction"] == 0.1  # defaults
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    assert json.loads(rows[0])["epoch"] == 1


def test_preset_is_overridden_by_the_config_file_and_flags(tmp_path, cli):
    from vaekit.config import PRESETS

    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG_TEXT["toml"])  # sets epochs 1, batch 50, lr 0.002
    run = tmp_path / "RUN"
    res = cli("train", "--preset", "fast", "--config", path, "--warmup-steps", "3",
              "--device", "cpu", "--no-progress", "--out", run)
    assert res.code == 0, res.err
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["lr_schedule"] == PRESETS["fast"]["train"]["lr_schedule"] == "cosine"
    assert train["lr"] == 0.002 and train["batch_size"] == 50  # the file beats the preset
    assert train["warmup_steps"] == 3  # flags beat both
    cli("train", "--resume", run, "--preset", "fast").assert_user_error("--preset")
    cli("train", "--preset", "slow", "--out", tmp_path / "x").assert_user_error(
        "--preset", "--help")  # argparse's errors are one line too
    assert not (tmp_path / "x").exists()


def test_resnet_bernoulli_preset_trains_a_residual_conv_vae(tmp_path, cli):
    run = tmp_path / "RUN"
    res = cli("train", "--preset", "resnet-bernoulli", "--data", "digits", "--limit", "200",
              "--epochs", "1", "--device", "cpu", "--no-progress", "--out", run)
    assert res.code == 0, res.err
    cfg = json.loads((run / "config.json").read_text())
    arch = cfg["model"]["arch"]
    assert (arch["name"], arch["channels"], arch["blocks"]) == ("resnet", [32, 64], 1)
    assert cfg["model"]["likelihood"]["name"] == "bernoulli"
    assert cfg["data"]["transform"] == "auto" and "transform binarize" in res.out
    assert (cfg["train"]["epochs"], cfg["train"]["lr_schedule"]) == (1, "cosine")  # flag wins
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["val_elbo"]) and row["val_elbo"] < 0


# --------------------------------------------------------------- bad input


def _idx_dir(tmp: Path) -> Path:
    d = tmp / "idx"
    d.mkdir()
    imgs = np.zeros((10, 4, 4), np.uint8)
    write_idx(d / "t10k-images-idx3-ubyte", imgs)
    write_idx(d / "train-images-idx3-ubyte", imgs)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:-20])  # truncated
    return d


def _npy(tmp: Path, value: float) -> Path:
    a = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    a[7, 2] = value
    np.save(tmp / "x.npy", a)
    return tmp / "x.npy"


def _copy_run(ring_run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(ring_run, tmp / "run"))


def _corrupt_weights(ring_run: Path, tmp: Path) -> Path:
    run = _copy_run(ring_run, tmp)
    (run / "checkpoint" / "model.safetensors").write_bytes(b"\x00garbage\xff" * 20)
    return run


def _edit_latent_dim(ring_run: Path, tmp: Path) -> Path:
    run = _copy_run(ring_run, tmp)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["latent_dim"] = 5
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _config_only(ring_run: Path, tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    shutil.copy(ring_run / "config.json", run / "config.json")
    return run


def _bad_config(text: str, suffix: str = "yaml") -> Callable[[Path, Path], list]:
    def make(_ring: Path, tmp: Path) -> list:
        (tmp / f"c.{suffix}").write_text(text)
        return ["train", "--config", tmp / f"c.{suffix}", *RING, "--out", tmp / "new"]
    return make


# name -> (argv builder (ring_run, tmp) -> argv, text the error line must contain)
BAD = {
    "missing-data-path": (lambda r, t: ["train", *RING, "--data", t / "no" / "such" / "dir",
                                        "--out", t / "new"], "does not exist"),
    "missing-data-file": (lambda r, t: ["train", *RING, "--data", t / "x.npz",
                                        "--out", t / "new"], "does not exist"),
    "corrupt-idx-dir": (lambda r, t: ["train", *RING, "--data", _idx_dir(t), "--out", t / "new"],
                        "truncated"),
    "nan-values": (lambda r, t: ["train", *RING, "--data", _npy(t, np.nan), "--likelihood",
                                 "gaussian", "--out", t / "new"], "NaN"),
    "inf-values": (lambda r, t: ["train", *RING, "--data", _npy(t, np.inf), "--likelihood",
                                 "gaussian", "--out", t / "new"], "NaN or Inf"),
    "bernoulli-out-of-range": (lambda r, t: ["train", *RING, "--data", _npy(t, 3.0),
                                             "--likelihood", "bernoulli", "--out", t / "new"],
                               "outside [0, 1]"),
    "unknown-dataset": (lambda r, t: ["train", *RING, "--data", "no-such-set",
                                      "--out", t / "new"], "unknown dataset"),
    "unknown-dataset-option": (lambda r, t: ["train", *RING, "--data", "ring:radius=2",
                                             "--out", t / "new"], "radius"),
    "latent-dim-0": (lambda r, t: ["train", *RING, "--latent-dim", "0", "--out", t / "new"],
                     "latent"),
    "latent-dim-negative": (lambda r, t: ["train", *RING, "--latent-dim", "-3",
                                          "--out", t / "new"], "-3"),
    "batch-size-0": (lambda r, t: ["train", *RING, "--batch-size", "0", "--out", t / "new"],
                     "batch size"),
    "hidden-0": (lambda r, t: ["train", *RING, "--hidden", "16", "0", "--out", t / "new"],
                 "hidden"),
    "unknown-likelihood": (lambda r, t: ["train", *RING, "--likelihood", "poisson",
                                         "--out", t / "new"], "poisson"),
    "bad-device": (lambda r, t: ["train", *RING, "--device", "tpu:9", "--out", t / "new"],
                   "device"),
    "out-is-existing-run": (lambda r, t: ["train", *RING, "--out", _copy_run(r, t)],
                            "already exists"),
    "resume-mismatch": (lambda r, t: ["train", "--resume", _copy_run(r, t), "--latent-dim", "3",
                                      "--epochs", "2", "--no-progress"], "does not match"),
    "resume-with-out": (lambda r, t: ["train", "--resume", _copy_run(r, t), "--out", t / "new",
                                      "--no-progress"], "--resume"),
    "resume-missing": (lambda r, t: ["train", "--resume", t / "nope", "--no-progress"],
                       "does not exist"),
    "evaluate-missing-dir": (lambda r, t: ["evaluate", t / "nope"], "does not exist"),
    "evaluate-empty-dir": (lambda r, t: ["evaluate", (t / "empty").mkdir() or t / "empty"],
                           "config.json"),
    "evaluate-no-checkpoint": (lambda r, t: ["evaluate", _config_only(r, t)], "no checkpoint"),
    "evaluate-corrupt-weights": (lambda r, t: ["evaluate", _corrupt_weights(r, t), "--k", "5"],
                                 "corrupt"),
    "sample-corrupt-weights": (lambda r, t: ["sample", _corrupt_weights(r, t)], "corrupt"),
    "evaluate-edited-config": (lambda r, t: ["evaluate", _edit_latent_dim(r, t), "--k", "5"],
                               "does not match"),
    "reconstruct-edited-config": (lambda r, t: ["reconstruct", _edit_latent_dim(r, t)],
                                  "does not match"),
    "evaluate-negative-k": (lambda r, t: ["evaluate", _copy_run(r, t), "--k", "-1"], "--k"),
    "config-unknown-key": (_bad_config("model:\n  latent_size: 3\n"), "latent_size"),
    "config-unknown-section": (_bad_config("optim:\n  lr: 0.1\n"), "optim"),
    "config-bad-syntax": (_bad_config("model: [unclosed\n"), "cannot parse"),
    "config-bad-toml": (_bad_config("[model\nx=1", "toml"), "cannot parse"),
    "config-wrong-suffix": (_bad_config("a: 1", "ini"), "YAML nor TOML"),
    "sample-n-0": (lambda r, t: ["sample", _copy_run(r, t), "-n", "0"], "-n must be positive"),
    "sample-n-negative": (lambda r, t: ["sample", _copy_run(r, t), "-n", "-1"], "-n"),
    "reconstruct-n-0": (lambda r, t: ["reconstruct", _copy_run(r, t), "-n", "0"], "-n"),
    "config-missing": (lambda r, t: ["train", "--config", t / "nope.yaml", *RING,
                                     "--out", t / "new"], "does not exist"),
    "config-flat-network-key": (_bad_config("model:\n  hidden: [8]\n"),
                                "'hidden' is an option of config.model.arch"),
    "option-of-another-likelihood": (lambda r, t: ["train", *RING, "--likelihood", "bernoulli",
                                                   "--sigma", "0.1", "--out", t / "new"],
                                     "likelihood 'bernoulli' takes no option(s) ['sigma']"),
    "kl-with-iwae": (lambda r, t: ["train", *RING, "--objective", "iwae", "--kl", "mc",
                                   "--out", t / "new"], "objective 'iwae' takes no option"),
    "beta-with-iwae": (lambda r, t: ["train", *RING, "--objective", "iwae", "--beta", "0.5",
                                     "--out", t / "new"], "--beta"),
    "unknown-prior": (lambda r, t: ["train", *RING, "--prior", "laplace", "--out", t / "new"],
                      "unknown prior 'laplace'"),
    "conditional-without-labels": (lambda r, t: ["train", *RING, "--conditional",
                                                 "--out", t / "new"], "labelled data"),
    "label-on-unconditional": (lambda r, t: ["sample", _copy_run(r, t), "--label", "1"],
                               "--label needs a conditional model"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_error(case, tmp_path, cli, ring_run, snapshot):
    build, fragment = BAD[case]
    argv = build(ring_run, tmp_path)
    before = snapshot(tmp_path)
    shared_before = snapshot(ring_run)
    res = cli(*argv)
    res.assert_user_error(fragment)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten
    assert not (tmp_path / "new").exists()
    assert snapshot(ring_run) == shared_before


def _yaml_typed(text: str) -> Callable[[Path, Path], list]:
    def make(_ring: Path, tmp: Path) -> list:  # no flag may override the bad value
        (tmp / "c.yaml").write_text(text)
        return ["train", "--config", tmp / "c.yaml", "--data", "ring:n=100", "--likelihood",
                "gaussian", "--epochs", "1", "--device", "cpu", "--no-progress",
                "--out", tmp / "new"]
    return make


# inputs that once escaped as a traceback instead of a one-line error (regression cases)
TRACEBACKS = {
    "dataset-option-not-a-number": (lambda r, t: ["train", *RING, "--data", "ring:n=abc",
                                                  "--out", t / "new"],
                                    "_ring/_manifold call int()/float() on options unchecked"),
    "dataset-empty-ring": (lambda r, t: ["train", *RING, "--data", "ring:n=0",
                                         "--out", t / "new"],
                           "ring:n=0 (empty training split) trains 0 steps and exits 0 (with "
                           "bernoulli: RuntimeError from min() of an empty tensor)"),
    "config-value-wrong-type": (_yaml_typed("model:\n  latent_dim: two\n"),
                                "ModelConfig.validate compares a str with an int (TypeError)"),
    "config-hidden-not-a-list": (_yaml_typed("model:\n  arch: {hidden: 16}\n"),
                                 "ModelConfig.validate iterates an int (TypeError)"),
}


@pytest.mark.parametrize("case", list(TRACEBACKS))
def test_bad_input_without_traceback(case, tmp_path, cli, ring_run):
    argv = TRACEBACKS[case][0](ring_run, tmp_path)
    res = cli(*argv)
    res.assert_user_error()
    assert not (tmp_path / "new").exists()


def test_existing_empty_out_dir_is_used(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    res = cli("train", *RING, "--epochs", "1", "--out", tmp_path / "empty")
    assert res.code == 0, res.err
    assert (tmp_path / "empty" / "checkpoint" / "model.safetensors").is_file()


def test_gzip_idx_dataset_through_cli(tmp_path, cli):
    rng = np.random.default_rng(0)
    d = tmp_path / "mini"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 6, 6), dtype=np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 6, 6), dtype=np.uint8))
    assert gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())[:4] == b"\0\0\x08\x03"
    run = tmp_path / "RUN"
    res = cli("train", "--data", d, "--hidden", "8", "--latent-dim", "2", "--epochs", "1",
              "--likelihood", "gaussian", "--device", "cpu", "--no-progress", "--out", run)
    assert res.code == 0, res.err
    assert "dequantized" in res.out
    assert cli("evaluate", run, "--k", "4").code == 0
    ev = json.loads((run / "eval-test.json").read_text())
    # dequantized 8-bit data: bits/dim = (-ELBO + D ln 256) / (D ln 2)
    assert ev["elbo_bpd"] == pytest.approx((-ev["elbo"] + 36 * math.log(256)) / (36 * math.log(2)))


def test_more_bad_inputs_give_one_line(tmp_path, cli, ring_run):
    cli("train", *RING, "--activation", "foo", "--out", tmp_path / "a").assert_user_error(
        "activation")
    cli("train", *RING, "--checkpoint-every", "-1", "--out", tmp_path / "b").assert_user_error(
        "--checkpoint-every")
    cli("evaluate", ring_run, "--memory-mb", "0").assert_user_error("--memory-mb")
    cli("evaluate", ring_run, "--json", tmp_path / "no" / "x.json").assert_user_error(
        "does not exist")
    cli("sample", ring_run, "--out", tmp_path / "s.xyz").assert_user_error("suffix")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_records_raised_epochs(tmp_path, cli):
    run = tmp_path / "r"
    assert cli("train", *RING, "--epochs", "1", "--out", run).code == 0
    assert cli("train", "--resume", run, "--epochs", "2", "--no-progress").code == 0
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
