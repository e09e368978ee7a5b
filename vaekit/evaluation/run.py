"""One evaluation of a trained model on a data split: every figure in one JSON-able dict.

This is what ``vaekit evaluate`` calls; the CLI only parses flags into :class:`EvalOptions`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from vaekit.data.batch import Batch
from vaekit.data.pipeline import PreparedData, fixed_transform
from vaekit.errors import DataError
from vaekit.evaluation.diagnostics import latent_diagnostics
from vaekit.evaluation.kde import (
    kde_baseline,
    parzen_log_likelihood,
    parzen_sensitivity_note,
    select_bandwidth,
)
from vaekit.evaluation.marginal import marginal_likelihood
from vaekit.evaluation.metrics import evaluate
from vaekit.models.vae import VAE


@dataclass
class EvalOptions:
    split: str = "test"  # test | val
    k: int = 100  # IWAE-k bound in the standard figures (0 = skip)
    loglik: int = 0  # K of the importance-sampled log p(x) with curve and ELBO gap (0 = skip)
    naive: int = 0  # K of the naive prior-sampling estimator (0 = skip)
    kde: bool = False  # Gaussian KDE baseline and Parzen window of model samples
    kde_max_train: int = 10000  # training examples used as KDE centers (seeded subsample)
    diagnostics: bool = False  # active units, KL per dimension, collapse warning
    memory_mb: float = 1024.0  # memory budget of the sampling estimators
    seed: int = 0
    batch_size: int = 1000


def run_evaluation(model: VAE, data: PreparedData, opts: EvalOptions) -> dict[str, Any]:
    """Standard figures plus the optional marginal-likelihood, KDE and diagnostic sections."""
    x = data.test if opts.split == "test" else data.val
    if len(x) == 0 or (opts.kde and len(data.val) == 0):
        raise DataError(f"the run has no {'validation' if len(x) else opts.split} examples",
                        "use --split test, or train with --val-fraction > 0")
    t0 = time.perf_counter()
    res = evaluate(model, x, iwae_k=opts.k, bpd_offset=data.bpd_offset, batch_size=opts.batch_size,
                   memory_mb=opts.memory_mb, seed=opts.seed)
    res.update(split=opts.split, dataset=data.dataset.name, protocol=data.protocol,
               transform=data.transform, bpd_offset=data.bpd_offset, options=asdict(opts))
    if opts.loglik or opts.naive:
        t = time.perf_counter()
        res["marginal"] = marginal_likelihood(model, x, k=opts.loglik or opts.k or 1,
                                              k_naive=opts.naive, bpd_offset=data.bpd_offset,
                                              seed=opts.seed + 2, memory_mb=opts.memory_mb)
        res["marginal"]["elbo"] = res["elbo"]
        res["marginal"]["seconds"] = round(time.perf_counter() - t, 2)
    if opts.diagnostics:
        res["diagnostics"] = latent_diagnostics(model, x, opts.batch_size)
    if opts.kde:
        res["kde"] = kde_section(model, data, x, opts)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


def kde_section(model: VAE, data: PreparedData, x: Batch, opts: EvalOptions) -> dict[str, Any]:
    """KDE of the training data (bandwidth chosen on validation data) and the Parzen-window
    estimate of the model's density from its samples, in the units of the data protocol.

    Binary data (Bernoulli protocol) use the product-Bernoulli kernel, a proper pmf; other
    data the Gaussian kernel. Model samples are draws x ~ p(x|z), z ~ p(z).
    """
    kernel = data.likelihood.kde_kernel(data.transform)
    g = torch.Generator().manual_seed(opts.seed)
    n = min(opts.kde_max_train, len(data.train_raw))
    idx = torch.randperm(len(data.train_raw), generator=g)[:n].to(data.train_raw.device)
    # a seed of its own: the val/test draws use eval_seed and eval_seed + 1
    train = fixed_transform(data.train_raw[idx], data.transform, data.dataset.levels,
                            opts.seed + 1000)
    kde = kde_baseline(train, data.val.x, x.x, bpd_offset=data.bpd_offset, kernel=kernel)
    y = None
    if model.conditional:  # samples of p(x) = sum_y p(y) p(x|y), labels as often as in the data
        y = data.train_y[torch.randint(len(data.train_y), (n,), generator=g)]
    torch.manual_seed(opts.seed)
    samples = model.sample(n, mean=False, y=y)
    h, _ = select_bandwidth(samples, data.val.x, kernel=kernel)
    grid = sorted({min(h * f, 0.49) if kernel == "bernoulli" else h * f
                   for f in (0.25, 0.5, 1.0, 2.0, 4.0)})
    parzen = parzen_log_likelihood(samples, x.x, grid, kernel=kernel)
    out = {k: v for k, v in asdict(kde).items() if k != "table"}
    out["bandwidth_table"] = [[h_, ll] for h_, ll in kde.table]
    out["summary"] = kde.summary()
    out["parzen"] = {"kernel": kernel, "samples": "draws x ~ p(x|z), z ~ p(z)",
                     "bandwidth_chosen_on_val": h, "bandwidths": parzen.bandwidths,
                     "n_samples": parzen.n_samples, "log_lik": parzen.log_lik.tolist(),
                     "log_lik_se": parzen.log_lik_se.tolist(),
                     "note": parzen_sensitivity_note(parzen)}
    return out
