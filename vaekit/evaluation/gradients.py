"""Gradient estimators of the ELBO and the IWAE bound, measured.

For one fixed batch, each estimator's gradient w.r.t. the encoder's parameters phi and the
decoder's theta is drawn ``repeats`` times with fresh latent noise (no minibatch noise: the
batch is the same every time) for each number of samples S, and compared with a
high-sample reference gradient of the same objective. Every estimate is the gradient of
the objective's mean over the batch (nats per example).

==============  ========  ======================================================================
estimator       target    encoder gradient (the decoder's is the pathwise one in every case)
==============  ========  ======================================================================
reparam         ELBO      reparameterized, analytic KL: the average of S one-sample ``elbo``
                          gradients (what training uses)
reparam-mc      ELBO      the same with the Monte-Carlo KL log q(z|x) - log p(z) at the same z
score           ELBO      score function (REINFORCE): 1/S sum_i f_i grad log q(z_i|x),
                          f_i = log p(x, z_i) - log q(z_i|x) detached (``vaekit.objectives.score``)
score-loo       ELBO      the same minus the leave-one-out baseline 1/(S-1) sum_{j!=i} f_j (S >= 2)
score-mean      ELBO      the same minus a running mean of the batch-mean signal over earlier
                          estimates (decay 0.9, started from one pilot draw; a scalar, NVIL-style)
iwae            IWAE-S    reparameterized gradient of logsumexp_i log w_i - log S
iwae-stl        IWAE-S    "sticking the landing" (Roeder et al. 2017): log q(z|x) with phi stopped
                          inside log w_i, so only the path through z_i remains. Unbiased for
                          S = 1; for S > 1 it is BIASED for the IWAE gradient (Tucker et al. 2018)
iwae-dreg       IWAE-S    doubly reparameterized (Tucker et al. 2018):
                          sum_i w~_i^2 d log w_i / d z_i  d z_i / d phi, w~ = softmax(log w)
==============  ========  ======================================================================

Reported per estimator, S and parameter group, over R repeated estimates g_1..g_R (P values):

- ``variance``: tr Cov(g) = sum_p Var(g_p) (unbiased sample variances)
- ``snr``: ||E g|| / sqrt(tr Cov g), the norm ratio; ||E g||^2 is estimated without bias
  as ||mean g||^2 - tr Cov / R (clamped at 0), so pure noise reads ~0, not 1/sqrt(R)
- ``cosine``: mean over repeats of cos(g_r, g_ref) (and its standard error), g_ref the
  reference gradient: for the ELBO, the reparameterized analytic-KL estimate with
  ``reference`` samples per example; for IWAE-S (a different objective for each S), the
  DReG encoder and IWAE decoder gradient averaged over ceil(reference / S) draws (both
  unbiased, DReG the one with the least variance)
- ``norm_ratio``: ||E g|| / ||g_ref|| (the same bias-corrected ||E g||): about 1 for an
  unbiased estimator, far from 1 for a biased one (STL for IWAE-S, S > 1)

Parameter groups: ``encoder`` = q(z|x)'s network; ``decoder`` = p(x|z)'s network and any
learned prior parameters (the generative model theta). A conditional model's label
embedding feeds both and is in neither group.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaekit.data.batch import Batch, as_batch
from vaekit.distributions.encoder import draw_z
from vaekit.models.vae import VAE
from vaekit.numerics import GRADIENT_PAIRS, chunks, derive_seed, log_mean_exp
from vaekit.objectives.elbo import elbo, log_weights
from vaekit.objectives.score import score_terms

GROUPS = ("encoder", "decoder")
MEAN_DECAY = 0.9  # running-mean baseline: b <- decay b + (1 - decay) mean f

Surrogates = dict[str, torch.Tensor]  # group -> scalar whose gradient is that group's estimate
Surrogate = Callable[[VAE, Batch, int, dict], Surrogates]  # (model, batch, S, state)


@dataclass(frozen=True)
class Estimator:
    """A gradient estimator: ``surrogate(model, batch, S, state)`` -> per-group scalars."""

    name: str
    objective: str  # "elbo" or "iwae"
    surrogate: Surrogate
    min_samples: int = 1


def parameter_groups(model: VAE) -> dict[str, list[nn.Parameter]]:
    """encoder: q(z|x)'s parameters (phi); decoder: p(x|z)'s and p(z)'s (theta)."""
    decoder = [*model.likelihood.parameters(), *model.prior.parameters()]
    return {"encoder": list(model.encoder.parameters()), "decoder": decoder}


def tile(batch: Batch, n: int) -> Batch:
    """n copies of the batch stacked along the batch dim: (n B, *shape)."""
    if n == 1:
        return batch
    y = None if batch.y is None else batch.y.repeat(n)
    return Batch(batch.x.repeat(n, *[1] * (batch.x.dim() - 1)), y)


