"""One function per figure, ``draw(ctx) -> matplotlib Figure``, and the registry of them.

Each entry says where it applies (``applies(ctx)`` returns None, or the reason it does not:
image data, k = 2, labels, an evaluation with the estimators) and carries the caption that
names its units and estimators. ``applicable(ctx)`` splits the registry into the figures
a run gets and the reasons for the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaekit.evaluation.estimators import estimate_log_px
from vaekit.models.vae import VAE
from vaekit.numerics import derive_seed
from vaekit.report.context import ReportContext
from vaekit.report.plots import ESTIMATOR_LABELS, loglik_panel, scatter_panel, show_images


@dataclass(frozen=True)
class FigureSpec:
    name: str  # file stem in RUN_DIR/figures/
    title: str
    draw: Callable[[ReportContext], Figure]
    applies: Callable[[ReportContext], str | None]  # None, or why the figure does not apply
    caption: Callable[[ReportContext], str]


FIGURES: dict[str, FigureSpec] = {}


def register(name: str, title: str, caption: str | Callable[[ReportContext], str],
             applies: Callable[[ReportContext], str | None] = lambda ctx: None
             ) -> Callable[[Callable[[ReportContext], Figure]], Callable[[ReportContext], Figure]]:
    """Add ``draw`` to :data:`FIGURES` under ``name`` (in registration order)."""
    def add(draw: Callable[[ReportContext], Figure]) -> Callable[[ReportContext], Figure]:
        cap = caption if callable(caption) else (lambda ctx: caption)
        FIGURES[name] = FigureSpec(name, title, draw, applies, cap)
        return draw
    return add


def applicable(ctx: ReportContext) -> tuple[list[FigureSpec], dict[str, str]]:
    """(the figures that apply to the run, {name: why not} for the others)."""
    use, skipped = [], {}
    for spec in FIGURES.values():
        why = spec.applies(ctx)
        if why is None:
            use.append(spec)
        else:
            skipped[spec.name] = why
    return use, skipped


def panels(fig: Figure) -> list[Axes]:
    """The figure's panels (its axes without colour bars)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


# ============================================================================ conditions


def _images(ctx: ReportContext) -> str | None:
    return None if ctx.is_image else "the data are vectors, not images"


def _two_d_data(ctx: ReportContext) -> str | None:
    if ctx.data.shape != (2,):
        return f"the data are not 2-D points (shape {ctx.data.shape})"
    return "a conditional model's density needs labels" if ctx.conditional else None


# ============================================================================ helpers


def _grid(fig: Figure, n: int, cols: int = 3, size: tuple[float, float] = (4.3, 3.3)
          ) -> list[Axes]:
    """n panels of ``size`` inches in rows of up to ``cols``."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig.set_size_inches(size[0] * cols, size[1] * rows)
    axes = list(np.atleast_1d(fig.subplots(rows, cols)).flat)
    for ax in axes[n:]:
        fig.delaxes(ax)
    return axes[:n]


def _decode(ctx: ReportContext, z: torch.Tensor, y: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Means of p(x|z[, y]) of stage 1; a conditional model gets y (default: class 0)."""
    m = ctx.stage1
    c = None
    if m.conditional:
        c = m.context(torch.zeros(len(z), dtype=torch.long) if y is None else y)
    with torch.no_grad():
        return m.likelihood(z, c).mean


def _as_seen(ctx: ReportContext) -> str:
    """Which inputs an image figure shows: the test data after the run's transform."""
    return f"Inputs as the model sees them (transform: {ctx.data.transform})."


def _given(ctx: ReportContext) -> str:
    return ", y = 0" if ctx.conditional else ""


