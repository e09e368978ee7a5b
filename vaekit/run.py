"""Runs as a user names them: configure a new run (the precedence of settings), continue a
saved one (the resume policy), open a trained one for evaluation or sampling.

Precedence: dataclass defaults < preset (``vaekit.config.PRESETS``) < config file < flags.
On resume only the settings in ``RESUMABLE`` may change; every other one must match the
checkpoint, so a resumed run continues the run that was saved.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import (
    PRESETS,
    RESUMABLE,
    RunConfig,
    Stage2Config,
    load_config_file,
    merge,
)
from vaekit.data.pipeline import PreparedData, prepare_data
from vaekit.errors import CheckpointError, ConfigError, VaekitError
from vaekit.train.checkpoint import load_model, load_run_config
from vaekit.train.loop import resolve_device


def configure(overrides: dict[str, Any], preset: str | None = None,
              config_file: Path | None = None) -> RunConfig:
    """A validated config: defaults < ``preset`` < ``config_file`` < ``overrides``
    (nested like a config file, e.g. ``{"train": {"lr": 1e-3}}``)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", f"use one of {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else {}
    file_cfg = load_config_file(config_file) if config_file else {}
    return RunConfig.from_dict(merge(merge(base, file_cfg), overrides)).validate()


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """A new ``runs/<data name>-<time>`` (``-2``, ``-3``, ... when that one exists)."""
    base = Path(root) / f"{Path(cfg.data.name).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _dotted(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"likelihood": {"name": "x"}}} -> {"model.likelihood.name": "x"}."""
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_dotted(value, path + "."))
        else:
            out[path] = value
    return out


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def resume_config(run_dir: Path, overrides: dict[str, Any], *, preset: str | None = None,
                  config_file: Path | None = None, out: Path | None = None) -> RunConfig:
    """The saved config of ``run_dir`` with the ``RESUMABLE`` overrides applied; any other
    override must equal the saved value."""
    if preset or config_file or out:
        raise CheckpointError("--resume continues a saved run and takes no --config, --preset "
                              "or --out", "drop them, or start a new run without --resume")
    cfg = load_run_config(run_dir)
    if "stage2" in overrides and cfg.stage2 is None:
        raise CheckpointError(f"{run_dir} is a one-stage run",
                              f"fit a stage 2 to it with `vaekit train --stage2 {run_dir}`")
    for path, value in _dotted(overrides).items():
        saved = _get(cfg, path)
        if path in RESUMABLE:
            *parents, key = path.split(".")
            setattr(_get(cfg, ".".join(parents)), key, value)
        elif value != saved:
            raise CheckpointError(f"{path} = {value} does not match the checkpoint in "
                                  f"{run_dir} (saved: {saved})",
                                  "drop the flag to resume, or start a new run with --out")
    return cfg.validate()


def stage2_config(run_dir: Path, overrides: dict[str, Any], other_flags: bool = False
                  ) -> Stage2Config:
    """The stage-2 settings for ``vaekit train --stage2 RUN_DIR``: the run's own ``stage2``
    section (or the defaults) updated by the ``stage2`` overrides; any other flag is an error."""
    if other_flags or set(overrides) - {"stage2"}:
        raise ConfigError("--stage2 RUN_DIR fits stage 2 of an existing run and takes only "
                          "stage-2 settings (--stage2-epochs)",
                          "drop the other flags; put more stage-2 settings in the run's "
                          "config.json stage2 section")
    cfg = load_run_config(run_dir)
    base = dataclasses.asdict(cfg.stage2 or Stage2Config())
    return RunConfig.from_dict({**cfg.to_dict(), "stage2": merge(base, overrides.get(
        "stage2", {}))}).validate().stage2


def open_run(run_dir: Path, device: str = "auto") -> tuple[nn.Module, RunConfig, PreparedData]:
    """The trained model of ``run_dir`` (eval mode), its config and its data (same split,
    same fixed evaluation transforms), checked to match each other."""
    dev = distributed.local_device(resolve_device(device))  # under torchrun: cuda:LOCAL_RANK
    model, cfg = load_model(run_dir, dev)
    data = prepare_data(cfg.data, cfg.model.likelihood.name, cfg.train.seed)
    if list(data.shape) != list(cfg.model.data_shape):
        raise CheckpointError(f"data {cfg.data.name} has shape {data.shape}, the model "
                              f"expects {tuple(cfg.model.data_shape)}",
                              "use the data the run was trained on")
    return model, cfg, data.to(dev)


