"""The CRF-RNN: mean-field inference in the dense CRF as differentiable layers, its parameters and unaries."""

from lab.crf.mean_field import (
    CRFKernels,
    MeanFieldStep,
    MeanFieldTrace,
    add_unary,
    compatibility_transform,
    initialization,
    kernel_features,
    kl_divergence,
    mean_field,
    message_passing,
    normalization,
    weighting,
)
from lab.crf.module import CRFRNN
from lab.crf.params import CRFParams, potts_compat
from lab.crf.trained import TrainedCRF, TrainedCRFUnavailable, find_trained_crfs, load_trained_crf
from lab.crf.unary import unary_from_labels, unary_from_softmax

__all__ = [
    "CRFRNN",
    "CRFKernels",
    "CRFParams",
    "MeanFieldStep",
    "MeanFieldTrace",
    "TrainedCRF",
    "TrainedCRFUnavailable",
    "add_unary",
    "compatibility_transform",
    "find_trained_crfs",
    "initialization",
    "kernel_features",
    "kl_divergence",
    "load_trained_crf",
    "mean_field",
    "message_passing",
    "normalization",
    "potts_compat",
    "unary_from_labels",
    "unary_from_softmax",
    "weighting",
]
