"""Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders", Table 1 on
dynamically binarized MNIST, with vaekit at the same architecture and a CPU budget.

Protocol (the paper, and its code github.com/yburda/iwae):
- data: MNIST 60k/10k; training images binarized anew at every visit (x ~ Bernoulli(pixel/255));
  400 training images held out for validation; the test set binarized once with a fixed seed
  (their code draws one binarization of each test image per evaluation, seed 123);
- model, 1 stochastic layer: encoder 784-200-200-(2x50), decoder 50-200-200-784, tanh hidden
  units, diagonal Gaussian q(z|x), N(0, I) prior, Bernoulli p(x|z); batch 20;
- objectives: the VAE (ELBO; here with the analytic KL) and IWAE with k = 50;
- Adam beta1 0.9, beta2 0.999, eps 1e-4; stage i = 0..7 trains 3^i epochs at
  lr 1e-3 * 10^(-i/7): 3,280 epochs in all;
- log p(x) of the 10,000 test images by importance sampling with K = 5000 (encoder proposal).

This script follows that schedule until its wall-clock budget (default 30 min of training
per model) runs out; the last stage reached may be cut short. It says how many of the 3,280
epochs it trained. Everything goes through vaekit's public API: ``setup_run`` + ``fit`` with
the standard callbacks (each stage resumes the run of the previous one exactly, with more
epochs), ``train.adam_eps`` 1e-4 and ``train.lr_schedule`` ``burda`` (the schedule above,
step by step), ``vaekit.evaluation.estimate_log_px``.

    .venv/bin/python scripts/mnist.py              # both models, 30 min each + evaluation
    .venv/bin/python scripts/mnist.py --quick      # a smoke run of a few minutes

Needs MNIST (``bash scripts/setup.sh --with-data mnist``). Writes OUT/summary.json (every
figure, per model), OUT/table.md (vaekit's figures beside the published ones) and the runs
in OUT/run/ (checkpoints; not committed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from vaekit.runtime import configure_cpu_runtime, keep_freed_memory  # noqa: E402

RUNTIME: dict[str, str] = {}
if __name__ == "__main__":  # before torch loads, as the CLI does (not when imported)
    RUNTIME = configure_cpu_runtime()
    keep_freed_memory()

import torch  # noqa: E402

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.evaluation import estimate_log_px, mean_se  # noqa: E402
from vaekit.evaluation.metrics import active_units, elbo_terms  # noqa: E402
from vaekit.train import fit, setup_run, standard_callbacks  # noqa: E402

EPS, BATCH, VAL = 1e-4, 20, 400  # Adam's betas: torch's (0.9, 0.999), the paper's
STAGES = [(i, 1e-3 * 10 ** (-i / 7), 3**i) for i in range(8)]  # (stage, lr, epochs): the
# lr_schedule "burda" of vaekit.train.step, which sets the lr of every step
PAPER_EPOCHS = sum(n for _, _, n in STAGES)  # 3,280
MODELS = {"vae": {"name": "elbo"}, "iwae": {"name": "iwae", "k": 50}}
# -log p(x) in nats on the test set (importance sampling, K = 5000)
PUBLISHED = [
    ("Burda et al. 2015, Table 1", "VAE (k=1), 1 stochastic layer", "vae", 86.76),
    ("Burda et al. 2015, Table 1", "IWAE k=50, 1 stochastic layer", "iwae", 84.78),
    ("Burda et al. 2015, Table 1", "IWAE k=50, 2 stochastic layers", None, 82.90),
    ("pythae's reproduction", "VAE, same 1-layer protocol", "vae", 89.78),
    ("pythae's reproduction", "IWAE k=50, same 1-layer protocol", "iwae", 86.82),
]


def config(objective: dict[str, Any], limit: int, seed: int) -> RunConfig:
    """The 1-layer architecture of Burda et al. on dynamically binarized MNIST."""
    n = limit or 60000
    return RunConfig(  # 400 held out (at most 10% of a --limit)
        data=DataConfig(name="mnist", transform="binarize", val_fraction=min(VAL / n, 0.1),
                        limit=limit),
        model=ModelConfig(latent_dim=50, likelihood="bernoulli",
                          arch={"name": "mlp", "hidden": [200, 200], "activation": "tanh"}),
        train=TrainConfig(epochs=0, batch_size=BATCH, lr=STAGES[0][1], lr_schedule="burda",
                          adam_eps=EPS, seed=seed, device="cpu", objective=objective))


def train(name: str, cfg: RunConfig, run_dir: Path, budget_s: float) -> tuple[Any, dict]:
    """Burda's stages until ``budget_s`` seconds of training (wall clock, validation and
    checkpoints included) are spent; the stage that would overrun is cut to the epochs
    that fit, at the seconds per epoch measured so far."""
    done, spent, reached, run = 0, 0.0, [], None
    for i, lr, n in STAGES:
        per_epoch = spent / done if done else None
        fits = n if per_epoch is None else min(n, math.floor((budget_s - spent) / per_epoch))
        if fits <= 0:
            break
        cfg.train.epochs = done + fits
        t0 = time.perf_counter()
        run = setup_run(cfg, run_dir, resume=done > 0)  # the same run, more epochs
        fit(run, standard_callbacks(run, progress=False, echo=False))
        spent += time.perf_counter() - t0
        done += fits
        row = run.history[-1]
        reached.append({"stage": i, "lr": lr, "epochs": fits, "of_epochs": n,
                        "train_loss": row["train_loss"], "val_elbo": row.get("val_elbo")})
        print(f"  {name}: stage {i} lr {lr:.2e}, {fits}/{n} epochs, {done} in all, "
              f"{spent:.0f} s; train loss {row['train_loss']:.2f}, val ELBO "
              f"{row.get('val_elbo', float('nan')):.2f} nats", flush=True)
    return run, {"epochs": done, "of_paper_epochs": PAPER_EPOCHS, "train_seconds": round(spent, 1),
                 "seconds_per_epoch": round(spent / max(done, 1), 2), "stages": reached,
                 "fast_path": run.fast_path if run else None}


def evaluate(run: Any, k: int, limit: int) -> dict[str, Any]:
    """log p(x) with K importance samples (and the IWAE-1/-50 bounds from its first draws),
    the ELBO with the analytic KL, active units, on the test set binarized once."""
    test = run.data.test[:limit] if limit else run.data.test
    t0 = time.perf_counter()
    ll = estimate_log_px(run.model, test, k, prefix_ks=[kk for kk in (1, 50) if kk < k],
                         seed=0, progress=False)
    seconds = time.perf_counter() - t0
    terms = elbo_terms(run.model, test, seed=0)
    out = {"n_test": len(test), "k": k, "eval_seconds": round(seconds, 1),
           "active_units": int(active_units(terms["mu"]).sum()),
           "ess_median": float(ll.ess.median())}
    for key, v in (("nll", ll.log_px), ("elbo_nll", terms["elbo"]),
                   *((f"iwae{kk}_nll", ll.prefix[kk]) for kk in sorted(ll.prefix))):
        mean, se = mean_se(v)
        out[key], out[key + "_se"] = round(-mean, 3), round(se, 3)
    return out


def table(results: dict[str, dict[str, Any]], a: argparse.Namespace) -> str:
    rows = ["| source | model | -log p(x), nats (K = 5000 unless said) | epochs | "
            "training |", "|---|---|---|---|---|"]
    for src, what, _, nll in PUBLISHED:
        rows.append(f"| {src} | {what} | {nll:.2f} | 3,280 | (GPU) |")
    for name, r in results.items():
        e, t = r["eval"], r["train"]
        rows.append(
            f"| vaekit (this script) | {'VAE' if name == 'vae' else 'IWAE'} "
            f"{'k=50 ' if name == 'iwae' else ''}1 stochastic layer | "
            f"**{e['nll']:.2f}** ± {e['nll_se']:.2f} (K = {e['k']}, {e['n_test']} test images) | "
            f"{t['epochs']:,} of 3,280 | {t['train_seconds'] / 60:.1f} min, 2 CPU cores |")
    lines = ["# Burda et al. (2015) protocol on dynamically binarized MNIST", "",
             *rows, "", "vaekit's runs, other figures (nats, ± s.e. over test images):", "",
             "| model | ELBO (analytic KL) | IWAE-1 | IWAE-50 | log p(x) K | active units "
             "| median ESS | s/epoch | stages reached |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        e, t = r["eval"], r["train"]
        last = t["stages"][-1] if t["stages"] else {}
        lines.append(
            f"| {name} | {-e['elbo_nll']:.2f} | {-e.get('iwae1_nll', math.nan):.2f} | "
            f"{-e.get('iwae50_nll', math.nan):.2f} | {-e['nll']:.2f} | {e['active_units']}/50 | "
            f"{e['ess_median']:.1f} | {t['seconds_per_epoch']} | 0..{last.get('stage', '-')} "
            f"(last: {last.get('epochs', 0)}/{last.get('of_epochs', 0)} epochs at lr "
            f"{last.get('lr', 0):.1e}) |")
    lines += ["", f"Command: `{' '.join(['.venv/bin/python', 'scripts/mnist.py', *sys.argv[1:]])}`"
              f"; budget {a.minutes} min of training per model; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {platform.machine()}; runtime {RUNTIME}.",
              "Protocol: training images binarized anew every batch, 400 held out for "
              "validation; test images binarized once (seed 1); Adam (0.9, 0.999, eps 1e-4), "
              "lr 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7, batch 20. Published figures: the "
              "papers' own (3,280 epochs on a GPU); pythae's from its documentation."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6,000 training images, 1 min per model, K=100 on 500 images")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget per model in minutes (default 30; quick: 1)")
    p.add_argument("--eval-k", type=int, default=None, help="importance samples (5000)")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate the first N test images only (default all; quick: 500)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N training images (default all; quick: 6000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default results/mnist; quick: results/mnist-quick)")
    a = p.parse_args(argv)
    q = a.quick
    a.minutes = a.minutes if a.minutes is not None else (1.0 if q else 30.0)
    a.eval_k = a.eval_k or (100 if q else 5000)
    a.eval_limit = a.eval_limit if a.eval_limit is not None else (500 if q else 0)
    a.limit = a.limit if a.limit is not None else (6000 if q else 0)
    out = a.out or ROOT / "results" / ("mnist-quick" if q else "mnist")
    torch.set_num_threads(a.threads)
    results: dict[str, dict[str, Any]] = {}
    for name in a.models:
        run_dir = out / "run" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = config(MODELS[name], a.limit, a.seed)
        print(f"{name}: training ({a.minutes} min budget) ...", flush=True)
        run, trained = train(name, cfg, run_dir, a.minutes * 60)
        print(f"{name}: log p(x), K={a.eval_k} ...", flush=True)
        results[name] = {"train": trained, "eval": evaluate(run, a.eval_k, a.eval_limit),
                         "config": cfg.to_dict(), "data": run.data.dataset.source}
        e = results[name]["eval"]
        print(f"{name}: -log p(x) = {e['nll']:.2f} ± {e['nll_se']:.2f} nats (K={a.eval_k}, "
              f"{e['eval_seconds']} s), {trained['epochs']} epochs in "
              f"{trained['train_seconds']} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"protocol": "Burda et al. 2015, dynamically binarized MNIST", "quick": q,
               "published": [dict(zip(("source", "model", "objective", "nll"), r, strict=True))
                             for r in PUBLISHED],
               "adam": {"betas": (0.9, 0.999), "eps": EPS}, "schedule": STAGES,
               "budget_minutes": a.minutes, "argv": sys.argv[1:], "torch": torch.__version__,
               "threads": torch.get_num_threads(), "runtime": RUNTIME,
               "cpu_count": os.cpu_count(), "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text(table(results, a))
    print((out / "table.md").read_text())
    print(f"wrote {out / 'summary.json'} and {out / 'table.md'}")


if __name__ == "__main__":
    main()
