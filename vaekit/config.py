"""Typed configuration, saved beside every checkpoint and read back from it.

``RunConfig`` nests ``DataConfig``, ``ModelConfig`` and ``TrainConfig``. Components (the
network, likelihood, prior, model kind and objective) are the options dataclasses of their
registries (:mod:`vaekit.registry`), written as ``{name: ..., option: value}`` or just a
name::

    model:
      latent_dim: 16
      arch: {name: mlp, hidden: [400], activation: relu}
      likelihood: {name: gaussian-gamma, gamma_init: 0.5}
      prior: standard-normal

:func:`parse` checks every key and value type against the dataclasses' type hints (and the
registries for component names), naming the offending key. Precedence when a run is
configured from the CLI (:mod:`vaekit.run`): defaults < preset (``PRESETS``) < config
file (YAML or TOML) < explicit flags. ``RunConfig.to_dict()`` is what ``config.json`` holds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaekit import __version__
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import CONFIG_LIMIT, JSON_LIMIT, atomic_write_text, read_json, read_text
from vaekit.registry import LIKELIHOODS, MODELS, NETWORKS, OBJECTIVES, PRIORS, Options, component

# the data layer's transforms (vaekit.data.transforms.transform_names(), with the two-stage
# VAE's posterior-sample), named here so that parsing a config never needs torch;
# auto: the likelihood's own default
TRANSFORMS = ("auto", "none", "scale", "binarize", "dequantize", "posterior-sample")
SEED_LIMIT = 2**63  # seeds (and seed + small offsets) must fit torch's 64-bit generators
MAX_BETA = 1e6  # a KL weight beyond it leaves nothing of the reconstruction term (float32)
INT_LIMIT = 2**63  # every integer setting fits a 64-bit integer (torch's sizes and seeds)
SIZE_LIMIT = 2**31  # sizes (widths, latent size, batch, epochs): beyond any real run
KEEP = 3  # checkpoints a run directory keeps: checkpoint/, checkpoint.1/, checkpoint.2/
# constant; cosine: decay to 0 over the run; burda: Burda et al. (2015), lr * 10^(-i/7) over
# the 3^i epochs of stage i = 0, 1, 2, ... (3,280 epochs to the end of stage 7)
LR_SCHEDULES = ("constant", "cosine", "burda")

# Named settings that a run starts from (CLI: --preset NAME; Python:
# RunConfig.from_dict(PRESETS[NAME])). "fast": time to quality, tuned on the classic
# 784-400-20 Bernoulli MLP VAE on Fashion-MNIST, where it reaches in 5 epochs the test ELBO
# that Adam 1e-3 at batch 128 reaches in 10 (benchmarks/bench_train.py, section ttq); its
# warm-up is a share of the run, so it scales to any data size.
# "resnet-bernoulli": a residual conv VAE for binary (binarized) images; 40 epochs of
# Fashion-MNIST take 26-32 minutes on 2 CPU cores (scripts/conv_loglik.sh; README "Conv nets").
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {"train": {"epochs": 5, "batch_size": 128, "lr": 6e-3, "lr_schedule": "cosine",
                       "warmup_fraction": 0.21}},  # 500 of the 2,345 steps on Fashion-MNIST
    "resnet-bernoulli": {
        "model": {"latent_dim": 32, "likelihood": "bernoulli",
                  "arch": {"name": "resnet", "channels": [32, 64], "fc": 512, "blocks": 1}},
        "train": {"epochs": 40, "batch_size": 128, "lr": 2e-3, "lr_schedule": "cosine",
                  "warmup_fraction": 0.05}},
}


def _check(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(problem, fix)


def check_seed(seed: int, flag: str = "--seed") -> None:
    """A seed torch's 64-bit generators take (and seed + the offsets of derived seeds)."""
    _check(0 <= seed < SEED_LIMIT, f"{flag} {seed} is outside 0 .. 2**63 - 1",
           "pass a smaller non-negative seed")


