"""How stored values become model inputs, and what that means for reported likelihoods.

Stored data is either quantized images (integers 0..levels-1, usually uint8 with levels=256)
or continuous floats. Transforms (all return float32):

- ``none``:       x as stored (continuous data).
- ``scale``:      x / (levels-1) in [0, 1], the levels themselves: what a pmf of them (the
                  discretized logistic) models. Grey values as Bernoulli targets or Gaussian
                  densities on a discrete set are not normalized likelihoods.
- ``binarize``:   x ~ Bernoulli(pixel / (levels-1)). Training resamples every batch
                  (dynamic binarization); evaluation uses one fixed draw with a seed.
- ``dequantize``: x = (pixel + u) / levels, u ~ U[0, 1). A density p on [0,1]^D then gives a
                  discrete-data bound: log P(pixels) >= E_u[log p(x)] - D log(levels).

A layer above may register a transform of its own (:func:`register_transform`): the
two-stage VAE registers ``posterior-sample``, its stage-2 data (``vaekit.models.two_stage``).

Which transform a likelihood needs, which values it accepts and what its numbers mean
(bits/dim offset, protocol note) are the likelihood's own declarations
(:class:`vaekit.distributions.Likelihood`); this module names no likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from vaekit.errors import DataError
from vaekit.numerics import derive_seed

# f(x, levels, generator) -> model input: the transforms registered by the layers above
Transform = Callable[[torch.Tensor, "int | None", "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class Registered:
    """A transform registered from outside the data layer: the function, the shape check
    of the stored values (raises DataError) and the protocol sentence."""

    apply: Transform
    check: Callable[[torch.Tensor, str], None]
    describe: Callable[[int], str]


_REGISTERED: dict[str, Registered] = {}
BUILT_IN = ("none", "scale", "binarize", "dequantize")


def register_transform(name: str, transform: Registered) -> None:
    """Make ``name`` a transform of the data layer (idempotent for the same object)."""
    if _REGISTERED.get(name, transform) is not transform or name in BUILT_IN:
        raise ValueError(f"transform {name!r} is registered twice")
    _REGISTERED[name] = transform


def transform_names() -> tuple[str, ...]:
    """Every transform the data layer knows now (built in, then registered)."""
    return (*BUILT_IN, *_REGISTERED)


class LikelihoodSpec(Protocol):
    """What the data layer asks of a likelihood class (its declarations; no names here)."""

    def default_transform(self, levels: int | None) -> str: ...
    def check_data(self, x: torch.Tensor, transform: str, levels: int | None,
                   what: str) -> None: ...
    def bpd_offset(self, transform: str, levels: int | None, dim: int) -> float | None: ...
    def protocol_note(self, transform: str, levels: int | None) -> str: ...
    def kde_protocol(self, transform: str, levels: int | None,
                     dim: int) -> tuple[str, str, float | None]: ...


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
    if name in _REGISTERED:
        return _REGISTERED[name].apply(x, levels, generator)
    raise DataError(f"unknown transform {name!r}", "use none, scale, binarize or dequantize")


def resolve_transform(name: str, likelihood: LikelihoodSpec, levels: int | None) -> str:
    """Turn ``auto`` into the transform under which ``likelihood`` is a proper likelihood."""
    return likelihood.default_transform(levels) if name == "auto" else name


def check_range(x: torch.Tensor, transform: str, likelihood: LikelihoodSpec,
                levels: int | None, what: str) -> None:
    """Fail with one clear line when values cannot be used by the likelihood."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"{what} contains NaN or Inf values",
                        "clean the data (drop or impute those entries) before training")
    if transform in _REGISTERED:
        _REGISTERED[transform].check(x, what)
    likelihood.check_data(x, transform, levels, what)


def describe(transform: str, eval_seed: int) -> str:
    """What a transform does to the training and evaluation data, in one sentence."""
    seeds = (f"validation set once with seed {derive_seed(eval_seed, 'val')}, test set once "
             f"with seed {derive_seed(eval_seed, 'test')}")
    if transform == "binarize":
        return f"dynamically binarized training data (resampled every batch); {seeds}"
    if transform == "dequantize":
        return f"uniformly dequantized training data x=(pixel+u)/levels; {seeds}"
    if transform == "scale":
        return "values scaled to [0,1] as x = pixel/(levels-1), without noise"
    if transform in _REGISTERED:
        return f"{_REGISTERED[transform].describe(eval_seed)}; {seeds}"
    return "data as stored"


def protocol(transform: str, likelihood: LikelihoodSpec, levels: int | None,
             eval_seed: int) -> str:
    """The sentence printed beside every reported number: transform, then what the
    likelihood's numbers mean under it."""
    return f"{describe(transform, eval_seed)}; {likelihood.protocol_note(transform, levels)}"
