"""Checkpoints: safetensors weights, optimizer and RNG state; JSON config and counters; a
checksum manifest; the last ``KEEP`` of them.

RUN_DIR/
  config.json                      RunConfig with the vaekit version (enough to rebuild the model)
  checkpoint/                      the newest checkpoint:
    model.safetensors                model weights
    trainer.safetensors              optimizer moments, RNG and data-order states
    trainer.json                     epoch, step, optimizer hyper-parameters, metric history
    manifest.json                    written last: sha256 and size of the three files, epoch,
                                     step and the model config the weights belong to
  checkpoint.1/, checkpoint.2/     the previous ones (``KEEP`` = 3 in all)

Saving writes ``checkpoint.new/`` (every file fsynced, the manifest last), then rotates
``checkpoint.1`` -> ``checkpoint.2``, ``checkpoint`` -> ``checkpoint.1``, ``checkpoint.new`` ->
``checkpoint`` (each rename atomic), so a crash at any point leaves every earlier checkpoint
intact. A state with a NaN or Inf is never saved (``Run.checkpoint`` checks first).

Loading takes the newest valid checkpoint by step: one whose files match the manifest's
checksums and whose trainer.json is well-formed. Every checkpoint skipped on the way is named
with the reason (``Choice.notes``: the CLI prints them, ``train.log`` records them). Run
directories of vaekit versions before the manifest (``checkpoint/`` without one, perhaps a
``checkpoint.old/`` of a crashed swap) load with a note that they are unverified.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from vaekit import __version__
from vaekit.config import KEEP, ModelConfig, RunConfig, _pairs
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import (
    JSON_LIMIT,
    fsync_dir,
    read_bytes,
    read_json,
    sha256_file,
    write_error,
    write_synced,
)
from vaekit.limits import memory_bytes

CKPT = "checkpoint"
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "trainer.safetensors", "trainer.json")
FORMAT = 1  # manifest format
_NAME = re.compile(r"checkpoint(?:\.(new|old|\d+))?")
_TRASH = CKPT + ".del"  # a checkpoint being deleted: renamed here first, never a candidate
log = logging.getLogger("vaekit")


# ------------------------------------------------------------------ what a checkpoint holds


@dataclass
class Snapshot:
    """Everything a checkpoint holds, as CPU tensors and JSON-able values; also kept in
    memory as the last good state that a diverged run rolls back to."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]  # "opt.<param id>.<key>" -> moment, step
    groups: list[dict[str, Any]]  # the optimizer's param_groups
    counters: dict[str, Any]  # epoch, step, history, step_in_epoch, epoch_loss_sum, ...
    states: dict[str, torch.Tensor]  # RNG and data-order states

    @property
    def step(self) -> int:
        return int(self.counters["step"])

    @property
    def epoch(self) -> int:
        return int(self.counters["epoch"])

    def optimizer_state_dict(self) -> dict[str, Any]:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, t in self.optimizer.items():
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t.clone()  # loading must not alias it
        return {"state": state, "param_groups": copy.deepcopy(self.groups)}


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def capture(model: nn.Module, opt: torch.optim.Optimizer, counters: dict[str, Any],
            states: dict[str, torch.Tensor]) -> Snapshot:
    """A copy of the training state that later steps do not change (CPU tensors)."""
    sd = opt.state_dict()
    tensors = {f"opt.{pid}.{key}": _cpu_copy(v) for pid, st in sd["state"].items()
               for key, v in st.items() if isinstance(v, torch.Tensor)}
    weights = {k: _cpu_copy(v) for k, v in model.state_dict().items()}
    return Snapshot(weights, tensors, copy.deepcopy(sd["param_groups"]),
                    copy.deepcopy(counters), {k: _cpu_copy(v) for k, v in states.items()})


def model_config_dict(model_cfg: ModelConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(model_cfg)))