def normal_quantiles(n: int, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    """Φ^{-1} of n evenly spaced probabilities in [lo, hi]: a grid that N(0, 1) fills evenly
    (Kingma & Welling's latent-space figure). (n,)."""
    p = torch.linspace(lo, hi, n, dtype=torch.float64)
    return (math.sqrt(2) * torch.erfinv(2 * p - 1)).float()


def _finish(fig: Figure, title: str) -> Figure:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ============================================================================ training curves


def _loss_label(ctx: ReportContext) -> str:
    t = ctx.cfg.train
    if t.objective.name == "iwae":
        return f"training loss −IWAE-{t.objective.k}"
    if t.objective.name == "elbo":
        return "training loss −ELBO" + ("" if t.beta == 1 else f" (β = {t.beta:g})")
    return f"training loss ({t.objective.name})"


def _curve_panels(history: list[dict[str, Any]]) -> list[str]:
    have = {k for r in history for k in r}
    out = ["loss"]
    out += [k for k in ("val_log_px_z", "val_kl") if k in have]
    out += [k for k in ("gamma", "mean_variance") if k in have]
    if len({r["lr"] for r in history if "lr" in r}) > 1:  # a schedule: worth a panel
        out.append("lr")
    return out


CURVE_AXES = {  # panel -> (title, y label, log y)
    "loss": ("objective", "nats/example (lower is better)", False),
    "val_log_px_z": ("reconstruction term (validation)", "−E_q[log p(x|z)]  [nats/example]",
                     False),
    "val_kl": ("KL term (validation)", "KL(q(z|x) ‖ p(z))  [nats/example]", False),
    "gamma": ("learned decoder variance γ", "γ  [(data units)², log scale]", True),
    "mean_variance": ("learned decoder variance (mean over dimensions)",
                      "variance  [(data units)², log scale]", True),
    "lr": ("learning rate (end of epoch)", "Adam step size  [per step]", False),
}


@register("training-curves", "Training curves",
          lambda ctx: "Per epoch, from metrics.jsonl: the training loss (mean over the epoch's "
          "mini-batches, nats/example) and the validation −ELBO (one sample per example, fixed "
          "noise, β = 1); the validation ELBO's two terms (reconstruction and KL, nats/example) "
          "where logged; the learned decoder variance γ on a log axis where the likelihood "
          "learns one; the learning rate where it changes (warm-up, cosine schedule).",
          lambda ctx: None if ctx.history else "metrics.jsonl has no epochs")
def training_curves(ctx: ReportContext) -> Figure:
    h = ctx.history
    fig = Figure()
    names = _curve_panels(h)
    for ax, name in zip(_grid(fig, len(names)), names, strict=True):
        title, ylabel, log = CURVE_AXES[name]
        series = [("train_loss", _loss_label(ctx), 1), ("val_elbo", "validation −ELBO", -1)] \
            if name == "loss" else [(name, None, -1 if name == "val_log_px_z" else 1)]
        for key, label, sign in series:
            rows = [r for r in h if key in r]
            ax.plot([r["epoch"] for r in rows], [sign * r[key] for r in rows], marker="o", ms=3,
                    label=label)
        if log:
            ax.set_yscale("log")
        if name == "loss":
            ax.legend(fontsize=8)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.title.set_fontsize(9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _finish(fig, "training curves")


# ============================================================================ samples


@register("samples", "Samples from the model",
          lambda ctx: ("Means of p(x|z) at z from the prior" if ctx.is_image or
                       ctx.data.shape != (2,) else "Means of p(x|z) (blue) over test data "
                       "(grey)") + (": left z ~ N(0, I), stage 1's own prior; right z from "
                       "stage 2 (u ~ N(0, I), z = mean of p2(z|u)), the two-stage VAE's "
                       "sampler, same seed." if ctx.two_stage else ", z ~ p(z).")
          + (" Labels: every class in turn." if ctx.conditional else ""),
          lambda ctx: None if ctx.is_image or ctx.data.shape != (2,) or ctx.two_stage
          else "2-D data: see the data, samples and density figure")
def samples(ctx: ReportContext) -> Figure:
    samplers: list[tuple[str, VAE]] = [("z ~ p(z)", ctx.model)]
    if ctx.two_stage:
        samplers = [("stage-1 prior z ~ N(0, I)", ctx.stage1), ("stage 2", ctx.model)]
    n = ctx.options.samples if ctx.is_image else 2000
    fig = Figure()
    size = (5.6, 6.0) if ctx.is_image else (5.0, 5.0)
    for ax, (title, m) in zip(_grid(fig, len(samplers), size=size), samplers, strict=True):
        x = m.sample(n, generator=ctx.generator("report-samples"), y=ctx.labels_for(n))
        if ctx.is_image:
            show_images(ax, x, nrow=8, title=title)
        else:
            scatter_panel(ax, x, ctx.data.test.x[:2000], title, label="samples")
    return _finish(fig, "samples (means of p(x|z))")


# ============================================================================ 2-D data


def learned_log_density(model: VAE, points: torch.Tensor, k: int, proposal: str = "encoder",
                        seed: int = 0) -> torch.Tensor:
    """log p(x) of the model at ``points`` (N, 2), nats: importance sampling with K samples
    (``proposal="encoder"``) or the naive estimator (``"prior"``). (N,)."""
    return estimate_log_px(model, points, k, proposal, seed=seed).log_px.float()


def density_grid(data: torch.Tensor, n: int) -> tuple[torch.Tensor, list[float]]:
    """An n × n grid of points (n*n, 2) over a square around the data, and its extent."""
    lo, hi = data.min(0).values, data.max(0).values
    centre, half = (lo + hi) / 2, float((hi - lo).max()) * 0.62
    xs = torch.linspace(float(centre[0]) - half, float(centre[0]) + half, n)
    ys = torch.linspace(float(centre[1]) - half, float(centre[1]) + half, n)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    extent = [float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])]
    return torch.stack([gx, gy], -1).reshape(-1, 2), extent


