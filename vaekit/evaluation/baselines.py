"""Parametric baselines with exact log-likelihoods, in the units of the VAE's numbers.

- Full-covariance Gaussian, maximum likelihood: p(x) = N(m, S), m and S the training mean
  and covariance (1/N).
- Probabilistic PCA (Tipping & Bishop 1999) with L = the VAE's latent size:
      z ~ N(0, I_L),  x | z ~ N(W z + m, s^2 I_D)   =>   x ~ N(m, W W^T + s^2 I_D)
  closed-form maximum likelihood from the eigendecomposition S = U diag(lambda) U^T
  (lambda descending): s^2 = mean of the D - L discarded eigenvalues and
  W = U_L (Lambda_L - s^2 I)^{1/2}. PPCA is a linear-Gaussian VAE with a known log p(x):
  :meth:`PPCAFit.vae` builds it as a vaekit VAE (exact posterior as the encoder, since the
  columns of W are orthogonal), so vaekit's estimators can be checked on real data.

Both are fitted on the training split under the data protocol of the KDE that the run's
likelihood declares comparable (``Likelihood.kde_protocol``): the run's own transform, or
dequantized data for a pmf of quantized values, with the same bits/dim offset. On binary
(binarized) data a Gaussian density is not a pmf (and is degenerate on constant pixels), so
there the Gaussian and PPCA are skipped with a note, and the baseline is the exact pmf of
independent Bernoulli pixels instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Bernoulli, LowRankMultivariateNormal, MultivariateNormal

from vaekit.data.pipeline import PreparedData, fixed_transform
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.metrics import mean_se, to_bits_per_dim
from vaekit.models.linear import LinearGaussian
from vaekit.models.vae import VAE
from vaekit.numerics import BASELINE_ROWS, cat_chunks, chunks, derive_seed


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and maximum-likelihood covariance (D, D), 1/N, in float64, of x (N, ...)."""
    x = _flat(x)
    mean = x.double().mean(0)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for lo, hi in chunks(len(x), BASELINE_ROWS):
        xc = x[lo:hi].double() - mean  # (C, D)
        cov += xc.T @ xc
    return mean, cov / len(x)


def _singular(what: str) -> DataError:
    return DataError(f"the training data's covariance is singular ({what}): the maximum-"
                     "likelihood Gaussian does not exist",
                     "dequantize quantized data (--transform dequantize) or drop constant "
                     "dimensions")


def _log_prob(dist: Any, x: torch.Tensor) -> torch.Tensor:
    """log p(x) (N,) in float64, in chunks of rows."""
    x = _flat(x)
    return cat_chunks(lambda part: dist.log_prob(part.double()), x, BASELINE_ROWS)


@dataclass
class GaussianFit:
    """The maximum-likelihood Gaussian N(mean, cov) of flattened data."""

    mean: torch.Tensor  # (D,)
    cov: torch.Tensor  # (D, D)

    def distribution(self) -> MultivariateNormal:
        try:
            return MultivariateNormal(self.mean, scale_tril=torch.linalg.cholesky(self.cov))
        except torch.linalg.LinAlgError:
            raise _singular("not positive definite") from None

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats, (N,), for x (N, *shape)."""
        return _log_prob(self.distribution(), x)

    @property
    def num_parameters(self) -> int:
        d = len(self.mean)
        return d + d * (d + 1) // 2


def fit_gaussian(x: torch.Tensor) -> GaussianFit:
    """The full-covariance Gaussian maximizing the likelihood of x (N, *shape)."""
    return GaussianFit(*moments(x))


@dataclass
class PPCAFit:
    """Probabilistic PCA: x ~ N(mean, W W^T + sigma2 I), W (D, L) with orthogonal columns."""

    mean: torch.Tensor  # (D,)
    W: torch.Tensor  # (D, L)
    sigma2: float
    eigenvalues: torch.Tensor  # (D,) of the training covariance, descending

    def distribution(self) -> LowRankMultivariateNormal:
        diag = torch.full_like(self.mean, self.sigma2)
        return LowRankMultivariateNormal(self.mean, self.W, diag)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats, (N,), for x (N, *shape)."""
        return _log_prob(self.distribution(), x)

    def linear_gaussian(self) -> LinearGaussian:
        """The same model as vaekit's :class:`LinearGaussian` (W, b = mean, s = sigma)."""
        return LinearGaussian(self.W, self.mean, math.sqrt(self.sigma2))

    def vae(self) -> VAE:
        """A float64 vaekit VAE of this PPCA: linear decoder W z + mean with noise std
        sigma, and the exact posterior p(z|x) as its encoder (diagonal, because W^T W is),
        so its ELBO equals log p(x). Its data are flat: pass x.reshape(N, -1)."""
        return self.linear_gaussian().vae()

    @property
    def num_parameters(self) -> int:
        d, latent = self.W.shape
        return d + d * latent - latent * (latent - 1) // 2 + 1  # W up to rotation, + sigma2


