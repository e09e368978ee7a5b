"""Convolutional encoder/decoder pairs for images of any size and channel count, registered
as the ``conv`` (InfoGAN-style, as in Dai & Wipf 2019) and ``resnet`` architectures.

Images are (..., H, W) (one channel) or (..., C, H, W). Every size is derived from the input
shape: each stride-2 stage maps s -> floor(s / 2) (kernel 4, padding 1), and the decoder's
transposed convolutions take ``output_padding`` so that they return exactly the encoder's
sizes in reverse (28 -> 14 -> 7 -> 14 -> 28, 27 -> 13 -> 6 -> 13 -> 27). The decoder's last
layer has as many channels as the likelihood's parameter shape asks per pixel, e.g.
(2, C, H, W) for a mean and a scale. A context c (B, E) is concatenated to the flattened
features before the encoder's dense layers and to z before the decoder's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from vaekit.errors import ConfigError
from vaekit.nn.mlp import ACTIVATIONS
from vaekit.registry import NETWORKS, Options


def _image_dims(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    """(channels, H, W) of an event shape (H, W) or (C, H, W); leading dims fold into C."""
    if len(shape) < 2:
        raise ConfigError(f"a convolutional network needs images, and the {what} has shape "
                          f"{tuple(shape)}", "use --arch mlp for vector data")
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _sizes(h: int, w: int, stages: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 stage: [(H, W), (H//2, W//2), ...]."""
    out = [(h, w)]
    for _ in range(stages):
        h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(f"{stages} stride-2 stages shrink {out[0]} images to nothing",
                              "use fewer channels stages (e.g. channels: [32])")
        out.append((h, w))
    return out


def _flat(x: torch.Tensor, event: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Fold the leading dims of x (..., *event) into one batch dim: (N, *event), lead."""
    lead = x.shape[: x.dim() - event]
    return x.reshape(-1, *x.shape[x.dim() - event:]), lead


def _with_context(h: torch.Tensor, c: torch.Tensor | None, lead: tuple[int, ...],
                  cond_dim: int) -> torch.Tensor:
    """[h, c] for h (N, F) and c (B, E) broadcast over the leading dims ``lead``."""
    if not cond_dim:
        return h
    if c is None:
        raise ValueError("this network is conditional: pass the context c")
    return torch.cat([h, c.expand(*lead, c.shape[-1]).reshape(len(h), -1).to(h.dtype)], dim=-1)


class ResBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))): a pre-activation residual block, same shape."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.body = nn.Sequential(act(), nn.Conv2d(channels, channels, 3, padding=1), act(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(c_in: int, c_out: int, act: type[nn.Module], blocks: int, activation: str,
           down: bool, output_padding: tuple[int, int] = (0, 0)) -> list[nn.Module]:
    """A stride-2 (transposed) convolution, then ``blocks`` residual blocks, then act."""
    conv = (nn.Conv2d(c_in, c_out, 4, 2, 1) if down
            else nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, output_padding=output_padding))
    return [conv, *(ResBlock(c_out, activation) for _ in range(blocks)), act()]


class ConvEncoder(nn.Module):
    """(..., [C,] H, W) [+ c] -> (..., out): stride-2 conv stages, then dense layers."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], fc: int, out: int,
                 activation: str = "relu", blocks: int = 0, cond_dim: int = 0) -> None:
        super().__init__()
        self.in_shape, self.cond_dim = tuple(in_shape), cond_dim
        c, h, w = _image_dims(self.in_shape, "data")
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels, strict=True):
            layers += _stage(c_in, c_out, act, blocks, activation, down=True)
        self.convs = nn.Sequential(*layers)
        hh, ww = _sizes(h, w, len(channels))[-1]
        self.dense = nn.Sequential(nn.Linear(channels[-1] * hh * ww + cond_dim, fc), act(),
                                   nn.Linear(fc, out))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x, lead = _flat(x, len(self.in_shape))
        ch, h, w = _image_dims(self.in_shape, "data")
        feats = self.convs(x.reshape(len(x), ch, h, w)).flatten(1)  # (N, C_last * h * w)
        out = self.dense(_with_context(feats, c, lead, self.cond_dim))
        return out.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """(..., L) [+ c] -> (..., *out_shape): dense layers to the encoder's last feature map,
    then stride-2 transposed conv stages back to the image size."""

    def __init__(self, latent_dim: int, channels: Sequence[int], fc: int,
                 out_shape: Sequence[int], activation: str = "relu", blocks: int = 0,
                 cond_dim: int = 0) -> None:
        super().__init__()
        self.out_shape, self.cond_dim = tuple(out_shape), cond_dim
        c_out, h, w = _image_dims(self.out_shape, "likelihood's parameters")
        sizes = _sizes(h, w, len(channels))  # [(H, W), ..., (h_last, w_last)]
        act = ACTIVATIONS[activation]
        self.start = (channels[-1], *sizes[-1])
        self.dense = nn.Sequential(nn.Linear(latent_dim + cond_dim, fc), act(),
                                   nn.Linear(fc, math.prod(self.start)), act())
        rev = list(reversed(channels))
        layers: list[nn.Module] = []
        for i, (c_in, c_next) in enumerate(zip(rev, [*rev[1:], c_out], strict=True)):
            (th, tw), (sh, sw) = sizes[-i - 2], sizes[-i - 1]  # target and source sizes
            pad = (th - 2 * sh, tw - 2 * sw)
            layers += _stage(c_in, c_next, act, blocks if i < len(rev) - 1 else 0, activation,
                             down=False, output_padding=pad)
        self.deconvs = nn.Sequential(*layers[:-1])  # no activation after the output layer

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        z, lead = _flat(z, 1)
        h = self.dense(_with_context(z, c, lead, self.cond_dim))
        out = self.deconvs(h.reshape(len(z), *self.start))  # (N, C_out, H, W)
        return out.reshape(*lead, *self.out_shape)