def check_sizes(obj: Any, path: str) -> None:
    """Every integer (or list of integers) of a settings dataclass but its seeds is below
    ``SIZE_LIMIT``: widths, latent sizes, batches, epochs beyond it cannot be a real run."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, list) else [value]
        big = [v for v in values if isinstance(v, int) and not isinstance(v, bool)
               and v >= SIZE_LIMIT]
        if big and "seed" not in f.name:
            raise ConfigError(f"{path}.{f.name} = {big[0]:,} is beyond the largest size vaekit "
                              f"takes ({SIZE_LIMIT - 1:,})", f"give {path}.{f.name} a smaller "
                              "value")


@dataclass
class DataConfig:
    """Which data, and how stored values become model inputs."""

    name: str = "fashion-mnist"  # dataset name, or a directory / file path
    transform: str = "auto"  # auto | none | scale | binarize | dequantize
    val_fraction: float = 0.1  # held out of the training split for per-epoch validation
    eval_seed: int = 0  # seed of the fixed binarization / dequantization of val and test
    limit: int = 0  # use only the first N training examples (0 = all); for quick runs

    def validate(self) -> None:
        _check(self.transform in TRANSFORMS, f"unknown transform {self.transform!r}",
               f"use one of {', '.join(TRANSFORMS)}")
        _check(0.0 <= self.val_fraction < 1.0,
               f"val_fraction must be in [0, 1), got {self.val_fraction}",
               "pass e.g. --val-fraction 0.1")
        _check(self.limit >= 0, f"limit must be >= 0, got {self.limit}", "pass --limit 0 for all")
        _check(0 <= self.eval_seed < SEED_LIMIT, f"data.eval_seed {self.eval_seed} is outside "
               "0 .. 2**63 - 1", "pass a smaller non-negative seed")


@dataclass
class ModelConfig:
    """Architecture: encoder q(z|x[, y]), likelihood p(x|z[, y]), prior p(z).

    Component fields accept a name or a dict in Python too, e.g.
    ``ModelConfig(arch={"name": "mlp", "hidden": [128]}, likelihood="bernoulli")``.
    """

    kind: Any = component(MODELS, "vae")  # model family
    latent_dim: int = 32
    arch: Any = component(NETWORKS, "mlp")  # encoder/decoder networks
    likelihood: Any = component(LIKELIHOODS, "bernoulli")
    prior: Any = component(PRIORS, "standard-normal")
    conditional: bool = False  # condition encoder and decoder on the label y
    label_dim: int = 16  # width of the learned label embedding of a conditional model
    data_shape: list[int] = field(default_factory=list)  # filled from the data at build time
    data_levels: int = 0  # quantization levels of the data (256 for 8-bit; 0 = continuous)
    num_classes: int = 0  # labels 0..num_classes-1, filled from the data when conditional

    def __post_init__(self) -> None:
        _coerce_components(self, "model")

    def validate(self) -> None:
        _check(self.latent_dim > 0, f"latent size must be positive, got {self.latent_dim}",
               "pass --latent-dim 32 (or any positive integer)")
        _check(self.label_dim > 0, f"label_dim must be positive, got {self.label_dim}",
               "pass e.g. model.label_dim: 16")
        for key, ok in (("data_shape", all(d > 0 for d in self.data_shape)),
                        ("data_levels", self.data_levels >= 0),
                        ("num_classes", self.num_classes >= 0)):
            _check(ok, f"model.{key} = {getattr(self, key)} is not a size (negative)",
                   "it is filled from the data: leave it out of a config file")
        check_sizes(self, "model")
        for name in ("kind", "arch", "likelihood", "prior"):
            getattr(self, name).validate()
            check_sizes(getattr(self, name), f"model.{name}")


@dataclass
class TrainConfig:
    """Optimization and bookkeeping."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (decay to 0 over all steps) | burda
    adam_eps: float = 1e-8  # Adam's epsilon (Burda et al. 2015 use 1e-4)
    warmup_steps: int = 0  # linear learning-rate warm-up from 0, in steps
    warmup_fraction: float = 0.0  # ... or as a share of the run's steps (when warmup_steps is 0)
    beta: float = 1.0  # weight of KL(q(z|x) || p(z)); 1 gives the ELBO
    beta_warmup_steps: int = 0  # KL annealing: beta rises linearly from 0 over these steps
    objective: Any = component(OBJECTIVES, "elbo")  # elbo {kl} | iwae {k}
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    grad_clip: float = 0.0  # max global grad norm (0 = off)
    eval_batch_size: int = 1000
    precision: str = "fp32"  # fp32 | bf16 (matmuls in bf16; weights, loss, grads stay fp32)
    compile: bool = False  # torch.compile the loss (forward and backward)
    channels_last: bool = False  # conv weights and activations in NHWC memory order
    fused: bool = True  # allow the fast path (hand-written gradients) where it applies
    world_size: int = 1  # data-parallel ranks (set by the run; batch_size is per rank)

    def __post_init__(self) -> None:
        _coerce_components(self, "train")

    def validate(self) -> None:
        _check(self.batch_size > 0, f"batch size must be positive, got {self.batch_size}",
               "pass --batch-size 128 (or any positive integer)")
        _check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}", "pass --epochs 10")
        _check(self.lr > 0 and math.isfinite(self.lr),
               f"learning rate must be positive, got {self.lr}", "pass --lr 1e-3")
        _check(self.lr_schedule in LR_SCHEDULES and self.warmup_steps >= 0,
               f"bad schedule {self.lr_schedule!r} / warm-up {self.warmup_steps}",
               f"use --lr-schedule {'|'.join(LR_SCHEDULES)} and --warmup-steps >= 0")
        _check(0 < self.adam_eps < 1, f"adam_eps must be in (0, 1), got {self.adam_eps}",
               "pass e.g. --adam-eps 1e-8")
        _check(0 <= self.warmup_fraction < 1,
               f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}",
               "pass e.g. --warmup-fraction 0.2")
        _check(self.beta_warmup_steps >= 0, "beta_warmup_steps must be >= 0",
               "pass e.g. --beta-warmup-steps 1000")
        _check(self.precision in ("fp32", "bf16"), f"unknown precision {self.precision!r}",
               "use fp32 or bf16")
        _check(self.eval_batch_size > 0, "eval_batch_size must be positive", "pass e.g. 1000")
        _check(self.grad_clip >= 0 and math.isfinite(self.grad_clip),
               f"grad_clip must be a finite number >= 0, got {self.grad_clip}",
               "pass e.g. --grad-clip 10 (0 = off)")
        _check(0 <= self.beta <= MAX_BETA, f"beta must be in [0, {MAX_BETA:g}], got {self.beta}",
               "pass e.g. --beta 1")
        check_sizes(self, "train")
        check_sizes(self.objective, "train.objective")
        _check(self.world_size >= 1, f"world_size must be >= 1, got {self.world_size}",
               "leave world_size out: the run records it")
        _check(0 <= self.seed < SEED_LIMIT, f"seed {self.seed} is outside 0 .. 2**63 - 1",
               "pass a smaller non-negative --seed")
        self.objective.validate()