def _config_sha256(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ saving


def save_checkpoint(run_dir: Path, snap: Snapshot, model_cfg: ModelConfig | None = None,
                    keep: int = KEEP) -> Choice:
    """Write ``snap`` as the newest checkpoint of ``run_dir`` (files, then the manifest, then
    the rotation) and keep the last ``keep`` checkpoints; returns it as the checkpoint that
    loading the run directory now chooses (its files written and checksummed here)."""
    run_dir = Path(run_dir)
    settle(run_dir, keep)
    new = run_dir / (CKPT + ".new")
    try:
        new.mkdir()
    except OSError as err:
        raise write_error(new, err, "create") from err
    try:
        manifest = _write_files(new, snap, model_cfg)
    except BaseException:  # a full disk, a kill signal: no half-written folder stays behind
        shutil.rmtree(new, ignore_errors=True)
        raise
    return Choice(_rotate_in(run_dir, new, keep), snap.epoch, snap.step, True, manifest)


def _write_files(new: Path, snap: Snapshot, model_cfg: ModelConfig | None) -> dict[str, Any]:
    """The three files of ``snap`` in the folder ``new``, fsynced, then the manifest that
    completes it; returns the manifest."""
    blobs = {"model.safetensors": save(snap.weights),
             "trainer.safetensors": save({**snap.optimizer,
                                          **{f"state.{k}": v for k, v in snap.states.items()}}),
             "trainer.json": json.dumps({**snap.counters, "param_groups": snap.groups},
                                        indent=1).encode()}
    files = {}
    for name, data in blobs.items():  # each fsynced (in place: the folder is not valid yet)
        write_synced(new / name, data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest: dict[str, Any] = {"format": FORMAT, "vaekit": __version__, "epoch": snap.epoch,
                                "step": snap.step, "files": files}
    if model_cfg is not None:
        d = model_config_dict(model_cfg)
        manifest.update(model_config=d, model_config_sha256=_config_sha256(d))
    fsync_dir(new)  # the files' entries are on disk before the manifest can be
    write_synced(new / MANIFEST, json.dumps(manifest, indent=1).encode())  # last: completes it
    fsync_dir(new)
    return manifest


def _discard(path: Path) -> None:
    """Remove a checkpoint folder: renamed out of the candidates first (atomic), then deleted."""
    if not path.exists():
        return
    trash = path.parent / _TRASH
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _numbered(run_dir: Path) -> dict[int, Path]:
    out = {}
    for p in run_dir.glob(CKPT + ".*"):
        m = _NAME.fullmatch(p.name)
        if m and m.group(1) and m.group(1).isdigit():
            out[int(m.group(1))] = p
    return out


def settle(run_dir: Path, keep: int = KEEP) -> None:
    """Finish what a crash interrupted (before a new save, and on resume): a complete
    ``checkpoint.new`` (manifest written, checksums right) is rotated in, an incomplete one
    dropped; a legacy ``checkpoint.old`` without a ``checkpoint`` becomes it; a half-deleted
    folder goes."""
    live, old, new = run_dir / CKPT, run_dir / (CKPT + ".old"), run_dir / (CKPT + ".new")
    try:
        shutil.rmtree(run_dir / _TRASH, ignore_errors=True)
        if old.is_dir() and not live.exists():
            old.rename(live)
        if new.is_dir() and (new / MANIFEST).is_file() and _usable(_inspect(new)):
            if live.exists():
                _rotate_in(run_dir, new, keep)
            else:  # the rotation had shifted the others: only the last rename is missing
                new.rename(live)
                fsync_dir(run_dir)
        elif new.exists():
            shutil.rmtree(new)
    except OSError as err:
        raise write_error(run_dir, err, "tidy the checkpoints in") from err


def _rotate_in(run_dir: Path, new: Path, keep: int) -> Path:
    """checkpoint.(i) -> checkpoint.(i+1), checkpoint -> checkpoint.1, new -> checkpoint;
    what falls beyond ``keep`` is deleted."""
    live = run_dir / CKPT
    try:
        for i, path in sorted(_numbered(run_dir).items(), reverse=True):
            if i + 1 >= keep:
                _discard(path)
            else:
                path.rename(run_dir / f"{CKPT}.{i + 1}")
        _discard(run_dir / (CKPT + ".old"))
        if live.exists():
            if keep > 1:
                live.rename(run_dir / f"{CKPT}.1")
            else:
                _discard(live)
        new.rename(live)
    except OSError as err:
        raise write_error(live, err, "rotate the checkpoint into") from err
    fsync_dir(run_dir)
    return live


# ------------------------------------------------------------------ choosing one to load


@dataclass
class Choice:
    """The checkpoint a run directory resolves to, and why others were skipped."""

    path: Path
    epoch: int
    step: int
    verified: bool  # its files matched the manifest's checksums
    manifest: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.path.name}/ (epoch {self.epoch}, step {self.step})"


@dataclass
class _Candidate:
    path: Path
    rank: int  # newer names first among equal steps: new, live, old, 1, 2, ...
    step: int = -1
    epoch: int = -1
    manifest: dict[str, Any] | None = None
    problem: str | None = None


def _rank(name: str) -> int:
    """new 0, checkpoint 1, old 2, checkpoint.N 2 + N: the order of recency by name."""
    kind = _NAME.fullmatch(name).group(1)
    if kind is None or kind in ("new", "old"):
        return {"new": 0, None: 1, "old": 2}[kind]
    return 2 + int(kind)


def candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint folder of ``run_dir`` (complete or not)."""
    if not run_dir.is_dir():
        return []
    return sorted((p for p in run_dir.iterdir() if _NAME.fullmatch(p.name) and p.is_dir()),
                  key=lambda p: _rank(p.name))


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint folder (valid or not), other than an incomplete
    ``checkpoint.new`` of an interrupted first save."""
    return any(not (p.name == CKPT + ".new" and not (p / MANIFEST).is_file())
               for p in candidates(Path(run_dir)))


def _read_json(path: Path) -> Any:
    """A checkpoint's JSON file through the bounded reader (a FIFO, a huge or deeply nested
    file is a problem of the checkpoint, never a hang); the problem names the file."""
    if not os.path.lexists(path):
        raise CheckpointError(f"{path.name} is missing", "")
    try:
        return read_json(path, JSON_LIMIT, path.name, error=CheckpointError)
    except CheckpointError as err:
        raise CheckpointError(err.problem, "") from None


def _inspect(path: Path) -> _Candidate:
    """Cheap checks: the manifest (or, for a legacy checkpoint, the files) and trainer.json."""
    c = _Candidate(path, _rank(path.name))
    try:
        if os.path.lexists(path / MANIFEST):  # whatever it is: a FIFO there is refused
            c.manifest = _check_manifest(_read_json(path / MANIFEST))
        elif path.name == CKPT + ".new":
            raise CheckpointError("incomplete (the save was interrupted before its manifest "
                                  "was written)", "")
        elif not (path / "model.safetensors").is_file():
            raise CheckpointError("model.safetensors is missing", "")
        counters = check_counters(_read_json(path / "trainer.json"), path / "trainer.json")
        c.step, c.epoch = counters["step"], counters["epoch"]
    except CheckpointError as err:
        c.problem = err.problem
    return c


def _check_manifest(m: Any) -> dict[str, Any]:
    ok = (isinstance(m, dict) and isinstance(m.get("files"), dict)
          and all(isinstance(m["files"].get(n), dict) for n in FILES)
          and isinstance(m.get("format"), int))
    if not ok:
        raise CheckpointError("manifest.json is malformed", "")
    if m["format"] > FORMAT:
        raise CheckpointError(f"manifest.json has format {m['format']}, newer than this vaekit "
                              f"reads ({FORMAT})", "")
    return m


def _verify(c: _Candidate) -> str | None:
    """Why the candidate's files cannot be trusted, or None: checksums against the manifest;
    a legacy checkpoint's weights must at least load and be finite."""
    if c.manifest is None:
        try:
            _check_finite(_load_tensors(c.path / "model.safetensors"), c.path)
        except CheckpointError as err:
            return err.problem
        return None
    for name in FILES:
        want, path = c.manifest["files"][name], c.path / name
        try:
            size = path.stat().st_size
            if size != want.get("bytes"):
                return f"{name} is truncated or corrupt ({size} bytes of {want.get('bytes')})"
            if sha256_file(path, error=CheckpointError) != want.get("sha256"):
                return f"{name} does not match its sha256 checksum: it is corrupt"
        except CheckpointError as err:  # not a regular file, unreadable
            return err.problem
        except OSError as err:
            return f"{name} is unreadable ({err.strerror or err})"
    return None


def _usable(c: _Candidate) -> bool:
    return c.problem is None and _verify(c) is None


UNVERIFIED = ("pass --allow-unverified to load a checkpoint without checksums (written by "
              "vaekit 0.2.0 or earlier; allow_unverified=True in Python)")


def find_checkpoint(run_dir: str | Path, allow_unverified: bool = False) -> Choice:
    """The newest valid checkpoint of ``run_dir`` (by step; among equal steps the newer
    name), with a note for each one skipped. Raises when there is none. A checkpoint
    without a manifest (no checksums: vaekit <= 0.2.0) counts only with
    ``allow_unverified``."""
    run_dir = Path(run_dir)
    found = [_inspect(p) for p in candidates(run_dir)]
    for c in found:
        if c.problem is None and c.manifest is None and not allow_unverified:
            c.problem = "it has no manifest.json (no checksums to verify it against)"
    notes = [f"skipped {c.path.name}/: {c.problem}" for c in found if c.problem]
    for c in sorted((c for c in found if not c.problem), key=lambda c: (-c.step, c.rank)):
        problem = _verify(c)
        if problem:
            notes.append(f"skipped {c.path.name}/ (step {c.step}): {problem}")
            continue
        choice = Choice(c.path, c.epoch, c.step, c.manifest is not None, c.manifest, notes)
        if notes:
            notes.append(f"using {choice.describe()}, the newest valid checkpoint")
        if c.manifest is None:
            notes.append(f"{choice.describe()} has no checksums (written by an earlier "
                         "vaekit): loaded unverified")
        return choice
    if not found:
        raise CheckpointError(f"{run_dir} holds no checkpoint",
                              "pass a run directory written by `vaekit train`")
    legacy = any("no manifest.json" in n for n in notes)
    raise CheckpointError(f"{run_dir} holds no valid checkpoint ({'; '.join(notes)})",
                          UNVERIFIED if legacy else "restore the run directory from a backup, "
                          "or train again")


# ------------------------------------------------------------------ validation of what is read


def _bad(path: Path, key: str, value: Any, want: str) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return CheckpointError(f"{path}: {key} = {shown} is not {want}", _CORRUPT)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_counters(counters: Any, path: Path) -> dict[str, Any]:
    """trainer.json checked like a user's config: types and ranges, naming file and key."""
    if not isinstance(counters, dict):
        raise _bad(path, "(top level)", counters, "a mapping")
    for key in ("epoch", "step", "step_in_epoch"):
        v = counters.get(key)
        if not _is_int(v) or v < 0:
            raise _bad(path, key, v, "an integer >= 0")
    for key in ("epoch_seen", "rollbacks"):
        v = counters.get(key, 0)
        if not _is_int(v) or v < 0:
            raise _bad(path, key, v, "an integer >= 0")
    v = counters.get("epoch_loss_sum", 0.0)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise _bad(path, "epoch_loss_sum", v, "a finite number")
    hist = counters.get("history")
    if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
        raise _bad(path, "history", hist, "a list of epoch rows")
    if len(hist) != counters["epoch"]:
        raise _bad(path, "epoch", counters["epoch"], f"the {len(hist)} epochs in its history")
    groups = counters.get("param_groups")
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list)
            and all(_is_int(i) for i in g["params"]) and isinstance(g.get("lr"), (int, float))
            for g in groups):
        raise _bad(path, "param_groups", groups, "a list of optimizer parameter groups")
    return counters


