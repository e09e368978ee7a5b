"""Curves: log p(x) estimators against the number of samples K."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

LABELS = {"importance": "importance sampling, z ~ q(z|x)", "naive": "naive, z ~ p(z)"}


def _plot(ax: Axes, report: dict[str, Any], keys: tuple[str, ...], title: str) -> None:
    for i, key in enumerate(keys):
        curve, se = report[key]["curve"], report[key].get("curve_se", {})
        ks = sorted(int(k) for k in curve)
        means = [curve[str(k)] for k in ks]
        ax.errorbar(ks, means, yerr=[se.get(str(k), 0.0) for k in ks], marker="o", ms=3,
                    capsize=2, label=LABELS[key], color=f"C{list(LABELS).index(key)}")
        if i == 0 and "elbo" in report:
            ax.axhline(report["elbo"], color="grey", ls="--", label="ELBO")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples K")
    ax.set_ylabel("mean estimate of log p(x) [nats/example]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def save_loglik_curve(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Mean estimates of log p(x) vs K (log scale, ± s.e. across examples) with the ELBO.
    With both estimators, the importance curve gets a panel of its own so that the naive
    one, often many nats lower, does not squash it."""
    keys = tuple(k for k in LABELS if k in report)
    both = len(keys) == 2
    fig = Figure(figsize=(11 if both else 6, 4))
    axes = fig.subplots(1, 2) if both else [fig.subplots()]
    _plot(axes[0], report, keys[:1], "importance sampling" if both else title or "estimators")
    if both:
        _plot(axes[1], report, keys[::-1], "naive vs importance sampling")
    fig.suptitle(title or "log p(x) estimators vs K", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
