"""Generation quality without a download: a Fréchet distance and precision/recall of
generated vs test images in the feature space of a classifier that vaekit trains itself.

Inception FID needs Inception weights from the internet. vaekit instead trains a small CNN
on the dataset's own labels, deterministically (fixed seed and recipe), and caches it under a
content hash of the data and the recipe (``$VAEKIT_CACHE`` or ``~/.cache/vaekit``), so every
run on that dataset is scored with the same network; its test accuracy is recorded.

    FD(a, b) = |m_a - m_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)     (Fréchet, Dowson &
                                                                            Landau 1982)
    precision = share of generated points inside the real k-NN manifold; recall = share of
    real points inside the generated one (Kynkäänniemi et al. 2019, k = 3)

Images are compared as intensities in [0, 1]: test images x = pixel / (levels - 1), samples
the means of p(x|z) clamped to [0, 1]. Non-image data are compared in the data space.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vaekit import distributed
from vaekit.errors import ConfigError
from vaekit.io import atomic_write, atomic_write_text
from vaekit.numerics import (
    DISTANCE_BATCH,
    EVAL_BATCH,
    FEATURE_BATCH,
    INCEPTION_BATCH,
    cat_chunks,
    chunks,
    derive_seed,
    seeded_generator,
    seeded_permutation,
)


@dataclass(frozen=True)
class Recipe:
    """How the feature classifier is trained (part of its cache key)."""

    epochs: int = 3  # at least; small data sets get more, up to min_steps optimizer steps
    min_steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    width: int = 32  # channels of the first conv layer (the second has twice as many)
    features: int = 128  # the feature layer's width
    version: int = 1


class FeatureNet(nn.Module):
    """conv3x3(w) - ReLU - pool2 - conv3x3(2w) - ReLU - pool2 - FC(features) - ReLU - FC(C).
    ``features(x)`` is the penultimate layer."""

    def __init__(self, shape: tuple[int, ...], classes: int, recipe: Recipe) -> None:
        super().__init__()
        self.shape = shape
        c, h, w = math.prod(shape[:-2]), shape[-2], shape[-1]
        self.convs = nn.Sequential(
            nn.Conv2d(c, recipe.width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(recipe.width, 2 * recipe.width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        flat = 2 * recipe.width * (h // 4) * (w // 4)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(flat, recipe.features), nn.ReLU())
        self.head = nn.Linear(recipe.features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *shape) in [0, 1] -> (N, features)."""
        return self.embed(self.convs(x.reshape(len(x), -1, *self.shape[-2:])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def unit_images(raw: torch.Tensor, levels: int | None) -> torch.Tensor:
    """Stored images as intensities in [0, 1]: pixel / (levels - 1)."""
    return raw.float() / (levels - 1) if levels else raw.float()


def cache_root() -> Path:
    env = os.environ.get("VAEKIT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vaekit"


def content_hash(recipe: Recipe, *tensors: torch.Tensor) -> str:
    """sha256 of the recipe and the tensors' shapes, dtypes and bytes."""
    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    for t in tensors:
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_feature_net(x: torch.Tensor, y: torch.Tensor, classes: int,
                      recipe: Recipe = Recipe()) -> FeatureNet:
    """Train the classifier on x (N, *shape) in [0, 1] with labels y, deterministically."""
    torch.manual_seed(derive_seed(recipe.seed, "feature-init"))
    net = FeatureNet(tuple(x.shape[1:]), classes, recipe)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    g = seeded_generator(derive_seed(recipe.seed, "feature-order"))
    per_epoch = math.ceil(len(x) / recipe.batch_size)
    for _ in range(max(recipe.epochs, math.ceil(recipe.min_steps / per_epoch))):
        perm = seeded_permutation(len(x), g)
        for lo, hi in chunks(len(x), recipe.batch_size):
            idx = perm[lo:hi]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor,
             batch: int = FEATURE_BATCH) -> float:
    """Share of x classified as y."""
    hits = sum(int((net(x[lo:hi]).argmax(1) == y[lo:hi]).sum()) for lo, hi in chunks(len(x), batch))
    return hits / max(len(x), 1)


def feature_net(train_raw: torch.Tensor, train_y: torch.Tensor, test_raw: torch.Tensor,
                test_y: torch.Tensor, levels: int | None, recipe: Recipe = Recipe(),
                log: Any = print) -> tuple[FeatureNet, dict[str, Any]]:
    """The dataset's feature classifier: from the cache, or trained and cached now.
    Returns (net, info) with the content hash, the test accuracy and the recipe."""
    key = content_hash(recipe, train_raw, train_y)
    folder = cache_root() / "classifiers" / key[:24]
    classes = 1 + int(max(train_y.max(), test_y.max()))
    net = FeatureNet(tuple(train_raw.shape[1:]), classes, recipe)
    if (folder / "meta.json").is_file():
        net.load_state_dict(load_file(str(folder / "model.safetensors")))
        return net.eval(), json.loads((folder / "meta.json").read_text())
    log(f"training the feature classifier on {len(train_raw)} labelled images (once; "
        f"cached in {folder})")
    t0 = time.perf_counter()
    net = train_feature_net(unit_images(train_raw, levels), train_y, classes, recipe)
    info = {"hash": key, "test_accuracy": accuracy(net, unit_images(test_raw, levels), test_y),
            "recipe": asdict(recipe), "train_seconds": round(time.perf_counter() - t0, 1),
            "n_train": len(train_raw), "classes": classes}
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
    atomic_write_text(folder / "meta.json", json.dumps(info, indent=1))
    return net, info


@torch.no_grad()
def features(net: FeatureNet | None, x: torch.Tensor, batch: int = FEATURE_BATCH) -> torch.Tensor:
    """(N, F) float64 features; without a net, the flattened data themselves. Inside
    ``distributed.sharded()`` each rank computes a block of the rows."""
    if net is None:
        return x.reshape(len(x), -1).double()
    a, b = distributed.local_rows(len(x))
    out = cat_chunks(lambda part: net.features(part.float()).double(), x[a:b], batch)
    return distributed.gather_rows(out, len(x))


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between Gaussians fitted to feature sets a (N, F) and b (M, F), in float64:
    |m_a - m_b|^2 + Tr S_a + Tr S_b - 2 Tr (S_a^1/2 S_b S_a^1/2)^1/2."""
    a, b = a.double(), b.double()
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    root = _sqrt_psd(sa)
    cross = torch.linalg.eigvalsh(root @ sb @ root).clamp_min(0).sqrt().sum()
    return float((ma - mb).pow(2).sum() + sa.trace() + sb.trace() - 2 * cross)


def _kth_radius(x: torch.Tensor, k: int, chunk: int = DISTANCE_BATCH) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row. (N,)."""
    return cat_chunks(lambda part: torch.cdist(part, x).kthvalue(k + 1, dim=1).values, x, chunk)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
             chunk: int = DISTANCE_BATCH) -> torch.Tensor:
    """Whether each point lies within radius_i of some centre i. (N,) bool."""
    return cat_chunks(lambda part: (torch.cdist(part, centres) <= radii).any(1), points, chunk)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets."""
    real, fake = real.float(), fake.float()
    precision = _covered(fake, real, _kth_radius(real, k)).double().mean()
    recall = _covered(real, fake, _kth_radius(fake, k)).double().mean()
    return float(precision), float(recall)


def scores(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Fréchet distance and precision/recall of two feature sets, with the sample sizes."""
    precision, recall = precision_recall(real, fake, k)
    return {"frechet": frechet_distance(real, fake), "precision": precision, "recall": recall,
            "n_real": len(real), "n_generated": len(fake), "k": k}


@torch.no_grad()
def generate(model: nn.Module, n: int, seed: int = 0, batch: int = EVAL_BATCH,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """n samples x = E[x|z], z ~ p(z) (labels y for a conditional model), in batches (the
    batch size fixes the draws), from one seeded generator. (n, *shape)."""
    g = seeded_generator(seed)
    out = []
    for lo, hi in chunks(n, batch):
        y = None if labels is None else labels[lo:hi]
        out.append(model.sample(hi - lo, generator=g, y=y).cpu())
    return torch.cat(out)


def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights: str | Path,
                  batch: int = INCEPTION_BATCH) -> float:
    """Standard Inception FID (torchmetrics' FrechetInceptionDistance, 2048 features) from
    locally stored Inception weights; nothing is fetched. real, fake (N, [C,] H, W) in [0, 1].

    Needs the optional extra ``pip install 'vaekit[fid]'`` and a weights file such as the
    ``pt_inception-2015-12-05`` checkpoint that torch-fidelity uses.
    """
    if not Path(weights).is_file():
        raise ConfigError(f"Inception weights {weights} do not exist",
                          "point --inception-weights at a local weights file")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise ConfigError("standard FID needs torchmetrics and torch-fidelity",
                          "pip install 'vaekit[fid]'") from None
    fid = FrechetInceptionDistance(feature=2048, normalize=True,
                                   feature_extractor_weights_path=str(weights))
    for images, is_real in ((real, True), (fake, False)):
        for lo, hi in chunks(len(images), batch):
            x = images[lo:hi].float().clamp(0, 1)
            x = x.reshape(len(x), -1, *x.shape[-2:])  # (B, C, H, W)
            fid.update(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, real=is_real)
    return float(fid.compute())
