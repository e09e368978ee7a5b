"""Build models from configs: one dict registry, one builder per model family."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vaekit.config import ModelConfig
from vaekit.distributions import LIKELIHOODS, GaussianEncoder, StandardNormal
from vaekit.errors import ConfigError
from vaekit.models.vae import VAE
from vaekit.nn import MLP


def build_mlp_vae(cfg: ModelConfig) -> VAE:
    """Encoder MLP (D -> hidden -> 2L), decoder MLP mirrored (L -> reversed hidden -> D)."""
    shape, L = tuple(cfg.data_shape), cfg.latent_dim
    encoder = GaussianEncoder(MLP(shape, cfg.hidden, (2 * L,), cfg.activation), L)
    decoder = MLP((L,), list(reversed(cfg.hidden)), shape, cfg.activation)
    kind = LIKELIHOODS[cfg.likelihood]
    kwargs = {"gaussian": {"sigma": cfg.sigma}, "gaussian-gamma": {"gamma_init": cfg.gamma_init},
              "gaussian-diag": {"gamma_init": cfg.gamma_init}}.get(cfg.likelihood, {})
    return VAE(encoder, kind(decoder, shape, **kwargs), StandardNormal(L))


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {"mlp": build_mlp_vae}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Validate ``cfg`` and build the model; ``cfg.data_shape`` must be set."""
    cfg.validate()
    if not cfg.data_shape:
        raise ConfigError("model config has no data_shape", "set it from the dataset first")
    if cfg.arch not in MODELS:
        raise ConfigError(f"unknown architecture {cfg.arch!r}", f"use one of {', '.join(MODELS)}")
    return MODELS[cfg.arch](cfg)
