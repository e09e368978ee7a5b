"""The command-line flags. ``TRAIN_FLAGS`` are generated from the config dataclasses: the
table names each flag's dotted config path and help text; its type, whether it takes
several values, and its default come from the dataclass fields (and, for a component's
option such as ``model.likelihood.sigma``, from the first registered component that has
it). ``COMMANDS``: each command's help, positional argument and own flags.

    add_flags(parser, TRAIN_FLAGS)        # --latent-dim INT (default: 32), ...
    overrides(args, TRAIN_FLAGS)          # {"model": {"latent_dim": 16}}: the flags given
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.config import KEEP, RunConfig, Stage2Config, _is_union, nested
from vaekit.registry import LIKELIHOODS, NETWORKS, OBJECTIVES, PRIORS


@dataclass(frozen=True)
class Flag:
    """A flag that sets one config path; a switch sets it to ``const``."""

    flag: str
    path: str
    help: str
    const: Any = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


TRAIN_FLAGS = [
    Flag("--data", "data.name", "dataset name (see `vaekit data list`) or a directory/file"),
    Flag("--transform", "data.transform", "input transform: auto | none | scale | binarize | "
         "dequantize (auto: what the likelihood needs)"),
    Flag("--val-fraction", "data.val_fraction", "fraction of training data for validation"),
    Flag("--limit", "data.limit", "use only the first N training examples (0 = all)"),
    Flag("--latent-dim", "model.latent_dim", "latent size L"),
    Flag("--arch", "model.arch.name", "network architecture: {networks}"),
    Flag("--hidden", "model.arch.hidden", "hidden widths of the MLPs, e.g. --hidden 512 256"),
    Flag("--activation", "model.arch.activation",
         "activation: relu, elu, gelu, tanh, silu, softplus"),
    Flag("--likelihood", "model.likelihood.name", "p(x|z): {likelihoods}"),
    Flag("--sigma", "model.likelihood.sigma", "std of the fixed Gaussian likelihood"),
    Flag("--gamma-init", "model.likelihood.gamma_init",
         "initial learned variance (gamma); None = 1/10 of the training data's variance"),
    Flag("--prior", "model.prior.name", "p(z): {priors}"),
    Flag("--conditional", "model.conditional", "condition encoder and decoder on the data's "
         "labels", const=True),
    Flag("--epochs", "train.epochs", "training epochs"),
    Flag("--batch-size", "train.batch_size", "mini-batch size"),
    Flag("--lr", "train.lr", "Adam learning rate (peak, with a schedule)"),
    Flag("--lr-schedule", "train.lr_schedule", "constant | cosine (decays to 0) | burda "
         "(lr 10^(-i/7) over the 3^i epochs of stage i, Burda et al. 2015)"),
    Flag("--adam-eps", "train.adam_eps", "Adam's epsilon"),
    Flag("--warmup-steps", "train.warmup_steps", "linear learning-rate warm-up steps"),
    Flag("--warmup-fraction", "train.warmup_fraction",
         "learning-rate warm-up as a share of the run's steps (--warmup-steps, if given, wins)"),
    Flag("--beta", "train.beta", "KL weight (1 = ELBO)"),
    Flag("--beta-warmup-steps", "train.beta_warmup_steps",
         "KL annealing: beta rises linearly from 0 over N steps"),
    Flag("--objective", "train.objective.name", "training objective: {objectives}"),
    Flag("--iwae-k", "train.objective.k", "samples per example for --objective iwae (or "
         "elbo-score)"),
    Flag("--kl", "train.objective.kl", "KL estimator of --objective elbo: analytic | mc"),
    Flag("--seed", "train.seed", "random seed (init, data order, noise)"),
    Flag("--device", "train.device", "auto | cpu | cuda | cuda:N"),
    Flag("--grad-clip", "train.grad_clip", "max gradient norm (0 = off)"),
    Flag("--precision", "train.precision", "fp32 | bf16 (matmuls in bfloat16)"),
    Flag("--compile", "train.compile", "torch.compile the loss, forward and backward",
         const=True),
    Flag("--no-fused", "train.fused", "train through autograd even where the fast path "
         "(hand-written ELBO gradients) applies", const=False),
    Flag("--stage2-epochs", "stage2.train.epochs", "epochs of stage 2"),
]
NO_REPORT = ("--no-report", "flag", None, "do not write RUN_DIR/report.html at the end (also: "
             "VAEKIT_NO_REPORT=1); `vaekit report RUN_DIR` writes it later")
PROGRESS = ("--no-progress", "flag", None, "hide the progress bar")
OUT, FORCE = ("--out", Path, None, "output file (default: in the run directory)"), \
    ("--force", "flag", None, "replace existing output files")
UNVERIFIED = ("--allow-unverified", "flag", None, "load a checkpoint that has no checksums "
              "(manifest.json; written by vaekit 0.2.0 or earlier)")
# every command: (help, positional argument, flags as (name, type or "flag", default, help))
COMMANDS: dict[str, tuple[str, str | None, list[tuple[str, Any, Any, str]]]] = {
    "train": ("train a VAE (precedence: defaults < --preset < --config file < flags)", None, [
        ("--config", Path, None, "YAML or TOML file with data/model/train sections"),
        ("--two-stage", "flag", None, "then fit stage 2 of the two-stage VAE (Dai & Wipf) to "
         "the codes, into RUN_DIR/stage2 (settings: the config file's stage2 section)"),
        ("--stage2", Path, None, "fit (or continue) stage 2 of the finished run in RUN_DIR"),
        ("--out", Path, None, "new run directory (default: runs/<data>-<time>)"),
        ("--resume", Path, None, "continue the run saved in RUN_DIR exactly where it stopped"),
        ("--checkpoint-every", int, 0, "also checkpoint every N steps within an epoch (0: "
         "per epoch only)"),
        ("--keep-checkpoints", int, KEEP, "checkpoints kept: checkpoint/, checkpoint.1/, ..."),
        PROGRESS, NO_REPORT, UNVERIFIED]),
    "evaluate": ("ELBO, IWAE-k, log p(x) estimators, KDE, diagnostics", "run", [
        ("--k", int, 100, "samples of the IWAE-k bound"),
        ("--loglik", int, 0, "importance-sampled log p(x) with K samples, IWAE curve, ELBO "
         "gap (0 = off)"),
        ("--naive", int, 0, "naive estimator, z ~ p(z), with K samples (0 = off)"),
        ("--kde", "flag", None, "KDE baseline and Parzen window of samples"),
        ("--kde-max-train", int, 10000, "training examples used as KDE centers"),
        ("--baselines", "flag", None, "exact log p(x) of a full-covariance Gaussian and "
         "probabilistic PCA (L = latent size) fitted on the training split (binary data: "
         "independent Bernoulli pixels)"),
        ("--diagnostics", "flag", None, "active units, KL per latent dimension, "
         "posterior-collapse warning"),
        ("--generation", int, 0, "Fréchet distance and precision/recall of N samples vs N test "
         "images in vaekit's feature space (0 = off; e.g. 10000)"),
        ("--inception-weights", Path, None, "with --generation: also the standard Inception "
         "FID from these local weights (needs vaekit[fid]; nothing is downloaded)"),
        ("--split", str, "test", "test | val"),
        ("--limit", int, 0, "score only the split's first N examples, e.g. for a large K (0 = "
         "all; not with --kde or --baselines)"),
        ("--memory-mb", float, 1024.0, "memory budget of the sampling estimators"),
        ("--seed", int, 0, "evaluation noise seed"),
        ("--device", str, "auto", "auto | cpu | cuda"),
        ("--json", Path, None, "write figures here (default: RUN/eval-SPLIT.json, where "
         "evaluations accumulate; with --limit N RUN/eval-SPLIT-firstN.json)"),
        FORCE, NO_REPORT, UNVERIFIED]),
    "sample": ("generate new data: z ~ p(z), x = mean of p(x|z)", "run", [
        ("-n", int, 64, "number of samples"), ("--seed", int, 0, "noise seed"),
        ("--draw", "flag", None, "draw x ~ p(x|z) instead of its mean"),
        ("--label", int, None, "class to generate, for a conditional model (default: every "
         "class in turn)"), OUT, FORCE, UNVERIFIED]),
    "reconstruct": ("test examples and their reconstructions", "run",
                    [("-n", int, 32, "number of examples"), OUT, FORCE, UNVERIFIED]),
    "gradients": ("variance, SNR and accuracy of ELBO/IWAE gradient estimators "
                  "(reparameterization, score function, STL, DReG)", "run", [
        ("--samples", list, [1, 10, 100], "samples per example of each estimate"),
        ("--repeats", int, 20, "independent estimates per estimator and S"),
        ("--batch-size", int, 128, "test examples in the fixed batch"),
        ("--reference", int, 1000, "samples per example of the reference gradient"),
        ("--seed", int, 0, "latent noise"), ("--device", str, "auto", "auto | cpu | cuda"),
        ("--json", Path, None, "write figures here (default: RUN/gradients.json)"),
        ("--out", Path, None, "variance-vs-S figure (default: RUN/gradients.png)"), FORCE,
        UNVERIFIED]),
    "report": ("one self-contained HTML report of a run, with every figure that applies "
               "(PNG and SVG in RUN_DIR/figures/)", "run",
               [("--out", Path, None, "HTML file (default: RUN/report.html)"), PROGRESS,
                UNVERIFIED]),
    "demo": ("`vaekit demo ring`: a VAE learns the ring of seed 000's Figure 2; the report "
             "shows it (under a minute on 2 CPU cores)", "name", [
        ("--out", Path, None, "new run directory (default: runs/ring-demo-<time>)"),
        ("--epochs", int, None, "training epochs (default: 40)"), ("--seed", int, 0, "noise "
                                                                   "seed"), PROGRESS]),
    "data": ("datasets: `vaekit data list`", "action", []),
}
CHOICES = {"name": ["ring"], "action": ["list"]}

REGISTRIES = {"networks": NETWORKS, "likelihoods": LIKELIHOODS, "priors": PRIORS,
              "objectives": OBJECTIVES}


def field_spec(path: str) -> tuple[Any, Any]:
    """(type hint, default) of a dotted config path; a component option's from the first
    registered component that has it."""
    *parents, key = path.split(".")
    owner: Any = RunConfig(stage2=Stage2Config())
    for part in parents:
        section = owner
        owner = getattr(owner, part)
    if not any(f.name == key for f in dataclasses.fields(owner)):  # another component's option
        registry = next(f.metadata["registry"] for f in dataclasses.fields(section)
                        if f.name == parents[-1])
        owner = next(registry.options(n) for n in registry.names()
                     if hasattr(registry.options(n), key))
    return typing.get_type_hints(type(owner))[key], getattr(owner, key)


def _argument(kind: Any) -> dict[str, Any]:
    """argparse keywords for a field type: scalars, Optional[T], list[T]."""
    if _is_union(kind):
        kind = next(m for m in typing.get_args(kind) if m is not type(None))
    if typing.get_origin(kind) is list:
        return {"type": typing.get_args(kind)[0], "nargs": "+"}
    return {"type": kind}


def add_flags(parser: argparse.ArgumentParser, flags: list[Flag]) -> None:
    """One argument per flag, default None (not given), its config default in the help."""
    names = {key: " | ".join(reg.names()) for key, reg in REGISTRIES.items()}
    for f in flags:
        kind, default = field_spec(f.path)
        text = f.help.format(**names)
        if f.const is not None:
            shown = "off" if f.const else "on"
            parser.add_argument(f.flag, dest=f.dest, action="store_const", const=f.const,
                                default=None, help=f"{text} (default: {shown})")
        else:
            parser.add_argument(f.flag, dest=f.dest, default=None, **_argument(kind),
                                help=f"{text} (default: {default})")


def overrides(args: argparse.Namespace, flags: list[Flag]) -> dict[str, Any]:
    """The flags given, nested like a config file: ``{"model": {"likelihood": {...}}}``."""
    return nested({f.path: getattr(args, f.dest) for f in flags
                   if getattr(args, f.dest) is not None})