def _check_finite(weights: dict[str, torch.Tensor], where: Path) -> None:
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"checkpoint {where} holds non-finite weights (NaN or Inf in "
                              f"{bad[0]}): it comes from a diverged run",
                              "use an earlier checkpoint, or train again with a lower --lr")


def check_model_config(choice: Choice, model_cfg: ModelConfig, config_path: Path) -> None:
    """The model settings of config.json must be those the checkpoint was trained with (the
    weights may fit another architecture, e.g. relu -> tanh, and mean nothing there)."""
    saved = (choice.manifest or {}).get("model_config")
    if not isinstance(saved, dict):
        return  # written before the manifest recorded it
    now = model_config_dict(model_cfg)
    if _config_sha256(now) == (choice.manifest or {}).get("model_config_sha256"):
        return
    diff = [(k, a, b) for k, (a, b) in _pairs(now, saved).items() if a != b]
    key, new, old = diff[0] if diff else ("model", "?", "?")
    raise CheckpointError(f"{config_path}: model.{key} = {new!r} does not match the checkpoint "
                          f"{choice.path.name}/, trained with {old!r}",
                          f"restore model.{key} in {config_path.name} (the checkpoint's "
                          f"{MANIFEST} records its model settings)")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read through the bounded reader (no larger than this
    machine's memory)."""
    limit = memory_bytes(torch.device("cpu")) or 2**40
    try:
        return load(read_bytes(path, limit, "checkpoint file", error=CheckpointError))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint file {path}: {err}",
                              "the checkpoint is corrupt; restore it or train again") from None


