"""Multi-layer perceptrons that flatten / unflatten arbitrary event shapes, optionally
conditioned on a context vector; registered as the ``mlp`` network architecture."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from vaekit.errors import ConfigError
from vaekit.registry import NETWORKS, Options

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
    "softplus": nn.Softplus,
}
INPLACE = {"relu", "elu", "silu"}


class MLP(nn.Module):
    """(..., *in_shape) [+ context (..., cond_dim)] -> (..., *out_shape).

    ``hidden`` gives the widths (depth = len(hidden)); the last layer is linear. Leading
    batch dimensions of any number are kept, e.g. (K, B, L) -> (K, B, *out_shape); a context
    c (B, cond_dim) is broadcast over the extra leading dims and concatenated to the input.
    ``skip``: the input is concatenated to the last hidden layer before the output layer
    (the stage-2 networks of Dai & Wipf 2019).
    """

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], out_shape: Sequence[int],
                 activation: str = "relu", cond_dim: int = 0, skip: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {list(ACTIVATIONS)}")
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.activation, self.cond_dim, self.skip = activation, cond_dim, skip and bool(hidden)
        widths = [math.prod(self.in_shape) + cond_dim, *hidden]
        layers: list[nn.Module] = []
        act = ACTIVATIONS[activation]
        inplace = activation in INPLACE  # saves one allocation and pass per layer
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), act(inplace=True) if inplace else act()]
        head = widths[-1] + (widths[0] if self.skip else 0)
        layers.append(nn.Linear(head, math.prod(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[: x.dim() - len(self.in_shape)]
        h = x.reshape(*lead, -1)  # (..., prod(in_shape))
        if self.cond_dim:
            if c is None:
                raise ValueError("this network is conditional: pass the context c")
            h = torch.cat([h, c.expand(*lead, c.shape[-1]).to(h.dtype)], dim=-1)
        if self.skip:  # [last hidden, input] -> the output layer
            h = torch.cat([self.net[:-1](h), h], dim=-1)
        y = self.net[-1](h) if self.skip else self.net(h)  # (..., prod(out_shape))
        return y.reshape(*lead, *self.out_shape)


@dataclass
class MLPOptions(Options):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # encoder widths
    activation: str = "relu"
    skip: bool = False  # concatenate the input to the last hidden layer (Dai & Wipf stage 2)

    def validate(self) -> None:
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"hidden widths must be positive, got {self.hidden}",
                              "pass e.g. --hidden 512 256")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}",
                              f"use one of {', '.join(ACTIVATIONS)}")


@NETWORKS.register("mlp", MLPOptions, "fully connected encoder and mirrored decoder")
def mlp_pair(data_shape: Sequence[int], latent_dim: int, param_shape: Sequence[int],
             cond_dim: int = 0, *, hidden: Sequence[int], activation: str, skip: bool = False
             ) -> tuple[nn.Module, nn.Module]:
    """Encoder MLP (D [+ c] -> hidden -> 2L) and decoder mirrored (L [+ c] -> reversed
    hidden -> the likelihood's parameter shape)."""
    encoder = MLP(data_shape, hidden, (2 * latent_dim,), activation, cond_dim, skip)
    decoder = MLP((latent_dim,), list(reversed(hidden)), param_shape, activation, cond_dim, skip)
    return encoder, decoder