def ring_densities(ctx: ReportContext) -> dict[str, Any]:
    """The learned density on the grid and the mean log p(x) of test data, by both
    estimators with the same K (computed once per report)."""
    if "density" in ctx.cache:
        return ctx.cache["density"]
    o, m = ctx.options, ctx.stage1
    test = ctx.test_batch().x
    grid, extent = density_grid(test, o.density_grid)
    out: dict[str, Any] = {"extent": extent, "k": o.density_k, "n": o.density_grid}
    for proposal, name in (("encoder", "importance"), ("prior", "naive")):
        grid_seed, test_seed = (derive_seed(o.seed, p) for p in ("density-grid", "density-test"))
        dens = learned_log_density(m, grid, o.density_k, proposal, grid_seed)
        out[name] = dens.reshape(o.density_grid, o.density_grid)
        out[f"{name}_test"] = float(learned_log_density(m, test, o.density_k, proposal,
                                                        test_seed).mean())
    ctx.cache["density"] = out
    return out


@register("density-2d", "Data, samples and the learned density",
          lambda ctx: "Top: test data, and draws x ~ p(x|z), z ~ N(0, I), of the model"
          + (" (stage 1)" if ctx.two_stage else "")
          + ". Bottom: its log-density log p(x) on a {n} × {n} grid, estimated by importance "
          "sampling (z ~ q(z|x)) with K = {k} samples per point (left), and by the naive "
          "estimator (z ~ p(z)) with the same K (right). Colours in nats, clipped 12 nats below "
          "the maximum. Mean log p(x) of the test data: {importance_test:.3f} nats/example by "
          "importance sampling, {naive_test:.3f} by the naive estimator. With few samples the "
          "encoder's proposal "
          "already finds the z that explain each x; the prior's K samples land on K spots of "
          "the data and leave the rest of it with almost no density (the estimators figure "
          "shows how many samples each needs).".format(**ring_densities(ctx)),
          _two_d_data)
