"""Training throughput of the conv VAE of Dai & Wipf (2019) on Fashion-MNIST (encoder conv 64
-> conv 128 (4x4, stride 2) -> FC 1024 -> 2x64, mirrored decoder, Bernoulli on dynamically
binarized images, Adam 1e-3, batch 64): vaekit against the same networks in a plain PyTorch
loop and in pythae, timed by turns in one process (common.interleaved).

    python benchmarks/bench_conv.py            # 20 cycles of 20 steps per contender
    python benchmarks/bench_conv.py --quick    # smoke run
    python benchmarks/bench_conv.py --device cuda --contenders tensor-loop vaekit \
        vaekit-channels-last vaekit-compile        # on a GPU (the data on it)

Every contender trains the same modules (vaekit's ConvEncoder/ConvDecoder, same init), so
the differences are the training code: loss, optimizer call, data path, memory format.
No timing assertions: numbers are printed and written to JSON.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from common import ensure_importable, interleaved, isolated, machine_info, paired_ratio, table
from common import write_json as save_json

ensure_importable()

BATCH, LR, LATENT, SEED = 64, 1e-3, 64, 0
CONTENDERS = ("tensor-loop", "pythae", "vaekit", "tensor-loop-channels-last",
              "vaekit-channels-last", "vaekit-compile")
ARCH = {"name": "conv", "channels": [64, 128], "fc": 1024}


def _images(limit: int, device: str = "cpu"):
    from vaekit.data.datasets import load_dataset

    x = load_dataset("fashion-mnist").train
    return (x[:limit] if limit else x).to(device).float().div(255)


def _nets():
    """vaekit's conv encoder and decoder for 28x28 images, seeded."""
    import torch

    from vaekit.nn.conv import conv_pair

    torch.manual_seed(SEED)
    return conv_pair((28, 28), LATENT, (28, 28), channels=ARCH["channels"], fc=ARCH["fc"],
                     activation="relu")


def _batches(images):
    import torch

    def batches():
        perm = torch.randperm(len(images), device=images.device)
        for i in range(0, len(images), BATCH):
            yield torch.bernoulli(images[perm[i : i + BATCH]])

    return batches


def setup_tensor_loop(limit: int, channels_last: bool = False, device: str = "cpu"):
    """The usual code: BCE with logits (sum) + closed-form KL, mean over the batch,
    ``torch.optim.Adam`` (default foreach), ``zero_grad`` / ``backward`` / ``step``."""
    import torch
    import torch.nn.functional as F

    enc, dec = (m.to(device) for m in _nets())
    if channels_last:
        enc, dec = (m.to(memory_format=torch.channels_last) for m in (enc, dec))
    opt = torch.optim.Adam(itertools.chain(enc.parameters(), dec.parameters()), lr=LR)

    def step(x: torch.Tensor) -> None:
        mu, log_var = enc(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
        kld = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
        opt.zero_grad()
        ((rec + kld) / len(x)).backward()
        opt.step()

    return _batches(_images(limit, device)), step


def setup_pythae(limit: int, device: str = "cpu"):
    """pythae 0.1.2's VAE (bce) around the same networks, a manual loop on its loss."""
    import torch
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    enc, dec = _nets()

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.net = enc

        def forward(self, x: torch.Tensor):
            mu, log_var = self.net(x.reshape(len(x), 28, 28)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.net = dec

        def forward(self, z: torch.Tensor):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, 1, 28, 28))

    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    model = VAE(cfg, encoder=Encoder(), decoder=Decoder()).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    images = _images(limit, device).view(-1, 1, 28, 28)

    def step(x: torch.Tensor) -> None:
        opt.zero_grad()
        model({"data": x}).loss.backward()
        opt.step()

    return _batches(images), step


def setup_vaekit(limit: int, device: str = "cpu", **train: Any):
    """vaekit's public setup_run with the conv architecture; (batches, step, fast path)."""
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from vaekit.train import setup_run

    cfg = RunConfig(DataConfig(val_fraction=0.0, limit=limit),
                    ModelConfig(latent_dim=LATENT, arch=ARCH, likelihood="bernoulli"),
                    TrainConfig(batch_size=BATCH, lr=LR, seed=SEED, device=device, **train))
    run = setup_run(cfg)
    run.model.train()
    counter = itertools.count()
    return run.loader.epoch, (lambda batch: run.step(batch, next(counter))), run.fast_path


def bench(names: list[str], cycles: int, chunk: int, warmup: int, limit: int,
          device: str = "cpu") -> dict[str, Any]:
    import torch

    setups, skipped, notes = {}, {}, {}
    for name in names:
        if name == "pythae":
            try:
                setups[name] = setup_pythae(limit, device)
            except ImportError:
                skipped[name] = "pythae is not installed (pip install -e '.[bench]')"
        elif name.startswith("tensor-loop"):
            setups[name] = setup_tensor_loop(limit, name.endswith("channels-last"), device)
        else:
            train = {"channels_last": True} if name.endswith("channels-last") else {}
            train.update({"compile": True} if name.endswith("compile") else {})
            *setups[name], notes[name] = setup_vaekit(limit, device, **train)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    out = {"results": interleaved(setups, cycles, chunk, warmup, sync), "skipped": skipped,
           "fast_path": notes, "device": device}
    if device.startswith("cuda"):
        out["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--chunk-steps", type=int, default=20)
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS,
                   default=["tensor-loop", "pythae", "vaekit", "tensor-loop-channels-last",
                            "vaekit-channels-last"],
                   help="vaekit-compile: torch.compile (its first steps compile: warm-up)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (data kept there)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up steps per contender (default 3; 10 on a GPU)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    cycles, chunk, limit = (3, 5, 3200) if a.quick else (a.cycles, a.chunk_steps, 0)
    warmup = a.warmup if a.warmup is not None else (10 if a.device.startswith("cuda") else 3)
    rec: dict[str, Any] = {"benchmark": "bench_conv", "machine": machine_info(a.threads),
                           "arch": ARCH, "batch": BATCH, "latent": LATENT, "device": a.device}
    out = isolated(bench, a.threads, names=a.contenders, cycles=cycles, chunk=chunk,
                   warmup=warmup, limit=limit, device=a.device)
    rec["interleaved"] = out
    cyc = {k: v["cycle_images_per_s"] for k, v in out.get("results", {}).items()}
    rows = []
    for name, rates in cyc.items():
        vs = {base: paired_ratio(cyc[name], cyc[base]) if base in cyc else None
              for base in ("tensor-loop", "pythae")}
        rows.append([name, out["results"][name]["images_per_s"], max(rates),
                     vs["tensor-loop"], vs["pythae"], out["fast_path"].get(name, "")])
    rows += [[name, None, None, None, None, why] for name, why in out.get("skipped", {}).items()]
    rec["rows"] = rows
    print(table(["contender", "img/s (median)", "fastest cycle", "this/tensor-loop",
                 "this/pythae", "vaekit fast path"], rows,
                f"\nConv VAE training on {out.get('device_name', a.device)}, interleaved "
                f"({cycles} cycles of {chunk} steps, batch {BATCH}); ratios = median of "
                "same-cycle ratios", digits=2))
    from common import default_json

    name = "bench_conv" + ("" if a.device == "cpu" else "_" + a.device.replace(":", ""))
    save_json(a.json or default_json(name + ("_quick" if a.quick else "")), rec)


if __name__ == "__main__":
    main()
