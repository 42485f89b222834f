"""Building the permutohedral lattice: points → enclosing simplices → unique vertices → sparse operators.

The construction follows Adams, Baek & Davis (2010) in the variant used by Krähenbühl & Koltun's dense CRF
(``docs/lattice.md``): elevate the d-dimensional features onto the hyperplane Σ = 0 of
R^{d+1} with the (d+1)·sqrt(2/3) scale, find the nearest remainder-0 lattice point, rank the differences,
take the barycentric weights and the d+1 vertices of the enclosing simplex. Everything is vectorised over
points; nothing loops over pixels in Python.

Vertices are deduplicated by turning each integer key into one int64 *code* and sorting the codes:

* **packed** codes (the common case): each of the d stored key coordinates gets a digit whose range covers
  every key plus a margin of d+1 (so that the blur neighbours, key ± step, stay representable), and the
  batch index is the most significant digit. The code is exact and the sort order is lexicographic, which
  keeps neighbouring vertices close in memory.
* **hashed** codes, when the digits need more than 62 bits (large d, tiny bandwidths, huge images): a
  64-bit mix of the coordinates. Every vertex lookup is then verified against the stored coordinates, so a
  hash collision can never merge two vertices silently (it raises instead; none has been seen).

The output is a :class:`LatticeStructure`: the splat and slice operators as CSR sparse matrices (a gather,
deterministic, no atomics) and one CSR matrix per blur direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from lab._checks import check_choice
from lab.lattice.elevation import corner, elevate, elevation_scale, kernel_scale, simplex
from lab.lattice.limits import _BYTES_BEFORE_VERTICES, check_memory, check_vertices, prepare_features
from lab.lattice.sparse import blur_matrix, csr

__all__ = ["BUILDERS", "LatticeStructure", "build_lattice"]

_MAX_PACKED_BITS = 62
# An odd 64-bit multiplier (as signed int64) for the hashed codes: 0x9E3779B97F4A7C15, the golden ratio.
_HASH_MULT = -7046029254386353131


def _mix(h: torch.Tensor) -> torch.Tensor:
    """A bijective 64-bit mix: multiply by an odd constant (wraps), then xor the high half into the low."""
    h = h * _HASH_MULT
    return h ^ ((h >> 32) & 0xFFFFFFFF)  # logical shift: mask the sign copies of the arithmetic shift


@dataclass(frozen=True)
class LatticeStructure:
    """The lattice of one (batched) point set, ready to filter with.

    Attributes:
        d: feature dimension (the lattice lives in d+1 dimensions).
        num_points: total number of points M over the batch (B·N).
        batch_size: B.
        num_vertices: total number of lattice vertices V over the batch.
        batch_num_vertices: (B,) int64, vertices used by each batch element.
        slice_matrix: (M, V) CSR: row m holds the d+1 barycentric weights of point m on its simplex.
        splat_matrix: (V, M) CSR: the transpose of ``slice_matrix``.
        blur_neighbours: (d+1, V, 2) int64, the vertex one step forward and one step back along each
            axis, −1 where that vertex is not in the lattice (the blur matrices' off-diagonal columns).
        vertex_index: (M, d+1) int64, the vertex of each simplex corner (for inspection and plots).
        barycentric: (M, d+1) the weights of those corners; each row sums to 1.
        hashed: whether codes were hashed (True) or exactly packed (False).
        kernel_scale: the peak value c of the lattice's effective kernel, c·exp(−|Δ|²/2): splat, blur and
            slice conserve mass, so c is the feature-space volume per lattice vertex over (2π)^{d/2}.
            Dividing by c makes the unnormalised filter approximate the exact Σ_j k_ij v_j.
    """

    d: int
    num_points: int
    batch_size: int
    num_vertices: int
    batch_num_vertices: torch.Tensor
    slice_matrix: torch.Tensor
    splat_matrix: torch.Tensor
    blur_neighbours: torch.Tensor
    vertex_index: torch.Tensor
    barycentric: torch.Tensor
    hashed: bool
    kernel_scale: float

    @property
    def blur_matrices(self) -> tuple[torch.Tensor, ...]:
        """d+1 (V, V) CSR matrices, the [1/4, 1/2, 1/4] stencil along each lattice axis, in the weights' dtype.

        A missing neighbour counts as zero; each matrix is symmetric. Formed from :attr:`blur_neighbours` on
        each access (the filters use the paired products of :func:`lab.lattice.sparse.pair_products`).
        """
        return tuple(blur_matrix(nb, self.barycentric.dtype) for nb in self.blur_neighbours)


class _Codec:
    """Maps integer keys (with a batch index) to int64 codes: exact packing when it fits, else a hash."""

    def __init__(self, rem0: torch.Tensor, batch_size: int, force_hash: bool) -> None:
        d = rem0.shape[1] - 1
        margin = 2 * (d + 1)  # corners lie within rem0 − (d+1) .. rem0 + d; blur steps move ≤ d+1 more
        self.lo = rem0[:, :d].amin(0) - margin
        hi = rem0[:, :d].amax(0) + margin
        ranges = (hi - self.lo + 1).tolist()
        bits = sum(math.log2(r) for r in ranges) + math.log2(max(batch_size, 1))
        self.hashed = force_hash or bits > _MAX_PACKED_BITS
        strides, acc = [], 1
        for r in ranges:
            strides.append(acc if not self.hashed else 0)  # hashed codes use no strides (they would overflow)
            acc *= r
        self.batch_stride = acc if not self.hashed else 0
        self.strides = torch.tensor(strides, dtype=torch.int64, device=rem0.device)

    def encode_corners(self, rem0: torch.Tensor, rank: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """(M, d+1) codes of the d+1 simplex corners of every point.

        Packed: corner k's key is rem0 + k − (d+1)·[rank_i > d − k] per coordinate, so its code is
        code(rem0) + k·Σ strides − (d+1)·Σ_{i: rank_i ≥ d+1−k} stride_i, a suffix sum over ranks:
        a few (M, d+1) operations instead of d+1 encodings of (M, d) keys.
        """
        dp1 = rem0.shape[1]
        d = dp1 - 1
        if self.hashed:
            return torch.stack([self.encode(corner(rem0, rank, k), batch) for k in range(dp1)], 1)
        base = self.encode(rem0[:, :d], batch)  # (M,)
        by_rank = torch.zeros(rem0.shape[0], dp1, dtype=torch.int64, device=rem0.device)
        by_rank.scatter_(1, rank[:, :d], self.strides.expand(rem0.shape[0], d))  # stride of the coord of rank r
        above = by_rank.flip(1).cumsum(1)  # above[:, t] = Σ_{r ≥ d − t} by_rank[:, r]
        k = torch.arange(dp1, device=rem0.device)
        shift = torch.zeros_like(by_rank)
        shift[:, 1:] = above[:, :d]  # corner k: Σ_{r ≥ d + 1 − k}
        return base[:, None] + k * int(self.strides.sum()) - dp1 * shift

    def encode(self, key: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """(M, d) int64 keys and (M,) batch indices → (M,) int64 codes."""
        if not self.hashed:
            return ((key - self.lo) * self.strides).sum(1) + batch * self.batch_stride
        h = _mix(batch + 1)
        for i in range(key.shape[1]):  # sequential combine: no linear relation between coordinates collides
            h = _mix(h ^ key[:, i])
        return h


def _blur_neighbours(
    codes: torch.Tensor,
    coords: torch.Tensor | None,
    step: torch.Tensor,
    codec: _Codec,
    batch: torch.Tensor,
) -> torch.Tensor:
    """(V, 2) int64: the vertex at v + step and at v − step, −1 where it is not in the lattice."""
    v = codes.shape[0]
    neighbours = []
    for sign in (1, -1):
        if codec.hashed:
            assert coords is not None
            shifted = coords + sign * step
            query = codec.encode(shifted, batch)
        else:
            query = codes + sign * int((step * codec.strides).sum())
        pos = torch.searchsorted(codes, query).clamp_(max=v - 1)
        found = codes[pos] == query
        if codec.hashed:
            found &= (coords[pos] == shifted).all(1)
        neighbours.append(torch.where(found, pos, -1))
    return torch.stack(neighbours, 1)


def _cast_structure(s: LatticeStructure, dtype: torch.dtype) -> LatticeStructure:
    """The structure with its float tensors in ``dtype`` (built in float64 for float32 features)."""
    if s.barycentric.dtype == dtype:
        return s

    def cast(a: torch.Tensor) -> torch.Tensor:
        return csr(a.crow_indices(), a.col_indices(), a.values().to(dtype), tuple(a.shape))

    return replace(
        s,
        slice_matrix=cast(s.slice_matrix),
        splat_matrix=cast(s.splat_matrix),
        barycentric=s.barycentric.to(dtype),
    )


BUILDERS = ("auto", "torch", "numba")


def build_lattice(
    features: torch.Tensor, batch_size: int = 1, *, force_hash: bool = False, builder: str = "auto"
) -> LatticeStructure:
    """Build the lattice of a batch of point sets.

    Args:
        features: (M, d) float features, already divided by the bandwidths, with the points of batch
            element b at rows b·N .. (b+1)·N − 1 (N = M / batch_size).
        batch_size: B; points of different batch elements never share a vertex.
        force_hash: use hashed codes even when packed codes fit (for testing the fallback).
        builder: "torch" (vectorised, sorts all corner codes), "numba" (CPU tensors: a compiled per-point
            pass and a hash table, :mod:`lab.lattice.numba_kernels`; the same lattice, several times
            faster) or "auto" (Numba for CPU tensors when it is installed and packed codes fit).

    Returns:
        The :class:`LatticeStructure`; its float tensors have the dtype of ``features`` (float32 for half
        types). The features are first shifted and, where float32 cannot hold them, promoted to float64
        (:func:`prepare_features`); features beyond what float64 builds are refused.

    Example:
        >>> s = build_lattice(torch.rand(100, 2) * 3)
        >>> s.slice_matrix.shape[0], s.barycentric.shape
        (100, torch.Size([100, 3]))
    """
    check_choice(builder, "builder", BUILDERS)
    if features.dim() != 2 or not features.is_floating_point() or features.shape[0] == 0:
        raise ValueError(
            f"features: expected (M, d) float features with M ≥ 1, got {features.dtype} {tuple(features.shape)}"
        )
    if batch_size < 1 or features.shape[0] % batch_size:
        raise ValueError(f"batch_size: expected a divisor of the {features.shape[0]} points, got {batch_size}")
    dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    m, d = features.shape
    kind = "numba" if builder != "torch" and features.device.type == "cpu" and not force_hash else "torch"
    check_memory(
        _BYTES_BEFORE_VERTICES[kind] * (d + 1) * m,
        features.device,
        f"features: a lattice over {m} points in {d} dimensions",
    )
    return _cast_structure(_build(prepare_features(features, batch_size), batch_size, force_hash, builder), dtype)


def _build(features: torch.Tensor, batch_size: int, force_hash: bool, builder: str) -> LatticeStructure:
    """:func:`build_lattice` on prepared features."""
    if builder != "torch" and not force_hash:
        from lab.lattice import numba_kernels

        if builder == "numba":
            if features.device.type != "cpu":
                raise ValueError(f"builder: 'numba' builds from CPU tensors, features are on {features.device}")
            if not numba_kernels.available():
                raise RuntimeError("builder='numba': Numba is not installed (pip install numba)")
        if features.device.type == "cpu" and numba_kernels.available():
            built = _build_numba(features, batch_size)
            if built is not None:
                return built
    return _build_torch(features, batch_size, force_hash)


def _build_numba(features: torch.Tensor, batch_size: int) -> LatticeStructure | None:
    """The Numba build (see :func:`build_lattice`), or None where packed codes do not fit."""
    from lab.lattice import numba_kernels

    m, d = features.shape
    dtype = features.dtype
    f = features.detach().contiguous()
    scale = elevation_scale(d, dtype)  # as elevate: the same rounding, so the same lattice
    jj = torch.arange(d + 2, dtype=dtype)
    numba_kernels.set_threads(torch.get_num_threads())
    arrays = numba_kernels.build_arrays(
        f.numpy(), scale.numpy(), jj.numpy(), batch_size, _MAX_PACKED_BITS, lambda v: check_vertices(m, d, v)
    )
    if arrays is None:
        return None
    t = {name: torch.from_numpy(a) if isinstance(a, np.ndarray) else a for name, a in arrays.items()}
    num_vertices = t["codes"].shape[0]
    vertex_batch = t["codes"] // arrays["batch_stride"]
    splat_matrix = csr(t["splat_crow"], t["splat_col"], t["splat_val"], (num_vertices, m))
    return _assemble(
        t["vertex_index"], t["barycentric"], splat_matrix, t["neighbours"], vertex_batch, batch_size, False
    )


def _assemble(
    vertex_index: torch.Tensor,
    weights: torch.Tensor,
    splat_matrix: torch.Tensor,
    neighbours: torch.Tensor,
    vertex_batch: torch.Tensor,
    batch_size: int,
    hashed: bool,
) -> LatticeStructure:
    """The :class:`LatticeStructure` from the corners, the splat matrix and the (d+1, V, 2) blur neighbours."""
    m, dp1 = vertex_index.shape
    num_vertices = neighbours.shape[1]
    device = vertex_index.device
    # Slice: row m = point m, columns its d+1 vertices, values the weights. The CPU kernels take columns in
    # any order; cuSPARSE gets them sorted within each row.
    cols, vals = vertex_index, weights
    if device.type == "cuda":
        cols, order = torch.sort(vertex_index, dim=1)
        vals = weights.gather(1, order)
    slice_crow = torch.arange(0, m * dp1 + 1, dp1, device=device)
    slice_matrix = csr(slice_crow, cols.reshape(-1), vals.reshape(-1), (m, num_vertices))
    return LatticeStructure(
        d=dp1 - 1,
        num_points=m,
        batch_size=batch_size,
        num_vertices=num_vertices,
        batch_num_vertices=torch.bincount(vertex_batch, minlength=batch_size),
        slice_matrix=slice_matrix,
        splat_matrix=splat_matrix,
        blur_neighbours=neighbours,
        vertex_index=vertex_index,
        barycentric=weights,
        hashed=hashed,
        kernel_scale=kernel_scale(dp1 - 1),
    )


def _build_torch(features: torch.Tensor, batch_size: int, force_hash: bool) -> LatticeStructure:
    """The vectorised PyTorch build (see :func:`build_lattice`)."""
    m, d = features.shape
    dp1 = d + 1
    device = features.device
    n = m // batch_size
    batch = torch.arange(batch_size, device=device).repeat_interleave(n)  # (M,)

    rem0, rank, weights = simplex(elevate(features))
    codec = _Codec(rem0, batch_size, force_hash)

    # Codes of all M·(d+1) corners, point-major: entry m·(d+1) + k is corner k of point m.
    codes = codec.encode_corners(rem0, rank, batch).reshape(-1)
    # One stable sort gives the unique vertices, each entry's vertex, and the entries grouped by vertex
    # (points in order within a vertex): the splat matrix's layout.
    sorted_codes, by_vertex = torch.sort(codes, stable=True)
    is_new = torch.ones_like(sorted_codes, dtype=torch.bool)
    is_new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = is_new.nonzero().squeeze(1)  # first sorted entry of each vertex
    unique = sorted_codes[starts]
    num_vertices = unique.shape[0]
    check_vertices(m, d, num_vertices, device)
    inverse = torch.empty_like(codes)
    inverse[by_vertex] = is_new.cumsum(0) - 1
    entry_batch = batch.repeat_interleave(dp1)

    # One representative entry per vertex (its first) gives its batch index and (when hashed) its coordinates.
    first = by_vertex[starts]
    vertex_batch = entry_batch[first]
    coords = None
    if codec.hashed:
        rep_point, rep_corner = first // dp1, first % dp1
        coords = torch.empty(num_vertices, d, dtype=torch.int64, device=device)
        for k in range(dp1):
            sel = rep_corner == k
            coords[sel] = corner(rem0[rep_point[sel]], rank[rep_point[sel]], k)
        for k in range(dp1):  # every corner must have the coordinates of the vertex it was merged into
            if not bool((coords[inverse.view(m, dp1)[:, k]] == corner(rem0, rank, k)).all()):
                raise RuntimeError("permutohedral lattice: 64-bit hash collision between vertex keys")

    # Splat = sliceᵀ: entries grouped by vertex (a stable sort keeps points in order within a vertex).
    splat_crow = torch.empty(num_vertices + 1, dtype=torch.int64, device=device)
    splat_crow[:-1] = starts
    splat_crow[-1] = codes.shape[0]
    splat_matrix = csr(splat_crow, by_vertex // dp1, weights.reshape(-1)[by_vertex], (num_vertices, m))

    neighbours = []
    for j in range(dp1):
        step = torch.full((d,), -1, dtype=torch.int64, device=device)
        if j < d:
            step[j] = d  # step_j = (−1, …, −1) with entry j replaced by d
        neighbours.append(_blur_neighbours(unique, coords, step, codec, vertex_batch))
    return _assemble(
        inverse.view(m, dp1), weights, splat_matrix, torch.stack(neighbours), vertex_batch, batch_size, codec.hashed
    )
