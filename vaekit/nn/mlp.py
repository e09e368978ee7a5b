"""Multi-layer perceptrons that flatten / unflatten arbitrary event shapes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
    "softplus": nn.Softplus,
}


INPLACE = {"relu", "elu", "silu"}


class MLP(nn.Module):
    """(..., *in_shape) -> (..., *out_shape) through Linear-activation layers.

    ``hidden`` gives the widths (depth = len(hidden)); the last layer is linear.
    Leading batch dimensions of any number are kept, e.g. (K, B, L) -> (K, B, *out_shape).
    """

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], out_shape: Sequence[int],
                 activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {list(ACTIVATIONS)}")
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        widths = [math.prod(self.in_shape), *hidden]
        layers: list[nn.Module] = []
        act = ACTIVATIONS[activation]
        inplace = activation in INPLACE  # saves one allocation and pass per layer
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), act(inplace=True) if inplace else act()]
        layers.append(nn.Linear(widths[-1], math.prod(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.dim() - len(self.in_shape)]
        y = self.net(x.reshape(*lead, -1))  # (..., prod(in_shape)) -> (..., prod(out_shape))
        return y.reshape(*lead, *self.out_shape)
