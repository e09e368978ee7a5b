"""vaekit's face: one function per thing a user does with a run, each a few calls into the
layers below. The CLI parses flags, calls one of these, prints what it returns.

    run = train(cfg, "runs/x")                    # train (and stage 2), checkpoints, logs
    rd = RunDir.open("runs/x")                    # a run directory, opened once
    out = evaluate(rd, EvalOptions(loglik=1000))  # figures into runs/x/eval-test.json
    sample(rd, 64)                                # runs/x/samples.png and .npy
    report(rd)                                    # runs/x/report.html and figures/

Every function takes the run (an opened :class:`~vaekit.rundir.RunDir`, or the
:class:`~vaekit.train.Run` just trained) instead of a path, so that a command parses the
config, verifies the checkpoint, builds the model and prepares the data once.
"""

from __future__ import annotations

import io
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit import distributed
from vaekit.config import KEEP, RunConfig, Stage2Config, configure, stage2_settings
from vaekit.data.datasets import list_datasets
from vaekit.errors import CheckpointError, ConfigError, VaekitError
from vaekit.evaluation.gradients import gradient_study
from vaekit.evaluation.suite import MAX_SAMPLES, SECTIONS, EvalOptions, evaluate_all
from vaekit.io import (
    JSON_LIMIT,
    DirectoryLock,
    append_text,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
)
from vaekit.limits import check_samples
from vaekit.numerics import chunks, derive_seed, seeded_generator
from vaekit.report import ReportResult, write_report
from vaekit.report.plots import loglik_figure, picture_bytes, save_figure, variance_figure
from vaekit.report.text import format_full_report, format_gradients
from vaekit.rundir import COMMAND_FILE, RunDir
from vaekit.train import Run, fit, fit_stage2, setup_run, standard_callbacks
from vaekit.train.base import STOP, Interrupted

__all__ = [
    "STOP",
    "EvalOptions",
    "Evaluated",
    "GradientOptions",
    "Interrupted",
    "RunConfig",
    "RunDir",
    "Stage2Config",
    "Written",
    "configure",
    "default_run_dir",
    "distributed",
    "evaluate",
    "format_full_report",
    "format_gradients",
    "gradients",
    "list_datasets",
    "load_model",
    "merge_evaluation",
    "reconstruct",
    "record_command",
    "report",
    "sample",
    "train",
    "train_stage2",
]


# ------------------------------------------------------------------ training


def new_run_dir(stem: str, root: str | Path = "runs") -> Path:
    """A new ``runs/<stem>-<time>`` (``-2``, ``-3``, ... when that one exists)."""
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """A new ``runs/<data name>-<time>`` (``-2``, ``-3``, ... when that one exists)."""
    return new_run_dir(Path(cfg.data.name).name, root)


DISTRIBUTED_COMMANDS = ("train", "evaluate")


def check_command(command: str) -> None:
    """Under torchrun (WORLD_SIZE > 1) only the commands that run data-parallel are allowed
    (the others would repeat the same work and writes on every rank)."""
    if distributed.launched() and command not in DISTRIBUTED_COMMANDS:
        raise ConfigError(f"vaekit {command} does not run under torchrun (WORLD_SIZE="
                          f"{distributed.launch_size()})", "run it as one process; "
                          f"{' and '.join(DISTRIBUTED_COMMANDS)} run data-parallel")


