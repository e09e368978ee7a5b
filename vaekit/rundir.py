"""A run directory, opened once per command.

:meth:`RunDir.open` parses ``config.json`` once, chooses and verifies the newest valid
checkpoint once (the checksums of its files against its manifest), and builds the model and
prepares the data once, on first use; evaluation, the report and stage 2 all receive the
same object. A two-stage run holds its stage 2 (``RUN_DIR/stage2``) as a second RunDir;
its model is then the composite :class:`~vaekit.models.two_stage.TwoStageVAE`.

What a command reads of a run directory (nothing else is opened):

    config.json                   once (stage 2: stage2/config.json)
    checkpoint*/manifest.json     of each candidate; trainer.json of each candidate (its step)
    checkpoint*/ files            the chosen one's three files, hashed once; model.safetensors
                                  loaded into the model
    metrics.jsonl, eval-*.json,   only by the report (and `evaluate`, which merges its new
    command.txt                   figures into eval-SPLIT.json)

Outputs a command writes into a run directory go through :meth:`RunDir.output`, which
refuses the run's own state (config, logs, checkpoints).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import RunConfig
from vaekit.data.pipeline import PreparedData
from vaekit.errors import CheckpointError, ConfigError
from vaekit.evaluation.suite import SECTIONS
from vaekit.io import JSON_LIMIT, LOG_LIMIT, read_bytes, read_json, read_jsonl
from vaekit.limits import check_fits
from vaekit.models import build_model
from vaekit.models.two_stage import TwoStageVAE
from vaekit.models.vae import VAE
from vaekit.train import Run, prepare_run_data, resolve_device
from vaekit.train.checkpoint import (
    CKPT,
    MANIFEST,
    Choice,
    check_model_config,
    find_checkpoint,
    has_checkpoint,
    load_run_config,
    load_weights,
)
from vaekit.train.stages import STAGE2

log = logging.getLogger("vaekit")
COMMAND_FILE = "command.txt"  # written by `vaekit train`: when, where, and the exact command
RUN_STATE = ("config.json", "train.log", "metrics.jsonl", "metrics.csv")


@dataclass
class RunDir:
    """A trained run, opened once: its config, its chosen checkpoint, and (built on first
    use, then kept) its model and data on ``device``."""

    path: Path
    cfg: RunConfig
    choice: Choice  # the checkpoint the model comes from (verified when it was chosen)
    device: torch.device
    stage2: RunDir | None = None  # stage 2 of a two-stage run
    _stage1: nn.Module | None = field(default=None, repr=False)
    _data: PreparedData | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu", stage2: bool = True,
             allow_unverified: bool = False) -> RunDir:
        """Open the run in ``path``: config parsed, checkpoint chosen and verified (notes on
        checkpoints skipped go to the ``vaekit`` logger), stage 2 opened where there is one
        (unless ``stage2`` is False). A checkpoint without checksums (vaekit <= 0.2.0) is
        refused unless ``allow_unverified``. Under torchrun a CUDA device is this rank's
        GPU."""
        path = Path(path)
        cfg = load_run_config(path)
        choice = find_checkpoint(path, allow_unverified)
        for note in choice.notes:
            log.warning("%s: %s", path, note)
        check_model_config(choice, cfg.model, path / "config.json")
        dev = distributed.local_device(resolve_device(str(device)))
        second = cls.open(path / STAGE2, dev, False, allow_unverified) \
            if stage2 and has_checkpoint(path / STAGE2) else None
        return cls(path, cfg, choice, dev, second)

    @classmethod
    def of_run(cls, run: Run) -> RunDir:
        """The run directory that ``run`` (and its stage 2) just wrote, from memory: the
        same config, model and data, and the checkpoint the run saved last."""
        if run.run_dir is None or run.saved is None:
            raise ValueError("the run has no checkpoint in a run directory")
        second = cls.of_run(run.stage2) if run.stage2 is not None else None
        return cls(run.run_dir, run.cfg, run.saved, run.device, second, run.model.eval(),
                   run.data)

    # ---------------------------------------------------------------- model and data
    @property
    def stage1(self) -> VAE:
        """The VAE of this directory (stage 1 of a two-stage run), in eval mode."""
        if self._stage1 is None:
            self._stage1 = self._build()
        return self._stage1

    @property
    def model(self) -> nn.Module:
        """The run's model: the composite two-stage VAE where there is a stage 2."""
        if self.stage2 is None:
            return self.stage1
        noise = bool(self.cfg.stage2 and self.cfg.stage2.noise)
        return TwoStageVAE(self.stage1, self.stage2.stage1, noise=noise)

    def _build(self) -> nn.Module:
        """Build the model once and load the chosen checkpoint's weights, after checking
        that they fit in memory (their size is in the manifest: nothing is built first)."""
        manifest = self.choice.manifest or {}
        size = manifest.get("files", {}).get("model.safetensors", {}).get("bytes") \
            or (self.choice.path / "model.safetensors").stat().st_size
        check_fits(size, f"the weights of {self.path} ({self.cfg.model.arch.label()})",
                   "open the run on a machine with more memory", self.device)
        model = build_model(self.cfg.model)
        load_weights(model, self.choice.path)
        return model.to(self.device).eval()

    @property
    def data(self) -> PreparedData:
        """The run's data (same split, same fixed evaluation transforms) on the device,
        checked to match the model's input shape."""
        if self._data is None:
            data = prepare_run_data(self.cfg)
            if list(data.shape) != list(self.cfg.model.data_shape):
                raise CheckpointError(f"data {self.cfg.data.name} has shape {data.shape}, the "
                                      f"model expects {tuple(self.cfg.model.data_shape)}",
                                      "use the data the run was trained on")
            self._data = data.to(self.device)
        return self._data

    # ---------------------------------------------------------------- what it records
    @property
    def finished(self) -> bool:
        """Whether the chosen checkpoint is the end of training."""
        return self.choice.epoch >= self.cfg.train.epochs

    def record(self) -> dict[str, Any]:
        """Which checkpoint a figure comes from: folder, epoch, step and a weights hash (from
        the manifest: nothing is hashed again), and the same for stage 2."""
        files = (self.choice.manifest or {}).get("files", {})
        sha = files.get("model.safetensors", {}).get("sha256", "unverified")
        rec: dict[str, Any] = {"dir": str(self.choice.path), "epoch": self.choice.epoch,
                               "step": self.choice.step, "weights_sha256": sha[:16],
                               "verified": self.choice.verified}
        if self.stage2 is not None:
            rec["stage2"] = self.stage2.record()
        return rec

    def history(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl`` (empty when there is none), checked."""
        return read_history(self.path / "metrics.jsonl")

    def evaluations(self) -> dict[str, dict[str, Any]]:
        """split -> the figures of ``eval-SPLIT.json``; a file that is not one vaekit wrote
        (unreadable, hand-edited) is skipped with a note."""
        out = {}
        for split in ("test", "val"):
            path = self.path / f"eval-{split}.json"
            if not os.path.lexists(path):
                continue
            try:
                out[split] = check_evaluation(read_json(path, JSON_LIMIT, path.name,
                                                        error=CheckpointError), path)
            except CheckpointError as err:
                log.warning("%s is not shown: %s", path, err.problem)
        return out

    def command(self) -> str | None:
        """The commands that made the run (``command.txt``), or None."""
        path = self.path / COMMAND_FILE
        if not os.path.lexists(path):
            return None
        data = read_bytes(path, LOG_LIMIT, "the command log", error=CheckpointError)
        return data.decode("utf-8", "replace")

    # ---------------------------------------------------------------- outputs
    def output(self, given: Path | None, default: str, force: bool, what: str) -> Path:
        """Where an output goes: ``RUN_DIR/default``, or the given path, which must not be a
        run's state, a folder, or (without ``force``) an existing file."""
        return output_path(given, self.path / default, self.path, force, what)


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (empty when there is none): each a mapping of numbers
    (or None) with its epoch 1, 2, ... in order; else one error naming the line."""
    if not os.path.lexists(path):
        return []
    rows = read_jsonl(path, LOG_LIMIT, "metrics file", error=CheckpointError)
    fix = (f"remove the line, or `vaekit train --resume {path.parent}` rewrites the file from "
           "the checkpoint")
    for n, row in enumerate(rows, 1):
        bad = not isinstance(row, dict) or row.get("epoch") != n or any(
            not (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))
            for v in row.values())
        if bad:
            raise CheckpointError(f"{path}: line {n} is not the row of epoch {n} (a mapping of "
                                  "numbers)", fix)
    return rows


EVAL_NUMBERS = ("elbo", "elbo_se", "log_px_z", "log_px_z_se", "kl", "kl_se", "n_examples",
                "active_units", "latent_dim")


def check_evaluation(r: Any, path: Path) -> dict[str, Any]:
    """An ``eval-SPLIT.json`` as vaekit writes it: a mapping with the standard figures as
    numbers (NaN is written as a number) and every section a mapping."""
    if not isinstance(r, dict):
        raise CheckpointError(f"{path} holds no evaluation", "run `vaekit evaluate` again")
    bad = [k for k in EVAL_NUMBERS if not isinstance(r.get(k), (int, float))
           or isinstance(r.get(k), bool)]
    bad += [k for k in SECTIONS if k in r and not isinstance(r[k], dict)]
    if bad:
        raise CheckpointError(f"{path}: {bad[0]} is missing or not what vaekit writes",
                              "run `vaekit evaluate` again to rewrite it")
    return r


def _is_run_dir(folder: Path) -> bool:
    """A folder that holds a run (vaekit's config.json or a checkpoint folder)."""
    return (folder / "config.json").exists() or (folder / CKPT).is_dir()


def protect_run_state(path: Path, run_dir: Path, what: str) -> None:
    """Refuse an output path that would replace the state (config, logs, checkpoints) of
    ``run_dir`` or of any other run directory: the path's own folder and every folder above
    it that holds a run are checked."""
    path = path.resolve()  # a symbolic link counts as where it points
    runs = [run_dir.resolve(), *(a for a in path.parents if _is_run_dir(a))]
    for run in runs:
        if not path.is_relative_to(run):
            continue
        parts = path.relative_to(run).parts
        state = parts[-1:] and (parts[-1] in RUN_STATE and parts[:-1] in ((), (STAGE2,)))
        if state or any(p.startswith(CKPT) for p in parts[:-1]):
            whose = "the run's own state" if run == runs[0] else f"the state of the run in {run}"
            raise CheckpointError(f"{what} {path} would overwrite {whose}",
                                  "write the output elsewhere")
    if path.name.startswith(CKPT) or path.name == MANIFEST:
        raise CheckpointError(f"{what} {path} would overwrite a run's checkpoint",
                              "write the output elsewhere")


def output_path(path: Path | None, default: Path, run_dir: Path, force: bool,
                what: str) -> Path:
    """Where an output goes: the default inside the run, or the given path, which must not
    be run state, a folder, or (without ``force``) an existing file."""
    out = path or default
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"{what} {out} is a symbolic link to the missing {os.readlink(out)}",
                          "remove the link or write elsewhere")
    protect_run_state(out, run_dir, what)
    if out.is_dir():
        raise ConfigError(f"{what} {out} is a folder", "give a file name")
    if path is not None and out.exists() and not force:
        raise ConfigError(f"{what} {out} already exists", "pass --force to replace it, or "
                          "choose another path")
    return out
