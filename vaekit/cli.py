"""``vaekit train | evaluate | sample | reconstruct | report | demo | data list``.

The CLI only parses arguments and calls library functions. User errors (VaekitError, a
file that cannot be read or written, memory that runs out) end with one line
``error: <problem>; <fix>`` and exit code 2, never a traceback; ``vaekit --debug ...`` (or
``VAEKIT_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from vaekit.runtime import configure_cpu_runtime, keep_freed_memory

configure_cpu_runtime()  # before anything imports torch
keep_freed_memory()

from vaekit import __version__  # noqa: E402
from vaekit.errors import ConfigError, VaekitError  # noqa: E402

KEEP_DEFAULT = 3  # vaekit.train.checkpoint.KEEP (not imported here: it would load torch)
SEED_LIMIT = 2**63  # seeds are 0 .. 2**63 - 1 (torch's generators take 64 bits)

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
                        "\nand cosine decay, 5 epochs; see README 'Speed'. resnet-bernoulli: "
                        "\na residual conv VAE for binary images, 40 epochs; README 'Conv nets')")
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
    p.add_argument("--keep-checkpoints", type=int, default=KEEP_DEFAULT, metavar="N",
                   help="checkpoints kept: checkpoint/, checkpoint.1/, ... (default: "
                        f"{KEEP_DEFAULT})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-report", action="store_true", help=NO_REPORT_HELP)
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
    p.add_argument("--limit", type=int, default=0, metavar="N",
                   help="score only the split's first N examples, e.g. for a large K "
                        "(default: 0 = all; not with --kde or --baselines)")
    p.add_argument("--memory-mb", type=float, default=1024, help="memory budget (default: 1024)")
    p.add_argument("--seed", type=int, default=0, help="evaluation noise seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--json", type=Path, help="write figures here (default: RUN/eval-SPLIT.json, "
                                             "where evaluations accumulate; with --limit N "
                                             "RUN/eval-SPLIT-firstN.json)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--no-report", action="store_true", help=NO_REPORT_HELP)
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

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        ns = super().parse_args(args, namespace)
        ns.argv = [str(a) for a in (sys.argv[1:] if args is None else args)]  # for command.txt
        return ns


DEBUG_HELP = "show the full traceback of an error instead of one line"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(sub)
    _add_run_parsers(sub)
    _add_gradients_parser(sub)
    _add_report_parsers(sub)
    p = sub.add_parser("data", help="datasets: `vaekit data list`")
    p.add_argument("action", choices=["list"], help="list named datasets and where they are")
    p.set_defaults(func=cmd_data)
    for command in sub.choices.values():  # `vaekit CMD ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
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
    if args.keep_checkpoints < 1:
        raise ConfigError(f"--keep-checkpoints must be >= 1, got {args.keep_checkpoints}",
                          f"pass e.g. --keep-checkpoints {KEEP_DEFAULT}")
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
                echo=True, checkpoint_every=args.checkpoint_every,
                keep_checkpoints=args.keep_checkpoints)
    if not run.world.main:  # data parallel: rank 0 reports
        return
    last = run.history[-1] if run.history else {}
    print(f"protocol: {run.data.protocol}")
    if "val_elbo" in last:
        print(f"final validation ELBO: {last['val_elbo']:.3f} nats/example (one-sample estimator)")
    print(f"run directory: {run_dir}  (config.json, checkpoint/, metrics.jsonl, metrics.csv, "
          "train.log)")
    _record_and_report(run_dir, args)


def _fit_stage2(args: argparse.Namespace, flags: dict[str, Any]) -> None:
    from vaekit.run import stage2_config
    from vaekit.train.stages import fit_stage2

    stage2 = stage2_config(args.stage2, flags, other_flags=bool(args.resume or args.out
                                                                 or args.config or args.preset))
    args.interrupted = f"interrupted; continue stage 2 with `vaekit train --stage2 {args.stage2}`"
    run = fit_stage2(args.stage2, stage2, progress=not args.no_progress, echo=True,
                     checkpoint_every=args.checkpoint_every)
    if not run.world.main:  # data parallel: rank 0 reports
        return
    last = run.history[-1] if run.history else {}
    print(f"stage 2 fitted to the stage-1 codes of {args.stage2}: validation ELBO of the codes "
          f"{last.get('val_elbo', float('nan')):.3f} nats/example, gamma_z "
          f"{last.get('gamma', float('nan')):.4g}")
    print(f"run directory: {args.stage2} (stage 2 in {args.stage2 / 'stage2'}); `vaekit sample "
          f"{args.stage2}` now generates through both stages")
    _record_and_report(args.stage2, args)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vaekit.evaluation.report import format_full_report
    from vaekit.evaluation.run import EvalOptions, run_evaluation
    from vaekit.io import atomic_write_text
    from vaekit.viz import save_loglik_curve

    for flag in ("k", "loglik", "naive", "kde_max_train", "generation", "limit"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 0", "pass 0 to turn it off")
    if not 0 < args.memory_mb < float("inf"):
        raise ConfigError("--memory-mb must be a positive number", "pass e.g. --memory-mb 1024")
    _check_seed(args.seed)
    from vaekit.run import check_evaluation_sizes, merge_evaluation, open_run, output_path
    from vaekit.train.checkpoint import checkpoint_record

    _check_output(args.json, (".json",))

    def figures_path() -> Path:  # a subset's figures apart from the whole split's
        return output_path(args.json, args.run / f"eval-{args.split}{subset}.json", args.run,
                           args.force, "--json")

    subset = f"-first{args.limit}" if args.limit else ""
    path = figures_path()
    if args.inception_weights and not args.inception_weights.is_file():
        raise ConfigError(f"Inception weights {args.inception_weights} do not exist",
                          "point --inception-weights at a local weights file")
    check_evaluation_sizes(args.run, naive=args.naive, generation=args.generation,
                           memory_mb=args.memory_mb)
    model, cfg, data = open_run(args.run, args.device)
    size = len(data.test if args.split == "test" else data.val)
    if args.limit >= size > 0:  # no subset: the whole split's figures, in their file
        print(f"note: --limit {args.limit} covers the whole {args.split} split ({size} "
              "examples): scoring all of it")
        args.limit, subset = 0, ""
        path = figures_path()
    args.interrupted = "interrupted: the evaluation was not saved"
    opts = EvalOptions(split=args.split, limit=args.limit, k=args.k, loglik=args.loglik,
                       naive=args.naive, kde=args.kde, kde_max_train=args.kde_max_train,
                       diagnostics=args.diagnostics, memory_mb=args.memory_mb, seed=args.seed,
                       batch_size=cfg.train.eval_batch_size, generation=args.generation,
                       inception_weights=str(args.inception_weights or ""),
                       baselines=args.baselines)
    from vaekit import distributed

    distributed.init(next(model.parameters()).device.type)  # under torchrun: join the job
    with distributed.sharded():  # under torchrun: each rank a block of the examples
        res = run_evaluation(model, data, opts, progress=distributed.world().main)
    if not distributed.world().main:  # rank 0 writes and prints
        return
    res["likelihood"] = cfg.model.likelihood.name
    res, notes = merge_evaluation(res, path, checkpoint_record(args.run))
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    print(format_full_report(res))
    for note in notes:
        print(f"note: {note}")
    bad = [k for k in ("elbo", "iwae", "log_px_z", "kl") if isinstance(res.get(k), float)
           and not math.isfinite(res[k])]
    if bad:  # finite weights whose outputs overflow: a run that blew up without a NaN
        print(f"warning: {', '.join(bad)} not finite: the model's outputs overflow; see its "
              f"training loss in {args.run / 'metrics.csv'} (a diverged run?)", file=sys.stderr)
    if "marginal" in res:
        plot = save_loglik_curve(res["marginal"],
                                 path.with_name(f"loglik-vs-K-{args.split}{subset}.png"),
                                 title=f"{Path(cfg.data.name).name} {args.split}{subset}: "
                                       "log p(x) estimators")
        print(f"estimators vs K plotted in {plot}")
    print(f"figures written to {path}")
    _report_after(args.run, progress=True, skip=args.no_report)


def cmd_gradients(args: argparse.Namespace) -> None:
    from vaekit.evaluation.gradients import gradient_study, variance_figure
    from vaekit.evaluation.report import format_gradients
    from vaekit.io import atomic_write_text
    from vaekit.models.two_stage import TwoStageVAE
    from vaekit.run import check_sample_size, open_run, output_path

    for flag, low in (("repeats", 2), ("batch_size", 1), ("reference", 1)):
        if getattr(args, flag) < low:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= {low}, got "
                              f"{getattr(args, flag)}", "see `vaekit gradients --help`")
    if min(args.samples) < 1:
        raise ConfigError(f"--samples must be >= 1, got {min(args.samples)}",
                          "pass e.g. --samples 1 10 100")
    _check_seed(args.seed)
    _check_output(args.json, (".json",))
    _check_output(args.out, IMAGE_SUFFIXES)
    for given, default, what in ((args.json, "gradients.json", "--json"),
                                 (args.out, "gradients.png", "--out")):
        output_path(given, args.run / default, args.run, True, what)  # never run state
    check_sample_size(args.run, 3 * args.batch_size * max(args.samples),
                      f"--samples {max(args.samples)} x --batch-size {args.batch_size}")
    model, _cfg, data = open_run(args.run, args.device)
    if isinstance(model, TwoStageVAE):  # as in `evaluate`: stage 1 with its N(0, I) prior
        model = model.stage1
    batch = data.test[: args.batch_size]
    res = gradient_study(model, batch, sorted(set(args.samples)), args.repeats, args.reference,
                         seed=args.seed)
    res.update(run=str(args.run), batch=f"the first {len(batch)} test examples",
               protocol=data.protocol)
    path = args.json or args.run / "gradients.json"
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
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
    _check_seed(args.seed)
    from vaekit.run import check_sample_size, output_path

    _check_output(args.out, IMAGE_SUFFIXES)
    out = output_path(args.out, args.run / "samples.png", args.run, args.force, "--out")
    if args.out is not None:  # the raw values go beside it: never onto a user's file
        output_path(out.with_suffix(".npy"), out, args.run, args.force, "--out's .npy")
    check_sample_size(args.run, args.n)
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


def _check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"--seed {seed} is outside 0 .. 2**63 - 1",
                          "pass a smaller non-negative seed")


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


def _add_report_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of a run, with every "
                       "figure that applies (PNG and SVG in RUN_DIR/figures/)")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("demo", help="`vaekit demo ring`: a VAE learns the ring of seed 000's "
                       "Figure 2; the report shows it (under a minute on 2 CPU cores)")
    p.add_argument("name", choices=["ring"], help="which demo")
    p.add_argument("--out", type=Path, help="new run directory (default: runs/ring-demo-<time>)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=cmd_demo)


COMMAND_FILE = "command.txt"  # vaekit.report.context.COMMAND_FILE (not imported: loads torch)
NO_REPORT_HELP = ("do not write RUN_DIR/report.html at the end (also: environment variable "
                  "VAEKIT_NO_REPORT=1); `vaekit report RUN_DIR` writes it later")


def _record_command(run_dir: Path, args: argparse.Namespace) -> None:
    """Append when, where and the exact command to RUN_DIR/command.txt (the report shows it)."""
    import os
    import shlex
    import time

    with open(run_dir / COMMAND_FILE, "a", encoding="utf-8") as f:
        f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, in {os.getcwd()}\n"
                f"vaekit {shlex.join(getattr(args, 'argv', []))}\n")


def _report_after(run_dir: Path, progress: bool, skip: bool = False) -> None:
    """Write (or refresh) RUN_DIR/report.html after training or evaluating, unless
    ``skip`` or VAEKIT_NO_REPORT=1; a report that fails leaves the run as it is and says
    how to retry."""
    import os

    if skip or os.environ.get("VAEKIT_NO_REPORT", "") not in ("", "0"):
        return
    from vaekit.report import write_report

    try:
        res = write_report(run_dir, progress=progress)
    except Exception as err:  # the run's results stand; the report is a view of them
        print(f"note: the report was not written ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''}); retry with `vaekit report "
              f"{run_dir}`", file=sys.stderr)
        return
    print(f"report: {res.path} ({res.bytes / 1024:.0f} KB, {len(res.figures)} figures, "
          f"{res.seconds:.1f} s)")


def _record_and_report(run_dir: Path, args: argparse.Namespace) -> None:
    _record_command(run_dir, args)
    _report_after(run_dir, progress=not args.no_progress, skip=args.no_report)


def cmd_report(args: argparse.Namespace) -> None:
    from vaekit.report import write_report
    from vaekit.run import output_path

    _check_output(args.out, (".html", ".htm"))
    out = output_path(args.out, args.run / "report.html", args.run, True, "--out")
    res = write_report(args.run, out, progress=not args.no_progress)
    print(f"report: {res.path} ({res.bytes / 1024:.0f} KB, {len(res.figures)} figures: "
          f"{', '.join(res.figures)}; {res.seconds:.1f} s); PNG and SVG files in "
          f"{args.run / 'figures'}")


def cmd_demo(args: argparse.Namespace) -> None:
    import time

    from vaekit.report import write_report
    from vaekit.report.demo import INNER_RADIUS, RING_RADIUS, ring_demo

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}", "pass e.g. --epochs 40")
    _check_seed(args.seed)
    out = args.out or Path("runs") / f"ring-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    args.interrupted = f"interrupted; the run so far is in {out}"
    t0 = time.perf_counter()
    res = ring_demo(out, args.epochs, args.seed, progress=not args.no_progress)
    _record_command(out, args)
    rep = write_report(out, progress=not args.no_progress)
    last, m = res.last, res.evaluation["marginal"]
    print(f"ring demo: validation ELBO {last.get('val_elbo', float('nan')):.3f} nats/example, "
          f"KL {last.get('val_kl', float('nan')):.2f} nats, learned gamma "
          f"{last.get('gamma', float('nan')):.3g}")
    for key in ("importance", "naive"):
        e = m[key]
        print(f"test log p(x), {key} sampling K={e['k']}: {e['log_px']:.3f} nats/example "
              f"(ESS median {e['ess_median']:.1f} of {e['k']})")
    print(f"learned density: mean log p(x) {res.on_ring:.2f} nats on the ring (radius "
          f"{RING_RADIUS}), {res.inside:.2f} nats at radius {INNER_RADIUS}")
    print(f"report: {rep.path} ({rep.bytes / 1024:.0f} KB); {time.perf_counter() - t0:.1f} s "
          "in all")


def cmd_data(args: argparse.Namespace) -> None:
    from vaekit.data.datasets import list_datasets

    for name, where, desc in list_datasets():
        print(f"{name:14s} {desc}\n{'':14s} -> {where}")


class _Notes(logging.Handler):
    """The ``vaekit`` logger's warnings (e.g. a checkpoint skipped) as ``note: ...`` lines on
    the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"note: {record.getMessage()}", file=sys.stderr)


