"""Training throughput of the classic MLP VAE (784-400-20, Bernoulli, dynamically binarized
Fashion-MNIST, Adam lr 1e-3, batch 128, fp32) against typical PyTorch code and pythae
(timed by turns in one process, and in isolated processes), plus matmul ceilings,
time-to-quality, scaling and a profile of vaekit's step.

    python benchmarks/bench_train.py            # full run (minutes)
    python benchmarks/bench_train.py --quick    # smoke run (< 1 minute)
    python benchmarks/bench_train.py --sections device --device cuda   # on a GPU

The ``device`` section (not in the default set) times vaekit's variants and a plain
PyTorch loop on ``--device`` with the whole dataset there, at ``--device-batches`` (default
128 and 4096), plus, on CUDA, that loop captured in a CUDA graph (one replay per step).

No timing assertions: numbers are printed and written to JSON (``--json``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import itertools
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    D,
    H,
    L,
    ensure_importable,
    interleaved,
    isolated,
    linear_shapes,
    machine_info,
    median,
    paired_ratio,
    rss_mb,
    table,
    timed_steps,
    train_flops_per_image,
    vaekit_env,
    write_json,
)

ensure_importable()

BATCH, LR, SEED, TEST_SEED = 128, 1e-3, 0, 1  # TEST_SEED = vaekit's default eval_seed + 1
CONTENDERS = ("pytorch-examples", "tensor-loop", "pythae", "vaekit", "vaekit-autograd",
              "vaekit-bf16", "vaekit-bf16-autocast", "vaekit-compile")
SECTIONS = ("interleaved", "throughput", "matmul", "ttq", "scaling", "profile", "device")
DEFAULT_SECTIONS = SECTIONS[:-1]  # "device": asked for by name (e.g. on a GPU)
DEVICE_CONTENDERS = ("tensor-loop", "tensor-loop-cudagraph", "vaekit", "vaekit-autograd",
                     "vaekit-bf16", "vaekit-compile")
VAEKIT_VARIANTS = {"vaekit": {}, "vaekit-autograd": {"fused": False},
                   "vaekit-bf16": {"precision": "bf16"},
                   "vaekit-bf16-autocast": {"precision": "bf16", "fused": False},
                   "vaekit-compile": {"compile": True}}


# ============================================================================ contenders a-c


def _train_images(limit: int = 0):
    from vaekit.data.datasets import load_dataset

    x = load_dataset("fashion-mnist").train
    return x[:limit] if limit else x


def bench_pytorch_examples(warmup: int, epochs: int | None, steps: int | None,
                           limit: int = 0) -> dict[str, Any]:
    """(a) Like pytorch/examples vae/main.py: per-item Dataset + DataLoader(shuffle=True),
    sigmoid outputs, F.binary_cross_entropy(reduction='sum') + KLD, loss.item() per step."""
    batches, step = setup_pytorch_examples(limit)
    out = timed_steps(batches, step, warmup, steps, epochs)
    return {**out, "notes": "DataLoader(num_workers=0) over a per-item Dataset"}


def setup_pytorch_examples(limit: int = 0):
    """(batches(), step(x)) of contender (a)."""
    import torch
    import torch.nn.functional as F
    from common import classic_vae, kld_sum
    from torch.utils.data import DataLoader, Dataset

    class BinarizedImages(Dataset):  # ToTensor-like scaling + binarization per sample
        def __init__(self, raw: torch.Tensor) -> None:
            self.raw = raw

        def __len__(self) -> int:
            return len(self.raw)

        def __getitem__(self, i: int):
            return torch.bernoulli(self.raw[i].float().div(255)), 0

    torch.manual_seed(SEED)
    loader = DataLoader(BinarizedImages(_train_images(limit)), batch_size=BATCH, shuffle=True)
    model = classic_vae().train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    total = [0.0]

    def step(x: torch.Tensor) -> None:
        x = x.view(-1, D)
        opt.zero_grad()
        logits, mu, log_var = model(x)
        loss = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
        loss = loss + kld_sum(mu, log_var)
        loss.backward()
        total[0] += loss.item()
        opt.step()

    return (lambda: loader), step


def _tensor_batches(images, generator=None):
    """perm = randperm; x = images[perm[i:i+128]]; torch.bernoulli(x), one epoch per call."""
    import torch

    def batches():
        perm = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), BATCH):
            yield torch.bernoulli(images[perm[i : i + BATCH]])

    return batches


def bench_tensor_loop(warmup: int, epochs: int | None, steps: int | None,
                      limit: int = 0) -> dict[str, Any]:
    """(b) Same model and loss as (a), BCE with logits, batches indexed out of one float tensor."""
    return timed_steps(*setup_tensor_loop(limit), warmup, steps, epochs)


def setup_tensor_loop(limit: int = 0):
    """(batches(), step(x)) of contender (b)."""
    import torch
    import torch.nn.functional as F
    from common import classic_vae, kld_sum

    torch.manual_seed(SEED)
    images = _train_images(limit).float().div(255).view(-1, D)
    model = classic_vae().train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x: torch.Tensor) -> None:
        opt.zero_grad()
        logits, mu, log_var = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        (loss + kld_sum(mu, log_var)).backward()
        opt.step()

    return _tensor_batches(images), step


def bench_pythae(warmup: int, epochs: int | None, steps: int | None,
                 limit: int = 0) -> dict[str, Any]:
    """(c) pythae.models.VAE (bce) with custom encoder/decoder of the same architecture,
    driven by a manual loop on ``model({"data": x}).loss`` (not pythae's BaseTrainer)."""
    try:
        batches, step = setup_pythae(limit)
    except ImportError:
        return {"skipped": "pythae is not installed (pip install -e '.[bench]')"}
    out = timed_steps(batches, step, warmup, steps, epochs)
    return {**out, "notes": "manual loop on model({'data': x}).loss; pythae BCE on sigmoid"}


def setup_pythae(limit: int = 0):
    """(batches(), step(x)) of contender (c); ImportError without pythae."""
    import torch
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.net = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 2 * L))

        def forward(self, x: torch.Tensor):
            mu, log_var = self.net(x.reshape(len(x), -1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.net = nn.Sequential(nn.Linear(L, H), nn.ReLU(), nn.Linear(H, D))

        def forward(self, z: torch.Tensor):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, 1, 28, 28))

    torch.manual_seed(SEED)
    images = _train_images(limit).float().div(255).view(-1, 1, 28, 28)
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=L, reconstruction_loss="bce")
    model = VAE(cfg, encoder=Encoder(), decoder=Decoder()).train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x: torch.Tensor) -> None:
        opt.zero_grad()
        model({"data": x}).loss.backward()  # mean over batch of BCE(sigmoid) sum + KL
        opt.step()

    return _tensor_batches(images), step


