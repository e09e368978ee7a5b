"""One evaluation of a trained model on a data split: every figure in one JSON-able dict.

This is what ``vaekit.api.evaluate`` calls with the model and data of a run directory; the
CLI only parses flags into :class:`EvalOptions`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.config import SEED_LIMIT
from vaekit.data.batch import Batch
from vaekit.data.pipeline import PreparedData, fixed_transform
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.baselines import baselines_section, protocol_splits
from vaekit.evaluation.diagnostics import latent_diagnostics
from vaekit.evaluation.generation import (
    feature_net,
    features,
    generate,
    inception_fid,
    scores,
    unit_images,
)
from vaekit.evaluation.kde import (
    kde_baseline,
    parzen_log_likelihood,
    parzen_sensitivity_note,
    select_bandwidth,
)
from vaekit.evaluation.marginal import marginal_likelihood
from vaekit.evaluation.metrics import elbo_terms, evaluate, mean_se, to_bits_per_dim
from vaekit.models.two_stage import CODES, TwoStageVAE, posterior_codes
from vaekit.models.vae import VAE
from vaekit.numerics import EVAL_BATCH, derive_seed, seeded_generator, seeded_subset


@dataclass
class EvalOptions:
    split: str = "test"  # test | val
    limit: int = 0  # score only the split's first N examples (0 = all)
    k: int = 100  # IWAE-k bound in the standard figures (0 = skip)
    loglik: int = 0  # K of the importance-sampled log p(x) with curve and ELBO gap (0 = skip)
    naive: int = 0  # K of the naive prior-sampling estimator (0 = skip)
    kde: bool = False  # Gaussian KDE baseline and Parzen window of model samples
    kde_max_train: int = 10000  # training examples used as KDE centers (seeded subsample)
    diagnostics: bool = False  # active units, KL per dimension, collapse warning
    generation: int = 0  # samples scored against the test set (Fréchet distance, P/R)
    inception_weights: str = ""  # local Inception weights: also the standard FID
    baselines: bool = False  # exact log p(x) of a full-covariance Gaussian and PPCA (or pmf)
    memory_mb: float = 1024.0  # memory budget of the sampling estimators
    seed: int = 0
    batch_size: int = EVAL_BATCH

    def validate(self) -> None:
        """One-line errors for values no evaluation can use."""
        for name in ("k", "loglik", "naive", "kde_max_train", "generation", "limit"):
            value = getattr(self, name)
            if value < 0 or (value > MAX_SAMPLES and name != "naive"):  # naive: its memory
                raise ConfigError(f"--{name.replace('_', '-')} {value:,} is outside 0 .. "
                                  f"{MAX_SAMPLES:,} (beyond it no estimate finishes)",
                                  "pass 0 to turn it off, or a smaller number")
        if not 0 < self.memory_mb <= MAX_MEMORY_MB:
            raise ConfigError(f"--memory-mb must be in (0, {MAX_MEMORY_MB:,}], got "
                              f"{self.memory_mb:g}", "pass e.g. --memory-mb 1024")
        if self.kde and self.kde_max_train < 1:
            raise ConfigError("--kde needs at least one KDE centre (--kde-max-train >= 1)",
                              "pass e.g. --kde-max-train 10000")
        if 0 < self.generation < MIN_GENERATION:
            raise ConfigError(f"--generation {self.generation} is too few samples for a "
                              f"Fréchet distance and k = 3 precision/recall", f"pass at least "
                              f"{MIN_GENERATION}, e.g. --generation 10000")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"--seed {self.seed} is outside 0 .. 2**63 - 1",
                              "pass a smaller non-negative seed")
        if self.limit and (self.kde or self.baselines):
            raise ConfigError("--limit scores the first examples of the split; the KDE and the "
                              "baselines score all of it", "drop --limit, or --kde/--baselines")
        if self.inception_weights and not Path(self.inception_weights).is_file():
            raise ConfigError(f"Inception weights {self.inception_weights} do not exist",
                              "point --inception-weights at a local weights file")


MAX_SAMPLES = 10**7  # K, N or examples of any estimate: beyond it an evaluation runs for days
MAX_MEMORY_MB = 2**30  # --memory-mb: a petabyte
MIN_GENERATION = 10  # samples scored for generation quality (k = 3 neighbours, a covariance)
# what `vaekit evaluate` adds besides the standard figures; merged into the same file
SECTIONS = ("marginal", "diagnostics", "kde", "baselines", "two_stage", "generation")


class _Sections:
    """A progress bar over an evaluation's sections (on a terminal only): the section that
    runs, how many are done, elapsed time and ETA."""

    def __init__(self, opts: EvalOptions, two_stage: bool, progress: bool) -> None:
        names = [opts.loglik or opts.naive, True, opts.diagnostics, opts.kde, opts.baselines,
                 two_stage, opts.generation]
        self.bar = tqdm(total=sum(map(bool, names)), desc="evaluate", unit="section",
                        disable=None if progress else True)
        self.running = False

    def start(self, name: str) -> None:
        self.bar.update(int(self.running))
        self.running = True
        self.bar.set_postfix_str(name)

    def finish(self) -> None:
        self.bar.update(int(self.running))
        self.running = False


def evaluate_all(model: VAE, data: PreparedData, opts: EvalOptions,
                   progress: bool = False) -> dict[str, Any]:
    """Standard figures plus the optional marginal-likelihood, KDE, diagnostic and
    generation sections. A two-stage model is scored as its stage 1 (the same networks with
    the N(0, I) prior, whose ELBO and log p(x) are defined), plus its stage-2 figures.
    ``progress``: a bar over the sections, on a terminal."""
    composite = model if isinstance(model, TwoStageVAE) else None
    if composite is not None:
        model = composite.stage1
    x = data.test if opts.split == "test" else data.val
    opts.validate()
    x = x[: opts.limit] if opts.limit else x
    if opts.naive and model.conditional:
        raise DataError("the naive estimator shares its prior samples across examples, which "
                        "a conditional model (p(x|z, y)) does not allow",
                        "drop --naive; use --loglik for conditional models")
    if len(x) == 0 or (opts.kde and len(data.val) == 0):
        raise DataError(f"the run has no {'validation' if len(x) else opts.split} examples",
                        "use --split test, or train with --val-fraction > 0")
    t0 = time.perf_counter()
    bar = _Sections(opts, composite is not None, progress)
    try:
        return _sections(model, composite, data, x, opts, bar, t0)
    finally:
        bar.bar.close()  # an error leaves the bar where it stopped


def _sections(model: VAE, composite: TwoStageVAE | None, data: PreparedData, x: Batch,
              opts: EvalOptions, bar: _Sections, t0: float) -> dict[str, Any]:
    """The sections of :func:`evaluate_all`, in order, each announced on ``bar``."""
    if opts.loglik or opts.naive:
        bar.start("log p(x) estimators")
    marginal = marginal_section(model, data, x, opts) if opts.loglik or opts.naive else None
    from_marginal = marginal is not None and str(opts.k) in marginal["importance"]["curve"]
    bar.start("ELBO" + ("" if from_marginal or not opts.k else f", IWAE-{opts.k}"))
    res = evaluate(model, x, iwae_k=0 if from_marginal else opts.k, bpd_offset=data.bpd_offset,
                   batch_size=opts.batch_size, memory_mb=opts.memory_mb, seed=opts.seed)
    res.update(split=opts.split, dataset=data.dataset.name, protocol=data.protocol,
               transform=data.transform, bpd_offset=data.bpd_offset, options=asdict(opts))
    if marginal is not None:
        if from_marginal:  # one computation, one number: the IWAE-k figure is on the curve
            imp = marginal["importance"]
            res["iwae_k"], res["iwae"] = opts.k, imp["curve"][str(opts.k)]
            res["iwae_se"] = imp["curve_se"][str(opts.k)]
            res["iwae_bpd"] = to_bits_per_dim(-res["iwae"], data.bpd_offset, data.dim)
        res["marginal"] = {**marginal, "elbo": res["elbo"]}
    if opts.diagnostics:
        bar.start("diagnostics")
        res["diagnostics"] = latent_diagnostics(model, x, opts.batch_size)
    if opts.kde:
        bar.start("KDE")
        res["kde"] = kde_section(model, data, x, opts)
    if opts.baselines:
        bar.start("baselines")
        res["baselines"] = baselines_section(model, data, opts.split, opts.seed)
    if composite is not None:
        bar.start("two-stage")
        res["two_stage"] = two_stage_section(composite, x, opts)
    if opts.generation:
        bar.start("generation")
        res["generation"] = generation_section(composite or model, data, opts)
    bar.finish()
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


def marginal_section(model: VAE, data: PreparedData, x: Batch,
                     opts: EvalOptions) -> dict[str, Any]:
    """Both estimators of log p(x), with the IWAE-k curve through ``opts.k`` and the gap to
    the one-sample ELBO that the standard figures report (the same noise, seed opts.seed)."""
    t = time.perf_counter()
    k = opts.loglik or opts.k or 1
    out = marginal_likelihood(model, x, k=k, k_naive=opts.naive, bpd_offset=data.bpd_offset,
                              seed=derive_seed(opts.seed, "importance"), memory_mb=opts.memory_mb,
                              elbo_seed=derive_seed(opts.seed, "elbo"),
                              extra_ks=[opts.k] if opts.k <= k else [])
    out["seconds"] = round(time.perf_counter() - t, 2)
    return out


def two_stage_section(model: TwoStageVAE, x: Batch, opts: EvalOptions) -> dict[str, Any]:
    """Stage 2's ELBO of the evaluation split's codes (one draw z ~ q1(z|x) each), its
    learned gamma_z, and stage 1's gamma."""
    codes = posterior_codes(model.stage1, x.x, opts.batch_size)
    z = fixed_transform(codes, CODES, None, derive_seed(opts.seed, "stage2-codes"))
    terms = elbo_terms(model.stage2, z, opts.batch_size,
                       seed=derive_seed(opts.seed, "stage2-elbo"))
    mean, se = mean_se(terms["elbo"])
    return {"stage2_elbo": mean, "stage2_elbo_se": se, "latent_dim": z.shape[1],
            "stage1": model.likelihood.extra_metrics(),
            "stage2": model.stage2.likelihood.extra_metrics(),
            "note": "stage-2 ELBO of one draw z ~ q1(z|x) per example, nats/example"}