def density_2d(ctx: ReportContext) -> Figure:
    d = ring_densities(ctx)
    test = ctx.test_batch().x
    draws = ctx.stage1.sample(len(test), mean=False, generator=ctx.generator("report-draws"))
    fig = Figure(figsize=(10, 9))
    axes = list(fig.subplots(2, 2).flat)  # data, samples | both estimates of log p(x)
    ext = d["extent"]
    for ax, pts, title in ((axes[0], test, "test data"), (axes[1], draws, "model samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, c="C0" if ax is axes[1] else "0.3",
                   rasterized=True)
        ax.set_title(title, fontsize=9)
    vmax = float(max(d["importance"].max(), d["naive"].max()))
    for ax, name in ((axes[2], "importance"), (axes[3], "naive")):
        img = ax.imshow(d[name].clamp(min=vmax - 12).numpy(), origin="lower", extent=ext,
                        vmin=vmax - 12, vmax=vmax, cmap="magma", interpolation="nearest")
        ax.set_title(f"log p(x), {ESTIMATOR_LABELS[name]}, K = {d['k']}\nmean on test data "
                     f"{d[name + '_test']:.2f} nats", fontsize=9)
        fig.colorbar(img, ax=ax, label="log p(x)  [nats]", shrink=0.85)
    for ax in axes:
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_aspect("equal")
        ax.set(xlabel="x[0]  [data units]", ylabel="x[1]  [data units]")
    return _finish(fig, "data, model samples and the learned density")


# ============================================================================ reconstructions


@register("reconstructions", "Reconstructions",
          lambda ctx: ("Test examples (left) and the means of p(x|z) at z = E_q[z|x] "
                       f"(right), in the same places. {_as_seen(ctx)}" if ctx.is_image else
                       "Test examples (grey) and their reconstructions, the means of p(x|z) at "
                       "z = E_q[z|x] (blue), first two coordinates; lines join the first "
                       "200 pairs."))
def reconstructions(ctx: ReportContext) -> Figure:
    m = ctx.stage1
    batch = ctx.test_batch(32 if ctx.is_image else 2000)
    rec = m.reconstruct(batch)
    fig = Figure()
    if ctx.is_image:
        left, right = _grid(fig, 2, size=(5.6, 3.2))
        show_images(left, batch.x, nrow=8, title="test inputs")
        show_images(right, rec, nrow=8, title="reconstructions")
        return _finish(fig, "reconstructions beside their inputs")
    (ax,) = _grid(fig, 1, size=(5.4, 5.2))
    x, r = batch.x.reshape(len(batch), -1), rec.reshape(len(batch), -1)
    for i in range(min(200, len(x))):
        ax.plot([x[i, 0], r[i, 0]], [x[i, 1], r[i, 1]], color="C1", lw=0.4, alpha=0.5)
    scatter_panel(ax, r, x, "test data and reconstructions", label="reconstructions")
    return _finish(fig, "reconstructions")


# ============================================================================ latent space


@register("interpolations", "Interpolations in latent space",
          lambda ctx: "Each row: a test image (left), the decoded means of p(x|z) along the "
          "straight line between the two images' posterior means E_q[z|x] (10 steps, "
          f"endpoints included{_given(ctx)}), and the second test image (right). "
          + _as_seen(ctx), _images)
def interpolations(ctx: ReportContext) -> Figure:
    pairs, steps = 8, 10
    batch = ctx.test_batch(2 * pairs)
    mu = ctx.posterior_means()[: len(batch)]
    half = len(batch) // 2
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = (1 - t) * mu[:half, None] + t * mu[half : 2 * half, None]  # (P, steps, L)
    y = None if batch.y is None else batch.y[:half].repeat_interleave(steps)
    dec = _decode(ctx, z.reshape(-1, z.shape[-1]), y if ctx.conditional else None)
    dec = dec.reshape(half, steps, *dec.shape[1:])
    rows = torch.cat([batch.x[:half, None], dec, batch.x[half : 2 * half, None]], dim=1)
    fig = Figure(figsize=(8, 8 * half / (steps + 2) + 0.6))
    show_images(fig.subplots(), rows.reshape(-1, *rows.shape[2:]), nrow=steps + 2)
    return _finish(fig, "interpolations between test images (latent space)")


def _traversal_applies(ctx: ReportContext) -> str | None:
    if not ctx.is_image:
        return "the data are vectors, not images"
    return None if ctx.active_dims() else "no latent dimension is active"


@register("traversals", "Latent traversals",
          lambda ctx: "One row per active latent dimension (Cov_x E_q[z_j|x] > 0.01), largest "
          "KL first (row labels: dimension and its mean KL in nats): the means of p(x|z) as "
          "z_j runs over the N(0, 1) quantiles 1%..99% with every other coordinate at 0, the "
          f"prior mean{_given(ctx)}."
          + (f" The first {ctx.options.max_traversal_rows} of {len(ctx.active_dims())} active "
             "dimensions." if len(ctx.active_dims()) > ctx.options.max_traversal_rows else ""),
          _traversal_applies)
def traversals(ctx: ReportContext) -> Figure:
    dims = ctx.active_dims()[: ctx.options.max_traversal_rows]
    kl = ctx.kl_per_dim()
    values = normal_quantiles(11, 0.01, 0.99)
    z = torch.zeros(len(dims), len(values), ctx.latent_dim)
    for row, j in enumerate(dims):
        z[row, :, j] = values
    dec = _decode(ctx, z.reshape(-1, ctx.latent_dim))
    fig = Figure(figsize=(8, 0.62 * len(dims) + 1.1))
    ax = fig.subplots()
    grid = show_images(ax, dec, nrow=len(values))
    h, w = grid.shape[0] / len(dims), grid.shape[1] / len(values)
    ax.set_yticks([h * (r + 0.5) for r in range(len(dims))],
                  [f"z{j}" + ("" if kl is None else f" ({kl[j]:.1f} nats)") for j in dims],
                  fontsize=7)
    ax.set_xticks([w * (c + 0.5) for c in range(len(values))],
                  [f"{v:+.1f}" for v in values.tolist()], fontsize=7)
    ax.set_xlabel("value of the traversed coordinate z_j (prior standard deviations)")
    return _finish(fig, "latent traversals, one row per active dimension")


def _kl_applies(ctx: ReportContext) -> str | None:
    return None if ctx.kl_per_dim() is not None else "the prior does not factorize over dimensions"


@register("kl-per-dimension", "KL per latent dimension",
          lambda ctx: f"Mean over {len(ctx.posterior_means())} test examples of "
          "KL(q(z_j|x) ‖ p(z_j)) for each latent "
          "dimension j, in nats, largest first; active dimensions (Cov_x E_q[z_j|x] > 0.01) in "
          "blue, inactive (collapsed) ones in grey.", _kl_applies)
def kl_per_dimension(ctx: ReportContext) -> Figure:
    kl, active = ctx.kl_per_dim(), set(ctx.active_dims())
    order = sorted(range(len(kl)), key=lambda j: -kl[j])
    fig = Figure(figsize=(min(12.0, 3 + 0.25 * len(kl)), 3.4))
    ax = fig.subplots()
    ax.bar(range(len(kl)), [kl[j] for j in order],
           color=["C0" if j in active else "0.6" for j in order])
    if len(kl) <= 64:
        ax.set_xticks(range(len(kl)), [f"z{j}" for j in order], rotation=90, fontsize=7)
    ax.set_xlabel("latent dimension (largest KL first)")
    ax.set_ylabel("KL(q(z_j|x) ‖ p(z_j))  [nats]")
    ax.set_title(f"total {sum(kl):.2f} nats; {len(active)} of {len(kl)} dimensions active",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, "KL per latent dimension")


def _codes_2d(ctx: ReportContext) -> tuple[np.ndarray, tuple[str, str]]:
    """The test codes E_q[z|x] in two dimensions: themselves for k = 2, else their first two
    principal components (with the share of variance each explains)."""
    mu = ctx.posterior_means().double()
    if mu.shape[1] == 2:
        return mu.numpy(), ("E_q[z_0|x]  [latent units]", "E_q[z_1|x]  [latent units]")
    centred = mu - mu.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    share = (s**2 / (s**2).sum()).tolist()
    return (centred @ v[:2].T).numpy(), tuple(
        f"principal component {i + 1} of E_q[z|x] ({100 * share[i]:.0f}% of variance)  "
        "[latent units]" for i in range(2))


@register("latent-scatter", "Test codes in latent space",
          lambda ctx: f"Posterior means E_q[z|x] of {len(ctx.posterior_means())} test examples"
          + (" (the latent plane itself, k = 2)" if ctx.latent_dim == 2 else
             f" projected on their first two principal components (k = {ctx.latent_dim})")
          + (", coloured by label." if ctx.has_labels else
             ", coloured by the angle of x." if ctx.data.shape == (2,) else "."),
          lambda ctx: None if ctx.latent_dim >= 2 else "the latent space has one dimension")
def latent_scatter(ctx: ReportContext) -> Figure:
    xy, (xlabel, ylabel) = _codes_2d(ctx)
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.subplots()
    kw: dict[str, Any] = {"s": 3, "alpha": 0.7, "rasterized": True}
    y = ctx.test_batch().y
    if y is not None:
        classes = int(y.max()) + 1
        if classes <= 10:
            for c in range(classes):
                sel = (y == c).numpy()
                ax.scatter(xy[sel, 0], xy[sel, 1], color=f"C{c}", label=f"y = {c}", **kw)
            ax.legend(fontsize=7, loc="best", title="label", title_fontsize=7, markerscale=3)
        else:
            pts = ax.scatter(xy[:, 0], xy[:, 1], c=y.numpy(), cmap="viridis", **kw)
            fig.colorbar(pts, ax=ax, label="label")
    elif ctx.data.shape == (2,):
        x = ctx.test_batch().x
        pts = ax.scatter(xy[:, 0], xy[:, 1], c=torch.atan2(x[:, 1], x[:, 0]).numpy(),
                         cmap="hsv", **kw)
        fig.colorbar(pts, ax=ax, label="angle of x  [radians]")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], c="C0", **kw)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.label.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)
    return _finish(fig, "test codes E_q[z|x]")