def _stage2_model() -> ModelConfig:
    """Dai & Wipf's stage 2: 3 dense layers of 1024 with the input concatenated before the
    output heads, its own learned gamma; latent_dim 0 = stage 1's latent size."""
    return ModelConfig(latent_dim=0, likelihood="gaussian-gamma",
                       arch={"name": "mlp", "hidden": [1024, 1024, 1024], "skip": True})


@dataclass
class Stage2Config:
    """The second VAE of a two-stage run (Dai & Wipf 2019), fitted to stage 1's codes
    z = mu + sigma * eps (redrawn at every visit) and used as stage 1's prior.

    Its training seed is the run's: ``train.seed`` + ``stage2.train.seed`` (seed purpose
    ``stage2-train``), so ``--seed`` moves both stages. Generation draws
    z = decoder2(u) + sqrt(gamma_z) eps, as the authors' code (``noise``; false: the mean
    decoder2(u), the "mean sampler")."""

    model: ModelConfig = field(default_factory=_stage2_model)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=40))
    noise: bool = True  # generate z ~ p2(z|u) = N(decoder2(u), gamma_z I); false: its mean

    def validate(self) -> None:
        if self.model.latent_dim < 0:
            raise ConfigError(f"stage2.model.latent_dim must be >= 0, got "
                              f"{self.model.latent_dim}", "0 = the stage-1 latent size")
        if self.model.latent_dim:
            self.model.validate()
        self.train.validate()


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: written to ``RUN_DIR/config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage2: Stage2Config | None = None  # a two-stage run: stage 2 after stage 1
    version: str = __version__

    def validate(self) -> RunConfig:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.stage2 is not None:
            self.stage2.validate()
        if self.train.objective.name == "iwae" and self.train.beta != 1.0:
            raise ConfigError("the IWAE bound has no KL term for --beta to weight",
                              "drop --beta, or use --objective elbo")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differences(self, other: RunConfig) -> dict[str, tuple[Any, Any]]:
        """{dotted path: (this value, other value)} of every setting that differs."""
        return {k: (v, b) for k, (v, b) in _pairs(self.to_dict(), other.to_dict()).items()
                if v != b}

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """Parse a nested mapping (a config file, ``config.json``), checking every key."""
        if isinstance(d, dict) and str(d.get("version", "")).startswith("0.1."):
            d = _migrate_0_1(d)
        return parse(cls, d, "config")

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        return cls.from_dict(read_json(path, JSON_LIMIT, "run config", error=ConfigError))


