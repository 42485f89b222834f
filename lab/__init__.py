"""CRF-RNN Lab: dense-CRF / CRF-RNN inference you can read, train and watch.

Layers (imports point one way): ``lab.lattice`` → ``lab.crf`` → data, models, unaries, training →
``lab.viz`` → interfaces (CLI, app, notebooks). See ARCHITECTURE.md.
"""

from lab._checks import data_checks, set_data_checks
from lab.crf import (
    CRFRNN,
    CRFKernels,
    CRFParams,
    MeanFieldTrace,
    load_trained_crf,
    mean_field,
)
from lab.lattice import (
    PermutohedralLattice,
    bilateral_features,
    exact_gaussian_filter,
    gaussian_filter,
    spatial_features,
)
from lab.unary import unary_from_labels, unary_from_softmax

__all__ = [
    "CRFRNN",
    "CRFKernels",
    "CRFParams",
    "FitResult",
    "MeanFieldTrace",
    "PermutohedralLattice",
    "bilateral_features",
    "data_checks",
    "exact_gaussian_filter",
    "fit_crf",
    "gaussian_filter",
    "load_trained_crf",
    "mean_field",
    "set_data_checks",
    "spatial_features",
    "unary_from_labels",
    "unary_from_softmax",
]
__version__ = "0.1.0"

_LAZY = {"fit_crf": "lab.fit", "FitResult": "lab.fit"}  # imported on first use: ``import lab`` stays light


def __getattr__(name: str):
    """``lab.fit_crf`` and ``lab.FitResult``, imported from :mod:`lab.fit` when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
