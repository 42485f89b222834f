"""The geometry of the permutohedral lattice: elevation onto Σ = 0, the enclosing simplex, the kernel scale.

Features f ∈ R^d are mapped linearly onto the hyperplane Σ = 0 of R^{d+1}, scaled so that the lattice's blur
gives a Gaussian of unit standard deviation; each elevated point lies in one simplex of the lattice, whose
d+1 corners are found from the nearest remainder-0 point and the ranks of the differences
(``docs/lattice.md``). The functions work on (M, d) float tensors, vectorised over points.
"""

from __future__ import annotations

import math

import torch

__all__ = ["corner", "elevate", "elevation_scale", "kernel_scale", "simplex"]


def kernel_scale(d: int) -> float:
    """Peak value of the lattice's effective Gaussian for dimension d (see ``LatticeStructure``).

    The lattice {k·1 + (d+1)·z : Σ z = −k} has covolume (d+1)^{d−1}·sqrt(d+1) in the plane Σ = 0; the
    elevation maps feature space into that plane with volume factor sqrt(det(EᵀE)).
    """
    basis = elevate(torch.eye(d, dtype=torch.float64)).T  # (d+1, d): column k is the image of e_k
    volume_factor = math.sqrt(float(torch.linalg.det(basis.T @ basis)))
    covolume = (d + 1) ** (d - 1) * math.sqrt(d + 1)
    return covolume / volume_factor / (2 * math.pi) ** (d / 2)


def elevation_scale(d: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """(d,) per-coordinate scales of the elevation: (d+1)·sqrt(2/3) / sqrt((k+1)(k+2)), in ``dtype``."""
    k = torch.arange(d, dtype=dtype, device=device)
    return (d + 1) * math.sqrt(2.0 / 3.0) / torch.sqrt((k + 1) * (k + 2))


def elevate(f: torch.Tensor) -> torch.Tensor:
    """(M, d) features → (M, d+1) coordinates on the plane Σ = 0, scaled so that the filter has unit σ."""
    m, d = f.shape
    scale = elevation_scale(d, f.dtype, f.device)
    c = f * scale  # c_k = f_k · scale_k
    suffix = c.flip(1).cumsum(1).flip(1)  # suffix[:, j] = Σ_{k ≥ j} c_k
    elevated = torch.empty(m, d + 1, dtype=f.dtype, device=f.device)
    elevated[:, 0] = suffix[:, 0]
    j = torch.arange(1, d, dtype=f.dtype, device=f.device)
    elevated[:, 1:d] = suffix[:, 1:] - j * c[:, : d - 1]  # E_j = Σ_{k ≥ j} c_k − j·c_{j−1}
    elevated[:, d] = -d * c[:, d - 1]
    return elevated


def simplex(elevated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest remainder-0 point, ranks and barycentric weights of each elevated point.

    Returns:
        rem0: (M, d+1) int64, the remainder-0 point (each entry a multiple of d+1).
        rank: (M, d+1) int64 in 0..d.
        weights: (M, d+1) barycentric weights of the d+1 simplex vertices (rows sum to 1).
    """
    m, dp1 = elevated.shape
    d = dp1 - 1
    # Nearest multiple of d+1: the one below, or the one above when E is more than half-way there
    # (the same as comparing up − E with E − down).
    down = torch.floor(elevated / dp1) * dp1
    rem0f = down + dp1 * (elevated - down > dp1 / 2).to(elevated.dtype)
    s = torch.round(rem0f.sum(1) / dp1).to(torch.int64)  # Σ rem0 / (d+1), an integer
    delta = elevated - rem0f
    # rank_i = #coordinates with a larger Δ, ties broken by index (a stable sort of −Δ): all (i, j) pairs
    # compared at once, (M, d+1, d+1) bytes, much faster than two argsorts over tiny rows.
    di, dj = delta[:, :, None], delta[:, None, :]
    earlier = torch.ones(dp1, dp1, dtype=torch.bool, device=elevated.device).tril(-1)  # [i, j]: j < i
    rank = ((dj > di) | ((dj == di) & earlier)).sum(2) + s[:, None]
    wrap = (rank < 0).to(torch.int64) - (rank > d).to(torch.int64)  # +1: wrap up, −1: wrap down
    rank = rank + dp1 * wrap
    if bool(((rank < 0) | (rank > d)).any()):  # cannot happen for prepared features; never index out of range
        raise RuntimeError("permutohedral lattice: a point fell outside its simplex (features not representable)")
    rem0 = rem0f.to(torch.int64) + dp1 * wrap
    # Barycentric weights: b[d − rank_i] += δ_i, b[d + 1 − rank_i] −= δ_i, then b[0] += 1 + b[d+1]
    # (rank is a permutation of 0..d in every row, so each scatter writes distinct slots).
    delta = (elevated - rem0.to(elevated.dtype)) / dp1
    b = torch.zeros(m, d + 2, dtype=elevated.dtype, device=elevated.device)
    b.scatter_(1, d - rank, delta)
    b.scatter_add_(1, d + 1 - rank, -delta)
    b[:, 0] += 1 + b[:, d + 1]
    return rem0, rank, b[:, :dp1].contiguous()


def corner(rem0: torch.Tensor, rank: torch.Tensor, k: int) -> torch.Tensor:
    """Stored key (first d coordinates) of simplex corner k for every point: (M, d) int64."""
    dp1 = rem0.shape[1]
    d = dp1 - 1
    r = rank[:, :d]
    return rem0[:, :d] + torch.where(r <= d - k, k, k - dp1)
