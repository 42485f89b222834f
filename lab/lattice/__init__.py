"""The permutohedral lattice: build, splat / blur / slice, the Gaussian filter, and the exact oracle."""

from lab.lattice.backend import resolve_backend, triton_available
from lab.lattice.build import LatticeStructure, build_lattice
from lab.lattice.exact import exact_gaussian_filter
from lab.lattice.features import bilateral_features, spatial_features
from lab.lattice.lattice import PermutohedralLattice, gaussian_filter
from lab.lattice.normalize import NORMALIZATIONS

__all__ = [
    "NORMALIZATIONS",
    "LatticeStructure",
    "PermutohedralLattice",
    "bilateral_features",
    "build_lattice",
    "exact_gaussian_filter",
    "gaussian_filter",
    "resolve_backend",
    "spatial_features",
    "triton_available",
]