def train(cfg: RunConfig | None, run_dir: str | Path, *, resume: bool = False,
          overrides: dict[str, Any] | None = None, progress: bool = True,
          echo: bool | None = None, checkpoint_every: int = 0, keep_checkpoints: int = KEEP,
          on_epoch: Any = None, allow_unverified: bool = False) -> Run:
    """Train ``cfg`` into ``run_dir`` (new), or continue the run saved there (``resume``,
    with ``cfg`` None or only ``overrides``, nested like a config file); with a ``stage2``
    section, then fit stage 2 on the trained stage 1 in memory. Returns the stage-1 run
    (``run.stage2``: stage 2's run, for a two-stage run).

    ``progress`` shows a progress bar and prints the set-up and one line per epoch (``echo``
    prints them without the bar); ``checkpoint_every`` > 0 also checkpoints every that many
    steps inside an epoch; ``on_epoch(row, model)`` is called after each epoch's validation
    and checkpoint; the last ``keep_checkpoints`` checkpoints are kept; ``allow_unverified``:
    a resume may start from a checkpoint without checksums (vaekit <= 0.2.0)."""
    run = setup_run(cfg, run_dir, resume=resume, overrides=overrides,
                    allow_unverified=allow_unverified)
    run.keep_checkpoints = keep_checkpoints
    try:
        fit(run, standard_callbacks(run, progress=progress, echo=echo,
                                    checkpoint_every=checkpoint_every, on_epoch=on_epoch))
    finally:
        run.release()
    if run.cfg.stage2 is not None:
        run.stage2 = fit_stage2(run.model, run.data, run.cfg, run_dir, progress=progress,
                                echo=echo, checkpoint_every=checkpoint_every)
    return run


def train_stage2(rd: RunDir, overrides: dict[str, Any] | None = None, *, progress: bool = True,
                 echo: bool | None = None, checkpoint_every: int = 0) -> Run:
    """Fit (or continue) stage 2 of the finished run ``rd`` on its codes: its ``stage2``
    section (the defaults where it has none), updated by the ``stage2`` section of
    ``overrides``, is recorded in its config.json first."""
    if not rd.finished:
        raise CheckpointError(f"stage 1 of {rd.path} stopped at epoch {rd.choice.epoch} of "
                              f"{rd.cfg.train.epochs}", f"finish it first: vaekit train "
                              f"--resume {rd.path}")
    distributed.init(rd.cfg.train.device)  # under torchrun: join before anything is written
    lock = distributed.on_main(lambda: DirectoryLock(rd.path, "run directory").acquire())
    try:
        if overrides or rd.cfg.stage2 is None:
            rd.cfg.stage2 = stage2_settings(rd.cfg, overrides or {})
            rd.cfg.validate()
            distributed.on_main(lambda: rd.cfg.save(rd.path / "config.json"))  # rank 0 writes
        return fit_stage2(rd.stage1, rd.data, rd.cfg, rd.path, progress=progress, echo=echo,
                          checkpoint_every=checkpoint_every)
    finally:
        if lock is not None:
            lock.release()


def record_command(run_dir: Path, argv: list[str]) -> None:
    """Append when, where and the exact command to RUN_DIR/command.txt (the report shows it)."""
    append_text(run_dir / COMMAND_FILE, f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, in "
                f"{os.getcwd()}\nvaekit {shlex.join(argv)}\n", "the command log")


def load_model(run_dir: str | Path, device: str | torch.device = "cpu",
               stage1: bool = False) -> tuple[nn.Module, RunConfig]:
    """The model of a run (eval mode) and its config, from its config.json and newest valid
    checkpoint: the composite two-stage VAE where there is a stage 2, unless ``stage1``."""
    rd = RunDir.open(run_dir, device, stage2=not stage1)
    return rd.model, rd.cfg