# ============================================================================ vaekit


def _quiet():
    """vaekit's train() writes one line per epoch even with progress=False: swallow it."""
    return contextlib.redirect_stdout(io.StringIO())


def bench_vaekit(epochs: int, limit: int = 0, device: str = "cpu", batch_size: int = BATCH,
                 **extra: Any) -> dict[str, Any]:
    """(d) vaekit.api.train() through the public API; images/s from its history rows
    (training loop only, ending with a host sync): median and best of the epochs after the
    first. ``extra``: TrainConfig fields of a variant (precision, compile, fused)."""
    import dataclasses

    from vaekit.api import train
    from vaekit.config import DataConfig, RunConfig, TrainConfig

    missing = set(extra) - {f.name for f in dataclasses.fields(TrainConfig)}
    if missing:
        return {"skipped": f"this vaekit's TrainConfig has no {sorted(missing)}"}
    cfg = RunConfig(
        data=DataConfig(name="fashion-mnist", val_fraction=0.0, limit=limit),
        model=_classic_config(),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=LR, seed=SEED,
                          device=device, **extra))
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        t0 = time.perf_counter()
        res = train(cfg, run_dir=Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
    rows = res.history
    later = [r["images_per_s"] for r in rows[1:]] or [rows[0]["images_per_s"]]
    return {"images_per_s": median(later), "images_per_s_best": max(later),
            "epoch_images_per_s": [r["images_per_s"] for r in rows],
            "epoch_seconds": [r["seconds"] for r in rows],
            "images": sum(len(res.data.train_raw) for _ in rows[1:]),
            "seconds": round(sum(r["seconds"] for r in rows[1:]), 3),
            "train_call_seconds": round(total, 2), "final_train_loss": rows[-1]["train_loss"],
            "train_peak_rss_mb": round(rss_mb(), 1),  # before the test evaluation below
            "test_neg_elbo": round(_test_neg_elbo(res.model, _test_set().to(res.device)), 3),
            "device": str(res.device), "batch_size": batch_size,
            "train_config": dataclasses.asdict(cfg.train), "fast_path": res.fast_path,
            "notes": f"vaekit.api.train, {len(rows[1:]) or 1} timed epoch(s) of "
                     f"{len(res.data.train_raw)} images after 1 warm-up epoch"}


# ============================================================================ matmul ceiling


def bench_matmul(batch: int, seconds_per_shape: float) -> dict[str, Any]:
    """GFLOP/s of the matmuls of one training step, in the layouts autograd uses:
    forward addmm(b, x, W^T), backward dx = gy @ W and dW = gy^T @ x."""
    import torch
    import torch.nn.functional as F

    def rate(fn, flops: int, repeats: int = 5) -> float:
        """Best of ``repeats`` runs of n calls, n sized so a run takes ~seconds/repeats."""
        for _ in range(5):
            fn()
        n = 4
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - t0 >= seconds_per_shape / repeats / 2:
                break
            n *= 2
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, time.perf_counter() - t0)
        return flops * n / best / 1e9

    out: dict[str, Any] = {}
    for dtype in (torch.float32, torch.bfloat16):
        rows, tot_flops, tot_time = [], 0, 0.0
        for name, i, o in linear_shapes():
            x = torch.randn(batch, i, dtype=dtype)
            W = torch.randn(o, i, dtype=dtype)
            b = torch.randn(o, dtype=dtype)
            gy = torch.randn(batch, o, dtype=dtype)
            ops = [("fwd", f"({batch}x{i})@({i}x{o})", lambda x=x, w=W, b=b: F.linear(x, w, b)),
                   ("dW", f"({o}x{batch})@({batch}x{i})", lambda gy=gy, x=x: gy.t() @ x)]
            if name != "enc1":  # autograd skips the gradient of the input
                ops.append(("dx", f"({batch}x{o})@({o}x{i})", lambda gy=gy, w=W: gy @ w))
            for kind, shape, fn in ops:
                flops = 2 * batch * i * o
                g = rate(fn, flops)
                rows.append({"layer": name, "op": kind, "shape": shape, "flops": flops,
                             "gflops": round(g, 1)})
                tot_flops += flops
                tot_time += flops / (g * 1e9)
        key = "fp32" if dtype == torch.float32 else "bf16"
        out[key] = {"per_shape": rows, "aggregate_gflops": round(tot_flops / tot_time / 1e9, 1)}
    return out


# ============================================================================ time to quality


def _test_set():
    from vaekit.data.datasets import load_dataset
    from vaekit.data.pipeline import fixed_transform

    ds = load_dataset("fashion-mnist")
    return fixed_transform(ds.test, "binarize", ds.levels, TEST_SEED)


def _test_neg_elbo(model, test) -> float:
    """Mean one-sample test -ELBO (analytic KL, fixed noise), nats/example, by elbo_terms."""
    from vaekit.evaluation.metrics import elbo_terms

    model.eval()
    value = -float(elbo_terms(model, test, 1000, seed=0)["elbo"].double().mean())
    model.train()
    return value


def _classic_config(latent: int = 20, hidden: int = 400, **extra: Any):
    """The classic MLP VAE's ModelConfig: 784-hidden-latent, ReLU, Bernoulli."""
    from vaekit.config import ModelConfig

    return ModelConfig(latent_dim=latent, arch={"name": "mlp", "hidden": [hidden]},
                       likelihood="bernoulli", **extra)


def _vaekit_classic(latent: int = 20, hidden: int = 400):
    from vaekit.models import build_model

    return build_model(_classic_config(latent, hidden, data_shape=[28, 28]))


