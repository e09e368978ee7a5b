"""``vaekit train | evaluate | sample | reconstruct | data list``.

The CLI only parses arguments and calls library functions. User errors (VaekitError) end
with one line ``error: <problem>; <fix>`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from vaekit.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before anything imports torch

from vaekit import __version__  # noqa: E402
from vaekit.errors import ConfigError, VaekitError  # noqa: E402

# flag -> (dotted config path, type, help); defaults are read from the config dataclasses and
# the registries. Component options (e.g. model.likelihood.sigma) apply to the components
# that have them; giving one to a component without it is an error that names both.
TRAIN_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--data", "data.name", str, "dataset name (see `vaekit data list`) or a directory/file"),
    ("--transform", "data.transform", str, "input transform: auto | none | scale | binarize | "
     "dequantize (auto: what the likelihood needs)"),
    ("--val-fraction", "data.val_fraction", float, "fraction of training data for validation"),
    ("--limit", "data.limit", int, "use only the first N training examples (0 = all)"),
    ("--latent-dim", "model.latent_dim", int, "latent size L"),
    ("--arch", "model.arch.name", str, "network architecture: {networks}"),
    ("--hidden", "model.arch.hidden", int, "hidden widths of the MLPs, e.g. --hidden 512 256"),
    ("--activation", "model.arch.activation", str,
     "activation: relu, elu, gelu, tanh, silu, softplus"),
    ("--likelihood", "model.likelihood.name", str, "p(x|z): {likelihoods}"),
    ("--sigma", "model.likelihood.sigma", float, "std of the fixed Gaussian likelihood"),
    ("--gamma-init", "model.likelihood.gamma_init", float,
     "initial learned variance (gamma); None = 1/10 of the training data's variance"),
    ("--prior", "model.prior.name", str, "p(z): {priors}"),
    ("--epochs", "train.epochs", int, "training epochs"),
    ("--batch-size", "train.batch_size", int, "mini-batch size"),
    ("--lr", "train.lr", float, "Adam learning rate (peak, with a schedule)"),
    ("--lr-schedule", "train.lr_schedule", str, "constant | cosine (decays to 0)"),
    ("--warmup-steps", "train.warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--warmup-fraction", "train.warmup_fraction", float,
     "learning-rate warm-up as a share of the run's steps (--warmup-steps, if given, wins)"),
    ("--beta", "train.beta", float, "KL weight (1 = ELBO)"),
    ("--beta-warmup-steps", "train.beta_warmup_steps", int,
     "KL annealing: beta rises linearly from 0 over N steps"),
    ("--objective", "train.objective.name", str, "training objective: {objectives}"),
    ("--iwae-k", "train.objective.k", int,
     "samples per example for --objective iwae (or elbo-score)"),
    ("--kl", "train.objective.kl", str, "KL estimator of --objective elbo: analytic | mc"),
    ("--seed", "train.seed", int, "random seed (init, data order, noise)"),
    ("--device", "train.device", str, "auto | cpu | cuda | cuda:N"),
    ("--grad-clip", "train.grad_clip", float, "max gradient norm (0 = off)"),
    ("--precision", "train.precision", str, "fp32 | bf16 (matmuls in bfloat16)"),
]


def _flag_default(path: str) -> Any:
    """The default of a dotted config path; a component option's default from the first
    registered component that has it."""
    import dataclasses

    from vaekit.config import RunConfig

    *parents, key = path.split(".")
    owner: Any = RunConfig()
    for part in parents:
        owner = getattr(owner, part)
    if hasattr(owner, key):
        return getattr(owner, key)
    section = _flag_default(".".join(parents[:-1]))
    registry = next(f.metadata["registry"] for f in dataclasses.fields(section)
                    if f.name == parents[-1])
    return next(getattr(registry.options(n), key) for n in registry.names()
                if hasattr(registry.options(n), key))


def _registry_names() -> dict[str, str]:
    from vaekit.registry import LIKELIHOODS, NETWORKS, OBJECTIVES, PRIORS

    return {key: " | ".join(reg.names()) for key, reg in (
        ("networks", NETWORKS), ("likelihoods", LIKELIHOODS), ("priors", PRIORS),
        ("objectives", OBJECTIVES))}


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from vaekit.config import PRESETS

    p = sub.add_parser("train", help="train a VAE", formatter_class=argparse.RawTextHelpFormatter,
                       description="Train a VAE. Precedence: defaults < --preset < --config file < "
                       "flags.")
    p.add_argument("--config", type=Path, help="YAML or TOML file with data/model/train sections")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from named settings (fast: Adam 6e-3 with 500 warm-up steps"
                        "\nand cosine decay, 5 epochs; see README 'Speed')")
    names = _registry_names()
    for flag, path, kind, text in TRAIN_FLAGS:
        p.add_argument(flag, type=kind, nargs="+" if flag == "--hidden" else None, default=None,
                       help=f"{text.format(**names)} (default: {_flag_default(path)})")
    p.add_argument("--conditional", action="store_const", const=True, default=None,
                   help="condition encoder and decoder on the data's labels (default: off)")
    p.add_argument("--two-stage", action="store_true",
                   help="then fit stage 2 of the two-stage VAE (Dai & Wipf) to the codes, into "
                        "RUN_DIR/stage2\n(settings: the config file's stage2 section)")
    p.add_argument("--stage2-epochs", type=int, default=None,
                   help="epochs of stage 2 (default: 40)")
    p.add_argument("--stage2", type=Path, metavar="RUN_DIR", default=None,
                   help="fit (or continue) stage 2 of the finished run in RUN_DIR")
    p.add_argument("--compile", action="store_const", const=True, default=None,
                   help="torch.compile the loss, forward and backward (default: off)")
    p.add_argument("--no-fused", action="store_true",
                   help="train through autograd even where the fast path (hand-written ELBO "
                        "gradients) applies")
    p.add_argument("--out", type=Path, help="new run directory (default: runs/<data>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run saved in RUN_DIR exactly where it stopped")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also checkpoint every N steps within an epoch (default: 0 = per epoch)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_train)


def _add_run_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ELBO, IWAE-k, log p(x) estimators, KDE, diagnostics")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("--k", type=int, default=100, help="samples of the IWAE-k bound (default: 100)")
    p.add_argument("--loglik", type=int, default=0, metavar="K",
                   help="importance-sampled log p(x) with K samples, IWAE curve, ELBO gap "
                        "(default: 0 = off)")
    p.add_argument("--naive", type=int, default=0, metavar="K",
                   help="naive estimator, z ~ p(z), with K samples (default: 0 = off)")
    p.add_argument("--kde", action="store_true", help="KDE baseline and Parzen window of samples")
    p.add_argument("--kde-max-train", type=int, default=10000,
                   help="training examples used as KDE centers (default: 10000)")
    p.add_argument("--baselines", action="store_true",
                   help="exact log p(x) of a full-covariance Gaussian and probabilistic PCA "
                        "(L = latent size) fitted on the training split (binary data: "
                        "independent Bernoulli pixels)")
    p.add_argument("--diagnostics", action="store_true",
                   help="active units, KL per latent dimension, posterior-collapse warning")
    p.add_argument("--generation", type=int, default=0, metavar="N",
                   help="Fréchet distance and precision/recall of N samples vs N test images "
                        "in vaekit's feature space (default: 0 = off; e.g. 10000)")
    p.add_argument("--inception-weights", type=Path, default=None, metavar="FILE",
                   help="with --generation: also the standard Inception FID from these local "
                        "weights (needs vaekit[fid]; nothing is downloaded)")
    p.add_argument("--split", choices=["test", "val"], default="test", help="(default: test)")
    p.add_argument("--memory-mb", type=float, default=1024, help="memory budget (default: 1024)")
    p.add_argument("--seed", type=int, default=0, help="evaluation noise seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--json", type=Path, help="write figures here (default: RUN/eval-SPLIT.json, "
                                             "where evaluations accumulate)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("sample", help="generate new data: z ~ p(z), x = mean of p(x|z)")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of its mean")
    p.add_argument("--label", type=int, default=None,
                   help="class to generate, for a conditional model (default: every class "
                        "in turn)")
    p.add_argument("--out", type=Path, help="PNG path (default: RUN/samples.png; + .npy)")
    p.add_argument("--force", action="store_true", help="replace existing --out files")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("reconstruct", help="test examples and their reconstructions")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("-n", type=int, default=32, help="number of examples (default: 32)")
    p.add_argument("--out", type=Path, help="PNG path (default: RUN/reconstructions.png)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_reconstruct)


def _add_gradients_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gradients", help="variance, SNR and accuracy of ELBO/IWAE gradient "
                       "estimators (reparameterization, score function, STL, DReG)")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("--samples", type=int, nargs="+", default=[1, 10, 100], metavar="S",
                   help="samples per example of each estimate (default: 1 10 100)")
    p.add_argument("--repeats", type=int, default=20,
                   help="independent estimates per estimator and S (default: 20)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="test examples in the fixed batch (default: 128)")
    p.add_argument("--reference", type=int, default=1000,
                   help="samples per example of the reference gradient (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--json", type=Path, help="write figures here (default: RUN/gradients.json)")
    p.add_argument("--out", type=Path, help="variance-vs-S figure (default: RUN/gradients.png)")
    p.set_defaults(func=cmd_gradients)


class _Parser(argparse.ArgumentParser):
    """argparse with vaekit's one-line errors: ``error: <what>; <fix>``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(sub)
    _add_run_parsers(sub)
    _add_gradients_parser(sub)
    p = sub.add_parser("data", help="datasets: `vaekit data list`")
    p.add_argument("action", choices=["list"], help="list named datasets and where they are")
    p.set_defaults(func=cmd_data)
    return parser


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, nested like a config file: ``{"model": {"likelihood": {...}}}``."""
    out: dict[str, Any] = {}
    given = [(path, getattr(args, flag[2:].replace("-", "_"))) for flag, path, _, _ in TRAIN_FLAGS]
    given += [("model.conditional", args.conditional), ("train.compile", args.compile),
              ("train.fused", False if args.no_fused else None),
              ("stage2.train.epochs", args.stage2_epochs)]
    for path, value in given:
        if value is not None:
            *parents, key = path.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[key] = value
    if args.two_stage:
        out.setdefault("stage2", {})
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from vaekit.run import configure, default_run_dir, resume_config
    from vaekit.train import train

    flags = _flag_overrides(args)
    if args.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every must be >= 0", "pass 0 to checkpoint per epoch only")
    if args.stage2:
        return _fit_stage2(args, flags)
    if args.resume:
        cfg = resume_config(args.resume, flags, preset=args.preset, config_file=args.config,
                            out=args.out)
        run_dir = args.resume
    else:
        cfg = configure(flags, args.preset, args.config)
        run_dir = args.out or default_run_dir(cfg)
    args.interrupted = f"interrupted; resume training with `vaekit train --resume {run_dir}`"
    run = train(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress,
                echo=True, checkpoint_every=args.checkpoint_every)
    last = run.history[-1] if run.history else {}
    print(f"protocol: {run.data.protocol}")
    if "val_elbo" in last:
        print(f"final validation ELBO: {last['val_elbo']:.3f} nats/example (one-sample estimator)")
    print(f"run directory: {run_dir}  (config.json, checkpoint/, metrics.jsonl, metrics.csv, "
          "train.log)")


def _fit_stage2(args: argparse.Namespace, flags: dict[str, Any]) -> None:
    from vaekit.run import stage2_config
    from vaekit.train.stages import fit_stage2

    stage2 = stage2_config(args.stage2, flags, other_flags=bool(args.resume or args.out
                                                                 or args.config or args.preset))
    args.interrupted = f"interrupted; continue stage 2 with `vaekit train --stage2 {args.stage2}`"
    run = fit_stage2(args.stage2, stage2, progress=not args.no_progress, echo=True,
                     checkpoint_every=args.checkpoint_every)
    last = run.history[-1] if run.history else {}
    print(f"stage 2 fitted to the stage-1 codes of {args.stage2}: validation ELBO of the codes "
          f"{last.get('val_elbo', float('nan')):.3f} nats/example, gamma_z "
          f"{last.get('gamma', float('nan')):.4g}")
    print(f"run directory: {args.stage2} (stage 2 in {args.stage2 / 'stage2'}); `vaekit sample "
          f"{args.stage2}` now generates through both stages")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vaekit.evaluation.report import format_full_report
    from vaekit.evaluation.run import EvalOptions, run_evaluation
    from vaekit.io import atomic_write_text
    from vaekit.viz import save_loglik_curve

    for flag in ("k", "loglik", "naive", "kde_max_train", "generation"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 0", "pass 0 to turn it off")
    if args.memory_mb <= 0:
        raise ConfigError("--memory-mb must be positive", "pass e.g. --memory-mb 1024")
    from vaekit.run import merge_evaluation, open_run, output_path
    from vaekit.train.checkpoint import checkpoint_record

    _check_output(args.json, (".json",))
    path = output_path(args.json, args.run / f"eval-{args.split}.json", args.run, args.force,
                       "--json")
    if args.inception_weights and not args.inception_weights.is_file():
        raise ConfigError(f"Inception weights {args.inception_weights} do not exist",
                          "point --inception-weights at a local weights file")
    model, cfg, data = open_run(args.run, args.device)
    args.interrupted = "interrupted: the evaluation was not saved"
    opts = EvalOptions(split=args.split, k=args.k, loglik=args.loglik, naive=args.naive,
                       kde=args.kde, kde_max_train=args.kde_max_train,
                       diagnostics=args.diagnostics, memory_mb=args.memory_mb, seed=args.seed,
                       batch_size=cfg.train.eval_batch_size, generation=args.generation,
                       inception_weights=str(args.inception_weights or ""),
                       baselines=args.baselines)
    res = run_evaluation(model, data, opts)
    res["likelihood"] = cfg.model.likelihood.name
    res, notes = merge_evaluation(res, path, checkpoint_record(args.run))
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    print(format_full_report(res))
    for note in notes:
        print(f"note: {note}")
    if "marginal" in res:
        plot = save_loglik_curve(res["marginal"], path.with_name(f"loglik-vs-K-{args.split}.png"),
                                 title=f"{Path(cfg.data.name).name} {args.split}: log p(x) "
                                       "estimators")
        print(f"estimators vs K plotted in {plot}")
    print(f"figures written to {path}")


def cmd_gradients(args: argparse.Namespace) -> None:
    from vaekit.evaluation.gradients import gradient_study, variance_figure
    from vaekit.evaluation.report import format_gradients
    from vaekit.models.two_stage import TwoStageVAE
    from vaekit.run import open_run

    for flag, low in (("repeats", 2), ("batch_size", 1), ("reference", 1)):
        if getattr(args, flag) < low:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= {low}, got "
                              f"{getattr(args, flag)}", "see `vaekit gradients --help`")
    if min(args.samples) < 1:
        raise ConfigError(f"--samples must be >= 1, got {min(args.samples)}",
                          "pass e.g. --samples 1 10 100")
    _check_output(args.json, (".json",))
    _check_output(args.out, IMAGE_SUFFIXES)
    model, _cfg, data = open_run(args.run, args.device)
    if isinstance(model, TwoStageVAE):  # as in `evaluate`: stage 1 with its N(0, I) prior
        model = model.stage1
    batch = data.test[: args.batch_size]
    res = gradient_study(model, batch, sorted(set(args.samples)), args.repeats, args.reference,
                         seed=args.seed)
    res.update(run=str(args.run), batch=f"the first {len(batch)} test examples",
               protocol=data.protocol)
    path = args.json or args.run / "gradients.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(format_gradients(res))
    out = args.out or args.run / "gradients.png"
    variance_figure(res).savefig(out, dpi=120)
    print(f"variance vs S plotted in {out}; figures written to {path}")


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from vaekit.run import reference_data
    from vaekit.train import load_model
    from vaekit.viz import save_figure_for

    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}", "pass e.g. -n 64")
    from vaekit.run import output_path

    _check_output(args.out, IMAGE_SUFFIXES)
    out = output_path(args.out, args.run / "samples.png", args.run, args.force, "--out")
    if args.out is not None:  # the raw values go beside it: never onto a user's file
        output_path(out.with_suffix(".npy"), out, args.run, args.force, "--out's .npy")
    model, cfg = load_model(args.run, "cpu")  # the checkpoint alone is enough
    y = _sample_labels(model, cfg, args)
    x = model.sample(args.n, mean=not args.draw, generator=torch.Generator().manual_seed(args.seed),
                     y=y)
    save_figure_for(x, out, reference=None if x.dim() >= 3 else reference_data(cfg),
                    title="samples from the model")
    np.save(out.with_suffix(".npy"), x.numpy())
    given = "" if y is None else (f", y = {args.label}" if args.label is not None
                                  else ", y = every class in turn")
    what = f"{'draws' if args.draw else 'means'} of p(x|z{'' if y is None else ', y'})"
    prior = "stage 2 (two-stage VAE)" if hasattr(model, "stage2") else "p(z)"
    print(f"{args.n} samples ({what}, z ~ {prior}{given}) written to {out} and "
          f"{out.with_suffix('.npy')}")


def _sample_labels(model: Any, cfg: Any, args: argparse.Namespace) -> Any:
    """The labels to condition samples on: --label, or every class in turn; None if the
    model is unconditional (where --label is an error)."""
    import torch

    classes = cfg.model.num_classes
    if not model.conditional:
        if args.label is not None:
            raise ConfigError("--label needs a conditional model", "train with --conditional")
        return None
    if args.label is not None and not 0 <= args.label < classes:
        raise ConfigError(f"--label {args.label} is not a class of this model",
                          f"pass a label in 0..{classes - 1}")
    if args.label is not None:
        return torch.full((args.n,), args.label, dtype=torch.long)
    return torch.arange(args.n) % classes


def _check_output(path: Path | None, suffixes: tuple[str, ...]) -> None:
    """An output file must go into an existing folder and have a known format."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} of output {path} does not exist",
                          "create it first or write elsewhere")
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"output {path} has an unsupported suffix",
                          f"use one of {', '.join(suffixes)}")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from vaekit.viz import save_figure_for

    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}", "pass e.g. -n 32")
    from vaekit.run import open_run, output_path

    _check_output(args.out, IMAGE_SUFFIXES)
    out = output_path(args.out, args.run / "reconstructions.png", args.run, args.force, "--out")
    model, _cfg, data = open_run(args.run, "cpu")
    batch = data.test[: args.n]
    x, rec = batch.x, model.reconstruct(batch.x, batch.y)
    if x.dim() >= 3:  # rows alternate: originals, reconstructions
        cols = min(8, len(x))
        pairs = [t for i in range(0, len(x), cols) for t in (x[i : i + cols], rec[i : i + cols])]
        save_figure_for(torch.cat(pairs), out, nrow=cols)
    else:
        save_figure_for(rec, out, reference=x, title="reconstructions (blue) of test data")
    given = ", y" if model.conditional else ""
    print(f"{len(x)} test examples and reconstructions (mean of p(x|z{given}) at z = "
          f"E_q[z|x{given}]) "
          f"written to {out}")


def cmd_data(args: argparse.Namespace) -> None:
    from vaekit.data.datasets import list_datasets

    for name, where, desc in list_datasets():
        print(f"{name:14s} {desc}\n{'':14s} -> {where}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    try:
        args.func(args)
    except VaekitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(getattr(args, "interrupted", f"interrupted: vaekit {args.command} stopped"),
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
