"""One optimizer step: the registered objective through autograd, or the fast path where
it applies; Adam with an optional warm-up and a schedule:

    lr_t = lr (t+1)/warmup  for t < warmup,  then lr  or  lr (1 + cos(pi progress)) / 2
           or (burda) lr 10^(-i/7) in stage i, the 3^i epochs from (3^i - 1)/2 on
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import RunConfig
from vaekit.data.batch import Batch
from vaekit.registry import OBJECTIVES
from vaekit.runtime import check_precision
from vaekit.train.fast import AdamStep, fast_elbo

Step = Callable[[Batch, int], torch.Tensor]  # step(batch, global step) -> detached loss


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """One group at ``lr``, and one for the likelihood's own variance parameters when it
    asks for a learning rate of their own (``noise_lr``: constant, no schedule)."""
    likelihood = getattr(model, "likelihood", None)
    noise_lr = getattr(likelihood, "noise_lr", None)
    noise = list(likelihood.noise_parameters()) if noise_lr else []
    rest = [p for p in model.parameters() if all(p is not q for q in noise)]
    groups = [{"params": rest, "lr": lr}]
    if noise:
        groups.append({"params": noise, "lr": noise_lr, "constant_lr": True})
    return groups


def make_optimizer(model: nn.Module, lr: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam with the fused single-kernel update where this torch build has it."""
    try:
        return torch.optim.Adam(param_groups(model, lr), lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(param_groups(model, lr), lr=lr, eps=eps, foreach=True)


def warmup_steps(cfg: RunConfig, total_steps: int) -> int:
    """The learning-rate warm-up in steps: ``warmup_steps``, or ``warmup_fraction`` of the
    run's ``total_steps``."""
    t = cfg.train
    return t.warmup_steps or round(t.warmup_fraction * total_steps)


def lr_at(step: int, total_steps: int, cfg: RunConfig) -> float:
    """Learning rate at a global step: linear warm-up, then constant or cosine decay to 0
    at ``total_steps`` (no decay when ``total_steps`` is unknown, i.e. <= warm-up)."""
    t, warm = cfg.train, warmup_steps(cfg, total_steps)
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.lr_schedule == "burda" and total_steps > 0:
        return t.lr * 10 ** (-burda_stage(step // max(1, total_steps // max(1, t.epochs))) / 7)
    if t.lr_schedule == "cosine" and total_steps > warm:
        progress = (step - warm) / max(1, total_steps - warm)
        return t.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return t.lr


def burda_stage(epoch: int) -> int:
    """Stage i of Burda et al.'s schedule holds the 3^i epochs from (3^i - 1) / 2 on."""
    stage = 0
    while (3 ** (stage + 1) - 1) // 2 <= epoch:
        stage += 1
    return stage


def beta_at(step: int, cfg: RunConfig) -> float:
    """The KL weight at a global step: beta (step + 1) / N over the first N =
    ``beta_warmup_steps`` steps (KL annealing), then beta."""
    t = cfg.train
    if step < t.beta_warmup_steps:
        return t.beta * (step + 1) / t.beta_warmup_steps
    return t.beta


def schedule_notes(cfg: RunConfig, total_steps: int) -> list[str]:
    """Warnings about schedules that cannot complete within the run's steps."""
    t, warm, notes = cfg.train, warmup_steps(cfg, total_steps), []
    if warm >= total_steps > 0:
        notes.append(f"WARNING: the learning-rate warm-up ({warm} steps) does not finish in "
                     f"the run's {total_steps} steps: the peak lr {t.lr} is never reached "
                     "(use --warmup-fraction, or fewer warm-up steps)")
    if t.beta_warmup_steps >= total_steps > 0:
        notes.append(f"WARNING: the KL warm-up ({t.beta_warmup_steps} steps) does not finish in "
                     f"the run's {total_steps} steps: beta never reaches {t.beta}")
    return notes


def loss_fn(model: nn.Module, batch: Batch, cfg: RunConfig,
            beta: float | None = None) -> torch.Tensor:
    """The registered objective's loss: negative objective, mean over the batch (nats);
    ``beta`` (default: the config's) weights the KL."""
    beta = cfg.train.beta if beta is None else beta
    return OBJECTIVES.build(cfg.train.objective, model, batch, beta)


def make_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: RunConfig,
              device: torch.device, total_steps: int = 0,
              world_size: int = 1) -> tuple[Step, str]:
    """(``step(batch, i)``: one optimizer step at global step i returning the detached loss
    without a host sync, and the fast-path status ``"on"`` / ``"off (<reason>)"``)."""
    t = cfg.train
    check_precision(t.precision, device)  # bf16 only where it is supported and not slow
    loss_of = torch.compile(loss_fn) if t.compile else loss_fn
    params = list(model.parameters())
    scheduled = t.lr_schedule != "constant" or warmup_steps(cfg, total_steps) > 0
    fast, status = fast_elbo(model, cfg, world_size)
    adam_step = AdamStep(opt)  # opt.step() without its per-step Python bookkeeping
    # data parallel: DDP all-reduces the gradients during backward (see LossModule)
    ddp = distributed.wrap(model, lambda m, b, beta: loss_of(m, b, cfg, beta), device) \
        if world_size > 1 else None

    def step(batch: Batch, i: int) -> torch.Tensor:
        if scheduled:
            for group in opt.param_groups:
                if not group.get("constant_lr"):  # lr_scale: halved by each roll-back
                    group["lr"] = lr_at(i, total_steps, cfg) * group.get("lr_scale", 1.0)
        beta = beta_at(i, cfg)
        if fast is not None:
            loss = shown = fast(batch, beta)  # writes every p.grad: no zero_grad, no graph
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=t.precision == "bf16"):
                # compiled: beta as a tensor, or every new value would recompile
                b = torch.tensor(beta) if t.compile else beta
                if ddp is None:
                    loss = shown = loss_of(model, batch, cfg, b)
                else:  # shown: this rank's mean loss; loss: scaled for DDP's gradient mean
                    loss, shown = ddp(batch, b, batch.total or len(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        adam_step()
        return shown.detach()

    return step, status
