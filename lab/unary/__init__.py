"""Where unaries come from: built-in colour clusters, annotation images and probability-map files."""

from lab.unary.sources import (
    coarse_colour_clusters,
    load_compat,
    load_probability_map,
    unary_from_annotation,
    unary_from_coarse_labels,
)

__all__ = [
    "coarse_colour_clusters",
    "load_compat",
    "load_probability_map",
    "unary_from_annotation",
    "unary_from_coarse_labels",
]
