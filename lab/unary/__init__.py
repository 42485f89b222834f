"""Unaries: U from probabilities or labels, and the sources they come from.

Sources: the bundled 21-class PASCAL VOC network (``voc_unary``; model and licence in ``lab/unary/models/``),
colour clusters, annotation images, scribbles (a colour model from a few strokes per class), probability-map
files, the MediaPipe selfie segmenter, and the FCN of lab.train's checkpoints. ``unary_report`` says whether
a unary looks like what mean field expects.
"""

from lab.unary.convert import unary_from_labels, unary_from_softmax
from lab.unary.fcn_source import FCNUnavailable, fcn_unary, find_fcn_checkpoint, load_fcn
from lab.unary.mediapipe_source import SELFIE_CLASS_NAMES, SelfieSegmenter, SourceUnavailable, selfie_status
from lab.unary.sanity import UnaryReport, unary_report
from lab.unary.scribbles import scribble_unary, strokes_from_canvas
from lab.unary.sources import (
    coarse_colour_clusters,
    load_compat,
    load_probability_map,
    unary_from_annotation,
    unary_from_coarse_labels,
)
from lab.unary.voc import VOC_CLASS_NAMES, VOCSegmenter, VOCUnavailable, voc_status, voc_unary

__all__ = [
    "SELFIE_CLASS_NAMES",
    "VOC_CLASS_NAMES",
    "FCNUnavailable",
    "SelfieSegmenter",
    "SourceUnavailable",
    "UnaryReport",
    "VOCSegmenter",
    "VOCUnavailable",
    "coarse_colour_clusters",
    "fcn_unary",
    "find_fcn_checkpoint",
    "load_compat",
    "load_fcn",
    "load_probability_map",
    "scribble_unary",
    "selfie_status",
    "strokes_from_canvas",
    "unary_from_annotation",
    "unary_from_coarse_labels",
    "unary_from_labels",
    "unary_from_softmax",
    "unary_report",
    "voc_status",
    "voc_unary",
]
