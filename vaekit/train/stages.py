"""Fitting stage 2 of the two-stage VAE (Dai & Wipf 2019) on a trained stage 1, through
the public ``setup_run`` / ``fit``.

A two-stage run is one run directory: stage 1 as usual (``config.json`` with a ``stage2``
section, ``checkpoint/``), stage 2 in ``RUN_DIR/stage2/`` (a VAE of stage 1's codes, with its
own config, checkpoint and logs). Opened again (``vaekit.rundir.RunDir``), it is the
composite :class:`~vaekit.models.two_stage.TwoStageVAE`.

Stage 2's data are stage 1's posteriors q1(z|x) = N(mu(x), diag sigma(x)^2) of the training
examples (one fixed transformed draw of each, seed purpose ``codes-train``), stored as
(N, 2, k) and sampled z = mu + sigma * eps at every visit (transform ``posterior-sample``);
validation and test codes come from the run's fixed validation and test data. The caller
passes the stage-1 model and data it holds: the run just trained, or a run directory
opened once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vaekit.config import DataConfig, RunConfig, Stage2Config
from vaekit.data.batch import Batch
from vaekit.data.datasets import Dataset
from vaekit.data.pipeline import PreparedData, fixed_transform
from vaekit.data.transforms import protocol
from vaekit.models.two_stage import CODES, posterior_codes
from vaekit.models.vae import VAE
from vaekit.numerics import derive_seed
from vaekit.registry import LIKELIHOODS
from vaekit.train.base import Run
from vaekit.train.callbacks import standard_callbacks
from vaekit.train.checkpoint import has_checkpoint, load_run_config
from vaekit.train.loop import fit, setup_run

STAGE2 = "stage2"  # the sub-folder of a run directory that holds stage 2


def codes_data(model: VAE, data: PreparedData, eval_seed: int) -> PreparedData:
    """Stage 2's data: the codes of stage 1's training, validation and test splits (the
    fixed draws of the run's ``data.eval_seed``)."""
    x_train = fixed_transform(data.train_raw, data.transform, data.levels,
                              derive_seed(eval_seed, "codes-train"))
    train, val, test = (posterior_codes(model, x) for x in (x_train, data.val.x, data.test.x))
    lik = LIKELIHOODS.get("gaussian-gamma").build
    ds = Dataset("stage-1 codes", train.cpu(), test.cpu(), None,
                 f"posteriors q1(z|x) of {data.dataset.name} under the stage-1 model")

    def draw(codes: torch.Tensor, s: int) -> Batch:  # one fixed draw z = mu + sigma * eps
        return Batch(fixed_transform(codes, CODES, None, s))

    val_seed = derive_seed(eval_seed, "codes-val")
    return PreparedData(ds, CODES, train, None, draw(val, val_seed),
                        draw(test, derive_seed(eval_seed, "codes-test")),
                        protocol(CODES, lik, None, val_seed), lik, val)


def stage2_seed(cfg: RunConfig) -> int:
    """Stage 2's training seed: the run's ``train.seed`` (purpose ``stage2-train``) plus
    the ``stage2`` section's own ``train.seed`` (default 0), so ``--seed`` moves both
    stages and ``train.seed`` 0 keeps the seed stage 2 had before it followed the run's."""
    s2 = cfg.stage2 or Stage2Config()
    return derive_seed(cfg.train.seed, "stage2-train") + s2.train.seed


def stage2_run_config(cfg: RunConfig) -> RunConfig:
    """The RunConfig of stage 2 from the run's ``stage2`` section (latent 0 = stage 1's),
    seeded by :func:`stage2_seed`."""
    s2 = cfg.stage2 or Stage2Config()
    model = dataclasses.replace(s2.model, latent_dim=s2.model.latent_dim or cfg.model.latent_dim,
                                data_shape=[], data_levels=0, num_classes=0)
    train = dataclasses.replace(s2.train, device=cfg.train.device, seed=stage2_seed(cfg))
    return RunConfig(DataConfig(name="stage-1 codes", transform=CODES), model, train)


def fit_stage2(stage1: VAE, data: PreparedData, cfg: RunConfig, run_dir: str | Path, *,
               progress: bool = True, echo: bool | None = None,
               checkpoint_every: int = 0) -> Run:
    """Fit stage 2 of the run ``cfg`` (its ``stage2`` section) on the codes of the trained
    ``stage1`` model of ``data``, into ``run_dir/stage2``; or continue it where its
    checkpoint stopped. Returns the stage-2 run."""
    out, resume = Path(run_dir) / STAGE2, has_checkpoint(Path(run_dir) / STAGE2)
    codes = codes_data(stage1, data, cfg.data.eval_seed)
    s2cfg = stage2_run_config(cfg)
    if resume:  # a stage 2 begun earlier continues with the seed it began with
        s2cfg.train.seed = load_run_config(out).train.seed
    run = setup_run(s2cfg, out, resume=resume, data=codes)
    try:
        return fit(run, standard_callbacks(run, progress=progress, echo=echo,
                                           checkpoint_every=checkpoint_every))
    finally:
        run.release()
