"""How stored values become model inputs, and what that means for reported likelihoods.

Stored data is either quantized images (integers 0..levels-1, usually uint8 with levels=256)
or continuous floats. Transforms (all return float32):

- ``none``:       x as stored (continuous data).
- ``scale``:      x / (levels-1) in [0, 1]. Grey values as Bernoulli targets or Gaussian
                  densities on a discrete set are not normalized likelihoods: use with care.
- ``binarize``:   x ~ Bernoulli(pixel / (levels-1)). Training resamples every batch
                  (dynamic binarization); evaluation uses one fixed draw with a seed.
- ``dequantize``: x = (pixel + u) / levels, u ~ U[0, 1). A density p on [0,1]^D then gives a
                  discrete-data bound: log P(pixels) >= E_u[log p(x)] - D log(levels).
"""

from __future__ import annotations

import math

import torch

from vaekit.errors import DataError


def apply_transform(name: str, x: torch.Tensor, levels: int | None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Transform a batch ``x`` (B, *shape); random transforms draw from ``generator``."""
    if name == "none":
        return x.float()
    unit = x.float() / (levels - 1) if levels else x.float()  # [0, 1]
    if name == "scale":
        return unit
    if name == "binarize":
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (u < unit).float()
    if name == "dequantize":
        if not levels:
            raise DataError("dequantization needs quantized (integer) data",
                            "use --transform none for continuous data")
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (x.float() + u) / levels
    raise DataError(f"unknown transform {name!r}", "use none, scale, binarize or dequantize")


def resolve_transform(name: str, likelihood: str, levels: int | None) -> str:
    """Turn ``auto`` into the transform that makes the likelihood a proper one."""
    if name != "auto":
        return name
    if likelihood == "bernoulli":
        return "binarize"
    return "dequantize" if levels else "none"


def check_range(x: torch.Tensor, transform: str, likelihood: str, levels: int | None,
                what: str) -> None:
    """Fail with one clear line when values cannot be used by the likelihood."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"{what} contains NaN or Inf values",
                        "clean the data (drop or impute those entries) before training")
    if likelihood != "bernoulli":
        return
    if transform not in ("binarize", "none"):
        raise DataError(f"transform {transform!r} makes no sense with a Bernoulli likelihood",
                        "use --transform binarize (or auto)")
    if transform == "none" and not bool(((x == 0) | (x == 1)).all()):
        raise DataError(f"{what} has values other than 0 and 1: as Bernoulli targets they are "
                        "not a normalized likelihood", "use --transform binarize (or auto)")
    if levels:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{what} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1], "
                        "which a Bernoulli likelihood cannot model",
                        "rescale the data to [0, 1] or use --likelihood gaussian")


def bits_per_dim_offset(transform: str, levels: int | None, dim: int,
                        likelihood: str = "bernoulli") -> float | None:
    """Nats to add to -log p(x) to get a discrete-data NLL; None when bits/dim do not apply.

    Binary data under a Bernoulli pmf need no offset. Dequantized data under a Gaussian
    density live in [0,1]^D with cells of volume levels^-D, so
    -log P(pixels) <= -log p(x) + D log(levels). Other pairings are not likelihoods of the
    discrete data.
    """
    bernoulli = likelihood == "bernoulli"
    if transform == "binarize" and bernoulli:
        return 0.0
    if transform == "dequantize" and levels and not bernoulli:
        return dim * math.log(levels)
    return None


def protocol(transform: str, likelihood: str, eval_seed: int) -> str:
    """A sentence naming the data protocol, printed beside every reported number."""
    seeds = f"validation set once with seed {eval_seed}, test set once with seed {eval_seed + 1}"
    if transform == "binarize":
        return f"dynamically binarized training data (resampled every batch); {seeds}"
    if transform == "dequantize":
        return (f"uniformly dequantized training data x=(pixel+u)/levels; {seeds}; "
                + ("bits/dim are discrete-data upper bounds" if likelihood != "bernoulli"
                   else "no bits/dim"))
    if transform == "scale":
        return ("grey values scaled to [0,1] without binarization or dequantization: NOT a "
                "normalized likelihood of the data")
    return f"continuous data as stored, {likelihood} density in nats"
