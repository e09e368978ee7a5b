"""Distributions of the model: encoder q(z|x), likelihoods p(x|z), priors p(z).

The encoder and the likelihoods are ``nn.Module``s whose ``forward`` returns a
``torch.distributions`` object (``log_prob`` summed over the event dimensions, ``sample``,
``rsample``); priors implement the :class:`Prior` interface.
"""

from vaekit.distributions.encoder import GaussianEncoder, draw_z, reparameterize
from vaekit.distributions.likelihoods import (
    BernoulliLikelihood,
    DiagGaussianLikelihood,
    DiscretizedLogisticLikelihood,
    FixedGaussianLikelihood,
    GammaGaussianLikelihood,
    GaussianLikelihood,
    Likelihood,
)
from vaekit.distributions.priors import LearnedGaussian, MixtureOfGaussians, Prior, StandardNormal

__all__ = [
    "BernoulliLikelihood",
    "DiagGaussianLikelihood",
    "DiscretizedLogisticLikelihood",
    "FixedGaussianLikelihood",
    "GammaGaussianLikelihood",
    "GaussianEncoder",
    "GaussianLikelihood",
    "LearnedGaussian",
    "Likelihood",
    "MixtureOfGaussians",
    "Prior",
    "StandardNormal",
    "draw_z",
    "reparameterize",
]
