"""The training loop: Adam on the negative ELBO (or IWAE bound), validation every epoch,
exact resume from the last checkpoint.

    for epoch:  for batch:  loss = -mean_b objective(model, x_b);  Adam step
                validate (ELBO on the held-out split);  log;  checkpoint
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit.config import RunConfig
from vaekit.data.pipeline import BatchLoader, PreparedData, prepare_data
from vaekit.errors import CheckpointError, ConfigError
from vaekit.evaluation.metrics import elbo_terms, to_bits_per_dim
from vaekit.models import build_model
from vaekit.models.vae import VAE
from vaekit.objectives import elbo, elbo_loss, iwae_bound
from vaekit.train.checkpoint import (
    checkpoint_dir,
    load_trainer_state,
    load_weights,
    save_checkpoint,
)
from vaekit.train.fused import FusedELBO
from vaekit.train.fused import supports as fused_supports
from vaekit.train.optim import AdamStep, make_optimizer


@dataclass
class TrainResult:
    run_dir: Path
    model: VAE
    data: PreparedData
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a missing GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available",
                          "use --device cpu (or auto)")
    return device


def loss_fn(model: VAE, x: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    """Negative objective, mean over the batch (nats per example)."""
    t = cfg.train
    if t.objective == "iwae":
        return -iwae_bound(model, x, t.iwae_k).mean()
    if t.kl == "analytic":
        return elbo_loss(model, x, beta=t.beta)  # fused fast path, same math as elbo()
    return -elbo(model, x, beta=t.beta, kl=t.kl).value.mean()


def lr_at(step: int, total_steps: int, cfg: RunConfig) -> float:
    """Learning rate at a global step: linear warm-up, then constant or cosine decay to 0
    at ``total_steps`` (no decay when ``total_steps`` is unknown, i.e. <= warm-up)."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "cosine" and total_steps > t.warmup_steps:
        progress = (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps)
        return t.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return t.lr


def use_fused(model: VAE, cfg: RunConfig) -> bool:
    """The hand-written gradient path applies: ReLU-MLP VAE, ELBO, analytic KL, no compile
    (fp32, or bf16 matmuls)."""
    t = cfg.train
    return (t.fused and t.objective == "elbo" and t.kl == "analytic" and not t.compile
            and fused_supports(model))


def make_step(model: VAE, opt: torch.optim.Optimizer, cfg: RunConfig, device: torch.device,
              total_steps: int = 0) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``step(x, i)``: one optimizer step on batch x at global step i; returns the detached
    loss (no host sync)."""
    t = cfg.train
    loss_of = torch.compile(loss_fn) if t.compile else loss_fn
    params = list(model.parameters())
    scheduled = t.lr_schedule != "constant" or t.warmup_steps > 0
    matmul_dtype = torch.bfloat16 if t.precision == "bf16" else torch.float32
    fused = FusedELBO(model, matmul_dtype) if use_fused(model, cfg) else None
    adam_step = AdamStep(opt)  # opt.step() without its per-step Python bookkeeping

    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        if scheduled:
            for group in opt.param_groups:
                group["lr"] = lr_at(i, total_steps, cfg)
        if fused is not None:
            loss = fused(x, t.beta)  # writes every p.grad: no zero_grad, no autograd graph
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=t.precision == "bf16"):
                loss = loss_of(model, x, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        adam_step()
        return loss.detach()

    return step


def train_epoch(model: VAE, step: Callable[[torch.Tensor, int], torch.Tensor],
                loader: BatchLoader, counters: dict[str, Any], bar: tqdm,
                on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """One pass over the (remaining) training data, advancing ``counters["step"]``.

    Returns the summed loss as a device tensor: no host sync per step (the live loss in the
    progress bar syncs once every 50 steps, and only when the bar is shown).
    """
    model.train()
    total = torch.zeros((), device=loader.raw.device)
    for x in loader.epoch():
        loss = step(x, counters["step"])
        counters["step"] += 1
        total += loss.float() * len(x)
        bar.update(1)
        if not bar.disable and counters["step"] % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.2f}")
        if on_step is not None:
            on_step(counters["step"])
    return total


def validate(model: VAE, data: PreparedData, cfg: RunConfig) -> dict[str, float]:
    """Mean validation ELBO (nats/example, and bits/dim when they apply)."""
    if len(data.val) == 0:
        return {}
    model.eval()
    v = elbo_terms(model, data.val, cfg.train.eval_batch_size, seed=cfg.data.eval_seed)
    val_elbo = float(v["elbo"].double().mean())
    out = {"val_elbo": val_elbo, "val_kl": float(v["kl"].double().mean())}
    bpd = to_bits_per_dim(-val_elbo, data.bpd_offset, data.dim)
    if bpd is not None:
        out["val_bpd"] = bpd
    return out


def _states(loader: BatchLoader, device: torch.device) -> dict[str, torch.Tensor]:
    states = {"torch_rng": torch.get_rng_state(), "loader_epoch": loader.epoch_state,
              "loader_now": loader.generator.get_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def _restore(run_dir: Path, model: VAE, opt: torch.optim.Optimizer, loader: BatchLoader,
             device: torch.device) -> dict[str, Any]:
    ckpt = checkpoint_dir(run_dir)
    load_weights(model, ckpt)
    counters, opt_sd, states = load_trainer_state(ckpt)
    opt.load_state_dict(opt_sd)
    torch.set_rng_state(states["torch_rng"])
    if "cuda_rng" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda_rng"], device)
    loader.load_state_dict({"epoch_state": states["loader_epoch"], "state": states["loader_now"],
                            "step": counters["step_in_epoch"]})
    return counters


def _write_logs(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl and metrics.csv, rewritten from the history (robust to resume)."""
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    keys = list(dict.fromkeys(k for r in history for k in r))
    rows = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")


