"""Reproduce Dai & Wipf (2019) Table 1's comparison on Fashion-MNIST with one network family:

    VAE, Bernoulli (cross-entropy) decoder  |  Gaussian, fixed gamma = 1  |  learned gamma
    learned gamma + stage 2 (two-stage VAE) |  learned gamma + a 10-component GMM of the codes

Each row: Fréchet distance and precision/recall of 10,000 samples against the 10,000 test
images in vaekit's feature space (mean ± std over seeds), reconstruction error, final gamma,
active and used latent dimensions, the test log-likelihood where it is defined, training time.

    .venv/bin/python scripts/two_stage.py                 # the full comparison (see --help)
    .venv/bin/python scripts/two_stage.py --quick         # a smoke run in minutes

Writes OUT/summary.json (every figure), OUT/table.md (the README table) and OUT/samples.png
(a grid of samples per row, first seed).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from vaekit.api import train
from vaekit.config import DataConfig, ModelConfig, RunConfig, Stage2Config, TrainConfig
from vaekit.data.pipeline import PreparedData
from vaekit.evaluation.diagnostics import latent_diagnostics
from vaekit.evaluation.estimators import estimate_log_px
from vaekit.evaluation.generation import feature_net, features, generate, scores, unit_images
from vaekit.evaluation.metrics import mean_se, to_bits_per_dim
from vaekit.models import VAE
from vaekit.models.two_stage import CodeMixture, posterior_codes
from vaekit.rundir import RunDir

ROWS = ("bernoulli", "fixed-gamma", "learned-gamma", "two-stage", "learned-gamma + GMM")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run: 1 seed, 2 epochs, 1000 samples")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arch", default="conv", help="network family (default: conv)")
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    p.add_argument("--fc", type=int, default=512)
    p.add_argument("--latent-dim", type=int, default=64, help="as in the paper (default: 64)")
    p.add_argument("--epochs", type=int, default=5, help="stage-1 epochs (paper: 400)")
    p.add_argument("--stage2-epochs", type=int, default=30, help="(paper: 800)")
    p.add_argument("--stage2-hidden", type=int, nargs="+", default=[512, 512, 512],
                   help="stage-2 widths (paper: 1024 1024 1024)")
    p.add_argument("--batch-size", type=int, default=64, help="(paper: 64)")
    p.add_argument("--stage2-batch-size", type=int, default=256, help="(paper: 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="(paper: 1e-4 halved every 150 epochs)")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--loglik-k", type=int, default=100, help="importance samples of log p(x)")
    p.add_argument("--loglik-n", type=int, default=2000,
                   help="first N test images scored by log p(x) (0 = the whole test split)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", type=Path, default=Path("results/two-stage"))
    a = p.parse_args()
    if a.quick:
        a.seeds, a.epochs, a.stage2_epochs, a.samples, a.loglik_k = [0], 2, 2, 1000, 10
        a.loglik_n = 500
        a.out = a.out.with_name(a.out.name + "-quick")
    return a


def stage1_config(a: argparse.Namespace, likelihood: dict[str, Any], seed: int,
                  stage2: bool) -> RunConfig:
    arch = {"name": a.arch, "channels": a.channels, "fc": a.fc} if a.arch != "mlp" else {
        "name": "mlp", "hidden": a.channels}
    s2 = None
    if stage2:
        s2 = Stage2Config(model=ModelConfig(latent_dim=0, likelihood="gaussian-gamma", arch={
            "name": "mlp", "hidden": a.stage2_hidden, "skip": True}),
            train=TrainConfig(epochs=a.stage2_epochs, batch_size=a.stage2_batch_size, lr=a.lr,
                              seed=seed))
    return RunConfig(DataConfig(name=a.data),
                     ModelConfig(latent_dim=a.latent_dim, arch=arch, likelihood=likelihood),
                     TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=seed),
                     stage2=s2)


def train_seconds(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return round(sum(r["seconds"] for r in rows), 1)


def row_figures(model: VAE, scored: VAE | None, data: PreparedData, real: torch.Tensor,
                net: Any, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Generation scores of ``model``; reconstruction error, diagnostics and log p(x) of
    ``scored`` (the model whose prior has a density), on the test split; seconds taken."""
    t0, test = time.perf_counter(), data.test
    fake = generate(model, a.samples, seed=seed).clamp(0, 1)
    out = scores(real, features(net, fake))
    ref = unit_images(data.dataset.test, data.levels)
    with torch.no_grad():
        rec = torch.cat([model.reconstruct(test.x[s : s + 1000]).cpu()
                         for s in range(0, len(test), 1000)])
    out["reconstruction_mse"] = float((rec.clamp(0, 1) - ref).pow(2).mean())
    out |= {k: v for k, v in model.likelihood.extra_metrics().items()}
    diag = latent_diagnostics(model.stage1 if hasattr(model, "stage1") else model, test)
    out["active_dims"], out["used_dims"] = diag["active_units"], diag["used_dims"]
    if scored is not None and a.loglik_k:
        est = estimate_log_px(scored, test[: a.loglik_n or len(test)], a.loglik_k, seed=seed)
        out["log_px"], _ = mean_se(est.log_px)
        out["bpd"] = to_bits_per_dim(-out["log_px"], data.bpd_offset, data.dim)
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def one_seed(a: argparse.Namespace, seed: int, real: torch.Tensor, net: Any,
             samples: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    specs = {"bernoulli": "bernoulli", "fixed-gamma": {"name": "gaussian", "sigma": 1.0},
             "learned-gamma": "gaussian-gamma"}
    for name, likelihood in specs.items():
        run_dir = a.out / f"seed{seed}" / name
        cfg = stage1_config(a, likelihood, seed, stage2=name == "learned-gamma")
        resume = (run_dir / "checkpoint").is_dir()  # an earlier call's run: continue it
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)  # stopped before its first checkpoint: start again
        print(f"[seed {seed}] {'continuing' if resume else 'training'} {name} ...", flush=True)
        train(cfg, run_dir, resume=resume, progress=False)
        rd = RunDir.open(run_dir, "cpu")
        model, _, data = rd.model, rd.cfg, rd.data
        stage1 = model.stage1 if hasattr(model, "stage1") else model
        out[name] = {**row_figures(stage1, stage1, data, real, net, a, seed),
                     "train_seconds": train_seconds(run_dir)}
        if name == "learned-gamma":
            out["two-stage"] = {**row_figures(model, None, data, real, net, a, seed),
                                "train_seconds": out[name]["train_seconds"]
                                + train_seconds(run_dir / "stage2")}
            out["learned-gamma + GMM"] = gmm_row(stage1, data, real, net, a, seed)
            out["learned-gamma + GMM"]["train_seconds"] = out[name]["train_seconds"]
            samples["two-stage"] = generate(model, 16, seed=seed).clamp(0, 1)
            samples["learned-gamma + GMM"] = out["learned-gamma + GMM"].pop("_samples")
        samples[name] = generate(stage1, 16, seed=seed).clamp(0, 1)
    print(f"[seed {seed}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def gmm_row(stage1: VAE, data: PreparedData, real: torch.Tensor, net: Any,
            a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Ghosh et al.'s ex-post density estimation: a 10-component GMM of the aggregate
    posterior (one draw z ~ q(z|x) per training image: unused dimensions keep their unit
    variance, so the GMM is a proper density of the codes), as the learned-gamma VAE's prior."""
    from vaekit.data.pipeline import fixed_transform

    x = fixed_transform(data.train_raw[:20000], data.transform, data.levels, seed)
    codes = fixed_transform(posterior_codes(stage1, x), "posterior-sample", None, seed)
    t0 = time.perf_counter()
    mixture = CodeMixture.fit(codes, components=10, seed=seed)
    fit_seconds = round(time.perf_counter() - t0, 1)
    model = VAE(stage1.encoder, stage1.likelihood, mixture)
    out = row_figures(model, model, data, real, net, a, seed)
    out["gmm_fit_seconds"] = fit_seconds
    out["_samples"] = generate(model, 16, seed=seed).clamp(0, 1)  # for the figure
    return out


def summarize(per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of every number of every row."""
    out = {}
    for row in ROWS:
        keys = [k for k, v in per_seed[0][row].items() if isinstance(v, (int, float))]
        stats = {}
        for k in keys:
            vals = torch.tensor([float(s[row][k]) for s in per_seed if s[row].get(k) is not None],
                                dtype=torch.float64)
            if len(vals):
                stats[k] = {"mean": float(vals.mean()),
                            "std": float(vals.std()) if len(vals) > 1 else 0.0}
        out[row] = stats
    return out


def table(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    def cell(row: str, key: str, digits: int = 2) -> str:
        s = summary[row].get(key)
        return "–" if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"

    lines = ["| model | Fréchet distance | precision | recall | reconstruction MSE | gamma | "
             "active / used dims | test log p(x), nats (bits/dim) | training s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        s = summary[row]
        gamma = cell(row, "gamma", 4) if "gamma" in s else "–"
        dims = (f"{s['active_dims']['mean']:.0f} / {s['used_dims']['mean']:.0f}")
        ll = "–" if "log_px" not in s else (
            cell(row, "log_px", 1) + (f" ({s['bpd']['mean']:.3f})" if "bpd" in s else ""))
        lines.append(f"| {row} | {cell(row, 'frechet')} | {cell(row, 'precision', 3)} | "
                     f"{cell(row, 'recall', 3)} | {cell(row, 'reconstruction_mse', 4)} | "
                     f"{gamma} | {dims} | {ll} | {cell(row, 'train_seconds', 0)} |")
    lines.append("")
    lines.append(meta["protocol"])
    return "\n".join(lines)


def protocol(a: argparse.Namespace, data: str, classifier: dict[str, Any], n_test: int,
             seconds: float) -> str:
    """The settings behind the table, in a sentence under it."""
    return (f"{data}: {len(a.seeds)} seed(s); {a.arch} networks {a.channels} + fc {a.fc}, "
            f"latent {a.latent_dim}, batch {a.batch_size}, Adam {a.lr}, {a.epochs} epochs "
            f"(paper: 400); stage 2: dense {a.stage2_hidden} with the input concatenated "
            f"before the heads, batch {a.stage2_batch_size}, {a.stage2_epochs} epochs (paper: "
            f"800). Fréchet distance and precision/recall (k = 3) of {a.samples} samples "
            f"(means of p(x|z)) vs {a.samples} test images in the feature space of vaekit's "
            f"classifier (test accuracy {classifier['test_accuracy']:.3f}); log p(x): "
            f"importance sampling with K = {a.loglik_k} on the first {a.loglik_n or n_test} "
            f"test images, Bernoulli on binarized, Gaussians on dequantized images. Total "
            f"{seconds:.0f} s on {platform.machine()}, {torch.get_num_threads()} threads.")


def save_samples(samples: dict[str, torch.Tensor], path: Path) -> None:
    from matplotlib.figure import Figure

    from vaekit.report.plots import image_grid

    names = [row for row in ROWS if row in samples]
    fig = Figure(figsize=(2.2 * len(names), 2.6))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        ax.imshow(image_grid(samples[name], nrow=4), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    a = parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    first = stage1_config(a, "bernoulli", 0, False)
    from vaekit.data.datasets import load_dataset

    ds = load_dataset(first.data.name)
    net, info = feature_net(ds.train, ds.train_y, ds.test, ds.test_y, ds.levels)
    n = min(a.samples, len(ds.test))
    a.samples = n
    real = features(net, unit_images(ds.test[:n], ds.levels))
    per_seed, samples = [], {}
    for seed in a.seeds:
        per_seed.append(one_seed(a, seed, real, net, samples if seed == a.seeds[0] else {}))
    summary = summarize(per_seed)
    meta = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
            "classifier": info, "seconds": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
                       f"{torch.__version__}",
            "protocol": protocol(a, ds.name, info, len(ds.test), time.perf_counter() - t0)}
    (a.out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                    "per_seed": per_seed}, indent=1))
    md = table(summary, meta)
    (a.out / "table.md").write_text(md + "\n")
    save_samples(samples, a.out / "samples.png")
    print(md)
    ratio = summary["two-stage"]["frechet"]["mean"] / summary["learned-gamma"]["frechet"]["mean"]
    gmm = summary["learned-gamma + GMM"]["frechet"]["mean"]
    print(f"two-stage / learned gamma Fréchet distance: {ratio:.2f} (target <= 0.5); "
          f"two-stage {'below' if summary['two-stage']['frechet']['mean'] < gmm else 'above'}"
          f" the GMM sampler ({gmm:.2f})")
    if not math.isfinite(ratio):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
