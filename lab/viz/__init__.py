"""Figures and the class palette shared by the notebooks and the app: arrays in, arrays or figures out."""

from lab.viz.lattice_plot import draw_lattice_2d, lattice_geometry, lattice_mesh_2d
from lab.viz.maps import changed_mask, class_heatmap, entropy_map, fit_figure, kl_figure, label_map, overlay
from lab.viz.palette import PALETTE, colorize, palette
from lab.viz.slices import grey_window, orthogonal_slices

__all__ = [
    "PALETTE",
    "changed_mask",
    "class_heatmap",
    "colorize",
    "draw_lattice_2d",
    "entropy_map",
    "fit_figure",
    "grey_window",
    "kl_figure",
    "label_map",
    "lattice_geometry",
    "lattice_mesh_2d",
    "orthogonal_slices",
    "overlay",
    "palette",
]
