"""One rank of a data-parallel test job (started by tests/test_distributed.py with the
environment torchrun would set: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

    python tests/ddp_worker.py fit OUT BATCH N    # one epoch on ring:n=N; rank 0 saves weights
    python tests/ddp_worker.py mismatch           # rank 1 is given another learning rate
    python tests/ddp_worker.py die                # rank 1 exits in the middle of training
"""

from __future__ import annotations

import os
import sys
import types

import torch
from safetensors.torch import save_file

from vaekit import distributed
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import error_line
from vaekit.models import build_model
from vaekit.train import Callback, fit, setup_run

SIGMA_SHIFT = 40.0  # log sigma^2 - 40: sigma ~ 2e-9, so the noise eps no longer matters


def config(batch: int, lr: float = 1e-2, n: int = 613) -> RunConfig:
    return RunConfig(DataConfig(name=f"ring:n={n}", val_fraction=0.0),
                     ModelConfig(latent_dim=2, arch={"name": "mlp", "hidden": [16]},
                                 likelihood="gaussian"),
                     TrainConfig(epochs=1, batch_size=batch, lr=lr, device="cpu", seed=3,
                                 fused=False))  # the fast path has its own encoder code


def deterministic_model(cfg: RunConfig) -> torch.nn.Module:
    """The configured VAE with an encoder whose variance is ~4e-18: its one-sample ELBO (and
    gradient) no longer depends on which noise a rank draws."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    enc = model.encoder
    params = enc.params

    def shifted(self, x, c=None):
        mu, log_var = params(x, c)
        return mu, log_var - SIGMA_SHIFT

    enc.params = types.MethodType(shifted, enc)
    return model


def fit_one_epoch(out: str, batch: int, n: int) -> None:
    cfg = config(batch, n=n)
    cfg.model.data_shape, cfg.model.data_levels = [2], 0
    run = setup_run(cfg, model=deterministic_model(cfg))
    fit(run)
    if distributed.world().main:
        save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, out)


class Die(Callback):
    def on_step_end(self, run, loss) -> None:
        if run.world.rank == 1 and run.state.step == 3:
            os._exit(3)  # a rank lost without a word (killed, out of memory, node gone)


def main() -> int:
    mode = sys.argv[1]
    distributed.init("cpu")
    try:
        if mode == "fit":
            fit_one_epoch(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        elif mode == "mismatch":
            cfg = config(32, lr=1e-2 if distributed.world().rank == 0 else 2e-2)
            setup_run(cfg)
        elif mode == "die":
            cfg = config(32)
            cfg.train.epochs = 50
            fit(setup_run(cfg), [Die()])
    except Exception as err:  # what the CLI would print
        line, code = error_line(err, distributed.world().rank, distributed.collective_failure(err))
        print(f"rank {distributed.world().rank}: {line}", file=sys.stderr)
        distributed.shutdown(wait=False)
        return code
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