# settings that may change when a run resumes (recorded in config.json); all others must match
RESUMABLE = {"train.epochs", "train.compile", "train.fused", "stage2.train.epochs",
             "train.world_size", "stage2.train.world_size"}
# filled from the data and the ranks when a run is set up: never a user's change
DERIVED = ("model.data_shape", "model.data_levels", "model.num_classes", "version",
           "train.world_size", "stage2.train.world_size")


def dotted(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"likelihood": {"name": "x"}}} -> {"model.likelihood.name": "x"}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{"model.likelihood.name": "x"} -> {"model": {"likelihood": {"name": "x"}}}."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, key = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return out


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted path of a config (None where it does not exist)."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def resume_config(saved: RunConfig, wanted: RunConfig | dict[str, Any] | None,
                  world_size: int = 1, where: Path | str = "the run"
                  ) -> tuple[RunConfig, list[str]]:
    """The resume policy, in one place: the configuration a resumed run continues with.

    ``saved`` is the run's ``config.json``; ``wanted`` what the caller asks for: a whole
    RunConfig, or overrides nested like a config file (the CLI's flags), or None. Only the
    ``RESUMABLE`` settings may change; any other setting must equal the saved one. On
    another number of ranks the global batch (batch per rank x ranks) is kept, so the
    steps, the schedule and the data order are those of the saved run: the saved per-rank
    or global batch size both mean "as saved". Returns a new config (``saved`` and
    ``wanted`` are not changed) and notes for the run log."""
    cfg = copy.deepcopy(saved)
    if isinstance(wanted, RunConfig):
        changes = {k: new for k, (new, _) in wanted.differences(saved).items()}
    else:
        if "stage2" in (wanted or {}) and saved.stage2 is None:
            raise CheckpointError(f"{where} is a one-stage run", f"fit a stage 2 to it with "
                              f"`vaekit train --stage2 {where}`")
        changes = {k: v for k, v in dotted(wanted or {}).items() if v != get_path(saved, k)}
    glob = saved.train.batch_size * saved.train.world_size
    asked = changes.pop("train.batch_size", saved.train.batch_size)
    if asked not in (saved.train.batch_size, glob):
        changes["train.batch_size"] = asked  # refused below
    for path, value in changes.items():
        if path in RESUMABLE:
            *parents, key = path.split(".")
            setattr(get_path(cfg, ".".join(parents)), key, value)
        elif path not in DERIVED:
            raise CheckpointError(f"{path} = {value} does not match the run saved in {where} "
                              f"(saved: {get_path(saved, path)})",
                              "drop the setting to resume, or start a new run with --out")
    return cfg.validate(), _split_batch(cfg, glob, world_size, saved.train.world_size)


def _split_batch(cfg: RunConfig, glob: int, world_size: int, saved_world: int) -> list[str]:
    """Per-rank batch = the saved global batch / ranks (it must divide); notes if the ranks
    differ from the saved run's."""
    if glob % world_size:
        raise ConfigError(f"the run's global batch of {glob} examples cannot be split evenly "
                          f"across {world_size} ranks", "resume it on a number of ranks that "
                          f"divides {glob}")
    cfg.train.batch_size, cfg.train.world_size = glob // world_size, world_size
    if world_size == saved_world:
        return []
    return [f"resumed on {world_size} rank(s), saved on {saved_world}: batch "
            f"{cfg.train.batch_size} per rank keeps the global batch of {glob} (same steps and "
            "data order; the reparameterization noise and the order of float sums differ, so "
            "the weights are not bit-identical to an uninterrupted run)"]


