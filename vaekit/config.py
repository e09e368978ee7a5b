"""Typed configuration, saved beside every checkpoint and read back from it.

Precedence when a run is configured from the CLI: dataclass defaults < preset
(``PRESETS``) < config file (YAML or TOML) < explicit flags. ``RunConfig.to_dict()`` is
what ``config.json`` holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaekit import __version__
from vaekit.errors import ConfigError

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-gamma", "gaussian-diag")
ACTIVATIONS = ("relu", "elu", "gelu", "tanh", "silu", "softplus")  # vaekit.nn.mlp
TRANSFORMS = ("auto", "none", "scale", "binarize", "dequantize")

# Named settings that a run starts from (CLI: --preset NAME; Python:
# RunConfig.from_dict(PRESETS[NAME])). "fast": time to quality, tuned on the classic
# 784-400-20 Bernoulli MLP VAE on Fashion-MNIST, where it reaches in 5 epochs the test ELBO
# that Adam 1e-3 at batch 128 reaches in 10 (benchmarks/bench_train.py, section ttq).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {"train": {"epochs": 5, "batch_size": 128, "lr": 6e-3, "lr_schedule": "cosine",
                       "warmup_steps": 500}},
}


@dataclass
class DataConfig:
    """Which data, and how pixels become model inputs."""

    name: str = "fashion-mnist"  # dataset name, or a directory / file path
    transform: str = "auto"  # auto | none | scale | binarize | dequantize
    val_fraction: float = 0.1  # held out of the training split for per-epoch validation
    eval_seed: int = 0  # seed of the fixed binarization / dequantization of val and test
    limit: int = 0  # use only the first N training examples (0 = all); for quick runs

    def validate(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"unknown transform {self.transform!r}",
                              f"use one of {', '.join(TRANSFORMS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}",
                              "pass e.g. --val-fraction 0.1")
        if self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}", "pass --limit 0 for all")


@dataclass
class ModelConfig:
    """Architecture: encoder q(z|x), likelihood p(x|z), prior p(z)."""

    arch: str = "mlp"  # network family (registry in vaekit.models)
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # encoder widths; decoder mirrors
    activation: str = "relu"
    likelihood: str = "bernoulli"  # bernoulli | gaussian | gaussian-gamma | gaussian-diag
    sigma: float = 1.0  # std of the fixed Gaussian likelihood (data units)
    gamma_init: float = 1.0  # initial variance of the learned-gamma / per-dim likelihoods
    data_shape: list[int] = field(default_factory=list)  # filled from the data at build time

    def validate(self) -> None:
        if self.latent_dim <= 0:
            raise ConfigError(f"latent size must be positive, got {self.latent_dim}",
                              "pass --latent-dim 32 (or any positive integer)")
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"hidden widths must be positive, got {self.hidden}",
                              "pass e.g. --hidden 512 256")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}",
                              f"use one of {', '.join(ACTIVATIONS)}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {self.likelihood!r}",
                              f"use one of {', '.join(LIKELIHOODS)}")
        if self.sigma <= 0 or self.gamma_init <= 0:
            raise ConfigError("sigma and gamma_init must be positive",
                              "pass e.g. --sigma 0.1")


@dataclass
class TrainConfig:
    """Optimization and bookkeeping."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (decay to 0 over all steps)
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    beta: float = 1.0  # weight of KL(q(z|x) || p(z)); 1 gives the ELBO
    objective: str = "elbo"  # elbo | iwae
    iwae_k: int = 5  # samples per example when objective == iwae
    kl: str = "analytic"  # analytic | mc
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    grad_clip: float = 0.0  # max global grad norm (0 = off)
    eval_batch_size: int = 1000
    precision: str = "fp32"  # fp32 | bf16 (matmuls in bf16; weights, loss, grads stay fp32)
    compile: bool = False  # torch.compile the loss (forward and backward)
    fused: bool = True  # hand-written ELBO gradients for ReLU-MLP VAEs (same math, faster)

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {self.batch_size}",
                              "pass --batch-size 128 (or any positive integer)")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}", "pass --epochs 10")
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}", "pass --lr 1e-3")
        if self.objective not in ("elbo", "iwae"):
            raise ConfigError(f"unknown objective {self.objective!r}", "use elbo or iwae")
        if self.kl not in ("analytic", "mc"):
            raise ConfigError(f"unknown KL estimator {self.kl!r}", "use analytic or mc")
        if self.lr_schedule not in ("constant", "cosine") or self.warmup_steps < 0:
            raise ConfigError(f"bad schedule {self.lr_schedule!r} / warm-up {self.warmup_steps}",
                              "use --lr-schedule constant|cosine and --warmup-steps >= 0")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}", "use fp32 or bf16")
        if self.iwae_k <= 0 or self.eval_batch_size <= 0:
            raise ConfigError("iwae_k and eval_batch_size must be positive", "pass e.g. 5 / 1000")


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: written to ``RUN_DIR/config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    version: str = __version__

    def validate(self) -> RunConfig:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(d) - set(sections) - {"version"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}",
                              f"use only {sorted(sections)}")
        kwargs: dict[str, Any] = {name: _section(kind, d.get(name, {}), name)
                                  for name, kind in sections.items()}
        return cls(**kwargs, version=d.get("version", __version__))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}",
                              "check the file, or point at a run directory vaekit wrote") from None


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list[int]": (list,),
}


def _section(kind: type, values: dict[str, Any], name: str) -> Any:
    """Build one config dataclass from a dict, checking keys and value types."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}",
                          "write e.g. model: {latent_dim: 16}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {name!r}",
                          f"valid keys: {', '.join(sorted(fields))}")
    for key, value in values.items():
        want = str(fields[key].type)
        ok = _TYPES.get(want, (object,))
        bad_bool = isinstance(value, bool) and bool not in ok
        items_ok = not isinstance(value, list) or all(type(v) is int for v in value)
        if not isinstance(value, ok) or bad_bool or not items_ok:
            raise ConfigError(f"{name}.{key} = {value!r} is not of type {want}",
                              f"give {name}.{key} a {want} value")
    return kind(**values)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a nested dict."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "check the --config path")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path} is neither YAML nor TOML",
                              "name it *.yaml, *.yml or *.toml")
    except ConfigError:
        raise
    except Exception as err:  # parser errors differ per format
        raise ConfigError(f"cannot parse {path}: {err}".replace("\n", " "),
                          "fix the syntax of the config file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping", "see README for an example")
    return data
