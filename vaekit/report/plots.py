"""Drawing helpers on ``matplotlib.figure.Figure`` objects (no pyplot, no global backend:
importing vaekit never changes a user's matplotlib settings; no display needed): image
grids, 2-D scatter plots, log p(x) estimator curves, and PNG/SVG output."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vaekit.io import atomic_write_bytes

ESTIMATOR_LABELS = {"importance": "importance sampling, z ~ q(z|x)", "naive": "naive, z ~ p(z)"}


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


def show_images(ax: Axes, images: torch.Tensor, nrow: int | None = None, title: str = ""
                ) -> np.ndarray:
    """Draw a grid of images (values in [0, 1]) on ``ax`` without axis ticks; the grid."""
    grid = image_grid(images, nrow)
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return grid


def grid_png(images: torch.Tensor, nrow: int | None = None, scale: int = 3) -> bytes:
    """A grid of images (values in [0,1]) as PNG bytes, enlarged ``scale`` times."""
    grid = image_grid(images, nrow)
    grid = np.kron(grid, np.ones((scale, scale) + (1,) * (grid.ndim - 2), np.float32))
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return buf.getvalue()


def scatter_panel(ax: Axes, points: torch.Tensor, reference: torch.Tensor | None = None,
                  title: str = "", label: str = "model") -> None:
    """The first two coordinates of ``points`` (N, d) over ``reference`` data (grey)."""
    if reference is not None:
        r = reference.detach().cpu().reshape(len(reference), -1).numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, alpha=0.3, c="grey", label="data", rasterized=True)
    p = points.detach().cpu().reshape(len(points), -1).numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.6, c="C0", label=label, rasterized=True)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x[0] (data units)")
    ax.set_ylabel("x[1] (data units)")
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    ax.set_title(title or "first two coordinates", fontsize=9)


def scatter_figure(points: torch.Tensor, reference: torch.Tensor | None = None,
                   title: str = "") -> Figure:
    """The first two coordinates of ``points`` (N, d), over ``reference`` data if given."""
    fig = Figure(figsize=(5, 5))
    scatter_panel(fig.subplots(), points, reference, title)
    fig.tight_layout()
    return fig


def grid_figure(images: torch.Tensor, nrow: int | None = None) -> Figure:
    """A grid of images on a figure (for formats other than PNG: PDF, SVG, JPEG)."""
    fig = Figure(figsize=(6, 6))
    show_images(fig.subplots(), images, nrow)
    fig.tight_layout()
    return fig


def picture_bytes(x: torch.Tensor, suffix: str, reference: torch.Tensor | None = None,
                  nrow: int | None = None, title: str = "") -> bytes:
    """Images (2-D or 3-D events) as a grid, anything else as a scatter of two coordinates,
    encoded for a file named ``*suffix`` (.png, .jpg, .pdf, .svg)."""
    fmt = suffix.lstrip(".").lower().replace("jpg", "jpeg")
    if x.dim() >= 3 and fmt == "png":
        return grid_png(x, nrow)
    fig = grid_figure(x, nrow) if x.dim() >= 3 else scatter_figure(x, reference, title)
    return figure_bytes(fig, fmt, 120)


def save_picture(x: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
                 nrow: int | None = None, title: str = "") -> Path:
    """:func:`picture_bytes` written atomically to ``path`` (a symbolic link there is
    replaced, never followed)."""
    atomic_write_bytes(path, picture_bytes(x, Path(path).suffix, reference, nrow, title))
    return Path(path)


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """A figure written atomically to ``path``, in the format its suffix names."""
    fmt = Path(path).suffix.lstrip(".").lower().replace("jpg", "jpeg") or "png"
    atomic_write_bytes(path, figure_bytes(fig, fmt, dpi))
    return Path(path)


def loglik_panel(ax: Axes, report: dict[str, Any], keys: tuple[str, ...], title: str) -> None:
    """Mean estimates of log p(x) against K (± s.e. across examples), with the ELBO."""
    for i, key in enumerate(keys):
        curve, se = report[key]["curve"], report[key].get("curve_se", {})
        ks = sorted(int(k) for k in curve)
        means = [curve[str(k)] for k in ks]
        ax.errorbar(ks, means, yerr=[se.get(str(k), 0.0) for k in ks], marker="o", ms=3,
                    capsize=2, label=ESTIMATOR_LABELS[key],
                    color=f"C{list(ESTIMATOR_LABELS).index(key)}")
        if i == 0 and "elbo" in report:
            ax.axhline(report["elbo"], color="grey", ls="--", label="ELBO (1 sample)")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples K")
    ax.set_ylabel("mean estimate of log p(x) [nats/example]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def loglik_figure(report: dict[str, Any], title: str = "") -> Figure:
    """Mean estimates of log p(x) vs K (log scale, ± s.e. across examples) with the ELBO.
    With both estimators, the importance curve gets a panel of its own so that the naive
    one, often many nats lower, does not squash it."""
    keys = tuple(k for k in ESTIMATOR_LABELS if k in report)
    both = len(keys) == 2
    fig = Figure(figsize=(11 if both else 6, 4))
    axes = fig.subplots(1, 2) if both else [fig.subplots()]
    loglik_panel(axes[0], report, keys[:1],
                 "importance sampling" if both else title or "estimators")
    if both:
        loglik_panel(axes[1], report, keys[::-1], "naive vs importance sampling")
    fig.suptitle(title or "log p(x) estimators vs K", fontsize=10)
    fig.tight_layout()
    return fig


def save_loglik_curve(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """:func:`loglik_figure` written to ``path``."""
    return save_figure(loglik_figure(report, title), path)


def figure_bytes(fig: Figure, fmt: str, dpi: int = 100) -> bytes:
    """The figure as PNG or SVG bytes, without time stamps (same figure, same bytes). SVG
    text stays text (editable, half the size and time of glyph outlines); the settings
    apply inside this call only."""
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "vaekit"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
    return buf.getvalue()


def variance_figure(study: dict[str, Any]) -> Figure:
    """tr Cov of each gradient estimator vs S (log-log), one panel per parameter group, from
    a ``vaekit.evaluation.gradients.gradient_study``; IWAE-S estimators (whose target
    changes with S) dashed."""
    groups = list(dict.fromkeys(r["group"] for r in study["rows"]))
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, group in zip(axes, groups, strict=True):
        for name in study["estimators"]:
            rows = [r for r in study["rows"] if r["estimator"] == name and r["group"] == group]
            if rows:
                style = "--" if rows[0]["objective"].startswith("IWAE") else "-"
                ax.plot([r["samples"] for r in rows], [r["variance"] for r in rows], style,
                        marker="o", ms=3, label=name)
        ax.set(xscale="log", yscale="log", xlabel="samples S per example",
               ylabel="tr Cov of the gradient estimate", title=f"{group} parameters")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"gradient variance over {study['repeats']} estimates, batch of "
                 f"{study['batch_size']}")
    fig.tight_layout()
    return fig