def read_checkpoint(ckpt: Path) -> Snapshot:
    """The :class:`Snapshot` saved in ``ckpt`` (types checked; consistency with a run is
    the run's to check)."""
    weights = _load_tensors(ckpt / "model.safetensors")
    counters, opt_sd, states = load_trainer_state(ckpt)
    tensors = {f"opt.{pid}.{k}": v for pid, st in opt_sd["state"].items() for k, v in st.items()}
    return Snapshot(weights, tensors, opt_sd["param_groups"], counters, states)


def load_trainer_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any],
                                             dict[str, torch.Tensor]]:
    """(counters, optimizer state_dict, named states) saved by :func:`save_checkpoint`."""
    tensors = _load_tensors(ckpt / "trainer.safetensors")
    try:
        counters = check_counters(_read_json(ckpt / "trainer.json"), ckpt / "trainer.json")
    except CheckpointError as err:
        if err.fix:
            raise
        raise CheckpointError(f"cannot read {ckpt / 'trainer.json'}: {err.problem}",
                              "the checkpoint is corrupt; restore it or train again") from None
    counters = dict(counters)
    groups = counters.pop("param_groups")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("opt."):
            parts = name.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                raise _bad(ckpt / "trainer.safetensors", name, "", "an optimizer state key")
            state.setdefault(int(parts[1]), {})[parts[2]] = t
    states = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return counters, {"state": state, "param_groups": groups}, states