def fit_ppca(x: torch.Tensor, latent_dim: int) -> PPCAFit:
    """Tipping & Bishop's closed-form maximum-likelihood PPCA of x (N, *shape)."""
    mean, cov = moments(x)
    d = len(mean)
    if not 0 < latent_dim < d:
        raise ConfigError(f"PPCA needs 0 < latent size < data dimension {d}, got {latent_dim}",
                          "use a smaller --latent-dim")
    lam, U = torch.linalg.eigh(cov)  # ascending
    lam, U = lam.flip(0), U.flip(1)  # descending
    sigma2 = float(lam[latent_dim:].mean())
    if sigma2 <= 1e-12 * max(float(lam[0]), 1e-300):
        raise _singular(f"the {d - latent_dim} smallest eigenvalues are 0")
    W = U[:, :latent_dim] * (lam[:latent_dim] - sigma2).clamp_min(0).sqrt()  # U_L (Lam - s^2)^.5
    return PPCAFit(mean, W, sigma2, lam)


def independent_bernoulli(x: torch.Tensor) -> Bernoulli:
    """Independent Bernoulli pixels of binary x (N, *shape), p_j = (n_j + 1) / (N + 2) (the
    maximum-likelihood p_j = n_j / N gives log 0 to a pixel never on in training)."""
    p = (_flat(x).double().sum(0) + 1) / (len(x) + 2)
    return Bernoulli(probs=p)


# ---------------------------------------------------------------- the evaluation section


@dataclass
class Comparable:
    """The data under the likelihood's comparable density protocol (``kde_protocol``)."""

    kernel: str  # "gaussian" or "bernoulli"
    transform: str
    bpd_offset: float | None
    train: torch.Tensor  # (n, *shape)
    val: torch.Tensor  # (V, *shape)
    test: torch.Tensor  # (M, *shape) of the evaluated split


def protocol_splits(data: PreparedData, split: str, seed: int,
                    rows: torch.Tensor | None = None) -> Comparable:
    """Training (``rows`` of it, or all), validation and evaluated split under the protocol
    of a density comparable with the run's likelihood: the run's own fixed val/test data
    where the transform is the run's, fresh fixed draws (seeds "protocol-val", "protocol-test")
    where it is another (e.g. dequantized data beside a pmf of 8-bit values)."""
    kernel, t, offset = data.likelihood.kde_protocol(data.transform, data.levels, data.dim)
    raw = data.train_raw if rows is None else data.train_raw[rows]
    train = fixed_transform(raw, t, data.levels, derive_seed(seed, "protocol-train"))
    val, test = data.val.x, (data.test.x if split == "test" else data.val.x)
    if t != data.transform:
        raw_x = data.dataset.test if split == "test" else data.val_raw
        val = fixed_transform(data.val_raw, t, data.levels, derive_seed(seed, "protocol-val"))
        test = fixed_transform(raw_x.to(train.device), t, data.levels,
                               derive_seed(seed, "protocol-test"))
    return Comparable(kernel, t, offset, train, val, test)


def _row(name: str, what: str, params: int, log_px: torch.Tensor, train_log_px: torch.Tensor,
         offset: float | None, dim: int, **extra: Any) -> dict[str, Any]:
    m, se = mean_se(log_px)
    return {"name": name, "model": what, "parameters": params, "log_px": m, "log_px_se": se,
            "bpd": to_bits_per_dim(-m, offset, dim), "train_log_px": mean_se(train_log_px)[0],
            **extra}


def baselines_section(model: VAE, data: PreparedData, split: str = "test",
                      seed: int = 0) -> dict[str, Any]:
    """Exact test log-likelihoods of the Gaussian and PPCA (or, for binary data, independent
    Bernoulli pixels) fitted on the training split, nats/example and bits/dim."""
    c = protocol_splits(data, split, seed)
    kernel, t, offset, train, test = c.kernel, c.transform, c.bpd_offset, c.train, c.test
    out: dict[str, Any] = {"transform": t, "bpd_offset": offset, "n_train": len(train),
                           "dim": data.dim, "rows": []}
    if kernel == "bernoulli":
        dist = independent_bernoulli(train)
        lp = [dist.log_prob(_flat(v).double()).sum(-1) for v in (test, train)]
        out["rows"].append(_row("bernoulli-independent", "independent Bernoulli pixels",
                                data.dim, *lp, offset, data.dim))
        out["note"] = ("binary data: a Gaussian density is not a pmf of binary vectors (and "
                       "is degenerate on constant pixels), so the Gaussian and PPCA are skipped; "
                       f"independent Bernoulli pixels, p_j = (count_j + 1) / (N + 2), N = "
                       f"{len(train)} training examples; exact log p(x)")
        return out
    for name, fit in (("gaussian", lambda: fit_gaussian(train)),
                      ("ppca", lambda: fit_ppca(train, model.latent_dim))):
        try:
            out["rows"].append(_fitted_row(name, fit(), train, test, offset, data.dim))
        except (DataError, ConfigError) as err:
            out.setdefault("skipped", {})[name] = str(err)
    out["note"] = (f"fitted by maximum likelihood on {len(train)} training examples "
                   f"({t} data); exact log p(x)")
    return out


def _fitted_row(name: str, fit: GaussianFit | PPCAFit, train: torch.Tensor, test: torch.Tensor,
                offset: float | None, dim: int) -> dict[str, Any]:
    lp, lp_train = fit.log_prob(test), fit.log_prob(train)
    if isinstance(fit, PPCAFit):
        return _row(name, f"probabilistic PCA, L={fit.W.shape[1]} (closed form)",
                    fit.num_parameters, lp, lp_train, offset, dim, latent_dim=fit.W.shape[1],
                    sigma2=fit.sigma2)
    return _row(name, "full-covariance Gaussian (maximum likelihood)", fit.num_parameters, lp,
                lp_train, offset, dim)