def _manifold_applies(ctx: ReportContext) -> str | None:
    if ctx.latent_dim != 2:
        return f"the latent space has {ctx.latent_dim} dimensions, not 2"
    return None if ctx.is_image or ctx.data.shape == (2,) else "the data are neither images " \
        "nor 2-D points"


@register("manifold", "The learned manifold (k = 2)",
          lambda ctx: ("Means of p(x|z) over a 15 × 15 grid of the latent plane spaced by the "
                       "inverse normal CDF, z = Φ^{-1}(p) for p in 5%..95% on each axis "
                       "(Kingma & Welling 2014, Figure 4)" if ctx.is_image else
                       "The decoder's image of an inverse-CDF grid of the latent plane, "
                       "z = Φ^{-1}(p), p in 1%..99%: the means of p(x|z) along lines of constant "
                       "z_0 (blue) and constant z_1 (orange), over the test data (grey)")
          + f"{_given(ctx)}.", _manifold_applies)
def manifold(ctx: ReportContext) -> Figure:
    if ctx.is_image:
        n = 15
        v = normal_quantiles(n)
        z1, z0 = torch.meshgrid(v.flip(0), v, indexing="ij")  # rows: z_1 from high to low
        dec = _decode(ctx, torch.stack([z0, z1], -1).reshape(-1, 2))
        fig = Figure(figsize=(7.5, 7.5))
        ax = fig.subplots()
        grid = show_images(ax, dec, nrow=n)
        step = grid.shape[1] / n
        ticks = list(range(0, n, 2))
        ax.set_xticks([step * (i + 0.5) for i in ticks], [f"{v[i]:+.2f}" for i in ticks],
                      fontsize=7)
        ax.set_yticks([step * (i + 0.5) for i in ticks],
                      [f"{v.flip(0)[i]:+.2f}" for i in ticks], fontsize=7)
        ax.set(xlabel="z_0  [latent units]", ylabel="z_1  [latent units]")
        return _finish(fig, "decoded latent grid (k = 2)")
    lines, dense = normal_quantiles(15, 0.01, 0.99), normal_quantiles(200, 0.001, 0.999)
    fig = Figure(figsize=(5.4, 5.2))
    ax = fig.subplots()
    test = ctx.test_batch().x
    ax.scatter(test[:, 0], test[:, 1], s=2, c="0.75", rasterized=True, label="test data")
    for axis, colour in ((0, "C0"), (1, "C1")):
        for value in lines:
            z = torch.empty(len(dense), 2)
            z[:, axis], z[:, 1 - axis] = value, dense
            x = _decode(ctx, z)
            ax.plot(x[:, 0], x[:, 1], color=colour, lw=0.7, alpha=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set(xlabel="x[0]  [data units]", ylabel="x[1]  [data units]")
    ax.legend(fontsize=8, loc="upper right", markerscale=3)
    return _finish(fig, "the decoder's map of the latent plane")


# ============================================================================ estimators


def _marginal(ctx: ReportContext) -> dict[str, Any] | None:
    return (ctx.evaluation or {}).get("marginal")


@register("estimators", "log p(x) estimators against K",
          lambda ctx: f"From eval-{ctx.evaluation['split']}.json"
          + (f" (checkpoint of epoch {ctx.section_epoch(ctx.evaluation, 'marginal')})"
             if ctx.section_epoch(ctx.evaluation, "marginal") is not None else "")
          + ": the mean importance-sampled "
          "estimate of log p(x) (z ~ q(z|x)) and, where evaluated, the naive estimate (z ~ p(z)), "
          "nats/example ± s.e. across examples, against the number of samples K (the first k "
          "of the same K samples), with the one-sample ELBO; right: the effective sample size "
          "of each estimator's K weights (median and 5th percentile over examples; 1 = one "
          "sample carries all the weight).",
          lambda ctx: None if _marginal(ctx) else "no evaluation with --loglik or --naive")
def estimators(ctx: ReportContext) -> Figure:
    m = _marginal(ctx)
    keys = tuple(k for k in ESTIMATOR_LABELS if k in m)
    fig = Figure()
    axes = _grid(fig, len(keys) + 1)
    loglik_panel(axes[0], m, keys[:1], "importance sampling" if len(keys) == 2 else "estimators")
    if len(keys) == 2:
        loglik_panel(axes[1], m, keys[::-1], "naive vs importance sampling")
    ax = axes[-1]
    for i, key in enumerate(keys):
        e = m[key]
        ax.bar([2 * i - 0.35, 2 * i + 0.35], [e["ess_median"], e["ess_p5"]], width=0.6,
               color=[f"C{list(ESTIMATOR_LABELS).index(key)}"], alpha=0.9)
        ax.text(2 * i, e["ess_median"] * 1.15, f"median {e['ess_median']:.1f}\nof K = {e['k']}",
                ha="center", fontsize=7)
    ax.set_xticks([2 * i + d for i in range(len(keys)) for d in (-0.35, 0.35)],
                  [f"{k}\n{s}" for k in keys for s in ("median", "5th pct.")], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(m[k]["k"] for k in keys) * 3)
    ax.set_ylabel("effective sample size  [samples, log scale]")
    ax.set_title("ESS of the K weights", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, f"log p(x) estimators on the {ctx.evaluation['split']} split")
