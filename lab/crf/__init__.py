"""The CRF-RNN: mean-field inference in the dense CRF as differentiable layers, and its parameters."""

from lab.crf.kernels import CRFKernels, kernel_features
from lab.crf.mean_field import MeanFieldStep, MeanFieldTrace, mean_field
from lab.crf.module import CRFRNN
from lab.crf.params import CRFParams, potts_compat
from lab.crf.steps import (
    add_unary,
    compatibility_transform,
    initialization,
    iteration,
    kl_divergence,
    message_passing,
    normalization,
    weighting,
)
from lab.crf.trained import TrainedCRF, TrainedCRFUnavailable, find_trained_crfs, load_trained_crf

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
    "iteration",
    "kernel_features",
    "kl_divergence",
    "load_trained_crf",
    "mean_field",
    "message_passing",
    "normalization",
    "potts_compat",
    "weighting",
]
