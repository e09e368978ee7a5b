"""Figures and the HTML report of a run.

- ``FIGURES``: the registry, one function per figure ``draw(ctx) -> matplotlib Figure``, each
  saying where it applies (``vaekit.report.figures``);
- ``render_figures(ctx, out_dir)``: every figure that applies, as PNG and SVG files;
- ``write_report(run)``: ``RUN_DIR/report.html``, one self-contained file, and
  ``RUN_DIR/figures/``, of a run directory (a path, or an opened
  :class:`~vaekit.rundir.RunDir`);
- ``vaekit.report.plots``: image grids, scatter plots, estimator and gradient-variance
  curves, written atomically;
- ``vaekit.report.text``: the same figures as text lines for the console.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaekit.errors import ConfigError
from vaekit.io import atomic_write_bytes, atomic_write_text
from vaekit.report.context import ReportContext, ReportOptions, context_of, load_context
from vaekit.report.figures import FIGURES, FigureSpec, applicable, panels
from vaekit.report.html import Rendered, build_html
from vaekit.report.plots import (
    figure_bytes,
    image_grid,
    loglik_figure,
    save_figure,
    save_loglik_curve,
    save_picture,
)
from vaekit.rundir import RunDir

__all__ = ["FIGURES", "FigureSpec", "ReportContext", "ReportOptions", "ReportResult",
           "applicable", "context_of", "figure_bytes", "image_grid", "load_context",
           "loglik_figure", "panels", "render_figures", "save_figure", "save_loglik_curve",
           "save_picture", "write_report"]

REPORT_FILE = "report.html"
FIGURE_DIR = "figures"


@dataclass
class ReportResult:
    path: Path
    bytes: int
    seconds: float
    figures: list[str]  # names of the figures drawn
    skipped: dict[str, str]  # name -> why it does not apply


def render_figures(ctx: ReportContext, out_dir: Path | None, progress: bool = False,
                   dpi: int = 100) -> tuple[list[Rendered], dict[str, str]]:
    """Draw every figure that applies to the run; with ``out_dir``, save each as NAME.png
    and NAME.svg there. (figures drawn, {name: why not} for the others)."""
    specs, skipped = applicable(ctx)
    if out_dir is not None:
        if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
            raise ConfigError(f"{out_dir} is not a folder of the run (a symbolic link or a "
                              "file): the report would write its figures through it",
                              "remove it, and the report makes the folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in skipped:  # files of an earlier report whose figure no longer applies
            for suffix in (".png", ".svg"):
                (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
    out = []
    bar = tqdm(specs, desc="report", unit="figure", disable=None if progress else True)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        try:
            fig = spec.draw(ctx)
        except (KeyError, TypeError, ValueError, IndexError) as err:  # an edited run file
            skipped[spec.name] = (f"could not be drawn from this run's files "
                                  f"({type(err).__name__}: {err})")
            continue
        png, files = figure_bytes(fig, "png", dpi), []
        if out_dir is not None:
            atomic_write_bytes(out_dir / f"{spec.name}.png", png)
            atomic_write_bytes(out_dir / f"{spec.name}.svg", figure_bytes(fig, "svg"))
            files = [f"{FIGURE_DIR}/{spec.name}.png", f"{FIGURE_DIR}/{spec.name}.svg"]
        out.append(Rendered(spec.name, spec.title, spec.caption(ctx), png, files))
    return out, skipped


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block: the report's tensors are small (a few thousand
    examples), and waking a thread pool for each small op made a report 2-3x slower on 2
    busy cores (measured); the caller's setting comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_report(run: str | Path | RunDir, out: str | Path | None = None, progress: bool = False,
                 options: ReportOptions | None = None) -> ReportResult:
    """Write the report of a run directory (a path, or one already opened) to ``out``
    (default ``RUN_DIR/report.html``) and its figures to ``RUN_DIR/figures/`` (PNG and
    SVG). An opened :class:`RunDir` on another device is opened again on the CPU."""
    t0 = time.perf_counter()
    with one_thread():
        if not isinstance(run, RunDir) or run.device.type != "cpu":
            run = RunDir.open(run if not isinstance(run, RunDir) else run.path, "cpu")
        ctx = context_of(run, options)
        rendered, skipped = render_figures(ctx, run.path / FIGURE_DIR, progress)
    path = Path(out) if out is not None else run.path / REPORT_FILE
    text = build_html(ctx, rendered, skipped, time.perf_counter() - t0)
    atomic_write_text(path, text)
    return ReportResult(path, len(text.encode()), time.perf_counter() - t0,
                        [r.name for r in rendered], skipped)
