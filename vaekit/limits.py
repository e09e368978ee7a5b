"""Sizes checked before anything is allocated, against this machine's memory.

The checks take the model built on PyTorch's ``meta`` device (``vaekit.models.meta_model``),
which records shapes and allocates nothing, so ``--hidden 2000000000`` is refused in
milliseconds with the number instead of exhausting memory. Activations are counted with the
one memory model of :mod:`vaekit.numerics` (``pair_bytes``: the bytes a decoder pass holds
per (sample, example) pair), the same that sizes the log p(x) estimators' chunks.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from vaekit import numerics
from vaekit.errors import ConfigError


def memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (a GPU's, or the machine's RAM), None if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AttributeError):
        return None


def human(n: float) -> str:
    """Bytes as e.g. ``12.3 GB``."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"


def check_fits(need: float, what: str, fix: str, device: torch.device) -> None:
    """Refuse ``what`` when its ``need`` (bytes) exceeds the memory of ``device``."""
    total = memory_bytes(device)
    if total is not None and need > total:
        where = "this GPU" if device.type == "cuda" else "this machine"
        raise ConfigError(f"{what} needs at least {human(need)}, more than the {human(total)} "
                          f"of memory of {where}", fix)


def pair_bytes(model: nn.Module) -> int:
    """Bytes a decoder pass holds per (sample, example) pair (:func:`numerics.pair_bytes`
    of the model's data size, latent size and the widths of its decoder's dense layers)."""
    likelihood = getattr(model, "likelihood", None)
    decoder = getattr(likelihood, "decoder", None)
    widths = sum(m.out_features for m in decoder.modules()
                 if isinstance(m, nn.Linear)) if decoder is not None else 0
    dim = math.prod(getattr(model, "event_shape", ()) or (1,))
    return numerics.pair_bytes(dim, getattr(model, "latent_dim", 0), widths)


def check_model_size(model: nn.Module | None, train_cfg: Any, device: torch.device,
                     n_train: int | None = None) -> None:
    """Refuse a model (and, with ``train_cfg``, a training step) that cannot fit in memory:
    weights, gradients and two Adam moments (16 bytes per parameter), plus the activations of
    one batch of ``k`` samples per example. ``model``: built on the meta device (None: not
    checked)."""
    if model is None:
        return
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    per = 16 if train_cfg is not None else 4
    check_fits(per * n, f"a model of {n:,} parameters"
               + (" (weights, gradients and Adam moments)" if train_cfg is not None else ""),
               "use a smaller --latent-dim or --hidden (model.arch in a config file)", device)
    if train_cfg is None:
        return
    batch = min(train_cfg.batch_size, n_train or train_cfg.batch_size)
    k = max(1, int(getattr(train_cfg.objective, "k", 1) or 1))
    need = per * n + 2 * batch * k * pair_bytes(model)  # forward activations, kept for backward
    check_fits(need, f"one training step (batch {batch} x {k:,} samples per example)",
               "use a smaller --batch-size or --iwae-k", device)


def check_samples(model: nn.Module | None, n: int, what: str, fix: str,
                  device: torch.device) -> None:
    """Refuse generating ``n`` examples at once when they cannot fit in memory (``model``
    on the meta device; None: not checked)."""
    if model is not None:
        check_fits(n * pair_bytes(model), what, fix, device)