def generation_section(model: VAE, data: PreparedData, opts: EvalOptions) -> dict[str, Any]:
    """Fréchet distance and precision/recall of ``opts.generation`` samples (means of p(x|z))
    against as many test examples, in the feature space of the dataset's classifier (images
    with labels) or in the data space. A two-stage model is also scored with its stage-1
    prior N(0, I), side by side."""
    ds = data.dataset
    n = min(opts.generation, len(ds.test))
    net, info = None, {"features": "the data space (no labelled images to train a classifier)"}
    if ds.is_image and ds.train_y is not None and ds.test_y is not None:
        # data parallel: every rank trains the same (deterministic) classifier when it is not
        # cached yet, at once instead of waiting on rank 0, and the atomic writes of the
        # identical cache files cannot clash
        net, info = feature_net(ds.train, ds.train_y, ds.test, ds.test_y, ds.levels,
                                log=print if distributed.world().main else lambda *_: None)
        info = {"features": "vaekit's feature classifier (penultimate layer)", **info}
    real_x = unit_images(ds.test[:n], ds.levels) if ds.is_image else data.test.x[:n].cpu()
    real = features(net, real_x)
    labels = None
    if model.conditional:  # y as often as in the training data, drawn with a fixed seed
        g = seeded_generator(derive_seed(opts.seed, "generation-labels"))
        labels = data.train_y.cpu()[torch.randint(len(data.train_y), (n,), generator=g)]
    samplers = {"model": model}
    if isinstance(model, TwoStageVAE):
        samplers = {"two_stage": model, "stage1_prior": model.stage1}
    out = {"n": n, "seed": opts.seed, **info}
    for name, m in samplers.items():
        fake = generate(m, n, derive_seed(opts.seed, "generation"), labels=labels)
        fake = fake.clamp(0, 1) if ds.is_image else fake
        out[name] = scores(real, features(net, fake))
        if opts.inception_weights:
            out[name]["inception_fid"] = inception_fid(real_x, fake, opts.inception_weights)
    return out


