"""``vaekit train | evaluate | sample | reconstruct | gradients | report | demo | data list``.

The CLI parses arguments, calls one function of :mod:`vaekit.api`, prints what it returns.
User errors (VaekitError, a file that cannot be read or written, memory that runs out) end
with one line ``error: <problem>; <fix>`` and exit code 2, never a traceback; ``vaekit
--debug ...`` (or ``VAEKIT_DEBUG=1``) shows the traceback instead. ``vaekit --help`` loads
no torch: only the command asked for builds its flags (train's list the registered
components), and the API is imported after parsing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from vaekit.runtime import configure_cpu_runtime, keep_freed_memory

configure_cpu_runtime()  # before anything imports torch
keep_freed_memory()

from vaekit import __version__  # noqa: E402
from vaekit.config import KEEP, PRESETS, check_seed, configure  # noqa: E402
from vaekit.errors import ConfigError, error_line  # noqa: E402
from vaekit.flags import CHOICES, COMMANDS, TRAIN_FLAGS, add_flags, overrides  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """argparse with vaekit's one-line errors: ``error: <what>; <fix>``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def _add(p: argparse.ArgumentParser, name: str, kind: Any, default: Any, text: str) -> None:
    if kind == "flag":
        p.add_argument(name, action="store_true", help=text)
        return
    shown = "" if default is None else f" (default: {default})"
    p.add_argument(name, type=int if kind is list else kind, default=default,
                   nargs="+" if kind is list else None, help=text + shown)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own flags are built (none for ``vaekit --help``)."""
    parser = _Parser(prog="vaekit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an "
                        "error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, positional, flags) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # `vaekit CMD ... --debug` works too
        if positional:
            p.add_argument(positional, type=Path if positional == "run" else str,
                           choices=CHOICES.get(positional), help="run directory written by "
                           "`vaekit train`" if positional == "run" else "what to do")
        if name != command:
            continue
        for flag in flags:
            _add(p, *flag)
        if name == "train":  # the config's own flags, from the dataclasses and registries
            p.add_argument("--preset", choices=sorted(PRESETS), help="named settings: fast "
                           "(README 'Speed'), resnet-bernoulli (README 'Conv nets')")
            add_flags(p, TRAIN_FLAGS)
    return parser


# ------------------------------------------------------------------ the commands


def cmd_train(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    flags = overrides(args, TRAIN_FLAGS)
    if args.two_stage:
        flags.setdefault("stage2", {})
    if args.checkpoint_every < 0 or args.keep_checkpoints < 1:
        raise ConfigError("--checkpoint-every must be >= 0 and --keep-checkpoints >= 1",
                          f"pass e.g. --checkpoint-every 0 --keep-checkpoints {KEEP}")
    if args.stage2:
        return _stage2(api, args, argv, flags)
    if args.resume and (args.preset or args.config or args.out):
        raise ConfigError("--resume continues a saved run and takes no --config, --preset or "
                          "--out", "drop them, or start a new run without --resume")
    cfg = None if args.resume else configure(flags, args.preset, args.config)
    run_dir = args.resume or args.out or api.default_run_dir(cfg)
    args.interrupted = f"interrupted; resume training with `vaekit train --resume {run_dir}`"
    run = api.train(cfg, run_dir, resume=bool(args.resume), overrides=flags,
                    progress=not args.no_progress, echo=True,
                    checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                    allow_unverified=args.allow_unverified)
    if run.world.main:  # data parallel: rank 0 reports
        last = run.history[-1] if run.history else {}
        print(f"protocol: {run.data.protocol}")
        if "val_elbo" in last:
            print(f"final validation ELBO: {last['val_elbo']:.3f} nats/example (one-sample "
                  "estimator)")
        print(f"run directory: {run_dir}  (config.json, checkpoint/, metrics.jsonl, "
              "metrics.csv, train.log)")
        _finish(api, api.RunDir.of_run(run), args, argv)


def _stage2(api: ModuleType, args: argparse.Namespace, argv: list[str], flags: dict) -> None:
    if args.resume or args.out or args.config or args.preset or set(flags) - {"stage2"}:
        raise ConfigError("--stage2 RUN_DIR fits stage 2 of an existing run and takes only "
                          "stage-2 settings (--stage2-epochs)", "drop the other flags; put more "
                          "stage-2 settings in the run's config.json stage2 section")
    args.interrupted = f"interrupted; continue stage 2 with `vaekit train --stage2 {args.stage2}`"
    rd = api.RunDir.open(args.stage2, "cpu", stage2=False,
                         allow_unverified=args.allow_unverified)
    run = api.train_stage2(rd, flags, progress=not args.no_progress, echo=True,
                           checkpoint_every=args.checkpoint_every)
    if run.world.main:
        last = run.history[-1] if run.history else {}
        print(f"stage 2 fitted to the stage-1 codes of {rd.path}: validation ELBO of the codes "
              f"{last.get('val_elbo', float('nan')):.3f} nats/example, gamma_z "
              f"{last.get('gamma', float('nan')):.4g}")
        print(f"run directory: {rd.path} (stage 2 in {rd.path / 'stage2'}); `vaekit sample "
              f"{rd.path}` now generates through both stages")
        _finish(api, api.RunDir.open(rd.path, "cpu"), args, argv)


def _finish(api: ModuleType, rd: Any, args: argparse.Namespace, argv: list[str]) -> None:
    """Record the command in RUN_DIR/command.txt and write the report (unless asked not to);
    a report that fails leaves the run as it is and says how to retry."""
    if args.command == "train":
        api.record_command(rd.path, argv)
    if getattr(args, "no_report", False) or os.environ.get("VAEKIT_NO_REPORT", "") not in ("", "0"):
        return
    try:
        res = api.report(rd, progress=not getattr(args, "no_progress", False))
    except Exception as err:  # the run's results stand; the report is a view of them
        print(f"note: the report was not written ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''}); retry with `vaekit report "
              f"{rd.path}`", file=sys.stderr)
        return
    print(f"report: {res.path} ({res.bytes / 1024:.0f} KB, {len(res.figures)} figures, "
          f"{res.seconds:.1f} s)")


def _open(api: ModuleType, args: argparse.Namespace, device: str = "cpu") -> Any:
    """The run directory named on the command line, opened once for the whole command."""
    return api.RunDir.open(args.run, device, allow_unverified=args.allow_unverified)


def cmd_evaluate(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    opts = api.EvalOptions(**{k: getattr(args, k) for k in (
        "split", "limit", "k", "loglik", "naive", "kde", "kde_max_train", "diagnostics",
        "memory_mb", "seed", "generation", "baselines")},
        inception_weights=str(args.inception_weights or ""))
    opts.validate()
    api.check_output(args.json, (".json",))
    rd = _open(api, args, args.device)
    opts.batch_size = rd.cfg.train.eval_batch_size
    args.interrupted = "interrupted: the evaluation was not saved"
    out = api.evaluate(rd, opts, args.json, args.force)
    if out is None:  # data parallel: rank 0 writes and prints
        return
    print(api.format_full_report(out.figures))
    for note in out.notes:
        print(f"note: {note}")
    if out.not_finite():  # finite weights whose outputs overflow: a run that blew up
        print(f"warning: {', '.join(out.not_finite())} not finite: the model's outputs "
              f"overflow; see its training loss in {args.run / 'metrics.csv'} (a diverged "
              "run?)", file=sys.stderr)
    if out.plot is not None:
        print(f"estimators vs K plotted in {out.plot}")
    print(f"figures written to {out.path}")
    _finish(api, rd, args, argv)


def cmd_gradients(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    check_seed(args.seed)
    api.check_output(args.json, (".json",))
    api.check_output(args.out, api.IMAGE_SUFFIXES)
    opts = api.GradientOptions(args.samples, args.repeats, args.batch_size, args.reference,
                               args.seed)
    res, written = api.gradients(_open(api, args, args.device), opts, args.json,
                                 args.out, args.force)
    print(api.format_gradients(res))
    print(f"variance vs S plotted in {written.paths[1]}; figures written to {written.paths[0]}")


def cmd_sample(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    check_seed(args.seed)
    api.check_output(args.out, api.IMAGE_SUFFIXES)
    done = api.sample(_open(api, args), args.n, args.seed, args.draw,
                      args.label, args.out, args.force)
    print(f"{done.what} written to {' and '.join(map(str, done.paths))}")


def cmd_reconstruct(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    api.check_output(args.out, api.IMAGE_SUFFIXES)
    done = api.reconstruct(_open(api, args), args.n, args.out, args.force)
    print(f"{done.what} written to {done.paths[0]}")


def cmd_report(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    api.check_output(args.out, (".html", ".htm"))
    res = api.report(_open(api, args), args.out, not args.no_progress)
    print(f"report: {res.path} ({res.bytes / 1024:.0f} KB, {len(res.figures)} figures: "
          f"{', '.join(res.figures)}; {res.seconds:.1f} s); PNG and SVG files in "
          f"{args.run / 'figures'}")


def cmd_demo(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    demo = importlib.import_module("vaekit.demo")  # the demo is built on the API
    check_seed(args.seed)
    out = args.out or api.new_run_dir("ring-demo")
    args.interrupted = f"interrupted; the run so far is in {out}"
    res = demo.ring_demo(out, args.epochs, args.seed, progress=not args.no_progress)
    api.record_command(out, argv)
    rep = api.report(res.rundir, progress=not args.no_progress)  # the demo is its report
    print("\n".join([*demo.summary(res), f"report: {rep.path} ({rep.bytes / 1024:.0f} KB)"]))


def cmd_data(api: ModuleType, args: argparse.Namespace, argv: list[str]) -> None:
    for name, where, desc in api.list_datasets():
        print(f"{name:14s} {desc}\n{'':14s} -> {where}")


# ------------------------------------------------------------------ errors and main


class _Notes(logging.Handler):
    """The ``vaekit`` logger's warnings (e.g. a checkpoint skipped) as ``note: ...`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"note: {record.getMessage()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser(next((a for a in argv if a in COMMANDS), None)).parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    debug = getattr(args, "debug", False) or os.environ.get("VAEKIT_DEBUG", "") not in ("", "0")
    logger = logging.getLogger("vaekit")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes())
        logger.propagate = False
    api = importlib.import_module("vaekit.api")  # torch loads here, after parsing
    world, ok = api.distributed.world, False
    handlers = _stop_on_signals(api)
    try:
        api.check_command(args.command)  # under torchrun: the data-parallel commands only
        globals()[f"cmd_{args.command}"](api, args, argv)
        ok = True
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM
        line = getattr(err, "line", "") or getattr(args, "interrupted", "interrupted: vaekit "
                                                   f"{args.command} stopped")
        if world().main:
            print(line, file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except Exception as err:
        if debug:
            raise
        line, code = error_line(err, world().rank, api.distributed.collective_failure(err))
        if line and world().main:
            print(line, file=sys.stderr)
        elif line and not getattr(err, "quiet", False):  # not just rank 0's error repeated
            print(f"rank {world().rank}: {line}", file=sys.stderr)
        return code
    finally:
        api.distributed.shutdown(wait=ok)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


def _stop_on_signals(api: ModuleType) -> dict[signal.Signals, Any]:
    """SIGTERM (what schedulers send before SIGKILL) and Ctrl-C stop a training loop at its
    next step, where the run is saved (``vaekit.train.base.STOP``); outside a loop, or at a
    second signal, at once. Returns the handlers replaced."""

    def handler(signum: int, _frame: Any) -> None:
        sig = signal.Signals(signum)
        if api.STOP.armed and api.STOP.signal is None:
            api.STOP.signal = sig  # taken at the next step boundary
            return
        raise api.Interrupted("", 128 + signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


if __name__ == "__main__":
    sys.exit(main())
