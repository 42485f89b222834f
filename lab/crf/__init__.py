"""The CRF-RNN: mean-field inference in the dense CRF as differentiable layers, and its parameters."""

from lab.crf.energy import FreeEnergy, filter_self_weights, free_energy
from lab.crf.kernels import CRFKernels, kernel_features
from lab.crf.mean_field import MeanFieldStep, MeanFieldTrace, mean_field
from lab.crf.module import CRFRNN
from lab.crf.params import CRFParams, potts_compat
from lab.crf.schedules import damped_mean_field, sequential_mean_field
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
    "FreeEnergy",
    "MeanFieldStep",
    "MeanFieldTrace",
    "TrainedCRF",
    "TrainedCRFUnavailable",
    "add_unary",
    "compatibility_transform",
    "damped_mean_field",
    "filter_self_weights",
    "find_trained_crfs",
    "free_energy",
    "initialization",
    "iteration",
    "kernel_features",
    "kl_divergence",
    "load_trained_crf",
    "mean_field",
    "message_passing",
    "normalization",
    "potts_compat",
    "sequential_mean_field",
    "weighting",
]
