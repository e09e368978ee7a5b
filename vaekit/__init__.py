"""vaekit: variational autoencoders done right.

Data -> model (encoder q(z|x) + likelihood p(x|z) + prior p(z)) -> objective (ELBO, IWAE)
-> trainer -> evaluation (log p(x) estimators, metrics) -> figures / CLI.
"""

__version__ = "0.2.0"