# ------------------------------------------------------------------ evaluation

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def check_output(path: Path | None, suffixes: tuple[str, ...]) -> None:
    """An output file must go into an existing folder and have a known format."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} of output {path} does not exist",
                          "create it first or write elsewhere")
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"output {path} has an unsupported suffix",
                          f"use one of {', '.join(suffixes)}")



@dataclass
class Evaluated:
    """What :func:`evaluate` wrote: every figure, the file, notes, the estimator plot."""

    figures: dict[str, Any]
    path: Path
    notes: list[str] = field(default_factory=list)
    plot: Path | None = None

    def not_finite(self) -> list[str]:
        """The standard figures that overflowed (finite weights, outputs that do not fit)."""
        return [k for k in ("elbo", "iwae", "log_px_z", "kl")
                if isinstance(self.figures.get(k), float) and not math.isfinite(self.figures[k])]


def check_evaluation(rd: RunDir, opts: EvalOptions) -> None:
    """Refuse what an evaluation would hold at once beyond its budget: the naive
    estimator's K shared prior samples (K x L), the generated samples and as many test
    examples. (The importance sampler draws its noise chunk by chunk: any K fits.)"""
    need = opts.naive * rd.cfg.model.latent_dim * 8
    if need > opts.memory_mb * 2**20:
        raise ConfigError(f"--naive {opts.naive:,} holds its {opts.naive:,} prior samples at "
                          f"once ({need / 2**20:,.0f} MB), beyond --memory-mb "
                          f"{opts.memory_mb:g}", "use a smaller K for --naive, or raise "
                          "--memory-mb")
    if opts.naive > MAX_SAMPLES:
        raise ConfigError(f"--naive {opts.naive:,} is beyond {MAX_SAMPLES:,} samples (beyond it "
                          "no estimate finishes)", "pass a smaller K for --naive")
    if opts.generation:
        check_samples(rd.stage1, 2 * opts.generation, f"--generation {opts.generation:,} "
                      "(samples and as many test images)", "ask for fewer",
                      torch.device("cpu"))


def evaluate(rd: RunDir, opts: EvalOptions, json_path: Path | None = None,
             force: bool = False, progress: bool = True) -> Evaluated | None:
    """Evaluate the run's model on ``opts.split`` into ``json_path`` (default
    ``RUN_DIR/eval-SPLIT.json``, where evaluations accumulate: a section not recomputed
    is kept, and each names its checkpoint; with ``opts.limit`` N, ``eval-SPLIT-firstN.json``)
    and plot the estimators against K beside it. Under torchrun each rank scores a block of
    the examples and rank 0 writes (the other ranks get None)."""
    opts.validate()
    check_evaluation(rd, opts)
    subset = f"-first{opts.limit}" if opts.limit else ""
    path = rd.output(json_path, f"eval-{opts.split}{subset}.json", force, "--json")
    size = len(rd.data.test if opts.split == "test" else rd.data.val)
    notes = []
    if opts.limit >= size > 0:  # no subset: the whole split's figures, in their file
        notes.append(f"--limit {opts.limit} covers the whole {opts.split} split ({size} "
                     "examples): scoring all of it")
        opts.limit, subset = 0, ""
        path = rd.output(json_path, f"eval-{opts.split}.json", force, "--json")
    distributed.init(rd.device.type)  # under torchrun: join the job
    with distributed.sharded():  # under torchrun: each rank a block of the examples
        res = evaluate_all(rd.model, rd.data, opts, progress=progress and distributed.world().main)
    if not distributed.world().main:
        return None
    res["likelihood"] = rd.cfg.model.likelihood.name
    res, kept = merge_evaluation(res, path, rd.record())
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    out = Evaluated(res, path, notes + kept)
    if "marginal" in res:
        title = f"{Path(rd.cfg.data.name).name} {opts.split}{subset}: log p(x) estimators"
        out.plot = path.with_name(f"loglik-vs-K-{opts.split}{subset}.png")
        save_figure(loglik_figure(res["marginal"], title), out.plot)
    return out


def merge_evaluation(res: dict[str, Any], path: Path, record: dict[str, Any]
                     ) -> tuple[dict[str, Any], list[str]]:
    """``res`` with the sections of an earlier evaluation in ``path`` that it did not
    recompute: evaluations accumulate. Every section names the checkpoint it came from
    (``section_checkpoints``); returns the merged figures and notes on sections kept from
    another checkpoint."""
    res = {**res, "checkpoint": record}
    res["section_checkpoints"] = {k: record for k in ("standard", *SECTIONS)
                                  if k == "standard" or k in res}
    try:  # an unreadable or hand-broken earlier file is replaced (it is this command's output)
        old = read_json(path, JSON_LIMIT, "earlier evaluation", error=CheckpointError) \
            if os.path.lexists(path) else {}
    except CheckpointError:
        old = {}
    old = old if isinstance(old, dict) else {}
    notes, old_ckpts = [], old.get("section_checkpoints", {})
    for key in SECTIONS:
        if key in res or key not in old:
            continue
        if not _shows({**res, key: old[key]}):  # edited past what vaekit wrote: dropped
            notes.append(f"section {key} of the earlier {path.name} is not one vaekit wrote "
                         "and was dropped; re-run it to have it again")
            continue
        res[key] = old[key]
        came_from = old_ckpts.get(key, old.get("checkpoint", {}))
        res["section_checkpoints"][key] = came_from
        if came_from.get("weights_sha256") != record.get("weights_sha256"):
            notes.append(f"section {key} was kept from an earlier evaluation of another "
                         f"checkpoint (epoch {came_from.get('epoch')}); re-run it to refresh")
    return res, notes


def _shows(res: dict[str, Any]) -> bool:
    """Whether figures (with a section kept from an earlier file) can be shown."""
    try:
        format_full_report(res)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return False
    return True


# ------------------------------------------------------------------ generation and views


def check_generate(model: nn.Module, n: int, what: str) -> None:
    """Refuse generating ``n`` examples at once beyond this machine's memory."""
    check_samples(model, n, what, "ask for fewer at a time (-n), with another --seed for "
                  "more", torch.device("cpu"))