def _show_notes() -> None:
    logger = logging.getLogger("vaekit")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes())
        logger.propagate = False


def error_line(err: BaseException) -> tuple[str, int]:
    """(one line ``error: <problem>; <fix>``, exit code) for any exception: user errors exit
    2, anything else is a bug in vaekit (exit 1)."""
    if isinstance(err, VaekitError):
        return f"error: {err}", err.exit_code
    if isinstance(err, BrokenPipeError):  # the reader of our output went away
        return "", 1
    if isinstance(err, OSError):
        where = f" {err.filename}" if err.filename else ""
        return (f"error: cannot access{where}: {err.strerror or err}; check the path, its "
                "permissions and the free space", 2)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    from vaekit import distributed

    if distributed.collective_failure(err):
        return (f"error: rank {distributed.world().rank} lost the other ranks of the job "
                f"({text[:160]}); another rank stopped (its own output says why) or the network "
                "failed: fix that and continue with `--resume RUN_DIR`", 1)
    if isinstance(err, MemoryError) or "out of memory" in text or "can't allocate" in text:
        return (f"error: out of memory ({text[:200]}); use smaller sizes (--batch-size, "
                "--memory-mb, -n, --hidden)", 2)
    return (f"error: internal error {type(err).__name__}: {text[:300]}; this is a bug in "
            "vaekit: run again with `vaekit --debug ...` and report the traceback", 1)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    debug = getattr(args, "debug", False) or os.environ.get("VAEKIT_DEBUG", "") not in ("", "0")
    _show_notes()
    from vaekit import distributed

    ok = False
    try:
        _join_world(args)
        args.func(args)
        ok = True
    except KeyboardInterrupt:
        if distributed.world().main:
            print(getattr(args, "interrupted", f"interrupted: vaekit {args.command} stopped"),
                  file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        line, code = error_line(err)
        world = distributed.world()
        if line and world.main:
            print(line, file=sys.stderr)
        elif line and not getattr(err, "quiet", False):  # not just rank 0's error repeated
            print(f"rank {world.rank}: {line}", file=sys.stderr)
        return code
    finally:
        distributed.shutdown(wait=ok)
    return 0


DISTRIBUTED_COMMANDS = ("train", "evaluate")


def _join_world(args: argparse.Namespace) -> None:
    """Under torchrun (WORLD_SIZE > 1) only the commands that run data-parallel are allowed
    (the others would repeat the same work and writes on every rank). They join the process
    group once their device is known: ``setup_run`` for train, after loading for evaluate."""
    from vaekit import distributed

    if distributed.launched() and args.command not in DISTRIBUTED_COMMANDS:
        raise ConfigError(f"vaekit {args.command} does not run under torchrun (WORLD_SIZE="
                          f"{os.environ.get('WORLD_SIZE')})", "run it as one process; "
                          f"{' and '.join(DISTRIBUTED_COMMANDS)} run data-parallel")


if __name__ == "__main__":
    sys.exit(main())
