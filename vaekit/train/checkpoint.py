"""Checkpoints: safetensors weights, optimizer and RNG state; JSON config and counters.

RUN_DIR/
  config.json                 RunConfig with the vaekit version (enough to rebuild the model)
  checkpoint/model.safetensors   model weights
  checkpoint/trainer.safetensors optimizer moments, RNG and data-order states
  checkpoint/trainer.json        epoch, step, optimizer hyper-parameters, metric history
A new checkpoint is written to ``checkpoint.new/`` (every file fsynced) and swapped in, so
a crash while saving leaves the previous one intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vaekit.config import RunConfig
from vaekit.errors import CheckpointError
from vaekit.io import atomic_write, atomic_write_text, fsync_dir

CKPT = "checkpoint"


def checkpoint_dir(run_dir: Path) -> Path:
    """The live checkpoint folder (falls back to the previous one after a crashed save)."""
    for name in (CKPT, CKPT + ".old"):
        if (run_dir / name / "model.safetensors").is_file():
            return run_dir / name
    raise CheckpointError(f"{run_dir} holds no checkpoint",
                          "pass a run directory written by `vaekit train`")


def load_run_config(run_dir: Path) -> RunConfig:
    """The RunConfig saved in ``run_dir/config.json``."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist", "check the path")
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} has no config.json",
                              "pass a run directory written by `vaekit train`")
    return RunConfig.load(run_dir / "config.json")


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"opt.{pid}.{key}": v.detach().cpu().contiguous()
               for pid, st in sd["state"].items() for key, v in st.items()
               if isinstance(v, torch.Tensor)}
    return tensors, sd["param_groups"]


def _unflat_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    counters: dict[str, Any], states: dict[str, torch.Tensor]) -> None:
    """Write model, optimizer, RNG/data ``states`` and JSON ``counters`` atomically."""
    new, live, old = run_dir / (CKPT + ".new"), run_dir / CKPT, run_dir / (CKPT + ".old")
    if old.exists() and not live.exists():  # a save crashed mid-swap: old is the valid one
        old.rename(live)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(new / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
    opt_tensors, groups = _flat_optimizer(opt)
    trainer = {**opt_tensors, **{f"state.{k}": v.cpu() for k, v in states.items()}}
    atomic_write(new / "trainer.safetensors", lambda tmp: save_file(trainer, str(tmp)))
    atomic_write_text(new / "trainer.json",
                      json.dumps({**counters, "param_groups": groups}, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if live.exists():
        live.rename(old)
    new.rename(live)
    fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint file {path}: {err}",
                              "the checkpoint is corrupt; restore it or train again") from None


def checkpoint_record(run_dir: Path) -> dict[str, Any]:
    """Which checkpoint a figure comes from: folder, epoch, step and a weights hash (and the
    same for stage 2 of a two-stage run)."""
    import hashlib

    ckpt = checkpoint_dir(run_dir)
    counters = json.loads((ckpt / "trainer.json").read_text())
    sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    rec: dict[str, Any] = {"dir": str(ckpt), "epoch": counters.get("epoch"),
                           "step": counters.get("step"), "weights_sha256": sha[:16]}
    second = run_dir / "stage2"
    if any((second / n / "model.safetensors").is_file() for n in (CKPT, CKPT + ".old")):
        rec["stage2"] = checkpoint_record(second)
    return rec


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load ``model.safetensors`` into ``model``, with a clear error on any mismatch."""
    weights = _load_tensors(ckpt / "model.safetensors")
    own = model.state_dict()
    bad = [k for k in own if k not in weights or weights[k].shape != own[k].shape]
    extra = [k for k in weights if k not in own]
    if bad or extra:
        name = (bad or extra)[0]
        got = tuple(weights[name].shape) if name in weights else "missing"
        want = tuple(own[name].shape) if name in own else "absent"
        raise CheckpointError(f"checkpoint {ckpt} does not match the model config "
                              f"({name}: checkpoint {got}, model {want})",
                              "use the config.json saved with the checkpoint")
    model.load_state_dict(weights)


def load_trainer_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any],
                                             dict[str, torch.Tensor]]:
    """(counters, optimizer state_dict, named states) saved by :func:`save_checkpoint`."""
    tensors = _load_tensors(ckpt / "trainer.safetensors")
    try:
        counters = json.loads((ckpt / "trainer.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {ckpt / 'trainer.json'}: {err}",
                              "the checkpoint is corrupt; restore it or train again") from None
    opt_sd = _unflat_optimizer(tensors, counters.pop("param_groups"))
    states = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return counters, opt_sd, states


def load_model(run_dir: str | Path, device: str | torch.device = "cpu",
               stage1: bool = False) -> tuple[nn.Module, RunConfig]:
    """Rebuild the model of a run from its config.json and checkpoint weights, in eval mode.

    A two-stage run (a fitted ``RUN_DIR/stage2``) gives the composite
    :class:`~vaekit.models.two_stage.TwoStageVAE` whose prior is stage 2, unless ``stage1``.
    """
    from vaekit.models import build_model
    from vaekit.models.two_stage import TwoStageVAE

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = build_model(cfg.model)
    load_weights(model, checkpoint_dir(run_dir))
    second = run_dir / "stage2"
    if not stage1 and any((second / n / "model.safetensors").is_file()
                          for n in (CKPT, CKPT + ".old")):
        cfg2 = load_run_config(second)
        stage2 = build_model(cfg2.model)
        load_weights(stage2, checkpoint_dir(second))
        model = TwoStageVAE(model, stage2, noise=bool(cfg.stage2 and cfg.stage2.noise))
    return model.to(device).eval(), cfg
