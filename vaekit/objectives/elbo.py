"""The ELBO and the IWAE bound, written once, from the model's own parts: ``posterior``,
``likelihood.log_prob`` and ``prior.kl`` / ``prior.log_prob``. One reduction rule: sum over
dimensions here, mean over the batch in the training losses. Values are nats per example.

ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))                     <= log p(x)
IWAE_k(x) = E[log 1/k sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)     ELBO <= IWAE_k <= log p(x)

The training objectives are registered (``OBJECTIVES``) as losses ``(model, batch, beta,
**options) -> scalar``: the negative objective, mean over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from vaekit import distributed
from vaekit.data.batch import Batch, as_batch
from vaekit.distributions.encoder import draw_z
from vaekit.errors import ConfigError
from vaekit.models.vae import VAE
from vaekit.noise import IndexedNoise
from vaekit.numerics import EVAL_BATCH, chunks, log_mean_exp
from vaekit.registry import OBJECTIVES, Options

KL_ESTIMATORS = ("analytic", "mc")


@dataclass
class ELBOTerms:
    """Per-example terms, each (B,): ``value = log_px_z - beta * kl``; and q(z|x)."""

    value: torch.Tensor  # the objective (the ELBO when beta == 1)
    log_px_z: torch.Tensor  # one-sample estimate of E_q[log p(x|z)] (negative reconstruction error)
    kl: torch.Tensor  # KL(q(z|x) || p(z)): the prior's analytic KL, or one-sample Monte Carlo
    posterior: Distribution  # q(z|x), batch shape (B,)


def elbo(model: VAE, batch: Batch | torch.Tensor, beta: float = 1.0, kl: str = "analytic",
         eps: torch.Tensor | None = None) -> ELBOTerms:
    """Reparameterized one-sample ELBO (beta-weighted when beta != 1).

    ``kl="analytic"`` asks the prior for KL(q || p) (closed form where it has one, else
    Monte Carlo at the same z); ``"mc"`` always uses log q(z|x) - log p(z). ``eps`` (B, L)
    supplies the standard-normal noise of z = mu + sigma * eps (fixed evaluation noise).
    """
    if kl not in KL_ESTIMATORS:
        raise ValueError(f"kl must be one of {KL_ESTIMATORS}, got {kl!r}")
    batch = as_batch(batch)
    c = model.context(batch.y)
    q = model.posterior(batch.x, c)
    z = draw_z(q, eps=eps)  # z = mu + sigma * eps, (B, L)
    log_px_z = model.likelihood.log_prob(z, batch.x, c)  # (B,)
    # analytic: the prior's closed form where it has one; mc: log q(z|x) - log p(z) at z
    kl_term = model.prior.kl(q, z, analytic=kl == "analytic")
    return ELBOTerms(log_px_z - beta * kl_term, log_px_z, kl_term, q)


@torch.no_grad()
def elbo_terms(model: VAE, data: Batch | torch.Tensor, batch_size: int = EVAL_BATCH,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-example one-sample ELBO, E_q[log p(x|z)] estimate, KL and E_q[z]: ``elbo`` with
    fixed noise (example i's noise depends on (seed, i) only). (N,), (N, L) for ``mu``.
    Inside ``distributed.sharded()`` each rank computes a block of the examples."""
    data = as_batch(data)
    noise = IndexedNoise(model.latent_dim, seed, data.device)
    parts: dict[str, list[torch.Tensor]] = {"elbo": [], "log_px_z": [], "kl": [], "mu": []}
    a, b = distributed.local_rows(len(data))
    for lo, hi in chunks(b, batch_size, a):
        t = elbo(model, data[lo:hi], eps=noise.block(torch.arange(lo, hi), 1)[0])  # (B, L) noise
        for key, val in (("elbo", t.value), ("log_px_z", t.log_px_z), ("kl", t.kl),
                         ("mu", t.posterior.mean)):
            parts[key].append(val)
    return {k: distributed.gather_rows(torch.cat(v), len(data)) for k, v in parts.items()}


def log_weights(model: VAE, batch: Batch | torch.Tensor, k: int,
                eps: torch.Tensor | None = None, q: Distribution | None = None) -> torch.Tensor:
    """log w_i = log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x) reparameterized. (k, B).

    ``eps`` (k, B, L) supplies the standard-normal noise (for reproducible evaluation);
    otherwise it is drawn from the global generator. ``q`` reuses an encoder pass.
    """
    batch = as_batch(batch)
    c = model.context(batch.y)
    q = model.posterior(batch.x, c) if q is None else q
    z = draw_z(q, k, eps)  # (k, B, L)
    return model.log_joint(batch.x, z, c) - q.log_prob(z)


def iwae_bound(model: VAE, batch: Batch | torch.Tensor, k: int,
               chunk: int | None = None) -> torch.Tensor:
    """IWAE_k(x) = logsumexp_i(log w_i) - log k, one draw of k samples. (B,).

    ``chunk`` bounds memory by computing the k log-weights in groups of ``chunk``.
    """
    batch = as_batch(batch)
    if chunk is None or chunk >= k:
        lw = log_weights(model, batch, k)
    else:
        q = model.posterior(batch.x, model.context(batch.y))
        lw = torch.cat([log_weights(model, batch, k1 - k0, q=q) for k0, k1 in chunks(k, chunk)])
    return log_mean_exp(lw, 0)  # (B,)


# ============================================================================ training losses


@dataclass
class ELBOOptions(Options):
    name: str = "elbo"
    kl: str = "analytic"  # analytic (the prior's closed form where it has one) | mc

    def validate(self) -> None:
        if self.kl not in KL_ESTIMATORS:
            raise ConfigError(f"unknown KL estimator {self.kl!r}", "use analytic or mc")


@OBJECTIVES.register("elbo", ELBOOptions, "the ELBO, one reparameterized sample per example")
def elbo_loss(model: VAE, batch: Batch | torch.Tensor, beta: float = 1.0,
              kl: str = "analytic") -> torch.Tensor:
    """-mean_b [log p(x_b|z_b) - beta KL_b]: the negative (beta-)ELBO in nats per example."""
    return -elbo(model, batch, beta, kl).value.mean()


@dataclass
class IWAEOptions(Options):
    name: str = "iwae"
    k: int = 5  # importance samples per example

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"the IWAE bound needs k >= 1 samples, got {self.k}",
                              "pass e.g. --iwae-k 5")


@OBJECTIVES.register("iwae", IWAEOptions, "the IWAE-k bound (Burda et al. 2016)")
def iwae_loss(model: VAE, batch: Batch | torch.Tensor, beta: float = 1.0,
              k: int = 5) -> torch.Tensor:
    """-mean_b IWAE_k(x_b) in nats per example (``beta`` must be 1: there is no KL term)."""
    return -iwae_bound(model, batch, k).mean()
