"""CRF-RNN Lab: dense-CRF / CRF-RNN inference you can read, train and watch.

Layers (imports point one way): ``lab.lattice`` → ``lab.crf`` → interfaces.
"""

from lab.lattice import (
    PermutohedralLattice,
    bilateral_features,
    exact_gaussian_filter,
    gaussian_filter,
    spatial_features,
)

__all__ = [
    "PermutohedralLattice",
    "bilateral_features",
    "exact_gaussian_filter",
    "gaussian_filter",
    "spatial_features",
]
__version__ = "0.1.0"
