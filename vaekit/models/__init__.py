"""Models and the one registry that builds them from a :class:`ModelConfig`."""

from vaekit.models.build import MODELS, build_model
from vaekit.models.linear import LinearGaussian
from vaekit.models.vae import VAE

__all__ = ["MODELS", "VAE", "LinearGaussian", "build_model"]
