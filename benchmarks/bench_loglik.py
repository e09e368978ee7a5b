"""Speed of importance-sampled log p(x) (K = 1000) over the Fashion-MNIST test set:
a typical batched implementation against vaekit.evaluation.estimate_log_px.

    python benchmarks/bench_loglik.py                 # 10,000 test images, K = 1000
    python benchmarks/bench_loglik.py --quick         # 500 images, K = 100 (< 1 minute)
    python benchmarks/bench_loglik.py --run RUN_DIR   # a trained run instead of a quick one

Every contender runs in its own subprocess (peak RSS is its own). No timing assertions.
"""

from __future__ import annotations

import argparse
import inspect
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    busy_warning,
    default_json,
    ensure_importable,
    isolated,
    machine_info,
    table,
    vaekit_env,
    write_json,
)

ensure_importable()

TEST_SEED = 1  # the fixed binarization of the test set (vaekit's default eval_seed + 1)
EST_SEED = 0


def train_model(run_dir: str, epochs: int, limit: int) -> dict[str, Any]:
    """The classic 784-400-20 Bernoulli VAE, trained briefly by vaekit.api.train."""
    import contextlib
    import io

    from vaekit.api import train
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    cfg = RunConfig(DataConfig(name="fashion-mnist", val_fraction=0.0, limit=limit),
                    ModelConfig(latent_dim=20, arch={"name": "mlp", "hidden": [400]},
                                likelihood="bernoulli"),
                    TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=0, device="cpu"))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        res = train(cfg, run_dir=run_dir, progress=False)
    return {"seconds": round(time.perf_counter() - t0, 2), "epochs": epochs,
            "train_loss": res.history[-1]["train_loss"]}


def _load(run_dir: str, n: int):
    """(model, test images (n, *shape) with the run's fixed evaluation transform, config)."""
    from vaekit.api import load_model
    from vaekit.data.datasets import load_dataset
    from vaekit.data.pipeline import fixed_transform
    from vaekit.data.transforms import resolve_transform
    from vaekit.registry import LIKELIHOODS

    model, cfg = load_model(run_dir)
    ds = load_dataset(cfg.data.name)
    lik = LIKELIHOODS.get(cfg.model.likelihood.name).build
    transform = resolve_transform(cfg.data.transform, lik, ds.levels)
    x = fixed_transform(ds.test, transform, ds.levels, TEST_SEED)[:n]
    return model, x, cfg


def typical_batched(model, x, k: int, batch: int = 100):
    """(a) The usual code: x repeated K times, encoder on the repeated batch, z by rsample,
    torch.distributions log-densities (default validate_args), logsumexp over K. (N,)."""
    import torch
    from torch.distributions import Bernoulli, Normal

    enc, dec = model.encoder.net, model.likelihood.decoder
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = x[s : s + batch]
            xr = xb.repeat_interleave(k, dim=0)  # (B*K, 28, 28)
            mu, log_var = enc(xr).chunk(2, dim=-1)
            q = Normal(mu, torch.exp(0.5 * log_var))
            z = q.rsample()
            log_px_z = Bernoulli(logits=dec(z)).log_prob(xr).flatten(1).sum(-1)
            log_pz = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
            log_qz = q.log_prob(z).sum(-1)
            lw = (log_px_z + log_pz - log_qz).view(len(xb), k)
            out.append(torch.logsumexp(lw, dim=1) - math.log(k))
    return torch.cat(out)


def run_contender(run_dir: str, n: int, kind: str, k: int,
                  kwargs: dict[str, Any]) -> dict[str, Any]:
    """Time one estimator on the first n test images (after a small warm-up)."""
    import torch

    from vaekit.evaluation import estimate_log_px

    torch.manual_seed(EST_SEED)
    model, x, cfg = _load(run_dir, n)
    if kind == "typical":
        if cfg.model.likelihood.name != "bernoulli":
            return {"skipped": "the typical reference is written for a Bernoulli likelihood"}

        def est(xs, kk):
            return typical_batched(model, xs, kk, **kwargs), None
    else:

        def est(xs, kk):
            r = estimate_log_px(model, xs, kk, seed=EST_SEED, **kwargs)
            return r.log_px, r.ess

    est(x[:4], min(k, 64))  # warm-up: first-call allocations, kernel selection
    t0 = time.perf_counter()
    log_px, ess = est(x, k)
    sec = time.perf_counter() - t0
    out = {"n": len(x), "k": k, "seconds": round(sec, 3),
           "seconds_per_1000": round(1000 * sec / len(x), 3),
           "images_per_s": round(len(x) / sec, 2),
           "mean_log_px": float(log_px.double().mean()), "log_px": log_px.double().tolist()}
    if ess is not None:
        out["mean_ess"] = round(float(ess.double().mean()), 2)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="500 images, K = 100 (< 1 minute)")
    p.add_argument("--run", type=Path, default=None,
                   help="trained run directory (default: train the classic model briefly)")
    p.add_argument("--n", type=int, default=None, help="test images (default 10000 / 500)")
    p.add_argument("--k", type=int, default=None, help="importance samples (default 1000 / 100)")
    p.add_argument("--train-epochs", type=int, default=2,
                   help="epochs of the model trained when --run is not given")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None,
                   help="output JSON (default benchmarks/results/bench_loglik[_quick].json)")
    p.add_argument("--skip", nargs="*", default=[], help="contender names to leave out")
    return p.parse_args(argv)


