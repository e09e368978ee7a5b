"""Distributions of the model: encoder q(z|x), likelihoods p(x|z), priors p(z).

Each is an ``nn.Module`` whose ``forward`` returns a ``torch.distributions`` object with
``log_prob`` summed over the event dimensions (``Independent``), ``sample``/``rsample``.
"""

from vaekit.distributions.encoder import GaussianEncoder
from vaekit.distributions.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    DiagGaussianLikelihood,
    FixedGaussianLikelihood,
    GammaGaussianLikelihood,
    Likelihood,
)
from vaekit.distributions.priors import StandardNormal

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "DiagGaussianLikelihood",
    "FixedGaussianLikelihood",
    "GammaGaussianLikelihood",
    "GaussianEncoder",
    "Likelihood",
    "StandardNormal",
]