# ---------------------------------------------------------------- the estimators' surrogates


def _both(value: torch.Tensor) -> Surrogates:
    return {"encoder": value, "decoder": value}


def _reparam(kl: str) -> Surrogate:
    def surrogate(model: VAE, batch: Batch, s: int, state: dict) -> Surrogates:
        # S one-sample ELBOs of each example: the mean over S copies of the batch
        return _both(elbo(model, tile(batch, s), kl=kl).value.mean())
    return surrogate


def _score(baseline: str) -> Surrogate:
    def surrogate(model: VAE, batch: Batch, s: int, state: dict) -> Surrogates:
        if baseline != "mean":
            return _both(score_terms(model, batch, s, baseline=baseline).surrogate.mean())
        if "b" not in state:  # a pilot draw starts the running mean (not an estimate)
            with torch.no_grad():
                state["b"] = float(score_terms(model, batch, s).signal.mean())
        t = score_terms(model, batch, s, offset=state["b"])
        state["b"] = MEAN_DECAY * state["b"] + (1 - MEAN_DECAY) * float(t.signal.mean())
        return _both(t.surrogate.mean())
    return surrogate


def _iwae(encoder: str) -> Surrogate:
    def surrogate(model: VAE, batch: Batch, s: int, state: dict) -> Surrogates:
        q = model.posterior(batch.x, model.context(batch.y))
        eps = torch.randn((s, *q.base_dist.loc.shape), dtype=q.base_dist.loc.dtype,
                          device=q.base_dist.loc.device)  # (S, B, L)
        lw = log_weights(model, batch, s, eps, q)  # log p(x, z_i) - log q(z_i|x), (S, B)
        if encoder == "iwae":
            return _both(log_mean_exp(lw, 0).mean())
        z = draw_z(q, eps=eps)
        frozen = Independent(Normal(q.base_dist.loc.detach(), q.base_dist.scale.detach()), 1)
        lw_path = lw + q.log_prob(z) - frozen.log_prob(z)  # log q with phi stopped: path only
        bound = log_mean_exp(lw_path, 0).mean()  # same value, theta-grad
        if encoder == "stl":
            return _both(bound)
        w = torch.softmax(lw_path.detach(), 0)  # normalized weights w~_i, (S, B)
        return {"encoder": (w.pow(2) * lw_path).sum(0).mean(), "decoder": bound}
    return surrogate


ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("reparam", "elbo", _reparam("analytic")),
    Estimator("reparam-mc", "elbo", _reparam("mc")),
    Estimator("score", "elbo", _score("none")),
    Estimator("score-loo", "elbo", _score("loo"), min_samples=2),
    Estimator("score-mean", "elbo", _score("mean")),
    Estimator("iwae", "iwae", _iwae("iwae")),
    Estimator("iwae-stl", "iwae", _iwae("stl")),
    Estimator("iwae-dreg", "iwae", _iwae("dreg")),
)}


# ---------------------------------------------------------------- drawing gradients


def flat_grads(surrogates: Surrogates, groups: dict[str, list[nn.Parameter]]
               ) -> dict[str, torch.Tensor]:
    """Each group's gradient of its surrogate as one flat float64 vector (P_group,); one
    backward pass per distinct surrogate."""
    jobs: list[tuple[torch.Tensor, list[str]]] = []
    for name, value in surrogates.items():
        job = next((j for j in jobs if j[0] is value), None)
        jobs.append((value, [name])) if job is None else job[1].append(name)
    out: dict[str, torch.Tensor] = {}
    for i, (value, names) in enumerate(jobs):
        params = [p for n in names for p in groups[n]]
        grads = torch.autograd.grad(value, params, retain_graph=i < len(jobs) - 1,
                                    allow_unused=True)
        flat = [(torch.zeros_like(p) if g is None else g).reshape(-1).double()
                for p, g in zip(params, grads, strict=True)]
        for n in names:
            part, flat = flat[: len(groups[n])], flat[len(groups[n]):]
            out[n] = torch.cat(part) if part else torch.zeros(0, dtype=torch.float64)
    return out


def draw_gradients(model: VAE, batch: Batch | torch.Tensor, estimator: str, samples: int,
                   repeats: int) -> dict[str, torch.Tensor]:
    """``repeats`` independent estimates with ``samples`` samples: group -> (R, P) float64."""
    est, batch = ESTIMATORS[estimator], as_batch(batch)
    groups, state = parameter_groups(model), {}
    draws = [flat_grads(est.surrogate(model, batch, samples, state), groups)
             for _ in range(repeats)]
    return {g: torch.stack([d[g] for d in draws]) for g in groups}