def ttq_reference(epochs: int, limit: int = 0) -> dict[str, Any]:
    """The tensor-loop (b) trained ``epochs`` epochs; test -ELBO after each (timing training
    only), evaluated by copying its weights into a vaekit model of the same architecture."""
    import torch
    import torch.nn.functional as F
    from common import classic_vae, kld_sum

    torch.manual_seed(SEED)
    images = _train_images(limit).float().div(255).view(-1, D)
    test = _test_set()
    model = classic_vae().train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    twin = _vaekit_classic()
    batches = _tensor_batches(images)
    curve, train_s = [], 0.0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        for x in batches():
            opt.zero_grad()
            logits, mu, log_var = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            (loss + kld_sum(mu, log_var)).backward()
            opt.step()
        train_s += time.perf_counter() - t0
        twin.encoder.net.net.load_state_dict(model.enc.state_dict())
        twin.likelihood.decoder.net.load_state_dict(model.dec.state_dict())
        curve.append({"epoch": epoch, "train_seconds": round(train_s, 3),
                      "test_neg_elbo": round(_test_neg_elbo(twin, test), 4)})
    return {"curve": curve, "n_train": len(images)}


def ttq_vaekit(train_fields: dict[str, Any], limit: int = 0) -> dict[str, Any]:
    """vaekit's setup_run + fit with the given TrainConfig fields (batch size, lr,
    schedule...) and one callback that scores the fixed test set after every epoch, so the
    curve comes from fit's own loop (whatever schedule the preset adds) and its history
    'seconds' (training loop only: the callback's figures are taken after the clock stops)."""
    import dataclasses

    from vaekit.config import DataConfig, RunConfig, TrainConfig
    from vaekit.train import Callback, fit, setup_run

    test = _test_set()

    class TestELBO(Callback):
        def epoch_metrics(self, run):
            return {"test_neg_elbo": _test_neg_elbo(run.model, test)}

    cfg = RunConfig(data=DataConfig(name="fashion-mnist", val_fraction=0.0, limit=limit),
                    model=_classic_config(),
                    train=TrainConfig(**{"seed": SEED, "device": "cpu", **train_fields}))
    run = fit(setup_run(cfg), [TestELBO()])
    curve, train_s = [], 0.0
    for r in run.history:
        train_s += r["seconds"]
        curve.append({"epoch": r["epoch"], "train_seconds": round(train_s, 3),
                      "test_neg_elbo": round(r["test_neg_elbo"], 4)})
    return {"curve": curve, "n_train": len(run.data.train_raw),
            "train_config": dataclasses.asdict(cfg.train), "fast_path": run.fast_path}


