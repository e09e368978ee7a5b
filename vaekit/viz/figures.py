"""PNG figures drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no global backend:
importing vaekit never changes a user's matplotlib settings; no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from matplotlib.figure import Figure


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) in [0,1] -> one (rows*(H+pad), cols*(W+pad)[, C]) array."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)  # (N, H, W, C)
        if x.shape[-1] == 1:
            x = x[..., 0]
    n, h, w = x.shape[:3]
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, *x.shape[3:]), np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h,
             pad + c * (w + pad) : pad + c * (w + pad) + w] = x[i]
    return grid


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None,
                    scale: int = 3) -> Path:
    """Write a grid of images (values in [0,1]) as a PNG, enlarged ``scale`` times."""
    grid = image_grid(images, nrow)
    grid = np.kron(grid, np.ones((scale, scale) + (1,) * (grid.ndim - 2), np.float32))
    matplotlib.image.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
    return Path(path)


def save_scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
                 title: str = "") -> Path:
    """Scatter the first two coordinates of ``points`` (N, d), over ``reference`` data if given."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    if reference is not None:
        r = reference.detach().cpu().reshape(len(reference), -1).numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, alpha=0.3, c="grey", label="data")
    p = points.detach().cpu().reshape(len(points), -1).numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.6, c="C0", label="model")
    ax.set_aspect("equal")
    ax.set_xlabel("x[0] (data units)")
    ax.set_ylabel("x[1] (data units)")
    ax.legend(loc="upper right")
    ax.set_title(title or "first two coordinates")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def save_figure_for(x: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
                    nrow: int | None = None, title: str = "") -> Path:
    """Images (2-D or 3-D events) as a grid, anything else as a scatter of two coordinates."""
    if x.dim() >= 3:
        return save_image_grid(x, path, nrow)
    return save_scatter(x, path, reference, title)