def contenders(k: int) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(name, kind, K, kwargs). The default-budget run is dropped when it equals a listed one."""
    from vaekit.evaluation import estimate_log_px

    default_mb = inspect.signature(estimate_log_px).parameters["memory_mb"].default
    out = [("typical-batched", "typical", k, {"batch": 100}),
           (f"vaekit (default, {default_mb:g} MB)", "vaekit", k, {})]
    out += [(f"vaekit memory_mb={mb}", "vaekit", k, {"memory_mb": mb})
            for mb in (64, 1024) if mb != default_mb]
    out += [(f"vaekit prior K={kk}", "vaekit", kk, {"proposal": "prior"})
            for kk in (k, 10 * k)]
    return out


def main(argv=None) -> None:
    a = parse_args(argv)
    q = a.quick
    n = a.n or (500 if q else 10_000)
    k = a.k or (100 if q else 1000)
    rec: dict[str, Any] = {"benchmark": "bench_loglik", "quick": q, "n": n, "k": k,
                           "machine": machine_info(a.threads)}
    busy_warning(rec["machine"])
    t0 = time.perf_counter()
    tmp = None
    if a.run is None:
        tmp = tempfile.mkdtemp(prefix="vaekit-bench-")
        run_dir = str(Path(tmp) / "run")
        epochs = 1 if q else a.train_epochs
        print(f"  training the classic model ({epochs} epoch(s)) ...", flush=True)
        rec["model"] = {"trained": isolated(train_model, a.threads, run_dir=run_dir,
                                            epochs=epochs, limit=6000 if q else 0)}
    else:
        run_dir = str(a.run)
        rec["model"] = {"run": run_dir}
    try:
        res: dict[str, Any] = {}
        for name, kind, kk, kw in contenders(k):
            if name in a.skip:
                continue
            print(f"  {name} ...", flush=True)
            res[name] = isolated(run_contender, a.threads, env=vaekit_env(name),
                                 run_dir=run_dir, n=n, kind=kind, k=kk, kwargs=kw)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    rec["contenders"] = res
    report(res, rec, n, k)
    rec["total_seconds"] = round(time.perf_counter() - t0, 1)
    for r in res.values():  # per-example values were only needed for the paired differences
        r.pop("log_px", None)
    print(f"\ntotal {rec['total_seconds']} s{' (quick)' if q else ''}")
    write_json(a.json or default_json("bench_loglik_quick" if q else "bench_loglik"), rec)


def report(res: dict[str, Any], rec: dict[str, Any], n: int, k: int) -> None:
    ok = {name: r for name, r in res.items() if "seconds" in r}
    ref = ok.get("typical-batched")
    rows = []
    for name, r in res.items():
        if name not in ok:
            rows.append([name, None, None, None, None, None, None, None,
                         r.get("skipped") or r.get("error")])
            continue
        diff = se = None
        if ref is not None and name != "typical-batched" and r["k"] == ref["k"] \
                and "prior" not in name:
            d = [u - v for u, v in zip(r["log_px"], ref["log_px"], strict=True)]
            mean = sum(d) / len(d)
            var = sum((v - mean) ** 2 for v in d) / max(len(d) - 1, 1)
            diff, se = mean, math.sqrt(var / len(d))
            r["diff_vs_typical"], r["diff_se"] = round(diff, 4), round(se, 4)
        speed = ref["seconds"] / r["seconds"] if ref else None
        r["speedup_vs_typical"] = round(speed, 2) if speed else None
        rows.append([name, r["k"], r["seconds"], r["seconds_per_1000"], r["images_per_s"],
                     r["peak_rss_mb"], r["mean_log_px"], speed,
                     f"{diff:+.3f} +- {se:.3f}" if diff is not None else ""])
    print(table(["contender", "K", "seconds", "s/1000 img", "img/s", "peak RSS MB",
                 "mean log p(x)", "speed-up", "diff vs typical (paired)"], rows,
                f"\nlog p(x) by importance sampling, {n} test images (nats/example)", digits=3))
    enc = [r for name, r in ok.items() if name.startswith("vaekit") and "prior" not in name]
    if len(enc) > 1:
        spread = max(max(abs(u - v) for u, v in zip(r["log_px"], enc[0]["log_px"], strict=True))
                     for r in enc[1:])
        rec["vaekit_budget_max_abs_diff"] = spread
        print(f"  vaekit encoder runs agree across memory budgets: max |diff| {spread:.2e} nats")
    for r in ok.values():
        if r.get("diff_se") and abs(r["diff_vs_typical"]) > 4 * r["diff_se"]:
            print("  !! vaekit and the typical estimator disagree by more than 4 standard errors")
            break


if __name__ == "__main__":
    main()
