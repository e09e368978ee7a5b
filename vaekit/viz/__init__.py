"""Figures: image grids and 2-D scatter plots written to PNG files."""

from vaekit.viz.curves import save_loglik_curve
from vaekit.viz.figures import save_figure_for, save_image_grid, save_scatter

__all__ = ["save_figure_for", "save_image_grid", "save_loglik_curve", "save_scatter"]
