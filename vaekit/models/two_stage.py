"""The two-stage VAE of Dai & Wipf (2019): stage 2 is stage 1's prior.

Stage 1 is a VAE on the data (learned-gamma Gaussian decoder, latent size k ~ the data's
intrinsic dimension). Stage 2 is a second VAE fitted to stage 1's codes z ~ q1(z|x): its
marginal approximates the aggregate posterior q1(z) = E_x q1(z|x), which a VAE with a small
gamma leaves far from N(0, I). Generation samples the aggregate posterior instead of N(0, I):

    u ~ N(0, I),   z = decoder2(u) + sqrt(gamma_z) eps (``noise``, the default, as the
    authors' code; without it the mean decoder2(u)),   x = mean of p1(x|z)

Fitting a model of the codes "ex post" is also what Ghosh et al. (2020) do with a Gaussian
mixture (:class:`CodeMixture`), the baseline that the comparison includes.
"""

from __future__ import annotations

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from vaekit.data.transforms import Registered, register_transform
from vaekit.distributions.priors import Prior
from vaekit.errors import DataError
from vaekit.models.vae import VAE
from vaekit.numerics import EVAL_BATCH, cat_chunks, reparameterize

CODES = "posterior-sample"  # the transform of stage 2's data


def _draw_codes(x: torch.Tensor, _levels: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """Stored (B, 2, k) = (mu, sigma) of stage-1 posteriors -> z = mu + sigma * eps, (B, k),
    eps ~ N(0, I) (redrawn at every visit in training)."""
    eps = torch.randn(x[:, 0].shape, generator=generator, device=x.device)
    return reparameterize(x[:, 0], x[:, 1], eps)


def _check_codes(x: torch.Tensor, what: str) -> None:
    if x.dim() != 3 or x.shape[1] != 2:
        raise DataError(f"transform {CODES} draws stage-1 codes from (N, 2, k) means and "
                        f"stds, and {what} has shape {tuple(x.shape)}",
                        "use it only for the codes of a two-stage VAE")


register_transform(CODES, Registered(
    _draw_codes, _check_codes, lambda _seed: "stage-1 codes z = mu + sigma * eps redrawn at "
    "every visit"))


@torch.no_grad()
def posterior_codes(model: VAE, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Stage 1's posterior parameters of x (N, *shape): (N, 2, k) = [mu, sigma] per row, the
    data of stage 2 (sampled z = mu + sigma * eps by the ``posterior-sample`` transform)."""
    model.eval()

    def codes(part: torch.Tensor) -> torch.Tensor:
        q = model.posterior(part)
        return torch.stack([q.mean, q.stddev], dim=1)  # (B, 2, k)

    return cat_chunks(codes, x, batch_size)


class TwoStagePrior(Prior):
    """p(z) of the stage-2 VAE, for sampling: u ~ p2(u), then z ~ p2(z|u) =
    N(decoder2(u), gamma_z I), i.e. z = decoder2(u) + sqrt(gamma_z) eps (``noise``), or the
    mean z = decoder2(u) (``noise=False``, the "mean sampler").

    Its density is an intractable integral over u, so ``has_log_prob`` is False: estimators
    that need log p(z) refuse it, and a two-stage model is scored through its stages.
    """

    has_log_prob = False

    def __init__(self, stage2: VAE, noise: bool = True) -> None:
        super().__init__(stage2.event_shape[0])
        self.stage2, self.noise = stage2, noise

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = self.stage2.prior.sample(n, generator)  # (n, k2)
        pz = self.stage2.likelihood(u)
        z = pz.mean
        if self.noise:  # a draw of p2(z|u): + stddev = sqrt(gamma_z) times eps ~ N(0, I)
            eps = torch.randn(z.shape, generator=generator,
                              device=self._draw_device(generator)).to(z)
            z = reparameterize(z, pz.stddev, eps)
        return z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_log_prob("log p(z) of a two-stage prior")
        raise AssertionError  # unreachable: has_log_prob is False


class TwoStageVAE(VAE):
    """Stage 1's encoder and likelihood with stage 2 as the prior: ``sample`` generates
    through both stages. ``stage1`` is the same networks with stage 1's own N(0, I) prior
    (what the ELBO and the log p(x) estimators score); ``stage2`` the VAE of the codes."""

    def __init__(self, stage1: VAE, stage2: VAE, noise: bool = True) -> None:
        super().__init__(stage1.encoder, stage1.likelihood, TwoStagePrior(stage2, noise),
                         stage1.condition)
        self.stage1_prior = stage1.prior

    @property
    def stage1(self) -> VAE:
        return VAE(self.encoder, self.likelihood, self.stage1_prior, self.condition)

    @property
    def stage2(self) -> VAE:
        return self.prior.stage2


class CodeMixture(Prior):
    """A Gaussian mixture with full covariances fitted to stage-1 codes after training
    ("ex-post density estimation", Ghosh et al. 2020), with an exact density."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> None:
        super().__init__(means.shape[1])
        self.register_buffer("weights", weights)  # (C,)
        self.register_buffer("means", means)  # (C, k)
        self.register_buffer("scale_tril", torch.linalg.cholesky(covs))  # (C, k, k)

    @classmethod
    def fit(cls, codes: torch.Tensor, components: int = 10, seed: int = 0) -> CodeMixture:
        """Maximum-likelihood fit (scikit-learn's EM, full covariances) to codes (N, k)."""
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(components, covariance_type="full", random_state=seed,
                             reg_covar=1e-6).fit(codes.double().cpu().numpy())
        weights, means, covs = (torch.as_tensor(a, dtype=torch.float32)
                                for a in (gm.weights_, gm.means_, gm.covariances_))
        return cls(weights, means, covs)

    def distribution(self) -> MixtureSameFamily:
        parts = MultivariateNormal(self.means, scale_tril=self.scale_tril, validate_args=False)
        return MixtureSameFamily(Categorical(probs=self.weights, validate_args=False), parts,
                                 validate_args=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """c ~ Categorical(weights), z = m_c + L_c eps. (n, k)."""
        c = torch.multinomial(self.weights.to(self._draw_device(generator)), n,
                              replacement=True, generator=generator).to(self.means.device)
        eps = self._randn(n, generator)  # (n, k)
        return self.means[c] + (self.scale_tril[c] @ eps.unsqueeze(-1)).squeeze(-1)
