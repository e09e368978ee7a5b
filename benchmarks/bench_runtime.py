"""OpenMP wait policies on a quiet and on a busy machine: which runtime setting keeps
vaekit fast when it has the cores to itself and never makes it the victim when it does not.

    python benchmarks/bench_runtime.py            # 2 repeats of every (setting, load, task)
    python benchmarks/bench_runtime.py --quick    # smoke run

Settings (each in a fresh process, set before torch loads its OpenMP runtime):
    ACTIVE          OMP_WAIT_POLICY=ACTIVE: idle threads spin forever (vaekit <= 0.3)
    PASSIVE         OMP_WAIT_POLICY=PASSIVE: idle threads sleep at once
    default         nothing set: libgomp spins 300,000 iterations, then sleeps
    spin=N          GOMP_SPINCOUNT=N: spin N iterations, then sleep
    auto            what `vaekit` chooses now (vaekit.runtime.choose_settings: measured idle
                    cores at start)
Loads: quiet, and 2 busy processes (pure-Python loops) started by this script. Tasks:
200 training steps of the default Fashion-MNIST model (batch 128, fast path, 2 threads)
and the importance-sampled log p(x) (K = 1000 on 200 test images). Figures: seconds per
task (best of the repeats), ratios to the fastest setting on the quiet machine and to
PASSIVE under load. No timing assertions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import (
    busy_warning,
    default_json,
    ensure_importable,
    isolated,
    machine_info,
    table,
    write_json,
)

ensure_importable()

SETTINGS = {"ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
            "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "default": {},
            "spin=10000": {"GOMP_SPINCOUNT": "10000"},
            "spin=100000": {"GOMP_SPINCOUNT": "100000"},
            "auto": None}  # vaekit.runtime.choose_settings() at launch time
CLEAR = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def train_task(steps: int, limit: int) -> dict:
    """Seconds for ``steps`` training steps of the default model (after 20 warm-up)."""
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from vaekit.train import setup_run

    run = setup_run(RunConfig(DataConfig(limit=limit), ModelConfig(),
                              TrainConfig(device="cpu", epochs=100)))
    batches = iter(())

    def go(n: int) -> float:
        nonlocal batches
        t0 = time.perf_counter()
        for i in range(n):
            b = next(batches, None)
            if b is None:
                batches = run.loader.epoch()
                b = next(batches)
            run.step(b, i)
        return time.perf_counter() - t0

    go(20)
    return {"seconds": go(steps)}


def loglik_task(k: int, n: int) -> dict:
    """Seconds for the importance-sampled log p(x) of n test images with K samples."""
    import torch

    from vaekit.config import DataConfig, ModelConfig
    from vaekit.data.pipeline import prepare_data
    from vaekit.evaluation.estimators import estimate_log_px
    from vaekit.models import build_model
    from vaekit.registry import LIKELIHOODS

    data = prepare_data(DataConfig(limit=1000), LIKELIHOODS.get("bernoulli").build, 0)
    cfg = ModelConfig(data_shape=list(data.shape), data_levels=data.levels or 0)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    estimate_log_px(model, data.test[:20], 50)  # warm-up
    t0 = time.perf_counter()
    estimate_log_px(model, data.test[:n], k)
    return {"seconds": time.perf_counter() - t0}


def settings_env(name: str) -> dict[str, str]:
    """The environment of a setting (``auto``: what vaekit picks at this moment)."""
    if SETTINGS[name] is not None:
        return dict(SETTINGS[name])
    from vaekit.runtime import choose_settings

    return choose_settings()


def measure(name: str, task: str, a: argparse.Namespace) -> dict:
    import os

    saved = {k: os.environ.pop(k) for k in CLEAR if k in os.environ}
    env = settings_env(name)
    try:
        if task == "train":
            out = isolated(train_task, threads=2, env=env, steps=a.steps, limit=a.limit)
        else:
            out = isolated(loglik_task, threads=2, env=env, k=a.k, n=a.n)
    finally:
        os.environ.update(saved)
    out["env"] = env
    return out


def _env_label(envs: list[dict]) -> str:
    """The settings a row's runs had (several when ``auto`` chose differently)."""
    labels = sorted({" ".join(f"{k}={v}" for k, v in e.items()) or "-" for e in envs})
    return " / ".join(labels)


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--busy", type=int, default=2, help="competing busy processes (default: 2)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.steps, a.limit, a.k, a.n, a.repeats = 40, 2000, 200, 50, 1
    info = machine_info(2)
    busy_warning(info)
    res: dict[str, dict[str, dict[str, list[float]]]] = {}
    envs: dict[str, list[dict]] = {}
    for load in ("quiet", f"{a.busy} busy"):
        procs = busy(a.busy) if load != "quiet" else []
        time.sleep(1.0 if procs else 0)
        try:
            for _ in range(a.repeats):  # alternate settings: drifts hit all of them
                for name in a.settings:
                    for task in ("train", "loglik"):
                        out = measure(name, task, a)
                        res.setdefault(load, {}).setdefault(name, {}).setdefault(
                            task, []).append(out.get("seconds", float("nan")))
                        envs.setdefault(f"{load}/{name}", []).append(out["env"])
        finally:
            for proc in procs:
                proc.kill()
    rows, best = [], {}
    for load, by_name in res.items():
        for name, tasks in by_name.items():
            best[(load, name)] = {t: min(v) for t, v in tasks.items()}
    for load in res:
        ref = {t: min(best[(load2, n)][t] for (load2, n) in best if load2 == "quiet")
               for t in ("train", "loglik")}
        passive = best.get((load, "PASSIVE"))
        for name in res[load]:
            b = best[(load, name)]
            rows.append([load, name, b["train"], b["loglik"],
                         *((b[t] / ref[t]) for t in ("train", "loglik")),
                         *((b[t] / passive[t]) if passive else None for t in ("train", "loglik")),
                         _env_label(envs[f"{load}/{name}"])])
    print(table(["load", "setting", "train s", "log p(x) s", "train / quiet best",
                 "log p(x) / quiet best", "train / PASSIVE", "log p(x) / PASSIVE", "env"], rows,
                f"\nOpenMP wait policies, best of {a.repeats}: {a.steps} training steps, "
                f"log p(x) K={a.k} on {a.n} images", digits=2))
    write_json(a.json or default_json("runtime" + ("_quick" if a.quick else "")),
               {"benchmark": "bench_runtime", "machine": info,
                "seconds": {f"{k[0]}/{k[1]}": v for k, v in best.items()}, "raw": res,
                "env": envs})


if __name__ == "__main__":
    main()