def kde_section(model: VAE, data: PreparedData, x: Batch, opts: EvalOptions) -> dict[str, Any]:
    """KDE of the training data (bandwidth chosen on validation data) and the Parzen-window
    estimate of the model's density from its samples, in the units of the data protocol.

    The likelihood names the comparable KDE (``kde_protocol``): the product-Bernoulli kernel
    (a pmf) for binary data, a Gaussian kernel otherwise, on dequantized data where the
    likelihood is a pmf of quantized values. Model samples are draws x ~ p(x|z), z ~ p(z).
    """
    g = seeded_generator(derive_seed(opts.seed, "kde-subset"))  # then the Parzen labels
    n = min(opts.kde_max_train, len(data.train_raw))
    idx = seeded_subset(len(data.train_raw), n, g).to(data.train_raw.device)
    c = protocol_splits(data, opts.split, opts.seed, rows=idx)  # seeds of their own
    kernel, kde_t, val, test = c.kernel, c.transform, c.val, c.test
    kde = kde_baseline(c.train, val, test, bpd_offset=c.bpd_offset, kernel=kernel)
    y = None
    if model.conditional:  # samples of p(x) = sum_y p(y) p(x|y), labels as often as in the data
        y = data.train_y[torch.randint(len(data.train_y), (n,), generator=g)]
    torch.manual_seed(derive_seed(opts.seed, "parzen-draws"))
    samples = _in_kde_space(model.sample(n, mean=False, y=y), data, kde_t,
                            derive_seed(opts.seed, "kde-samples"))
    h, _ = select_bandwidth(samples, val, kernel=kernel)
    grid = sorted({min(h * f, 0.49) if kernel == "bernoulli" else h * f
                   for f in (0.25, 0.5, 1.0, 2.0, 4.0)})
    parzen = parzen_log_likelihood(samples, test, grid, kernel=kernel)
    out = {k: v for k, v in asdict(kde).items() if k != "table"}
    out["bandwidth_table"] = [[h_, ll] for h_, ll in kde.table]
    out["summary"] = kde.summary()
    out["transform"] = kde_t
    out["parzen"] = {"kernel": kernel, "samples": "draws x ~ p(x|z), z ~ p(z)",
                     "bandwidth_chosen_on_val": h, "bandwidths": parzen.bandwidths,
                     "n_samples": parzen.n_samples, "log_lik": parzen.log_lik.tolist(),
                     "log_lik_se": parzen.log_lik_se.tolist(),
                     "note": parzen_sensitivity_note(parzen)}
    return out


def _in_kde_space(samples: torch.Tensor, data: PreparedData, kde_t: str,
                  seed: int) -> torch.Tensor:
    """Model samples (in the run's data space) as the KDE sees data: the same, or, for
    scaled quantized values, back to levels and then through the KDE's transform."""
    if kde_t == data.transform:
        return samples
    if data.transform != "scale" or not data.levels:
        raise ValueError(f"no map from {data.transform!r} data to a {kde_t!r} KDE")
    stored = (samples * (data.levels - 1)).round().clamp(0, data.levels - 1)
    return fixed_transform(stored.to(torch.int64), kde_t, data.levels, seed)