def labels_for(rd: RunDir, n: int, label: int | None) -> torch.Tensor | None:
    """The labels to condition n samples on: ``label``, or every class in turn; None for an
    unconditional model (where a label is an error)."""
    classes = rd.cfg.model.num_classes
    if not rd.stage1.conditional:
        if label is not None:
            raise ConfigError("--label needs a conditional model", "train with --conditional")
        return None
    if label is not None and not 0 <= label < classes:
        raise ConfigError(f"--label {label} is not a class of this model",
                          f"pass a label in 0..{classes - 1}")
    if label is not None:
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(n) % classes


def reference_data(rd: RunDir, n: int = 2000) -> torch.Tensor | None:
    """Up to n test examples to draw beside samples of vector data, when the data set is at
    hand (sampling needs only the run directory)."""
    try:
        return rd.data.test.x[:n].cpu()
    except VaekitError:
        return None


@dataclass
class Written:
    """Files a command wrote, and what they hold."""

    paths: list[Path]
    what: str


def sample(rd: RunDir, n: int = 64, seed: int = 0, draw: bool = False,
           label: int | None = None, out: Path | None = None, force: bool = False) -> Written:
    """``n`` new examples (z ~ p(z), x = E[x|z], or a draw of p(x|z) with ``draw``; for a
    conditional model the class ``label``, or every class in turn) as a picture and the raw
    values as ``.npy`` beside it (default ``RUN_DIR/samples.png``)."""
    if n <= 0:
        raise ConfigError(f"-n must be positive, got {n}", "pass e.g. -n 64")
    path = rd.output(out, "samples.png", force, "--out")
    if out is not None:  # the raw values go beside it: never onto a user's file
        rd.output(path.with_suffix(".npy"), "samples.npy", force, "--out's .npy")
    model = rd.model
    check_generate(model, n, f"-n {n:,} samples")
    y = labels_for(rd, n, label)
    x = model.sample(n, mean=not draw, generator=seeded_generator(derive_seed(seed, "sample")),
                     y=y)
    reference = None if x.dim() >= 3 else reference_data(rd)
    atomic_write_bytes(path, picture_bytes(x, path.suffix, reference,
                                           title="samples from the model"))
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    atomic_write_bytes(path.with_suffix(".npy"), buf.getvalue())
    given = "" if y is None else (f", y = {label}" if label is not None
                                  else ", y = every class in turn")
    what = f"{'draws' if draw else 'means'} of p(x|z{'' if y is None else ', y'})"
    prior = "stage 2 (two-stage VAE)" if rd.stage2 is not None else "p(z)"
    return Written([path, path.with_suffix(".npy")], f"{n} samples ({what}, z ~ {prior}{given})")