def crossing(curve: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds where the curve first crosses ``target``, linear between epochs."""
    prev = None
    for row in curve:
        if row["test_neg_elbo"] <= target:
            if prev is None or prev["test_neg_elbo"] == row["test_neg_elbo"]:
                return row["train_seconds"]
            f = (prev["test_neg_elbo"] - target) / (prev["test_neg_elbo"] - row["test_neg_elbo"])
            return round(prev["train_seconds"]
                         + f * (row["train_seconds"] - prev["train_seconds"]), 3)
        prev = row
    return None


def first_reach(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    for row in curve:
        if row["test_neg_elbo"] <= target:
            return row
    return None


# ============================================================================ scaling, profile


def _vaekit_parts(latent: int, hidden: int, limit: int = 0, **train_fields: Any):
    """vaekit's building blocks from its public setup_run (fp32, batch 128, Adam 1e-3,
    unless ``train_fields`` of TrainConfig say otherwise): (run, step(batch), loader)."""
    from vaekit.config import DataConfig, RunConfig, TrainConfig
    from vaekit.train import setup_run

    cfg = RunConfig(DataConfig(val_fraction=0.0, limit=limit), _classic_config(latent, hidden),
                    TrainConfig(**{"batch_size": BATCH, "lr": LR, "seed": SEED,
                                   "device": "cpu", **train_fields}))
    run = setup_run(cfg)
    run.model.train()
    counter = itertools.count()

    def step(batch):
        return run.step(batch, next(counter))

    return run, step, run.loader


def _vaekit_before_parts(src: str, limit: int = 0):
    """The classic model trained by vaekit as of another commit (its ``vaekit/`` tree at
    ``src``), wired as that version's trainer wired it (make_step(model, opt, cfg, device)
    -> step(x, i), a BatchLoader of bare tensors). Its modules are imported under the name
    ``vaekit`` with this tree's modules set aside, then this tree's are put back: the objects
    built keep their own module globals."""
    import importlib
    import sys

    import torch

    def ours() -> dict[str, Any]:
        return {k: m for k, m in sys.modules.items() if k == "vaekit" or k.startswith("vaekit.")}

    saved = ours()
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, src)
    try:
        config, pipeline, models, trainer = (importlib.import_module(f"vaekit.{m}") for m in (
            "config", "data.pipeline", "models", "train.trainer"))  # the other tree's modules
        cfg = config.RunConfig(
            config.DataConfig(val_fraction=0.0, limit=limit),
            config.ModelConfig(latent_dim=L, hidden=[H], likelihood="bernoulli"),
            config.TrainConfig(batch_size=BATCH, lr=LR, seed=SEED, device="cpu"))
        data = pipeline.prepare_data(cfg.data, "bernoulli", SEED)
        cfg.model.data_shape = list(data.shape)
        torch.manual_seed(SEED)
        model = models.build_model(cfg.model).train()
        opt = trainer.make_optimizer(model, LR)
        raw_step = trainer.make_step(model, opt, cfg, torch.device("cpu"))
        loader = pipeline.BatchLoader(data.train_raw, data.transform, data.dataset.levels,
                                      BATCH, torch.Generator().manual_seed(SEED + 1))
    finally:
        sys.path.remove(src)
        for k in ours():
            del sys.modules[k]
        sys.modules.update(saved)
    counter = itertools.count()
    return loader.epoch, lambda x: raw_step(x, next(counter))


def bench_interleaved(names: list[str], cycles: int, chunk_steps: int, warmup: int,
                      limit: int = 0, extra_vaekit: dict[str, dict[str, Any]] | None = None,
                      before_src: str | None = None) -> dict[str, Any]:
    """All contenders in this one process, timed by turns (common.interleaved);
    ``extra_vaekit``: more vaekit variants, name -> TrainConfig fields; ``before_src``: the
    source tree of an earlier vaekit, timed as the contender ``vaekit-before``."""
    variants = {**VAEKIT_VARIANTS, **(extra_vaekit or {})}
    names = [*names, *(extra_vaekit or {}), *(["vaekit-before"] if before_src else [])]
    setups, skipped, fast = {}, {}, {}
    for name in names:
        if name == "vaekit-before":
            setups[name] = _vaekit_before_parts(before_src, limit)
        elif name == "pythae":
            try:
                setups[name] = setup_pythae(limit)
            except ImportError:
                skipped[name] = "pythae is not installed (pip install -e '.[bench]')"
        elif name in variants:
            run, step, loader = _vaekit_parts(L, H, limit, **variants[name])
            setups[name], fast[name] = (loader.epoch, step), run.fast_path
        else:
            setups[name] = {"pytorch-examples": setup_pytorch_examples,
                            "tensor-loop": setup_tensor_loop}[name](limit)
    return {"results": interleaved(setups, cycles, chunk_steps, warmup), "skipped": skipped,
            "fast_path": fast}


def bench_scaling(configs: list[dict[str, int]], cycles: int, chunk_steps: int,
                  warmup: int) -> dict[str, Any]:
    """vaekit images/s for each (latent, hidden, n_train), timed by turns (interleaved);
    ``n_train`` rows also give the seconds of one epoch at that rate."""
    setups = {}
    for i, c in enumerate(configs):
        _, step, loader = _vaekit_parts(c["latent"], c["hidden"], c.get("n_train", 0))
        setups[str(i)] = (loader.epoch, step)
    timed = interleaved(setups, cycles, chunk_steps, warmup)
    rows = []
    for i, c in enumerate(configs):
        r = timed[str(i)]
        flops = train_flops_per_image(D, c["hidden"], c["latent"])["train_step"]
        rows.append({**c, **r, "fastest_images_per_s": max(r["cycle_images_per_s"]),
                     "seconds_per_epoch": (round(c["n_train"] / r["images_per_s"], 3)
                                           if c.get("n_train") else None),
                     "train_gflops": round(r["images_per_s"] * flops / 1e9, 1)})
    return {"rows": rows}


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul",
              "aten::baddbmm", "aten::addmv", "aten::mv"}


def bench_profile(steps: int, warmup: int, repeats: int = 5) -> dict[str, Any]:
    """torch.profiler over ``steps`` vaekit steps (setup_run's step); self CPU time by
    category. Profiled ``repeats`` times: the quietest (lowest wall) profile is reported."""
    from torch.profiler import ProfilerActivity, profile

    run, step, loader = _vaekit_parts(20, 400)
    fused = run.fast_path == "on"

    def batches(n: int) -> list:
        epochs = (x for _ in itertools.count() for x in loader.epoch())
        return list(itertools.islice(epochs, n))

    for x in batches(warmup):
        step(x)
    loader_ms = math.inf
    for _ in range(3):  # whole epochs: shuffle + per-batch binarize; the fastest of 3
        t0 = time.perf_counter()
        n_batches = sum(1 for _ in loader.epoch())
        loader_ms = min(loader_ms, (time.perf_counter() - t0) * 1e3 / n_batches)
    xs = batches(steps)  # pre-drawn: the profile covers the optimizer step only
    plain, wall, prof = math.inf, math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in xs:
            step(x)
        plain = min(plain, time.perf_counter() - t0)
        with profile(activities=[ProfilerActivity.CPU]) as this:
            t0 = time.perf_counter()
            for x in xs:
                step(x)
            this_wall = time.perf_counter() - t0
        if this_wall < wall:
            wall, prof = this_wall, this
    cats = {"matmul": 0.0, "elementwise": 0.0, "optimizer": 0.0}
    autograd_self, per_op = 0.0, {}

    def under_optimizer(evt) -> bool:
        while evt is not None:
            if evt.name.startswith("Optimizer.step") or "_fused_adam" in evt.name \
                    or evt.name.startswith("aten::_foreach_"):
                return True
            evt = evt.cpu_parent
        return False

    for evt in prof.events():
        us = evt.self_cpu_time_total
        if under_optimizer(evt):
            cats["optimizer"] += us
        elif evt.name in MATMUL_OPS:
            cats["matmul"] += us
        elif evt.name.startswith("aten::"):
            cats["elementwise"] += us
        else:
            if evt.name.startswith("autograd::"):
                autograd_self += us
            continue
        per_op[evt.name] = per_op.get(evt.name, 0.0) + us
    wall_us = wall * 1e6
    cats["python_other"] = max(wall_us - sum(cats.values()), 0.0)
    pct = {k: round(100 * v / wall_us, 1) for k, v in cats.items()}
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
    return {"steps": steps, "hand_written_gradients": fused,
            "wall_s_profiled": round(wall, 3), "wall_s_unprofiled": round(plain, 3),
            "percent": pct, "ms_per_step": {k: round(v / 1e3 / steps, 3) for k, v in cats.items()},
            "autograd_engine_self_ms_per_step": round(autograd_self / 1e3 / steps, 3),
            "loader_ms_per_batch_not_profiled": round(loader_ms, 3),
            "top_ops_ms_per_step": {k: round(v / 1e3 / steps, 3) for k, v in top}}


# ============================================================================ driver


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run, < 1 minute")
    p.add_argument("--json", type=Path, default=None,
                   help="output JSON (default benchmarks/results/bench_train[_quick].json)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per contender")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS),
                   help=f"default: {' '.join(DEFAULT_SECTIONS)} (device: by name)")
    p.add_argument("--device", default="cpu",
                   help="device section: where to train (cpu, cuda, cuda:N; default cpu)")
    p.add_argument("--device-batches", nargs="+", type=int, default=[128, 4096],
                   help="device section: batch sizes (default 128 4096)")
    p.add_argument("--device-contenders", nargs="+", choices=DEVICE_CONTENDERS,
                   default=list(DEVICE_CONTENDERS),
                   help="device section: contenders (cudagraph: CUDA only)")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--epochs", type=int, default=1,
                   help="timed epochs per contender (vaekit: + 1 warm-up epoch)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps of contenders a-c")
    p.add_argument("--cycles", type=int, default=40,
                   help="interleaved: turns per contender (default 40)")
    p.add_argument("--chunk-steps", type=int, default=50,
                   help="interleaved: steps per contender per turn (default 50)")
    p.add_argument("--rounds", type=int, default=None,
                   help="throughput: run every contender this many times, interleaved "
                        "(default 3; 1 with --quick)")
    p.add_argument("--compile", action="store_true",
                   help="in --quick mode, also run vaekit-compile (skipped there by default)")
    p.add_argument("--before", metavar="GIT_REV", default=None,
                   help="interleaved: also time the classic model trained by vaekit as of this "
                        "git revision (contender vaekit-before), e.g. to show that a change "
                        "lost no speed")
    p.add_argument("--ttq-preset", default="fast",
                   help="vaekit.config.PRESETS entry of the time-to-quality run (default: fast)")
    p.add_argument("--ttq-batch-size", type=int, default=None, help="override the preset")
    p.add_argument("--ttq-lr", type=float, default=None, help="override the preset")
    p.add_argument("--ttq-epochs", type=int, default=None, help="override the preset")
    p.add_argument("--ttq-ref-epochs", type=int, default=10,
                   help="epochs of the reference whose final test -ELBO is the target")
    p.add_argument("--ttq-rounds", type=int, default=None,
                   help="repeat the time-to-quality runs, interleaved (default 3; 1 with --quick)")
    p.add_argument("--ttq-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra TrainConfig field of the vaekit preset (repeatable), "
                        "e.g. --ttq-set precision=bf16")
    return p.parse_args(argv)


def _literal(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def _throughput_jobs(a, q: bool) -> dict[str, tuple[Any, dict[str, Any]]]:
    steps = 40 if q else None
    epochs = None if q else a.epochs
    warmup = min(a.warmup, 5) if q else a.warmup
    limit = 6400 if q else 0  # vaekit, quick: 50 steps per epoch, 1 warm-up + 2 timed
    v_epochs = 3 if q else a.epochs + 1
    abc = {"warmup": warmup, "epochs": epochs, "steps": steps}
    vk = {"epochs": v_epochs, "limit": limit}
    return {
        "pytorch-examples": (bench_pytorch_examples, abc),
        "tensor-loop": (bench_tensor_loop, abc),
        "pythae": (bench_pythae, abc),
        **{name: (bench_vaekit, {**vk, **fields}) for name, fields in VAEKIT_VARIANTS.items()},
    }


def _merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's rounds -> median img/s over rounds, best, worst-case peak RSS."""
    ok = [r for r in runs if "images_per_s" in r]
    if not ok:
        return runs[-1]
    out = dict(ok[-1])
    out["round_images_per_s"] = [r["images_per_s"] for r in ok]
    out["images_per_s"] = median(out["round_images_per_s"])
    out["images_per_s_best"] = max(r.get("images_per_s_best", r["images_per_s"]) for r in ok)
    out["peak_rss_mb"] = max(r.get("train_peak_rss_mb", r["peak_rss_mb"]) for r in ok)
    return out


def _paired_ratio(rounds: list[dict[str, Any]], num: str, den: str) -> float | None:
    """Median over rounds of img/s(num) / img/s(den) measured in the same round: the two
    ran minutes apart at most, so a machine that drifts in speed cancels out."""
    pairs = [(r[num]["images_per_s"], r[den]["images_per_s"]) for r in rounds
             if "images_per_s" in r.get(num, {}) and "images_per_s" in r.get(den, {})]
    return paired_ratio(*zip(*pairs, strict=True)) if pairs else None


def run_interleaved(a, q: bool, rec: dict[str, Any]) -> None:
    names = [n for n in a.contenders if n != "vaekit-compile"]  # compiles for a minute
    cycles, chunk = (4, 10) if q else (a.cycles, a.chunk_steps)
    from vaekit.config import PRESETS

    # the time-to-quality preset too: its own batch size and schedule change the step
    extra = {f"vaekit-{a.ttq_preset}": PRESETS[a.ttq_preset]["train"]} if "vaekit" in names else {}
    before = [f"vaekit-before ({a.before})"] if a.before else []
    print(f"  interleaved: {', '.join([*names, *extra, *before])} ...", flush=True)
    with _source_tree(a.before) as src:
        out = isolated(bench_interleaved, a.threads, env=vaekit_env("vaekit"), names=names,
                       cycles=cycles, chunk_steps=chunk, warmup=a.warmup,
                       limit=6400 if q else 0, extra_vaekit=extra, before_src=src)
    rec["interleaved"] = out
    if "results" not in out:
        return
    if a.before:
        out["before_rev"] = a.before
    res, rows = out["results"], []
    cyc = {name: r["cycle_images_per_s"] for name, r in res.items()}
    for name, r in res.items():
        vaekit = name.startswith("vaekit")
        r["vaekit_over_this"] = (paired_ratio(cyc["vaekit"], cyc[name])
                                 if "vaekit" in cyc and not vaekit else None)
        r["vaekit_bf16_over_this"] = (paired_ratio(cyc["vaekit-bf16"], cyc[name])
                                      if "vaekit-bf16" in cyc and not vaekit else None)
        r["this_over_tensor_loop"] = (paired_ratio(cyc[name], cyc["tensor-loop"])
                                      if "tensor-loop" in cyc and vaekit else None)
        # a quiet machine: the fastest cycle of each (a busy host slows GEMM-bound code most)
        r["fastest_over_tensor_loop"] = (round(max(cyc[name]) / max(cyc["tensor-loop"]), 3)
                                         if "tensor-loop" in cyc and vaekit else None)
        r["vaekit_fastest_over_this"] = (round(max(cyc["vaekit"]) / max(cyc[name]), 3)
                                         if "vaekit" in cyc and not vaekit else None)
        rows.append([name, r["images_per_s"], min(cyc[name]), max(cyc[name]),
                     r["vaekit_over_this"], r["vaekit_bf16_over_this"],
                     r["this_over_tensor_loop"], r["vaekit_fastest_over_this"],
                     r["fastest_over_tensor_loop"]])
    rows += [[name, None, None, None, None, None, None, None, why]
             for name, why in out["skipped"].items()]
    print(table(["contender", "img/s (median)", "slowest cycle", "fastest cycle",
                 "vaekit/this", "vaekit-bf16/this", "this/tensor-loop",
                 "vaekit/this, fastest", "this/tensor-loop, fastest"], rows,
                f"\nTraining throughput, interleaved in one process ({cycles} cycles of {chunk} "
                "steps per contender; ratios = median of same-cycle ratios, and of the fastest "
                "cycles)", digits=2))
    if "vaekit-before" in cyc and "vaekit" in cyc:
        out["vaekit_over_before"] = paired_ratio(cyc["vaekit"], cyc["vaekit-before"])
        out["vaekit_over_before_fastest"] = round(max(cyc["vaekit"]) / max(cyc["vaekit-before"]),
                                                  3)
        print(f"  vaekit (this tree) / vaekit at {a.before}: {out['vaekit_over_before']:.3f} "
              f"(median of same-cycle ratios; fastest cycles "
              f"{out['vaekit_over_before_fastest']:.3f})")


@contextlib.contextmanager
def _source_tree(rev: str | None):
    """The ``vaekit/`` tree of git revision ``rev``, extracted into a temporary folder."""
    if rev is None:
        yield None
        return
    import subprocess

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "vaekit"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield tmp


def run_throughput(a, q: bool, rec: dict[str, Any]) -> dict[str, Any]:
    jobs = _throughput_jobs(a, q)
    names = list(a.contenders)
    if q and not a.compile and "vaekit-compile" in names:
        names.remove("vaekit-compile")
        print("  vaekit-compile: skipped in --quick (pass --compile)")
    rounds: list[dict[str, Any]] = []
    for k in range(a.rounds):
        order = names[k % len(names):] + names[: k % len(names)]  # rotate the order
        rounds.append({})
        for name in order:
            fn, kw = jobs[name]
            print(f"  round {k + 1}/{a.rounds}: {name} ...", flush=True)
            rounds[-1][name] = isolated(fn, a.threads, env=vaekit_env(name), **kw)
    res = {name: _merge_rounds([r[name] for r in rounds]) for name in names}
    if "vaekit-compile" in a.contenders and "vaekit-compile" not in names:
        res["vaekit-compile"] = {"skipped": "torch.compile takes ~a minute: pass --compile"}
    rec["throughput"] = res
    rows = []
    for name, r in res.items():
        if "images_per_s" not in r:
            rows.append([name, None, None, None, None, None, None, None,
                         r.get("skipped") or r.get("error")])
            continue
        vaekit = name.startswith("vaekit")
        r["vaekit_fp32_over_this"] = None if vaekit else _paired_ratio(rounds, "vaekit", name)
        r["this_over_tensor_loop"] = (_paired_ratio(rounds, name, "tensor-loop")
                                      if vaekit else None)
        rows.append([name, r["images_per_s"], r.get("images_per_s_best"),
                     " / ".join(f"{v:,.0f}" for v in r["round_images_per_s"]),
                     r["peak_rss_mb"], r["vaekit_fp32_over_this"], r["this_over_tensor_loop"],
                     r.get("test_neg_elbo"), r.get("notes", "")])
    print(table(["contender", "img/s (median)", "best", "per round", "peak RSS MB",
                 "vaekit/this", "this/tensor-loop", "test -ELBO", "notes"], rows,
                f"\nTraining throughput (fp32 unless named; images/second; {a.rounds} "
                "interleaved round(s), ratios = median of same-round ratios)", digits=2))
    for name, r in res.items():
        if name.startswith("vaekit") and r.get("epoch_seconds"):
            print(f"  {name}: last round's epoch seconds {r['epoch_seconds']} (first epoch ="
                  f" warm-up{', includes compilation' if 'compile' in name else ''})")
    return res


def run_matmul(a, q: bool, rec: dict[str, Any]) -> None:
    print("  matmul ...", flush=True)
    mm = isolated(bench_matmul, a.threads, batch=BATCH, seconds_per_shape=0.05 if q else 0.3)
    rec["matmul"] = mm
    if "error" in mm:
        return
    flops = train_flops_per_image()
    rows = [[f"{r['layer']} {r['op']}", r["shape"], r["gflops"], b["gflops"]]
            for r, b in zip(mm["fp32"]["per_shape"], mm["bf16"]["per_shape"], strict=True)]
    rows.append(["aggregate (FLOP-weighted)", "", mm["fp32"]["aggregate_gflops"],
                 mm["bf16"]["aggregate_gflops"]])
    print(table(["matmul", "shape", "fp32 GFLOP/s", "bf16 GFLOP/s"], rows,
                f"\nMatmul throughput, batch {BATCH} ({flops['train_step'] / 1e6:.2f} MFLOP per"
                " image per training step)"))
    ceil = {}
    for key, contender in (("fp32", "vaekit"), ("bf16", "vaekit-bf16")):
        c = mm[key]["aggregate_gflops"] * 1e9 / flops["train_step"]
        got = _fastest(rec, contender)  # the matmul rates are best-of-5 too: like for like
        ceil[key] = {"ceiling_images_per_s": round(c, 1), "vaekit": got,
                     "fraction": round(got / c, 3) if got else None}
    rec["ceiling"] = {"flops_per_image": flops, **ceil}
    print(table(["precision", "matmul-bound ceiling img/s", "vaekit img/s (fastest)",
                 "fraction"], [[k, v["ceiling_images_per_s"], v["vaekit"], v["fraction"]]
                               for k, v in ceil.items()], "", digits=2))


def _fastest(rec: dict[str, Any], contender: str) -> float | None:
    """A contender's fastest measured images/s: interleaved cycle, else isolated run."""
    cyc = rec.get("interleaved", {}).get("results", {}).get(contender, {})
    if cyc.get("cycle_images_per_s"):
        return max(cyc["cycle_images_per_s"])
    return rec.get("throughput", {}).get(contender, {}).get("images_per_s_best")


def _ttq_runs(a, q: bool, ref_epochs: int) -> dict[str, dict[str, Any]]:
    """name -> TrainConfig fields: vaekit with the reference's own settings, and the preset."""
    from vaekit.config import PRESETS

    same = {"epochs": ref_epochs, "batch_size": BATCH, "lr": LR}
    preset = dict(PRESETS[a.ttq_preset]["train"])
    for key, value in (("batch_size", a.ttq_batch_size), ("lr", a.ttq_lr),
                       ("epochs", a.ttq_epochs)):
        if value is not None:
            preset[key] = value
    preset.update({k: _literal(v) for k, v in (kv.split("=", 1) for kv in a.ttq_set)})
    if q:  # smoke run: 2 epochs of each
        same["epochs"] = preset["epochs"] = 2
    return {"vaekit, reference settings": same, f"vaekit, preset {a.ttq_preset}": preset}


def _ttq_summary(name: str, curve: list[dict[str, Any]], target: float,
                 hit_ref: dict[str, Any] | None) -> dict[str, Any]:
    hit = first_reach(curve, target)
    out = {"epoch": hit["epoch"] if hit else None,
           "seconds": hit["train_seconds"] if hit else None,
           "seconds_interpolated": crossing(curve, target),
           "speedup": (round(hit_ref["train_seconds"] / hit["train_seconds"], 3)
                       if hit and hit_ref else None)}
    if hit and hit_ref:
        print(f"  {name}: reached it at epoch {hit['epoch']} after {hit['train_seconds']:.1f} s"
              f" of training (interpolated {out['seconds_interpolated']:.1f} s) vs "
              f"{hit_ref['train_seconds']:.1f} s: speed-up {out['speedup']:.2f}x")
    else:
        best = min(r["test_neg_elbo"] for r in curve)
        print(f"  {name}: did not reach it in {len(curve)} epochs (best {best:.3f})")
    return out


def _median_curve(curves: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], float]:
    """One run repeated: its curve with the median cumulative training time per epoch over
    the rounds, and the largest difference of test -ELBO between rounds (same seed: ~0)."""
    out, spread = [], 0.0
    for rows in zip(*curves, strict=True):
        vals = [r["test_neg_elbo"] for r in rows]
        spread = max(spread, max(vals) - min(vals))
        out.append({**rows[0], "train_seconds": median([r["train_seconds"] for r in rows]),
                    "round_train_seconds": [r["train_seconds"] for r in rows]})
    return out, round(spread, 6)