def prepare_run_dir(run_dir: Path) -> None:
    """A new run needs a new or empty directory: nothing is ever overwritten."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise CheckpointError(f"run directory {run_dir} already exists and is not empty",
                              f"choose a new --out, or continue it with --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          checkpoint_every: int = 0,
          on_epoch: Callable[[dict[str, Any], VAE], None] | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (new), or continue the run saved there (``resume``).

    ``progress`` shows a progress bar and one line per epoch; ``checkpoint_every`` > 0 also
    checkpoints every that many steps inside an epoch; ``on_epoch(row, model)`` is called
    after each epoch's validation and checkpoint (e.g. to evaluate or stop early).
    """
    run_dir = Path(run_dir)
    cfg.validate()
    device = resolve_device(cfg.train.device)
    data = prepare_data(cfg.data, cfg.model.likelihood, cfg.train.seed).to(device)
    cfg.model.data_shape = list(data.shape)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device)
    opt = make_optimizer(model, cfg.train.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
    loader = BatchLoader(data.train_raw, data.transform, data.dataset.levels,
                         cfg.train.batch_size, gen)
    step = make_step(model, opt, cfg, device, total_steps=cfg.train.epochs * len(loader))
    counters: dict[str, Any] = {"epoch": 0, "step": 0, "step_in_epoch": 0, "history": []}
    if resume:
        counters = _restore(run_dir, model, opt, loader, device)
        cfg.save(run_dir / "config.json")  # the checkpoint loaded: record e.g. raised epochs
    else:
        prepare_run_dir(run_dir)
        cfg.save(run_dir / "config.json")
    history: list[dict[str, Any]] = counters["history"]

    def checkpoint(epoch: int) -> None:
        save_checkpoint(run_dir, model, opt, {"epoch": epoch, "step": counters["step"],
                                              "history": history, "step_in_epoch": loader.step},
                        _states(loader, device))

    def on_step(n: int) -> None:  # mid-epoch checkpoints (epoch ends are saved below)
        if n % checkpoint_every == 0 and loader.step < len(loader):
            checkpoint(counters["epoch"])

    with tqdm(total=cfg.train.epochs * len(loader), initial=counters["step"],
              disable=not progress, desc="train", unit="step", mininterval=0.5) as bar:
        for epoch in range(counters["epoch"], cfg.train.epochs):
            t0, n_seen = time.perf_counter(), len(data.train_raw) - loader.step * loader.batch_size
            total = train_epoch(model, step, loader, counters, bar,
                                on_step if checkpoint_every else None)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "step": counters["step"],
                   "train_loss": float(total) / max(n_seen, 1), "seconds": round(seconds, 3),
                   "images_per_s": round(n_seen / seconds, 1),
                   **validate(model, data, cfg), **model.likelihood.extra_metrics()}
            if not math.isfinite(row["train_loss"]):
                raise ConfigError(f"training diverged at epoch {epoch + 1} (loss is not finite)",
                                  "lower --lr or use a fixed-variance likelihood")
            history.append(row)
            counters["epoch"] = epoch + 1
            checkpoint(epoch + 1)
            _write_logs(run_dir, history)
            if progress:
                bar.write(epoch_line(row, cfg.train.epochs))
            if on_epoch is not None:
                on_epoch(row, model)
    return TrainResult(run_dir, model.eval(), data, history)


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (f"epoch {row['epoch']}/{epochs}: train -ELBO {row['train_loss']:.2f} nats/example"
            f" ({row['images_per_s']:.0f} img/s)")
    if "val_elbo" in row:
        line += f", val -ELBO {-row['val_elbo']:.2f} nats/example"
        if "val_bpd" in row:
            line += f" ({row['val_bpd']:.4f} bits/dim)"
    return line
