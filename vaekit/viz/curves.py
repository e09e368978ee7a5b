"""Curves: log p(x) estimators against the number of samples K."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def save_loglik_curve(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Mean estimate of log p(x) vs K (log scale) for each estimator, with the ELBO line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    labels = {"importance": "importance sampling, z ~ q(z|x)", "naive": "naive, z ~ p(z)"}
    for key, label in labels.items():
        if key in report:
            curve = report[key]["curve"]
            ks = sorted(int(k) for k in curve)
            ax.plot(ks, [curve[str(k)] for k in ks], marker="o", ms=3, label=label)
    if "elbo" in report:
        ax.axhline(report["elbo"], color="grey", ls="--", label="ELBO")
    ax.set_xscale("log")
    ax.set_xlabel("number of samples K")
    ax.set_ylabel("mean estimate of log p(x) [nats/example]")
    ax.set_title(title or "log p(x) estimators vs K")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