def run_ttq(a, q: bool, rec: dict[str, Any]) -> None:
    limit = 3000 if q else 0
    ref_epochs = 2 if q else a.ttq_ref_epochs
    runs = _ttq_runs(a, q, ref_epochs)
    jobs = {"reference": (ttq_reference, {"epochs": ref_epochs, "limit": limit}, None)}
    jobs |= {name: (ttq_vaekit, {"train_fields": fields, "limit": limit}, vaekit_env("vaekit"))
             for name, fields in runs.items()}
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in jobs}
    names = list(jobs)
    for k in range(a.ttq_rounds):
        for name in names[k % len(names):] + names[: k % len(names)]:
            print(f"  time-to-quality, round {k + 1}/{a.ttq_rounds}: {name} ...", flush=True)
            fn, kw, env = jobs[name]
            raw[name].append(isolated(fn, a.threads, env=env, **kw))
    out: dict[str, Any] = {"rounds": raw, "settings": runs, "preset_name": a.ttq_preset}
    rec["time_to_quality"] = out
    if not all("curve" in r for rs in raw.values() for r in rs):
        return
    curves, spread = {}, {}
    for name, rs in raw.items():
        curves[name], spread[name] = _median_curve([r["curve"] for r in rs])
    out["curves"], out["test_neg_elbo_spread_between_rounds"] = curves, spread
    target = curves["reference"][-1]["test_neg_elbo"]
    hit_ref = first_reach(curves["reference"], target)
    out["target_test_neg_elbo"] = target
    out["reference_seconds"] = hit_ref["train_seconds"] if hit_ref else None
    n = max(len(c) for c in curves.values())
    rows = []
    for i in range(n):
        row: list[Any] = [i + 1]
        for c in curves.values():
            row += [c[i]["train_seconds"], c[i]["test_neg_elbo"]] if i < len(c) else [None] * 2
        rows.append(row)
    heads = ["epoch"] + [f"{k} {w}" for k in curves for w in ("train s", "test -ELBO")]
    print(table(heads, rows, f"\nTime to quality: target = reference's epoch-{ref_epochs} test "
                f"-ELBO {target:.3f} nats; training seconds = median of {a.ttq_rounds} "
                f"interleaved round(s); settings {runs}", digits=3))
    out["summary"] = {name: _ttq_summary(name, curves[name], target, hit_ref) for name in runs}
    est = _ttq_from_interleaved(rec, a.ttq_preset, hit_ref,
                                first_reach(curves[f"vaekit, preset {a.ttq_preset}"], target))
    if est:
        out["estimate_from_interleaved"] = est
        print(f"  preset {a.ttq_preset} from the interleaved throughput: {est['epoch_ratio']:.2f}"
              f" x fewer epochs x {est['speed_ratio']:.2f} images/s ratio = "
              f"{est['speedup']:.2f}x (fastest turns: {est['speedup_fastest']:.2f}x)")


