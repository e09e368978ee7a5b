"""ELBO and IWAE bounds. One reduction rule: sum over dimensions here, mean over the batch
at the caller. Values are nats per example.

ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))                     <= log p(x)
IWAE_k(x) = E[log 1/k sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)     ELBO <= IWAE_k <= log p(x)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.distributions.priors import kl_standard_normal
from vaekit.models.vae import VAE


@dataclass
class ELBOTerms:
    """Per-example terms, each (B,): ``value = log_px_z - beta * kl``."""

    value: torch.Tensor  # the objective (the ELBO when beta == 1)
    log_px_z: torch.Tensor  # one-sample estimate of E_q[log p(x|z)] (negative reconstruction error)
    kl: torch.Tensor  # KL(q(z|x) || p(z)), analytic or one-sample Monte Carlo


def elbo(model: VAE, x: torch.Tensor, beta: float = 1.0, kl: str = "analytic") -> ELBOTerms:
    """Reparameterized one-sample ELBO (beta-weighted when beta != 1). x (B, *shape)."""
    q = model.posterior(x)
    z = q.rsample()  # z = mu + sigma * eps, (B, L)
    log_px_z = model.likelihood(z).log_prob(x)  # (B,)
    if kl == "analytic":
        kl_term = model.prior.kl(q)
    elif kl == "mc":
        kl_term = q.log_prob(z) - model.prior.log_prob(z)  # log q(z|x) - log p(z)
    else:
        raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
    return ELBOTerms(log_px_z - beta * kl_term, log_px_z, kl_term)


def elbo_loss(model: VAE, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """-mean_b [log p(x_b|z_b) - beta KL_b], analytic KL, as one scalar: the training fast path.

    Same math and noise as ``-elbo(model, x, beta).value.mean()`` but without distribution
    objects or per-example intermediates: z = mu + exp(log_var / 2) * eps and
    KL = 1/2 sum(mu^2 + exp(log_var) - 1 - log_var) (standard-normal prior).
    """
    mu, log_var = model.encoder.params(x)  # (B, L) each
    z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
    log_px_z = model.likelihood.log_prob_sum(model.likelihood.decoder(z), x)
    kl = kl_standard_normal(mu, log_var).sum()
    return (beta * kl - log_px_z) / x.shape[0]


def log_weights(model: VAE, x: torch.Tensor, k: int, eps: torch.Tensor | None = None,
                q=None) -> torch.Tensor:
    """log w_i = log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x) reparameterized. (k, B).

    ``eps`` (k, B, L) supplies the standard-normal noise (for reproducible evaluation);
    otherwise it is drawn from the global generator. ``q`` reuses an encoder pass.
    """
    q = model.posterior(x) if q is None else q
    base = q.base_dist
    z = q.rsample((k,)) if eps is None else base.loc + base.scale * eps  # (k, B, L)
    return model.log_joint(x, z) - q.log_prob(z)


def iwae_bound(model: VAE, x: torch.Tensor, k: int, chunk: int | None = None) -> torch.Tensor:
    """IWAE_k(x) = logsumexp_i(log w_i) - log k, one draw of k samples. (B,).

    ``chunk`` bounds memory by computing the k log-weights in groups of ``chunk``.
    """
    if chunk is None or chunk >= k:
        lw = log_weights(model, x, k)
    else:
        q = model.posterior(x)
        lw = torch.cat([log_weights(model, x, min(chunk, k - s), q=q)
                        for s in range(0, k, chunk)])
    return torch.logsumexp(lw, dim=0) - math.log(k)