def _pairs(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Leaf values of two nested dicts side by side, by dotted path."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return {prefix.rstrip("."): (a, b)}
    out: dict[str, tuple[Any, Any]] = {}
    for key in dict.fromkeys([*a, *b]):
        out |= _pairs(a.get(key), b.get(key), f"{prefix}{key}.")
    return out


# ---------------------------------------------------------------- the typed parser


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def parse(kind: Any, value: Any, path: str) -> Any:
    """``value`` (from JSON/YAML/TOML) as an instance of the type ``kind``, recursively.

    Dataclasses come from mappings with no unknown keys; ``list[T]`` from lists; unions
    (``T | None``) try each member; numbers are not booleans and ints are valid floats.
    Errors name the dotted ``path`` of the offending key.
    """
    if dataclasses.is_dataclass(kind):
        return _parse_dataclass(kind, value, path)
    if _is_union(kind):
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if value is None and len(members) < len(typing.get_args(kind)):
            return None
        if len(members) == 1:  # Optional[T]: T's own error names the offending key
            return parse(members[0], value, path)
        for member in typing.get_args(kind):
            try:
                return parse(member, value, path)
            except ConfigError:
                continue
        raise _wrong_type(kind, value, path)
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise _wrong_type(kind, value, path)
        (item,) = typing.get_args(kind)
        return [parse(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return _parse_scalar(kind, value, path)


def _parse_scalar(kind: Any, value: Any, path: str) -> Any:
    if kind is Any:
        return value
    if kind is type(None):
        if value is None:
            return None
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond any float
                raise _out_of_range(value, path) from None
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise _out_of_range(value, path)
        return value
    elif isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise _wrong_type(kind, value, path)


def _out_of_range(value: Any, path: str) -> ConfigError:
    shown = str(value) if abs(value) < 10**24 else f"about 2^{int(abs(value)).bit_length() - 1}"
    return ConfigError(f"{path} = {shown} is out of range (beyond a 64-bit integer)",
                       f"give {path} a smaller value")


def _wrong_type(kind: Any, value: Any, path: str) -> ConfigError:
    name = _type_name(kind)
    return ConfigError(f"{path} = {value!r} is not of type {name}", f"give {path} a {name} value")


def _parse_dataclass(kind: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"config section {path!r} must be a mapping, got {value!r}",
                          "write e.g. model: {latent_dim: 16}")
    fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config section {path!r} has a key that is not a name: {bad[0]!r}",
                          "write keys as names, e.g. model: {latent_dim: 16}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in config section {path!r}",
                          _where_it_belongs(unknown[0], fields.values(), path)
                          or f"valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(kind)
    kwargs = {}
    for key, v in value.items():
        registry = fields[key].metadata.get("registry")
        sub = f"{path}.{key}"
        kwargs[key] = (parse_component(registry, v, sub, fields[key].default_factory().name)
                       if registry else parse(hints[key], v, sub))
    return kind(**kwargs)


def _where_it_belongs(key: str, fields: Any, path: str) -> str | None:
    """A hint when ``key`` is an option of one of the section's components."""
    for f in fields:
        registry = f.metadata.get("registry")
        if registry is None:
            continue
        owners = [n for n in registry.names() if hasattr(registry.options(n), key)]
        if owners:
            return (f"{key!r} is an option of {path}.{f.name} ({', '.join(owners)}): write "
                    f"{f.name}: {{name: {owners[0]}, {key}: ...}}")
    return None


def parse_component(registry: Any, value: Any, path: str, default: str) -> Options:
    """A component's options from a name or ``{name: ..., option: value}`` mapping."""
    if isinstance(value, Options):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{path} = {value!r} must be a name or a mapping",
                          f"write e.g. {path.split('.')[-1]}: {default}")
    name = value.get("name", default)
    if not isinstance(name, str):
        raise _wrong_type(str, name, f"{path}.name")
    entry = registry.get(name)
    options = {f.name for f in dataclasses.fields(entry.options)} - {"name"}
    unknown = sorted(set(value) - options - {"name"})
    if unknown:
        raise ConfigError(f"{registry.kind} {name!r} takes no option(s) {unknown} ({path})",
                          f"its options: {', '.join(sorted(options)) or 'none'}")
    return _parse_dataclass(entry.options, {**value, "name": name}, path)


def _coerce_components(obj: Any, path: str) -> None:
    """Let Python callers pass a component as a name or a dict (parsed like a config file)."""
    for f in dataclasses.fields(obj):
        registry = f.metadata.get("registry")
        value = getattr(obj, f.name)
        if registry is not None and not isinstance(value, Options):
            setattr(obj, f.name, parse_component(registry, value, f"{path}.{f.name}",
                                                 f.default_factory().name))


def _migrate_0_1(d: dict[str, Any]) -> dict[str, Any]:
    """A ``config.json`` of vaekit 0.1 (flat likelihood/network/objective keys) in 0.2 form."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    model, train = d.get("model", {}), d.get("train", {})
    if isinstance(model, dict):
        arch = {"name": model.pop("arch", "mlp")}
        for key in ("hidden", "activation"):
            if key in model:
                arch[key] = model.pop(key)
        lik = {"name": model.get("likelihood", "bernoulli")}
        sigma, gamma = model.pop("sigma", None), model.pop("gamma_init", None)
        if lik["name"] == "gaussian" and sigma is not None:
            lik["sigma"] = sigma
        if lik["name"] in ("gaussian-gamma", "gaussian-diag"):
            lik["gamma_init"] = gamma if gamma is not None else 1.0
            lik["gamma_lr"] = None  # 0.1 optimizers had one parameter group
        model.update(arch=arch, likelihood=lik)
    if isinstance(train, dict) and isinstance(train.get("objective", "elbo"), str):
        name = train.get("objective", "elbo")
        k, kl = train.pop("iwae_k", None), train.pop("kl", None)
        train["objective"] = {"name": name, **({"k": k} if name == "iwae" and k else {}),
                              **({"kl": kl} if name == "elbo" and kl else {})}
    d["version"] = __version__
    return d


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Section-wise update of ``base`` by ``over``, two levels deep. A component that
    ``over`` renames (a new ``name``) replaces ``base``'s options for it; non-mapping
    values are kept as they are, for :func:`parse` to report."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in over.items():
        old = merged.get(section)
        if not (isinstance(values, dict) and isinstance(old, dict)):
            merged[section] = dict(values) if isinstance(values, dict) else values
            continue
        for key, value in values.items():
            merged[section][key] = _merge_value(old.get(key), value)
    return merged


def _as_map(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def _merge_value(old: Any, new: Any) -> Any:
    """``new`` replaces ``old``, except that component options merge: a name beside a
    mapping counts as ``{name: ...}``, and options of the same component are updated."""
    if not (isinstance(old, dict) or isinstance(new, dict)):
        return new
    old_map, new_map = _as_map(old), _as_map(new)
    if not (isinstance(old_map, dict) and isinstance(new_map, dict)):
        return new
    if "name" in new_map and new_map["name"] != old_map.get("name"):
        return dict(new_map)
    return {**old_map, **new_map}


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a float (YAML 1.1 needs a dot)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a nested dict."""
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config file {path} is neither YAML nor TOML",
                          "name it *.yaml, *.yml or *.toml")
    try:
        text = read_text(path, CONFIG_LIMIT, "config file", error=ConfigError)
    except ConfigError as err:  # missing, not a regular file, too large, not UTF-8
        raise ConfigError(f"cannot parse the config file: {err.problem}", err.fix) from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = _yaml_load(text) or {}
    except Exception as err:  # parser and decoding errors differ per format
        raise ConfigError(f"cannot parse {path}: {err}".replace("\n", " "),
                          "fix the syntax of the config file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping", "see README for an example")
    return data


def configure(overrides: dict[str, Any] | None = None, preset: str | None = None,
              config_file: Path | None = None) -> RunConfig:
    """A validated config: defaults < ``preset`` < ``config_file`` < ``overrides``
    (nested like a config file, e.g. ``{"train": {"lr": 1e-3}}``)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", f"use one of {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else {}
    file_cfg = load_config_file(config_file) if config_file else {}
    return RunConfig.from_dict(merge(merge(base, file_cfg), overrides or {})).validate()


def stage2_settings(cfg: RunConfig, overrides: dict[str, Any]) -> Stage2Config:
    """The stage-2 settings of ``vaekit train --stage2 RUN_DIR``: the run's own ``stage2``
    section (or the defaults) updated by the ``stage2`` section of ``overrides``."""
    base = dataclasses.asdict(cfg.stage2 or Stage2Config())
    return parse(Stage2Config, merge(base, overrides.get("stage2", {})), "stage2")