def _ttq_from_interleaved(rec: dict[str, Any], preset: str, hit_ref: dict[str, Any] | None,
                          hit: dict[str, Any] | None) -> dict[str, Any] | None:
    """Time-to-quality speed-up with the times taken from the interleaved section: (reference
    epochs / preset epochs) x (preset's images/s / tensor-loop's, same-turn median), robust
    to a host whose speed drifts during the long runs above."""
    cyc = {k: v["cycle_images_per_s"]
           for k, v in rec.get("interleaved", {}).get("results", {}).items()}
    name = f"vaekit-{preset}"
    if not (hit_ref and hit and name in cyc and "tensor-loop" in cyc):
        return None
    epochs = hit_ref["epoch"] / hit["epoch"]
    speed = paired_ratio(cyc[name], cyc["tensor-loop"])
    fastest = max(cyc[name]) / max(cyc["tensor-loop"])
    return {"epoch_ratio": round(epochs, 3), "speed_ratio": speed,
            "speedup": round(epochs * speed, 3), "speedup_fastest": round(epochs * fastest, 3)}


def run_scaling(a, q: bool, rec: dict[str, Any]) -> None:
    configs = ([{"latent": lat, "hidden": 400} for lat in (2, 20, 64)]
               + [{"latent": 20, "hidden": h} for h in (200, 800)]
               + [{"latent": 20, "hidden": 400, "n_train": n} for n in (6000, 60000)])
    if q:
        configs = [c for c in configs if c.get("n_train", 6000) == 6000]
    print("  scaling ...", flush=True)
    cycles, chunk = (3, 10) if q else (15, 40)
    sc = isolated(bench_scaling, a.threads, env=vaekit_env("vaekit"), configs=configs,
                  cycles=cycles, chunk_steps=chunk, warmup=5 if q else 20)
    rec["scaling"] = sc
    if "rows" not in sc:
        return
    rows = [[r["latent"], r["hidden"], r.get("n_train") or "-", r["images_per_s"],
             r["fastest_images_per_s"], r.get("seconds_per_epoch"), r["train_gflops"]]
            for r in sc["rows"]]
    print(table(["latent", "hidden", "train set", "img/s (median)", "img/s (fastest)",
                 "s/epoch", "matmul GFLOP/s"], rows,
                f"\nvaekit scaling (fp32, batch 128; interleaved, {cycles} cycles of {chunk} "
                "steps)", digits=2))


