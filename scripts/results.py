"""Produce the README's results table: train (or load) a run, evaluate every estimator.

    .venv/bin/python scripts/results.py --epochs 20 [--run RUN_DIR] [--out results/NAME]

Writes NAME.json (every figure) and NAME.md (the markdown table in the README).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vaekit.api import train
from vaekit.config import DataConfig, RunConfig, TrainConfig
from vaekit.evaluation.estimators import JACKKNIFE_GROUPS
from vaekit.evaluation.metrics import to_bits_per_dim
from vaekit.evaluation.suite import EvalOptions, evaluate_all
from vaekit.report.plots import save_loglik_curve
from vaekit.rundir import RunDir


def get_run(args: argparse.Namespace) -> tuple[Path, float | None]:
    """An existing run, or a freshly trained default model (and its training seconds)."""
    if args.run:
        return args.run, None
    run = Path("runs") / f"results-{args.data}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = RunConfig(data=DataConfig(name=args.data), train=TrainConfig(epochs=args.epochs))
    t0 = time.perf_counter()
    train(cfg, run, progress=False)
    return run, time.perf_counter() - t0


def fmt(mean: float, se: float | None = None) -> str:
    return f"{mean:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def bpd(log_px: float, r: dict) -> str:
    """bits/dim of a log-likelihood under the run's protocol, or a dash."""
    b = to_bits_per_dim(-log_px, r["bpd_offset"], r["data_dim"])
    return "–" if b is None else f"{b:.4f}"


def table(r: dict, meta: dict) -> str:
    m, kde = r["marginal"], r.get("kde")
    imp, naive = m["importance"], m["naive"]
    rows = [("ELBO", "1 sample, analytic KL", fmt(r["elbo"], r["elbo_se"]), bpd(r["elbo"], r),
             "–")]
    for k in ("1", "10", "100", "1000"):
        if k in imp["curve"]:
            rows.append((f"IWAE-{k} bound", f"importance sampling, first {k} of K",
                         fmt(imp["curve"][k], imp["curve_se"][k]), "–", "–"))
    for name, e in (("importance", imp), ("naive", naive)):
        ks = [k for k in ("1000", str(e["k"])) if k in e["curve"]]
        for k in dict.fromkeys(ks):
            est = "z ~ q(z\\|x)" if name == "importance" else "z ~ p(z) (naive)"
            full = k == str(e["k"])
            ess = f"median {e['ess_median']:.1f}, p5 {e['ess_p5']:.1f}" if full else "–"
            se = e["curve_se"][k]
            if full and "log_px_se_total" in e:  # shared prior samples: add their MC error
                se, est = e["log_px_se_total"], est + " ‡"
            rows.append((f"log p(x), K={k}", est, fmt(e["curve"][k], se),
                         bpd(e["curve"][k], r), ess))
    rows.append(("ELBO gap ≈ KL(q‖p(z\\|x))", f"log p̂(x) − ELBO, K={imp['k']}",
                 fmt(m["elbo_gap"]["mean"], m["elbo_gap"]["se"]), "–", "–"))
    if kde:
        rows.append((f"{kde['kernel']}-kernel KDE", f"{kde['n_train']} training centres, "
                     f"bandwidth {kde['bandwidth']:.3g} from validation",
                     fmt(kde["log_lik"], kde["log_lik_se"]), bpd(kde["log_lik"], r), "–"))
    head = ["| figure | estimator | nats/example (± s.e.) | bits/dim | ESS of K weights |",
            "|---|---|---|---|---|"]
    body = [f"| {' | '.join(row)} |" for row in rows]
    d = r["diagnostics"]
    foot = [f"\n± is the standard error over the test examples. ‡ The naive estimator's K prior "
            f"samples are shared by all examples, so its Monte-Carlo error does not average "
            f"out over them: its ± adds (in quadrature) a delete-a-group jackknife over "
            f"{JACKKNIFE_GROUPS} groups of the samples, {naive['log_px_se_mc']:.2f} nats; its "
            f"K = 1000 row (a prefix of the same samples) shows the spread over examples only."
            if "log_px_se_mc" in naive else "",
            f"\nActive units: {d['active_units']} of {d['latent_dim']}. Protocol: "
            f"{r['protocol']}. {meta['config']}. Evaluation took {r['seconds']:.0f} s "
            f"({meta['machine']})."]
    return "\n".join(head + body + foot) + "\n"


def plot(res: dict, out: Path) -> None:
    """Both estimators against K, with the ELBO: OUT-loglik-vs-K.png."""
    path = out.with_name(out.name + "-loglik-vs-K.png")
    save_loglik_curve({**res["marginal"], "elbo": res["elbo"]}, path,
                      title=f"{res['dataset']} test set: log p(x) estimators vs K")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--run", type=Path, help="evaluate this run instead of training one")
    ap.add_argument("--loglik", type=int, default=5000)
    ap.add_argument("--naive", type=int, default=10000)
    ap.add_argument("--kde-max-train", type=int, default=60000)
    ap.add_argument("--out", type=Path, default=Path("results/fashion-mnist"))
    ap.add_argument("--table-only", action="store_true",
                    help="rewrite OUT.md from an existing OUT.json, evaluating nothing")
    args = ap.parse_args()
    if args.table_only:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(table(saved, saved["meta"]))
        plot(saved, args.out)
        return
    run, train_s = get_run(args)
    rd = RunDir.open(run, "cpu")
    model, cfg, data = rd.model, rd.cfg, rd.data
    opts = EvalOptions(k=0, loglik=args.loglik, naive=args.naive, kde=True, diagnostics=True,
                       kde_max_train=args.kde_max_train)
    res = evaluate_all(model, data, opts)
    m = cfg.model
    meta = {"run": str(run), "train_seconds": train_s, "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "config": (f"Model: MLP {m.arch.hidden}, latent {m.latent_dim}, {m.likelihood.name}; "
                       f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
                       f"Adam lr {cfg.train.lr}")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, **res}, indent=2))
    md = table(res, meta)
    args.out.with_suffix(".md").write_text(md)
    plot(res, args.out)
    print(md)


if __name__ == "__main__":
    main()
