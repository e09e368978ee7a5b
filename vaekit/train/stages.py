"""Fitting the two-stage VAE (Dai & Wipf 2019) stage by stage, through the public
``setup_run`` / ``fit``.

A two-stage run is one run directory: stage 1 as usual (``config.json`` with a ``stage2``
section, ``checkpoint/``), stage 2 in ``RUN_DIR/stage2/`` (a VAE of stage 1's codes, with its
own config, checkpoint and logs). ``load_model(RUN_DIR)`` returns the composite
:class:`~vaekit.models.two_stage.TwoStageVAE`.

Stage 2's data are stage 1's posteriors q1(z|x) = N(mu(x), diag sigma(x)^2) of the training
examples (one fixed transformed draw of each, seed ``data.eval_seed + 2``), stored as
(N, 2, k) and sampled z = mu + sigma * eps at every visit (transform ``posterior-sample``);
validation and test codes come from the run's fixed validation and test data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from vaekit import distributed
from vaekit.config import DataConfig, RunConfig, Stage2Config
from vaekit.data.batch import Batch
from vaekit.data.datasets import Dataset
from vaekit.data.pipeline import PreparedData, fixed_transform, likelihood_class, prepare_data
from vaekit.data.transforms import protocol
from vaekit.errors import CheckpointError
from vaekit.models.two_stage import posterior_codes
from vaekit.models.vae import VAE
from vaekit.train.callbacks import standard_callbacks
from vaekit.train.checkpoint import checkpoint_dir, has_checkpoint, load_model, load_run_config
from vaekit.train.loop import Run, fit, setup_run

STAGE2 = "stage2"
CODES = "posterior-sample"


def codes_data(model: VAE, data: PreparedData, seed: int) -> PreparedData:
    """Stage 2's data: the codes of stage 1's training, validation and test splits."""
    x_train = fixed_transform(data.train_raw, data.transform, data.levels, seed)
    train, val, test = (posterior_codes(model, x) for x in (x_train, data.val.x, data.test.x))
    lik = likelihood_class("gaussian-gamma")
    ds = Dataset("stage-1 codes", train.cpu(), test.cpu(), None,
                 f"posteriors q1(z|x) of {data.dataset.name} under the stage-1 model")

    def draw(codes: torch.Tensor, s: int) -> Batch:  # one fixed draw z = mu + sigma * eps
        return Batch(fixed_transform(codes, CODES, None, s))

    return PreparedData(ds, CODES, train, None, draw(val, seed + 1), draw(test, seed + 2),
                        protocol(CODES, lik, None, seed + 1), lik, val)


def stage2_run_config(cfg: RunConfig) -> RunConfig:
    """The RunConfig of stage 2 from the run's ``stage2`` section (latent 0 = stage 1's)."""
    s2 = cfg.stage2 or Stage2Config()
    model = dataclasses.replace(s2.model, latent_dim=s2.model.latent_dim or cfg.model.latent_dim,
                                data_shape=[], data_levels=0, num_classes=0)
    train = dataclasses.replace(s2.train, device=cfg.train.device)
    return RunConfig(DataConfig(name="stage-1 codes", transform=CODES), model, train)


def fit_stage2(run_dir: str | Path, stage2: Stage2Config | None = None,
               progress: bool = True, echo: bool | None = None,
               checkpoint_every: int = 0) -> Run:
    """Fit stage 2 of the run in ``run_dir`` on its stage-1 codes, or continue it where its
    checkpoint stopped; ``stage2`` (when given) becomes the run's ``stage2`` section first."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    distributed.init(cfg.train.device)  # under torchrun: join the job before anything is written
    if stage2 is not None or cfg.stage2 is None:
        cfg.stage2 = stage2 or Stage2Config()
        cfg.validate()
        distributed.on_main(lambda: cfg.save(run_dir / "config.json"))  # rank 0 writes
    stage1 = _stage1_model(run_dir, cfg)
    device = next(stage1.parameters()).device
    data = prepare_data(cfg.data, cfg.model.likelihood.name, cfg.train.seed).to(device)
    codes = codes_data(stage1, data, cfg.data.eval_seed + 2)
    out = run_dir / STAGE2
    run = setup_run(stage2_run_config(cfg), out, resume=has_checkpoint(out), data=codes)
    return fit(run, standard_callbacks(run, progress=progress, echo=echo,
                                       checkpoint_every=checkpoint_every))


def _stage1_model(run_dir: Path, cfg: RunConfig) -> VAE:
    """The trained stage-1 VAE of a run (finished: stage 2 needs its final codes)."""
    from vaekit.train.checkpoint import load_trainer_state

    counters, _, _ = load_trainer_state(checkpoint_dir(run_dir))
    if counters["epoch"] < cfg.train.epochs:
        raise CheckpointError(f"stage 1 of {run_dir} stopped at epoch {counters['epoch']} of "
                              f"{cfg.train.epochs}", f"finish it first: vaekit train --resume "
                              f"{run_dir}")
    model, _ = load_model(run_dir, stage1=True)
    return model


def is_two_stage(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a fitted stage 2."""
    return has_checkpoint(Path(run_dir) / STAGE2)


def stage_summary(run_dir: str | Path) -> dict[str, Any]:
    """The last epoch rows of both stages (gamma, gamma_z, validation ELBOs)."""
    import json

    out = {}
    for name, d in (("stage1", Path(run_dir)), ("stage2", Path(run_dir) / STAGE2)):
        path = d / "metrics.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line]
            out[name] = rows[-1] if rows else {}
    return out
