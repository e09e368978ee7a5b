"""Models and the registry that builds them from a :class:`ModelConfig`."""

from vaekit.models.build import build_model, meta_model
from vaekit.models.linear import LinearGaussian
from vaekit.models.vae import VAE

__all__ = ["VAE", "LinearGaussian", "build_model", "meta_model"]