def run_profile(a, q: bool, rec: dict[str, Any]) -> None:
    print("  profile ...", flush=True)
    pr = isolated(bench_profile, a.threads, env=vaekit_env("vaekit"), steps=30 if q else 100,
                  warmup=5 if q else 20)
    rec["profile"] = pr
    if "percent" not in pr:
        return
    rows = [[k, pr["ms_per_step"][k], pr["percent"][k]] for k in pr["percent"]]
    print(table(["category", "ms/step", "% of wall"], rows,
                f"\nProfile of {pr['steps']} vaekit steps ("
                f"{'hand-written' if pr['hand_written_gradients'] else 'autograd'} gradients;"
                f" the quietest of 5 profiles: wall {pr['wall_s_profiled']} s profiled, "
                f"{pr['wall_s_unprofiled']} s without the profiler)", digits=3))
    print(f"  (autograd engine node overhead, inside python/other: "
          f"{pr['autograd_engine_self_ms_per_step']} ms/step; BatchLoader, not profiled: "
          f"{pr['loader_ms_per_batch_not_profiled']} ms/batch over a whole epoch)")
    print(table(["op", "self ms/step"], list(pr["top_ops_ms_per_step"].items()),
                "  top ops", digits=3))


# ============================================================================ device


def bench_device_loop(device: str, batch: int, epochs: int, graph: bool = False,
                      limit: int = 0) -> dict[str, Any]:
    """The plain PyTorch loop of contender (b) on ``device`` with the whole (binarized on
    the fly) dataset there; ``graph``: one training step (binarize, forward, backward,
    capturable Adam) captured in a CUDA graph and replayed per batch (full batches only).
    Timed per epoch between host syncs; the first epoch is a warm-up."""
    import torch
    import torch.nn.functional as F
    from common import classic_vae, kld_sum

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(SEED)
    images = _train_images(limit).to(dev).float().div(255).view(-1, D)
    model = classic_vae().to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=LR, capturable=graph)
    static = torch.zeros(batch, D, device=dev)

    def step(u: torch.Tensor) -> torch.Tensor:
        x = torch.bernoulli(u)
        logits, mu, log_var = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        loss = (loss + kld_sum(mu, log_var)) / len(x)
        opt.zero_grad(set_to_none=not graph)
        loss.backward()
        opt.step()
        return loss.detach()

    run = step
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: Adam state, cuBLAS
            for _ in range(3):
                step(static)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_loss = step(static)

        def run(u: torch.Tensor) -> torch.Tensor:
            static.copy_(u)
            g.replay()
            return static_loss

    n_full = len(images) // batch * batch if graph else len(images)
    seconds = []
    for _ in range(epochs + 1):
        perm = torch.randperm(len(images), device=dev)[:n_full]
        sync()
        t0 = time.perf_counter()
        for i in range(0, n_full, batch):
            loss = run(images[perm[i : i + batch]])
        sync()
        seconds.append(time.perf_counter() - t0)
    rates = [n_full / t for t in seconds[1:]]
    return {"images_per_s": median(rates), "images_per_s_best": max(rates),
            "epoch_seconds": [round(t, 4) for t in seconds], "final_loss": float(loss),
            "device": str(dev), "batch_size": batch,
            "notes": "CUDA graph of the whole step" if graph else "eager loop, data on device"}


