"""What the figures and the report read of a run, loaded once.

``context_of(rd)`` takes an opened run directory (:class:`vaekit.rundir.RunDir`: the
trained model, the composite two-stage VAE where there is one, and its data, same split,
same fixed evaluation transforms) and reads the per-epoch history (``metrics.jsonl``, and
``stage2/metrics.jsonl``), every ``eval-SPLIT.json`` and the recorded command;
``load_context(run_dir)`` opens the directory first. Quantities several figures need
(posterior means of test examples, KL per latent dimension) are computed once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaekit.config import RunConfig
from vaekit.data.batch import Batch
from vaekit.data.pipeline import PreparedData
from vaekit.evaluation.diagnostics import kl_per_dimension
from vaekit.evaluation.metrics import ACTIVE_THRESHOLD
from vaekit.models.two_stage import TwoStageVAE
from vaekit.models.vae import VAE
from vaekit.numerics import derive_seed, seeded_generator
from vaekit.rundir import RunDir

MAX_CODES = 2000  # test examples whose codes the latent figures use


@dataclass
class ReportOptions:
    """Sizes and seeds of the figures that sample (all fixed: same run, same figures)."""

    seed: int = 0
    samples: int = 64  # prior samples shown (images) / 2000 (vectors)
    density_grid: int = 80  # points per axis of the learned-density grid (2-D data)
    density_k: int = 16  # samples per grid point, both estimators: where they differ most
    max_traversal_rows: int = 32


@dataclass
class ReportContext:
    run_dir: Path
    cfg: RunConfig
    model: VAE  # TwoStageVAE for a two-stage run
    data: PreparedData
    history: list[dict[str, Any]]
    stage2_history: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]]  # split -> eval-SPLIT.json
    command: str | None
    options: ReportOptions = field(default_factory=ReportOptions)
    cache: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- what the run is
    @property
    def two_stage(self) -> bool:
        return isinstance(self.model, TwoStageVAE)

    @property
    def stage1(self) -> VAE:
        """The VAE with its own N(0, I) prior (what the ELBO and the estimators score)."""
        return self.model.stage1 if isinstance(self.model, TwoStageVAE) else self.model

    @property
    def is_image(self) -> bool:
        return self.data.dataset.is_image and len(self.data.shape) >= 2

    @property
    def latent_dim(self) -> int:
        return self.stage1.latent_dim

    @property
    def has_labels(self) -> bool:
        return self.data.test.y is not None

    @property
    def conditional(self) -> bool:
        return self.stage1.conditional

    @property
    def evaluation(self) -> dict[str, Any] | None:
        """The test evaluation, else the validation one, else None."""
        return self.evals.get("test") or self.evals.get("val")

    # ---------------------------------------------------------------- shared quantities
    def generator(self, purpose: str) -> torch.Generator:
        """A generator seeded for one figure's draws (a purpose of ``numerics.derive_seed``)."""
        return seeded_generator(derive_seed(self.options.seed, purpose))

    def test_batch(self, n: int = MAX_CODES) -> Batch:
        return self.data.test[:n]

    def labels_for(self, n: int) -> torch.Tensor | None:
        """Labels to condition n samples on: every class in turn (None: unconditional)."""
        if not self.conditional:
            return None
        return torch.arange(n) % self.cfg.model.num_classes

    @torch.no_grad()
    def posterior_means(self) -> torch.Tensor:
        """E_q[z|x] of up to MAX_CODES test examples. (N, L)."""
        if "mu" not in self.cache:
            batch, m = self.test_batch(), self.stage1
            self.cache["mu"] = m.posterior(batch.x, m.context(batch.y)).mean
        return self.cache["mu"]

    def kl_per_dim(self) -> list[float] | None:
        """Mean KL(q(z_j|x) || p(z_j)) per latent dimension over up to MAX_CODES test
        examples, nats, from the model as it is now (an evaluation's diagnostics may be of
        an earlier checkpoint); None for a prior that does not factorize over dimensions."""
        if "kl" not in self.cache:
            kl, _ = kl_per_dimension(self.stage1, self.test_batch())
            self.cache["kl"] = None if kl is None else [float(v) for v in kl]
        return self.cache["kl"]

    def stale(self, evaluation: dict[str, Any]) -> list[str]:
        """Why sections of an evaluation are not of the run's last checkpoint (none: [])."""
        last = (self.history or [{}])[-1].get("step")
        sections = evaluation.get("section_checkpoints") or {
            "standard": evaluation.get("checkpoint") or {}}
        old = {name: ck for name, ck in sections.items()
               if last is not None and ck.get("step") is not None and ck["step"] != last}
        return [f"section {name} of this evaluation is of the checkpoint of epoch "
                f"{ck.get('epoch')} (step {ck['step']}); the run is now at step {last}: run "
                f"`vaekit evaluate {self.run_dir}` again to refresh it"
                for name, ck in old.items()]

    def section_epoch(self, evaluation: dict[str, Any], section: str) -> Any:
        """The epoch of the checkpoint a section of an evaluation came from (or None)."""
        ck = (evaluation.get("section_checkpoints") or {}).get(section) \
            or evaluation.get("checkpoint") or {}
        return ck.get("epoch")

    def active_dims(self) -> list[int]:
        """Active latent dimensions (Cov_x E_q[z_j|x] > 0.01, Burda et al.), largest KL
        first (largest variance of the means where KL per dimension is not defined)."""
        var = self.posterior_means().double().var(0)
        active = [j for j in range(len(var)) if var[j] > ACTIVE_THRESHOLD]
        kl = self.kl_per_dim()
        key = (lambda j: -kl[j]) if kl is not None else (lambda j: -float(var[j]))
        return sorted(active, key=key)


def context_of(rd: RunDir, options: ReportOptions | None = None) -> ReportContext:
    """Everything the report of the opened run ``rd`` needs (its model and data as opened)."""
    second = rd.stage2.history() if rd.stage2 is not None else []
    return ReportContext(rd.path, rd.cfg, rd.model, rd.data, rd.history(), second,
                         rd.evaluations(), rd.command(), options or ReportOptions())


def load_context(run_dir: str | Path, options: ReportOptions | None = None) -> ReportContext:
    """Everything the report of ``run_dir`` needs, on the CPU."""
    return context_of(RunDir.open(run_dir, "cpu"), options)