def reconstruct(rd: RunDir, n: int = 32, out: Path | None = None,
                force: bool = False) -> Written:
    """``n`` test examples beside the means of p(x|z) at z = E_q[z|x] (images: rows
    alternate originals and reconstructions; vectors: a scatter plot)."""
    if n <= 0:
        raise ConfigError(f"-n must be positive, got {n}", "pass e.g. -n 32")
    path = rd.output(out, "reconstructions.png", force, "--out")
    batch = rd.data.test[:n]
    x, rec = batch.x.cpu(), rd.stage1.reconstruct(batch.x, batch.y).cpu()
    if x.dim() >= 3:  # rows alternate: originals, reconstructions
        cols = min(8, len(x))
        pairs = [t for lo, hi in chunks(len(x), cols) for t in (x[lo:hi], rec[lo:hi])]
        data = picture_bytes(torch.cat(pairs), path.suffix, nrow=cols)
    else:
        data = picture_bytes(rec, path.suffix, x, title="reconstructions (blue) of test data")
    atomic_write_bytes(path, data)
    given = ", y" if rd.stage1.conditional else ""
    return Written([path], f"{len(x)} test examples and reconstructions (mean of "
                           f"p(x|z{given}) at z = E_q[z|x{given}])")


@dataclass
class GradientOptions:
    """``vaekit gradients``: estimates per estimator and S on the first test examples."""

    samples: list[int] = field(default_factory=lambda: [1, 10, 100])
    repeats: int = 20
    batch_size: int = 128
    reference: int = 1000
    seed: int = 0

    def validate(self) -> None:
        for name, low, high in (("repeats", 2, 10**5), ("batch_size", 1, 10**6),
                                ("reference", 1, 10**7)):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"--{name.replace('_', '-')} must be in {low:,} .. {high:,}, "
                                  f"got {getattr(self, name):,}", "see `vaekit gradients --help`")
        if not 1 <= min(self.samples) <= max(self.samples) <= 10**6:
            raise ConfigError(f"--samples must be in 1 .. 1,000,000, got {self.samples}",
                              "pass e.g. --samples 1 10 100")


def gradients(rd: RunDir, opts: GradientOptions, json_path: Path | None = None,
              out: Path | None = None, force: bool = False) -> tuple[dict[str, Any], Written]:
    """Variance, SNR and accuracy of the gradient estimators on a fixed batch of test
    examples, into ``json_path`` (default ``RUN_DIR/gradients.json``) and the variance
    figure ``out`` (default ``RUN_DIR/gradients.png``)."""
    opts.validate()
    path = rd.output(json_path, "gradients.json", force, "--json")
    fig_path = rd.output(out, "gradients.png", force, "--out")
    model = rd.stage1  # as in `evaluate`: a two-stage run's stage 1 with its N(0, I) prior
    check_generate(model, 3 * opts.batch_size * max(opts.samples),
                   f"--samples {max(opts.samples)} x --batch-size {opts.batch_size}")
    batch = rd.data.test[: opts.batch_size]
    res = gradient_study(model, batch, sorted(set(opts.samples)), opts.repeats, opts.reference,
                         seed=opts.seed)
    res.update(run=str(rd.path), batch=f"the first {len(batch)} test examples",
               protocol=rd.data.protocol)
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    save_figure(variance_figure(res), fig_path)
    return res, Written([path, fig_path], "gradient estimators")


def report(run: RunDir, out: Path | None = None, progress: bool = False) -> ReportResult:
    """``RUN_DIR/report.html`` (or ``out``) and every figure in ``RUN_DIR/figures/``."""
    if out is not None:
        run.output(out, "report.html", True, "--out")
    return write_report(run, out, progress=progress)