def check_sample_size(run_dir: Path, n: int, what: str | None = None) -> None:
    """Refuse generating ``n`` examples of the run's model at once beyond this machine's
    memory, before the model is loaded."""
    from vaekit.limits import check_samples

    cfg = load_run_config(run_dir)
    check_samples(cfg.model, n, what or f"-n {n:,} samples", "ask for fewer at a time (-n), "
                  "with another --seed for more", torch.device("cpu"))


def check_evaluation_sizes(run_dir: Path, naive: int, generation: int,
                           memory_mb: float) -> None:
    """Refuse what an evaluation would have to hold at once beyond its budget: the naive
    estimator's K shared prior samples (K x L), the generated samples. (The importance
    sampler draws its noise chunk by chunk: any K fits in ``memory_mb``.)"""
    cfg = load_run_config(run_dir)
    need = naive * cfg.model.latent_dim * 8
    if need > memory_mb * 2**20:
        raise ConfigError(f"--naive {naive:,} holds its {naive:,} prior samples at once "
                          f"({need / 2**20:,.0f} MB), beyond --memory-mb {memory_mb:g}",
                          "use a smaller K for --naive, or raise --memory-mb")
    if generation:
        check_sample_size(run_dir, 2 * generation, f"--generation {generation:,} (samples and "
                          "as many test images)")


def reference_data(cfg: RunConfig, n: int = 2000) -> torch.Tensor | None:
    """Up to n test examples to draw beside samples, when the dataset is at hand."""
    try:
        return prepare_data(cfg.data, cfg.model.likelihood.name, cfg.train.seed).test.x[:n]
    except VaekitError:
        return None


# what `vaekit evaluate` adds besides the standard figures; merged into the same file
SECTIONS = ("marginal", "diagnostics", "kde", "baselines", "two_stage", "generation")
RUN_STATE = ("config.json", "train.log", "metrics.jsonl", "metrics.csv")


def protect_run_state(path: Path, run_dir: Path, what: str) -> None:
    """Refuse an output path that would replace a run's own state (config, logs, checkpoints)."""
    path, run = path.resolve(), run_dir.resolve()
    state = [run / name for name in RUN_STATE] + [run / "stage2" / n for n in RUN_STATE]
    inside = any(part.startswith("checkpoint") for part in path.relative_to(run).parts[:-1]) \
        if path.is_relative_to(run) else False
    if path in state or inside or path.name.startswith("checkpoint"):
        raise CheckpointError(f"{what} {path} would overwrite the run's own state",
                              "write the output elsewhere")


def output_path(path: Path, default: Path, run_dir: Path, force: bool, what: str) -> Path:
    """Where an output goes: the default inside the run, or the given path, which must not
    be run state, a folder, or (without ``force``) an existing file."""
    out = path or default
    if out.is_symlink() and not out.exists():
        import os

        raise ConfigError(f"{what} {out} is a symbolic link to the missing {os.readlink(out)}",
                          "remove the link or write elsewhere")
    protect_run_state(out, run_dir, what)
    if out.is_dir():
        raise ConfigError(f"{what} {out} is a folder", "give a file name")
    if path is not None and out.exists() and not force:
        raise ConfigError(f"{what} {out} already exists", "pass --force to replace it, or "
                          "choose another path")
    return out


def merge_evaluation(res: dict[str, Any], path: Path, record: dict[str, Any]
                     ) -> tuple[dict[str, Any], list[str]]:
    """``res`` with the sections of an earlier evaluation in ``path`` that it did not
    recompute: evaluations accumulate. Every section names the checkpoint it came from
    (``section_checkpoints``); returns the merged figures and notes on sections kept from
    another checkpoint."""
    import json

    res = {**res, "checkpoint": record}
    res["section_checkpoints"] = {k: record for k in ("standard", *SECTIONS)
                                  if k == "standard" or k in res}
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        old = {}
    notes = []
    old_ckpts = old.get("section_checkpoints", {}) if isinstance(old, dict) else {}
    for key in SECTIONS:
        if key in res or not isinstance(old, dict) or key not in old:
            continue
        res[key] = old[key]
        came_from = old_ckpts.get(key, old.get("checkpoint", {}))
        res["section_checkpoints"][key] = came_from
        if came_from.get("weights_sha256") != record.get("weights_sha256"):
            notes.append(f"section {key} was kept from an earlier evaluation of another "
                         f"checkpoint (epoch {came_from.get('epoch')}); re-run it to refresh")
    return res, notes
