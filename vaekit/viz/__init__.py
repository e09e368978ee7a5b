"""Moved to :mod:`vaekit.report.plots`; these names still import from here."""

from vaekit.report.plots import (
    image_grid,
    save_figure_for,
    save_image_grid,
    save_loglik_curve,
    save_scatter,
)

__all__ = ["image_grid", "save_figure_for", "save_image_grid", "save_loglik_curve",
           "save_scatter"]
