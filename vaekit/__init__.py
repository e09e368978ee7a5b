"""vaekit: variational autoencoders done right.

Data -> model (encoder q(z|x) + likelihood p(x|z) + prior p(z)) -> objective (ELBO, IWAE)
-> trainer -> evaluation (log p(x) estimators, metrics) -> figures -> API -> CLI.
``vaekit.api`` is the face: train, evaluate, sample, reconstruct, gradients, report.
"""

__version__ = "0.3.0"