def reference_gradient(model: VAE, batch: Batch | torch.Tensor, objective: str, samples: int,
                       reference: int) -> dict[str, torch.Tensor]:
    """The reference gradient of the ELBO (``reference`` reparameterized samples per
    example, analytic KL) or of IWAE-``samples`` (DReG encoder, IWAE decoder, averaged
    over ceil(reference / samples) draws), computed in passes of <= GRADIENT_PAIRS pairs."""
    batch, groups = as_batch(batch), parameter_groups(model)
    est = ESTIMATORS["reparam" if objective == "elbo" else "iwae-dreg"]
    s = 1 if objective == "elbo" else samples
    draws = max(1, math.ceil(reference / s))  # independent s-sample estimates to average
    per_pass = max(1, GRADIENT_PAIRS // (s * len(batch)))
    total = {g: 0.0 for g in groups}
    for lo, hi in chunks(draws, per_pass):
        n = hi - lo
        g = flat_grads(est.surrogate(model, tile(batch, n), s, {}), groups)
        total = {k: total[k] + g[k] * (n / draws) for k in groups}
    return total


# ---------------------------------------------------------------- summaries


class Moments:
    """Running sums of estimates g (P,) and their cosines to a reference gradient."""

    def __init__(self, ref: torch.Tensor) -> None:
        self.ref, self.n = ref, 0
        self.sum, self.sumsq = torch.zeros_like(ref), torch.zeros_like(ref)
        self.cos: list[float] = []

    def add(self, g: torch.Tensor) -> None:
        self.n += 1
        self.sum += g
        self.sumsq += g * g
        self.cos.append(float(torch.nn.functional.cosine_similarity(g, self.ref, dim=0)))

    def summary(self) -> dict[str, float]:
        """variance = tr Cov, snr = ||E g|| / sqrt(tr Cov) (bias-corrected), mean cosine,
        norm_ratio = ||E g|| / ||g_ref||."""
        r = self.n
        mean = self.sum / r
        var = float(((self.sumsq - r * mean * mean) / max(r - 1, 1)).clamp_min(0).sum())
        signal = max(float(mean @ mean) - var / r, 0.0)
        cos = torch.tensor(self.cos, dtype=torch.float64)
        cos_se = float(cos.std() / math.sqrt(r)) if r > 1 else float("nan")
        ref_norm = float(self.ref.norm())
        return {"variance": var, "snr": math.sqrt(signal / var) if var > 0 else math.inf,
                "cosine": float(cos.mean()), "cosine_se": cos_se,
                "norm_ratio": math.sqrt(signal) / ref_norm if ref_norm > 0 else math.nan,
                "mean_norm": float(mean.norm()), "reference_norm": ref_norm}


def gradient_study(model: VAE, batch: Batch | torch.Tensor, samples: Sequence[int] = (1, 10, 100),
                   repeats: int = 20, reference: int = 1000,
                   estimators: Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Variance, SNR and cosine to the reference of every estimator for every S (rows of
    a JSON-able dict; see the module docstring for the definitions)."""
    if repeats < 2:
        raise ValueError(f"variance needs repeats >= 2, got {repeats}")
    batch, names = as_batch(batch), list(estimators or ESTIMATORS)
    torch.manual_seed(derive_seed(seed, "gradient-noise"))
    t0, refs, rows = time.perf_counter(), {}, []
    for s in samples:
        for name in names:
            est = ESTIMATORS[name]
            if s < est.min_samples:
                continue
            key = ("elbo", 0) if est.objective == "elbo" else ("iwae", s)
            if key not in refs:
                refs[key] = reference_gradient(model, batch, est.objective, s, reference)
            rows += _measure(model, batch, est, s, repeats, refs[key])
    return {"batch_size": len(batch), "repeats": repeats, "reference_samples": reference,
            "samples": list(samples), "estimators": names, "seed": seed,
            "parameters": {g: sum(p.numel() for p in ps)
                           for g, ps in parameter_groups(model).items()},
            "rows": rows, "seconds": round(time.perf_counter() - t0, 2)}


def _measure(model: VAE, batch: Batch, est: Estimator, s: int, repeats: int,
             ref: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One row per group: ``repeats`` estimates of ``est`` with ``s`` samples, summarized."""
    groups, state = parameter_groups(model), {}
    stats = {g: Moments(ref[g]) for g in groups}
    t = time.perf_counter()
    for _ in range(repeats):
        for g, v in flat_grads(est.surrogate(model, batch, s, state), groups).items():
            stats[g].add(v)
    seconds = round((time.perf_counter() - t) / repeats, 4)
    target = "ELBO" if est.objective == "elbo" else f"IWAE-{s}"
    return [{"estimator": est.name, "objective": target, "samples": s, "group": g,
             **stats[g].summary(), "seconds_per_estimate": seconds} for g in groups]