@dataclass
class ConvOptions(Options):
    name: str = "conv"
    channels: list[int] = field(default_factory=lambda: [64, 128])  # per stride-2 stage
    fc: int = 1024  # width of the dense layer between the convolutions and the latent
    activation: str = "relu"

    def validate(self) -> None:
        if not self.channels or min(self.channels) <= 0 or self.fc <= 0:
            raise ConfigError(f"conv channels {self.channels} and fc {self.fc} must be positive",
                              "e.g. arch: {name: conv, channels: [64, 128], fc: 1024}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}",
                              f"use one of {', '.join(ACTIVATIONS)}")


@dataclass
class ResNetOptions(ConvOptions):
    name: str = "resnet"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    fc: int = 512
    blocks: int = 1  # residual blocks after each stride-2 convolution

    def validate(self) -> None:
        super().validate()
        if self.blocks < 0:
            raise ConfigError(f"blocks must be >= 0, got {self.blocks}", "e.g. blocks: 1")


@NETWORKS.register("conv", ConvOptions,
                   "stride-2 convolutions + dense layers, mirrored by transposed convolutions")
def conv_pair(data_shape: Sequence[int], latent_dim: int, param_shape: Sequence[int],
              cond_dim: int = 0, *, channels: Sequence[int], fc: int, activation: str,
              blocks: int = 0) -> tuple[nn.Module, nn.Module]:
    """Encoder (images -> 2L) and decoder (L -> the likelihood's parameter shape)."""
    enc = ConvEncoder(data_shape, channels, fc, 2 * latent_dim, activation, blocks, cond_dim)
    dec = ConvDecoder(latent_dim, channels, fc, param_shape, activation, blocks, cond_dim)
    return enc, dec


@NETWORKS.register("resnet", ResNetOptions,
                   "the conv architecture with residual blocks after each stride-2 stage")
def resnet_pair(data_shape: Sequence[int], latent_dim: int, param_shape: Sequence[int],
                cond_dim: int = 0, *, channels: Sequence[int], fc: int, activation: str,
                blocks: int = 1) -> tuple[nn.Module, nn.Module]:
    """As ``conv``, with ``blocks`` residual blocks (two 3x3 convolutions) per stage."""
    return conv_pair(data_shape, latent_dim, param_shape, cond_dim, channels=channels, fc=fc,
                     activation=activation, blocks=blocks)
