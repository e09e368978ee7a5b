"""Moved to :mod:`vaekit.report.plots`."""

from vaekit.report.plots import image_grid, save_figure_for, save_image_grid, save_scatter

__all__ = ["image_grid", "save_figure_for", "save_image_grid", "save_scatter"]
