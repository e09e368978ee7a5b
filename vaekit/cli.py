"""``vaekit train | evaluate | sample | reconstruct | data list``.

The CLI only parses arguments and calls library functions. User errors (VaekitError) end
with one line ``error: <problem>; <fix>`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from vaekit.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before anything imports torch

from vaekit import __version__  # noqa: E402
from vaekit.config import (  # noqa: E402
    LIKELIHOODS,
    PRESETS,
    TRANSFORMS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from vaekit.errors import CheckpointError, ConfigError, VaekitError  # noqa: E402

# flag -> (config section, key, type, help); defaults are read from the dataclasses
TRAIN_FLAGS: list[tuple[str, str, str, Any, str]] = [
    ("--data", "data", "name", str, "dataset name (see `vaekit data list`) or a directory/file"),
    ("--transform", "data", "transform", str, f"input transform: {' | '.join(TRANSFORMS)}"),
    ("--val-fraction", "data", "val_fraction", float, "fraction of training data for validation"),
    ("--limit", "data", "limit", int, "use only the first N training examples (0 = all)"),
    ("--latent-dim", "model", "latent_dim", int, "latent size L"),
    ("--hidden", "model", "hidden", int, "hidden widths of the MLPs, e.g. --hidden 512 256"),
    ("--activation", "model", "activation", str,
     "activation: relu, elu, gelu, tanh, silu, softplus"),
    ("--likelihood", "model", "likelihood", str, f"p(x|z): {' | '.join(LIKELIHOODS)}"),
    ("--sigma", "model", "sigma", float, "std of the fixed Gaussian likelihood"),
    ("--gamma-init", "model", "gamma_init", float, "initial learned variance (gamma)"),
    ("--epochs", "train", "epochs", int, "training epochs"),
    ("--batch-size", "train", "batch_size", int, "mini-batch size"),
    ("--lr", "train", "lr", float, "Adam learning rate (peak, with a schedule)"),
    ("--lr-schedule", "train", "lr_schedule", str, "constant | cosine (decays to 0)"),
    ("--warmup-steps", "train", "warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--beta", "train", "beta", float, "KL weight (1 = ELBO)"),
    ("--objective", "train", "objective", str, "elbo | iwae"),
    ("--iwae-k", "train", "iwae_k", int, "samples per example for --objective iwae"),
    ("--kl", "train", "kl", str, "KL estimator: analytic | mc"),
    ("--seed", "train", "seed", int, "random seed (init, data order, noise)"),
    ("--device", "train", "device", str, "auto | cpu | cuda | cuda:N"),
    ("--grad-clip", "train", "grad_clip", float, "max gradient norm (0 = off)"),
    ("--precision", "train", "precision", str, "fp32 | bf16 (matmuls in bfloat16)"),
]
SECTIONS = {"data": DataConfig(), "model": ModelConfig(), "train": TrainConfig()}
RESUMABLE = {"epochs", "compile", "fused"}  # may change on --resume; recorded in config.json


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a VAE", formatter_class=argparse.RawTextHelpFormatter,
                       description="Train a VAE. Precedence: defaults < --preset < --config file < "
                       "flags.")
    p.add_argument("--config", type=Path, help="YAML or TOML file with data/model/train sections")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from named settings (fast: Adam 6e-3 with 500 warm-up steps"
                        "\nand cosine decay, 5 epochs; see README 'Speed')")
    for flag, section, key, kind, text in TRAIN_FLAGS:
        default = getattr(SECTIONS[section], key)
        p.add_argument(flag, type=kind, nargs="+" if key == "hidden" else None, default=None,
                       help=f"{text} (default: {default})")
    p.add_argument("--compile", action="store_const", const=True, default=None,
                   help="torch.compile the loss, forward and backward (default: off)")
    p.add_argument("--no-fused", action="store_true",
                   help="train through autograd instead of the hand-written ELBO gradients")
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
    p.add_argument("--diagnostics", action="store_true",
                   help="active units, KL per latent dimension, posterior-collapse warning")
    p.add_argument("--split", choices=["test", "val"], default="test", help="(default: test)")
    p.add_argument("--memory-mb", type=float, default=1024, help="memory budget (default: 1024)")
    p.add_argument("--seed", type=int, default=0, help="evaluation noise seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--json", type=Path, help="write figures here (default: RUN/eval-SPLIT.json)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("sample", help="generate new data: z ~ p(z), x = mean of p(x|z)")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of its mean")
    p.add_argument("--out", type=Path, help="PNG path (default: RUN/samples.png; + .npy)")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("reconstruct", help="test examples and their reconstructions")
    p.add_argument("run", type=Path, help="run directory written by `vaekit train`")
    p.add_argument("-n", type=int, default=32, help="number of examples (default: 32)")
    p.add_argument("--out", type=Path, help="PNG path (default: RUN/reconstructions.png)")
    p.set_defaults(func=cmd_reconstruct)


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
    p = sub.add_parser("data", help="datasets: `vaekit data list`")
    p.add_argument("action", choices=["list"], help="list named datasets and where they are")
    p.set_defaults(func=cmd_data)
    return parser


def _flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for flag, section, key, _, _ in TRAIN_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out.setdefault(section, {})[key] = value
    if args.compile:
        out.setdefault("train", {})["compile"] = True
    if args.no_fused:
        out.setdefault("train", {})["fused"] = False
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Section-wise update of ``base`` by ``over`` (non-mapping values are kept as they are,
    for ``RunConfig.from_dict`` to report)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in over.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = dict(values) if isinstance(values, dict) else values
    return merged


def cmd_train(args: argparse.Namespace) -> None:
    from vaekit.config import load_config_file
    from vaekit.train import load_run_config, train
    from vaekit.train.trainer import epoch_line

    flags = _flag_overrides(args)
    if args.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every must be >= 0", "pass 0 to checkpoint per epoch only")
    if args.resume:
        cfg = load_run_config(args.resume)
        _check_resume_flags(cfg, flags, args)
        run_dir = args.resume
    else:
        base = PRESETS[args.preset] if args.preset else {}
        file_cfg = load_config_file(args.config) if args.config else {}
        cfg = RunConfig.from_dict(_merge(_merge(base, file_cfg), flags)).validate()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = args.out or Path("runs") / f"{Path(cfg.data.name).name}-{stamp}"
    result = train(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress,
                   checkpoint_every=args.checkpoint_every,
                   on_epoch=(lambda row, _m: print(epoch_line(row, cfg.train.epochs)))
                   if args.no_progress else None)
    last = result.history[-1] if result.history else {}
    print(f"protocol: {result.data.protocol}")
    if "val_elbo" in last:
        print(f"final validation ELBO: {last['val_elbo']:.3f} nats/example (one-sample estimator)")
    print(f"run directory: {run_dir}  (config.json, checkpoint/, metrics.jsonl, metrics.csv)")


def _check_resume_flags(cfg: RunConfig, flags: dict[str, dict[str, Any]],
                        args: argparse.Namespace) -> None:
    """On --resume only the RESUMABLE settings may change; the rest must match the checkpoint."""
    if args.config or args.out or args.preset:
        raise CheckpointError("--resume continues a saved run and takes no --config, --preset "
                              "or --out",
                              "drop them, or start a new run without --resume")
    for section, values in flags.items():
        for key, value in values.items():
            saved = getattr(getattr(cfg, section), key)
            if key in RESUMABLE:
                setattr(getattr(cfg, section), key, value)
            elif value != saved:
                raise CheckpointError(f"--{key.replace('_', '-')} {value} does not match the "
                                      f"checkpoint in {args.resume} (saved: {saved})",
                                      "drop the flag to resume, or start a new run with --out")
    cfg.validate()


def _load(run: Path, device: str = "auto"):
    from vaekit.data.pipeline import prepare_data
    from vaekit.train import load_model, resolve_device

    dev = resolve_device(device)
    model, cfg = load_model(run, dev)
    data = prepare_data(cfg.data, cfg.model.likelihood, cfg.train.seed)
    if list(data.shape) != list(cfg.model.data_shape):
        raise CheckpointError(f"data {cfg.data.name} has shape {data.shape}, the model "
                              f"expects {tuple(cfg.model.data_shape)}",
                              "use the data the run was trained on")
    return model, cfg, data.to(dev)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vaekit.evaluation.report import format_full_report
    from vaekit.evaluation.run import EvalOptions, run_evaluation
    from vaekit.viz import save_loglik_curve

    for flag in ("k", "loglik", "naive", "kde_max_train"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 0", "pass 0 to turn it off")
    if args.memory_mb <= 0:
        raise ConfigError("--memory-mb must be positive", "pass e.g. --memory-mb 1024")
    _check_output(args.json, (".json",))
    model, cfg, data = _load(args.run, args.device)
    opts = EvalOptions(split=args.split, k=args.k, loglik=args.loglik, naive=args.naive,
                       kde=args.kde, kde_max_train=args.kde_max_train,
                       diagnostics=args.diagnostics, memory_mb=args.memory_mb, seed=args.seed,
                       batch_size=cfg.train.eval_batch_size)
    res = run_evaluation(model, data, opts)
    res["likelihood"] = cfg.model.likelihood
    path = args.json or args.run / f"eval-{args.split}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(format_full_report(res))
    if "marginal" in res:
        plot = save_loglik_curve(res["marginal"], path.with_name(f"loglik-vs-K-{args.split}.png"),
                                 title=f"{cfg.data.name} {args.split}: log p(x) estimators")
        print(f"estimators vs K plotted in {plot}")
    print(f"figures written to {path}")


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from vaekit.train import load_model
    from vaekit.viz import save_figure_for

    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}", "pass e.g. -n 64")
    _check_output(args.out, IMAGE_SUFFIXES)
    model, cfg = load_model(args.run, "cpu")  # the checkpoint alone is enough
    x = model.sample(args.n, mean=not args.draw, generator=torch.Generator().manual_seed(args.seed))
    out = args.out or args.run / "samples.png"
    save_figure_for(x, out, reference=None if x.dim() >= 3 else _reference(cfg),
                    title="samples from the model")
    np.save(out.with_suffix(".npy"), x.numpy())
    print(f"{args.n} samples ({'draws' if args.draw else 'means'} of p(x|z), z ~ N(0, I)) "
          f"written to {out} and {out.with_suffix('.npy')}")


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


def _reference(cfg: RunConfig):
    """Test data to draw under a scatter of samples, when the dataset is at hand."""
    from vaekit.data.pipeline import prepare_data

    try:
        return prepare_data(cfg.data, cfg.model.likelihood, cfg.train.seed).test[:2000]
    except VaekitError:
        return None


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from vaekit.viz import save_figure_for

    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}", "pass e.g. -n 32")
    _check_output(args.out, IMAGE_SUFFIXES)
    model, _cfg, data = _load(args.run, "cpu")
    x = data.test[: args.n]
    rec = model.reconstruct(x)
    out = args.out or args.run / "reconstructions.png"
    if x.dim() >= 3:  # rows alternate: originals, reconstructions
        cols = min(8, len(x))
        pairs = [t for i in range(0, len(x), cols) for t in (x[i : i + cols], rec[i : i + cols])]
        save_figure_for(torch.cat(pairs), out, nrow=cols)
    else:
        save_figure_for(rec, out, reference=x, title="reconstructions (blue) of test data")
    print(f"{len(x)} test examples and reconstructions (mean of p(x|z) at z = E_q[z|x]) "
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
        print("interrupted; resume training with `vaekit train --resume RUN_DIR`", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