def load_state(model: nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Load ``weights`` into ``model``, with a clear error on any mismatch or non-finite value."""
    own = model.state_dict()
    bad = [k for k in own if k not in weights or weights[k].shape != own[k].shape]
    extra = [k for k in weights if k not in own]
    if bad or extra:
        name = (bad or extra)[0]
        got = tuple(weights[name].shape) if name in weights else "missing"
        want = tuple(own[name].shape) if name in own else "absent"
        raise CheckpointError(f"checkpoint {where} does not match the model config "
                              f"({name}: checkpoint {got}, model {want})",
                              "use the config.json saved with the checkpoint")
    _check_finite(weights, where)
    model.load_state_dict(weights)


ADAM_STATE = {"step", "exp_avg", "exp_avg_sq"}  # what torch's Adam keeps per parameter
_CORRUPT = ("the checkpoint is corrupt or was edited; restore it, or move it aside to resume "
            "from an earlier one")


def check_position(counters: dict[str, Any], steps_per_epoch: int, epochs: int,
                   path: Path) -> None:
    """The counters must name a point of this run: step = epoch * steps per epoch + step in
    the epoch, and no more epochs than the run has."""
    epoch, step, within = counters["epoch"], counters["step"], counters["step_in_epoch"]
    if within >= steps_per_epoch or step != epoch * steps_per_epoch + within:
        raise CheckpointError(f"{path}: step = {step}, epoch = {epoch} and step_in_epoch = "
                              f"{within} do not fit this run's {steps_per_epoch} steps per "
                              "epoch", _CORRUPT)
    if epoch > epochs:
        raise CheckpointError(f"{path}: epoch = {epoch} is beyond the run's {epochs} epochs",
                              f"resume with --epochs {epoch} or more (or restore trainer.json)")


def load_optimizer(opt: torch.optim.Optimizer, snap: Snapshot, path: Path) -> None:
    """Load the optimizer state of ``snap`` after checking its groups and shapes."""
    sd = snap.optimizer_state_dict()
    saved, own = sd["param_groups"], opt.param_groups
    sizes = [len(g["params"]) for g in saved], [len(g["params"]) for g in own]
    if sizes[0] != sizes[1]:
        raise CheckpointError(f"{path}: the optimizer state has parameter groups of sizes "
                              f"{sizes[0]}, this model's optimizer {sizes[1]}", _CORRUPT)
    want = ADAM_STATE if isinstance(opt, torch.optim.Adam) else None
    for g, o in zip(saved, own, strict=True):
        for pid, p in zip(g["params"], o["params"], strict=True):
            state = sd["state"].get(pid, {})
            if want is not None and state and set(state) != want:
                odd = sorted(set(state) ^ want)[0]
                raise CheckpointError(f"{path}: the optimizer state of parameter {pid} has "
                                      f"other entries than Adam's (opt.{pid}.{odd})", _CORRUPT)
            for key, t in state.items():
                if key != "step" and t.shape != p.shape:
                    raise CheckpointError(f"{path}: opt.{pid}.{key} has shape "
                                          f"{tuple(t.shape)}, its parameter {tuple(p.shape)}",
                                          _CORRUPT)
    try:
        opt.load_state_dict(sd)
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: the optimizer state does not fit ({err})",
                              _CORRUPT) from None


def check_states(states: dict[str, torch.Tensor], device: torch.device, path: Path) -> None:
    """The RNG and data-order states must be there and be states of their generators."""
    for key in ("torch_rng", "loader_epoch", "loader_now"):
        if key not in states:
            raise CheckpointError(f"{path}: state.{key} is missing", _CORRUPT)
    try:
        torch.Generator().set_state(states["torch_rng"])
        gen = torch.Generator(device=device)
        gen.set_state(states["loader_epoch"])
        gen.set_state(states["loader_now"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: an RNG state is malformed ({err})".replace("\n", " "),
                              _CORRUPT) from None


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load ``model.safetensors`` into ``model``, with a clear error on any mismatch."""
    load_state(model, _load_tensors(ckpt / "model.safetensors"), ckpt)


# ------------------------------------------------------------------ run directories


def _check_version(version: Any, path: Path) -> None:
    """A config.json of a release this one cannot read (another major version, or a newer
    minor one) is refused before its keys are read."""
    if version is None:
        return
    m = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if m is None:
        raise CheckpointError(f"{path}: version = {version!r} is not a vaekit version",
                              "restore the run's config.json as vaekit wrote it")
    ours = tuple(int(x) for x in __version__.split(".")[:2])
    theirs = (int(m.group(1)), int(m.group(2)))
    if theirs[0] != ours[0] or theirs > ours:
        raise CheckpointError(f"{path} was written by vaekit {version}, which this vaekit "
                              f"{__version__} cannot read",
                              f"use vaekit {theirs[0]}.{theirs[1]} to open this run")


def load_run_config(run_dir: Path) -> RunConfig:
    """The RunConfig saved in ``run_dir/config.json``, checked like a user's config (types,
    ranges, a readable version); errors name the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist", "check the path")
    path = run_dir / "config.json"
    if not os.path.lexists(path):
        raise CheckpointError(f"{run_dir} has no config.json",
                              "pass a run directory written by `vaekit train`")
    d = read_json(path, JSON_LIMIT, "run config", error=CheckpointError)
    if isinstance(d, dict):
        _check_version(d.get("version"), path)
    try:
        cfg = RunConfig.from_dict(d).validate()
        if any(not _is_int(n) or n <= 0 for n in cfg.model.data_shape):
            raise ConfigError(f"model.data_shape = {cfg.model.data_shape} is not a shape", "")
        if cfg.model.data_levels < 0 or cfg.model.num_classes < 0:
            raise ConfigError("model.data_levels and model.num_classes must be >= 0", "")
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err.problem}", "restore the run's config.json as "
                              "vaekit wrote it (or start a new run)") from None
    return cfg