def run_device(a, q: bool, rec: dict[str, Any]) -> dict[str, Any]:
    """Each contender x batch size in its own process on ``--device``."""
    import torch

    cuda = a.device.startswith("cuda")
    info: dict[str, Any] = {"device": a.device}
    if cuda and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(a.device))
    epochs, limit = (2, 6400) if q else (max(a.epochs, 3), 0)
    res: dict[str, Any] = {}
    for batch in a.device_batches:
        for name in a.device_contenders:
            key = f"{name} b{batch}"
            if name == "tensor-loop-cudagraph" and not cuda:
                res[key] = {"skipped": "CUDA graphs need --device cuda"}
                continue
            print(f"  device {a.device}: {key} ...", flush=True)
            if name.startswith("tensor-loop"):
                out = isolated(bench_device_loop, a.threads, device=a.device, batch=batch,
                               epochs=epochs, graph=name.endswith("cudagraph"), limit=limit)
            else:  # + 1 warm-up epoch (compilation, cuBLAS, allocator)
                out = isolated(bench_vaekit, a.threads, env=vaekit_env(name), epochs=epochs + 1,
                               limit=limit, device=a.device, batch_size=batch,
                               **VAEKIT_VARIANTS[name])
            res[key] = out
    rec["device"] = {**info, "results": res}
    rows = [[k, r.get("images_per_s"), r.get("images_per_s_best"), r.get("test_neg_elbo"),
             r.get("fast_path") or r.get("notes") or r.get("skipped") or r.get("error", "")]
            for k, r in res.items()]
    print(table(["contender", "img/s (median)", "best", "test -ELBO", "notes"], rows,
                f"\nTraining throughput on {info.get('device_name', a.device)} (whole "
                f"dataset on the device; {epochs} timed epochs after 1 warm-up)", digits=0))
    return res


def main(argv=None) -> None:
    a = parse_args(argv)
    # bf16 is timed on purpose, also on a CPU where vaekit refuses it as too slow
    os.environ.setdefault("VAEKIT_ALLOW_SLOW_BF16", "1")
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.ttq_rounds = a.ttq_rounds or (1 if q else 3)
    rec: dict[str, Any] = {"benchmark": "bench_train", "quick": q,
                           "machine": machine_info(a.threads)}
    from common import busy_warning, default_json

    busy_warning(rec["machine"])
    t0 = time.perf_counter()
    runners = {"interleaved": run_interleaved, "throughput": run_throughput,
               "matmul": run_matmul, "ttq": run_ttq, "scaling": run_scaling,
               "profile": run_profile, "device": run_device}
    for name in SECTIONS:
        if name in a.sections:
            runners[name](a, q, rec)
    rec["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {rec['total_seconds']} s{' (quick)' if q else ''}")
    name = "bench_train" + ("" if a.device == "cpu" else "_" + a.device.replace(":", ""))
    write_json(a.json or default_json(name + ("_quick" if q else "")), rec)


if __name__ == "__main__":
    main()
