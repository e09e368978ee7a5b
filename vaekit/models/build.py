"""Build models from configs through the registries (one entry per model family)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vaekit.config import ModelConfig
from vaekit.distributions import GaussianEncoder
from vaekit.errors import ConfigError
from vaekit.models.vae import VAE
from vaekit.nn import LabelEmbedding
from vaekit.registry import LIKELIHOODS, MODELS, NETWORKS, PRIORS, Options


@dataclass
class VAEOptions(Options):
    name: str = "vae"


@MODELS.register("vae", VAEOptions, "encoder, likelihood and prior of one VAE")
def build_vae(cfg: ModelConfig) -> VAE:
    """Networks from ``cfg.arch`` (decoder output = the likelihood's parameter shape), the
    likelihood and prior from their registries, a label embedding when conditional."""
    shape, L = tuple(cfg.data_shape), cfg.latent_dim
    param_shape = LIKELIHOODS.get(cfg.likelihood.name).build.param_shape(shape)
    cond_dim = cfg.label_dim if cfg.conditional else 0
    enc_net, dec_net = NETWORKS.build(cfg.arch, shape, L, param_shape, cond_dim)
    condition = None
    if cfg.conditional:
        if cfg.num_classes < 1:
            raise ConfigError("a conditional model needs labelled data, and these have none",
                              "use a dataset with labels (IDX label files, NPZ y arrays) or "
                              "drop --conditional")
        condition = LabelEmbedding(cfg.num_classes, cfg.label_dim)
    likelihood = LIKELIHOODS.build(cfg.likelihood, dec_net, shape, cfg.data_levels or None)
    return VAE(GaussianEncoder(enc_net, L), likelihood, PRIORS.build(cfg.prior, L), condition)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Validate ``cfg`` and build the model; ``cfg.data_shape`` must be set."""
    cfg.validate()
    if not cfg.data_shape:
        raise ConfigError("model config has no data_shape", "set it from the dataset first")
    return MODELS.build(cfg.kind, cfg)


def meta_model(cfg: ModelConfig) -> nn.Module | None:
    """The model of ``cfg`` on the meta device (shapes only: nothing is allocated, so a
    size check can refuse it in milliseconds), None if it cannot be built there (it is
    then built, and checked, as usual)."""
    if not cfg.data_shape:
        return None
    try:
        with torch.device("meta"):
            return build_model(cfg)
    except Exception:  # a config error surfaces again when the model is built for real
        return None
