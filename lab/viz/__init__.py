"""Figures and the class palette shared by the notebooks and the app: arrays in, arrays or figures out."""

from lab.viz.maps import changed_mask, class_heatmap, entropy_map, kl_figure, label_map, overlay
from lab.viz.palette import PALETTE, colorize, palette

__all__ = [
    "PALETTE",
    "changed_mask",
    "class_heatmap",
    "colorize",
    "entropy_map",
    "kl_figure",
    "label_map",
    "overlay",
    "palette",
]
