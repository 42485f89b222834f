"""Building the permutohedral lattice: points → enclosing simplices → unique vertices → sparse operators.

The construction follows Adams, Baek & Davis (2010) in the variant used by Krähenbühl & Koltun's dense CRF
(``shared/LATTICE.md`` of this project): elevate the d-dimensional features onto the hyperplane Σ = 0 of
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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from lab._checks import check_choice

__all__ = [
    "BUILDERS",
    "ELEVATED_LIMIT",
    "FLOAT32_ELEVATED_LIMIT",
    "LatticeStructure",
    "available_memory",
    "blur_matrix",
    "build_lattice",
    "check_memory",
    "compute_csr",
    "estimate_build_bytes",
    "pair_products",
    "prepare_features",
]

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
        blur_matrices: d+1 (V, V) CSR matrices, the [1/4, 1/2, 1/4] stencil along each lattice axis
            (a missing neighbour counts as zero). Each is symmetric.
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
    blur_matrices: tuple[torch.Tensor, ...]
    blur_neighbours: torch.Tensor
    vertex_index: torch.Tensor
    barycentric: torch.Tensor
    hashed: bool
    kernel_scale: float


def kernel_scale(d: int) -> float:
    """Peak value of the lattice's effective Gaussian for dimension d (see ``LatticeStructure``).

    The lattice {k·1 + (d+1)·z : Σ z = −k} has covolume (d+1)^{d−1}·sqrt(d+1) in the plane Σ = 0; the
    elevation maps feature space into that plane with volume factor sqrt(det(EᵀE)).
    """
    basis = _elevate(torch.eye(d, dtype=torch.float64)).T  # (d+1, d): column k is the image of e_k
    volume_factor = math.sqrt(float(torch.linalg.det(basis.T @ basis)))
    covolume = (d + 1) ** (d - 1) * math.sqrt(d + 1)
    return covolume / volume_factor / (2 * math.pi) ** (d / 2)


def _elevation_scale(d: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """(d,) per-coordinate scales of the elevation: (d+1)·sqrt(2/3) / sqrt((k+1)(k+2)), in ``dtype``."""
    k = torch.arange(d, dtype=dtype, device=device)
    return (d + 1) * math.sqrt(2.0 / 3.0) / torch.sqrt((k + 1) * (k + 2))


def _elevate(f: torch.Tensor) -> torch.Tensor:
    """(M, d) features → (M, d+1) coordinates on the plane Σ = 0, scaled so that the filter has unit σ."""
    m, d = f.shape
    scale = _elevation_scale(d, f.dtype, f.device)
    c = f * scale  # c_k = f_k · scale_k
    suffix = c.flip(1).cumsum(1).flip(1)  # suffix[:, j] = Σ_{k ≥ j} c_k
    elevated = torch.empty(m, d + 1, dtype=f.dtype, device=f.device)
    elevated[:, 0] = suffix[:, 0]
    j = torch.arange(1, d, dtype=f.dtype, device=f.device)
    elevated[:, 1:d] = suffix[:, 1:] - j * c[:, : d - 1]  # E_j = Σ_{k ≥ j} c_k − j·c_{j−1}
    elevated[:, d] = -d * c[:, d - 1]
    return elevated


def _simplex(elevated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _corner(rem0: torch.Tensor, rank: torch.Tensor, k: int) -> torch.Tensor:
    """Stored key (first d coordinates) of simplex corner k for every point: (M, d) int64."""
    dp1 = rem0.shape[1]
    d = dp1 - 1
    r = rank[:, :d]
    return rem0[:, :d] + torch.where(r <= d - k, k, k - dp1)


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
            return torch.stack([self.encode(_corner(rem0, rank, k), batch) for k in range(dp1)], 1)
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


def csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A CSR matrix without torch's "beta" warning (the invariants hold by construction)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


_INT32_MAX = 2**31 - 1


def compute_csr(a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A CSR matrix ready to multiply with: values in ``dtype``, indices int32 where they fit.

    PyTorch's CPU sparse × dense product (MKL) works on int32 indices and converts int64 ones on every
    call; stored as int32, the slice product of a 0.25 MP bilateral lattice takes ~35 % less time.
    """
    crow, col = a.crow_indices(), a.col_indices()
    if max(a.shape[0], a.shape[1], col.shape[0]) <= _INT32_MAX:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    return csr(crow, col, a.values().to(dtype), tuple(a.shape))


def pair_products(
    neighbours: Sequence[torch.Tensor | None], dtype: torch.dtype, num_vertices: int | None = None
) -> tuple[torch.Tensor, ...]:
    """Blur axes paired into one matrix each: [B0, B1, B2, …] → [B1·B0, B3·B2, …] as CSR, from neighbour tables.

    Half the passes over the vertex values for the same result. Each product is formed directly from the
    axes' neighbour tables (the vertex one step forward and back, known at build time): row v of B_j·B_i
    holds w = v + a·step_j + b·step_i for a, b ∈ {−1, 0, 1} with the weight c_a·c_b (c = ¼, ½, ¼), where the
    intermediate vertex v + a·step_j and w itself exist; coinciding entries (step_i = −step_j, d = 1) are
    summed. No sparse × sparse product runs: PyTorch's CPU CSR @ CSR leaks its workspace (~13 MiB per
    lattice at 0.25 MP in torch 2.13).

    Args:
        neighbours: one (V, 2) int64 table per axis, (forward, backward) vertex or −1 (``blur_neighbours``);
            None stands for an axis that is the identity (a lattice with fewer axes in a block-diagonal).
        dtype: float dtype of the values.
        num_vertices: V, needed only when every table is None.

    Returns:
        ⌈(d+1)/2⌉ CSR (V, V) matrices, each with at most 9 entries per row.

    Example:
        >>> s = build_lattice(torch.rand(50, 2) * 3)
        >>> pairs = pair_products(list(s.blur_neighbours), torch.float32)
        >>> len(pairs), pairs[0].shape == (s.num_vertices, s.num_vertices)
        (2, True)
    """
    present = [nb for nb in neighbours if nb is not None]
    v = present[0].shape[0] if present else num_vertices
    if v is None:
        raise ValueError("num_vertices: needed when every neighbour table is None")
    return tuple(_stencil_product(neighbours[i : i + 2], dtype, v) for i in range(0, len(neighbours), 2))


_STENCIL_ROWS = 1 << 18  # vertices per block when forming a paired stencil (bounds its temporaries to ~300 MB)


def _stencil_product(axes: Sequence[torch.Tensor | None], dtype: torch.dtype, v: int) -> torch.Tensor:
    """CSR of B_{i+1}·B_i (or B_i alone) from the axes' (V, 2) neighbour tables; None is the identity.

    Columns are sorted within a row. Two distinct lattice axes reach distinct vertices, except opposite axes
    (d = 1: step_1 = −step_0), whose coinciding entries are summed. On the CPU a compiled Numba pass forms the
    rows (:func:`lab.lattice.numba_kernels.stencil_arrays`); the vectorised PyTorch code below is the fallback
    and runs on other devices.
    """
    first, second = [*axes, None][:2]
    device = next((nb.device for nb in axes if nb is not None), torch.device("cpu"))
    if device.type == "cpu":
        from lab.lattice import numba_kernels

        if numba_kernels.available():
            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
            crow, col, val = numba_kernels.stencil_arrays(
                None if first is None else first.numpy(), None if second is None else second.numpy(), v, np_dtype
            )
            return csr(torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(val), (v, v))
    stencil = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64, device=device)
    opposite = first is not None and second is not None and torch.equal(first, second.flip(1))

    def steps(nb: torch.Tensor | None, start: torch.Tensor, val: torch.Tensor):
        """(R, k) vertices and values → (R, 3k) after one more axis (−1 stays missing)."""
        if nb is None:
            return start, val
        safe = start.clamp(min=0)
        cols = torch.stack([nb[safe, 1], safe, nb[safe, 0]], 2)  # back, self, forward
        cols = torch.where(start[:, :, None] >= 0, cols, -1)
        return cols.reshape(start.shape[0], -1), (val[:, :, None] * stencil).reshape(start.shape[0], -1)

    counts, all_cols, all_vals = [], [], []
    for lo in range(0, v, _STENCIL_ROWS):
        rows = torch.arange(lo, min(v, lo + _STENCIL_ROWS), device=device)
        r = rows.shape[0]
        # (B_{i+1}·B_i)[v, w] = Σ_u B_{i+1}[v, u]·B_i[u, w]: u along axis i+1 from v, then w along axis i from u
        cols, vals = steps(second, rows[:, None], torch.ones(r, 1, dtype=torch.float64, device=device))
        cols, vals = steps(first, cols, vals)
        cols, order = torch.sort(cols, dim=1)  # missing (−1) first; sorted columns keep the SpMM's reads in order
        vals = vals.gather(1, order)
        keep = cols >= 0
        big = v + 1
        keys, vals = ((rows[:, None] - lo) * big + cols)[keep], vals[keep]
        if opposite:  # coinciding entries are adjacent: sum them
            keys, inverse = torch.unique_consecutive(keys, return_inverse=True)
            vals = torch.zeros(keys.shape[0], dtype=torch.float64, device=device).index_add_(0, inverse, vals)
        row = torch.div(keys, big, rounding_mode="floor")
        counts.append(torch.bincount(row, minlength=r))
        all_cols.append(keys - row * big)
        all_vals.append(vals.to(dtype))
    crow = torch.zeros(v + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cat(counts).cumsum(0)
    return csr(crow, torch.cat(all_cols), torch.cat(all_vals), (v, v))


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


def blur_matrix(neighbours: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """CSR (V, V) matrix of new[v] = ½ old[v] + ¼ (old[v + step] + old[v − step]) from (V, 2) neighbours."""
    v = neighbours.shape[0]
    device = neighbours.device
    self_idx = torch.arange(v, device=device)
    cols = torch.stack([neighbours[:, 1], self_idx, neighbours[:, 0]], 1)  # (V, 3), −1 = missing
    vals = torch.tensor([0.25, 0.5, 0.25], dtype=dtype, device=device).expand(v, 3)
    cols, order = torch.sort(cols, dim=1)  # CSR wants sorted columns within a row
    vals = vals.gather(1, order)
    present = cols >= 0
    crow = torch.zeros(v + 1, dtype=torch.int64, device=device)
    crow[1:] = present.sum(1).cumsum(0)
    return csr(crow, cols[present], vals[present], (v, v))


# Peak bytes of a build and its filter operators, measured 2026-12-01 as ru_maxrss in a fresh process (1 MP,
# d = 2 and 5, V/M from 0.02 to 6 = d+1, the bound any θ reaches; docs/limits.md): before V is known, the
# corner pass and the hash table take at most ~120 B per (point, corner) entry (Numba; the PyTorch build
# sorts all entries: ~300 B); in all ≤ 100 B per entry + (100 + 110·(d+1)) B per vertex + the temporaries of
# one block of paired stencils (1200 B per vertex of a block).
_BYTES_BEFORE_VERTICES = {"numba": 120, "torch": 300}


def estimate_build_bytes(num_points: int, d: int, num_vertices: int | None = None) -> int:
    """Peak memory of building a lattice and its filter operators, in bytes: an upper estimate for any θ.

    Args:
        num_points: M.
        d: feature dimension.
        num_vertices: V when known; by default its bound (d+1)·M (every corner its own vertex: tiny θ).

    Example:
        >>> estimate_build_bytes(1_000_000, 5, num_vertices=20_000) // 2**20  # a photo's bilateral lattice
        609
        >>> estimate_build_bytes(1_000_000, 5) // 2**20  # the bound: V = 6 M
        5220
    """
    entries = (d + 1) * num_points
    v = entries if num_vertices is None else num_vertices
    return 100 * entries + (100 + 110 * (d + 1)) * v + 1200 * min(v, _STENCIL_ROWS)


def check_memory(need: int, device: torch.device, what: str) -> None:
    """Raise ``MemoryError`` (naming ``what`` and both sizes) when ``need`` bytes exceed the free memory."""
    free = available_memory(device)
    if free is not None and need > free:
        raise MemoryError(
            f"{what} needs about {need / 2**30:.2f} GiB, but only {free / 2**30:.2f} GiB is free on {device}; "
            "use a smaller image (or batch) or larger bandwidths (θ)"
        )


def available_memory(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes (MemAvailable on the CPU, free device memory on CUDA), or None."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# Largest |elevated coordinate| built in float32: the elevation's rounding (2^14 · 2^-24 ≈ 1e-3) then moves a
# barycentric weight by at most ~2e-4. Beyond it the build runs in float64, up to 2^40 (rounding ≈ 1e-4);
# beyond that no dtype represents the lattice and the features are refused.
FLOAT32_ELEVATED_LIMIT = 2.0**14
ELEVATED_LIMIT = 2.0**40


def prepare_features(features: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """The features as the build takes them: shifted per batch element by a lattice period, in a dtype that holds them.

    Features whose elevation stays within :data:`FLOAT32_ELEVATED_LIMIT` are returned as they are (every
    image at the usual bandwidths: the same lattice, bit for bit, as pydensecrf builds). Beyond it, each batch
    element is moved, dimension by dimension, by the lattice period closest to its midrange: the lattice is
    invariant under a shift of c_k = f_k·scale_k by a multiple of d+1 (the elevation moves by a remainder-0
    lattice point), so this is the same lattice up to rounding, with coordinates as small as they can be.
    Where the shifted elevation still exceeds the limit, the build runs in float64.

    Args:
        features: (M, d) finite float features, already divided by the bandwidths (batch element b at rows
            b·N .. (b+1)·N − 1).
        batch_size: B.

    Returns:
        (M, d) features in float32 or float64 (never less precise than ``features``).

    Raises:
        ValueError: the features are not finite, or their spread exceeds what float64 can build
            (:data:`ELEVATED_LIMIT`): bandwidths far too small for the coordinates.

    Example:
        >>> g = prepare_features(torch.tensor([[1e6, 0.0], [1e6 + 1.0, 2.0]]))  # far out, small spread
        >>> bool(g.abs().max() < 10), g.dtype
        (True, torch.float32)
        >>> prepare_features(torch.tensor([[0.0, 0.0], [1e5, 2.0]])).dtype  # spread beyond float32's reach
        torch.float64
    """
    m, d = features.shape
    f = features.detach()
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features: expected finite values, got NaN or Inf")
    dp1 = d + 1
    lo, hi = torch.aminmax(f.reshape(batch_size, m // batch_size, d), dim=1)
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    scale = _elevation_scale(d, torch.float64, f.device)
    largest = _elevated_bound(torch.maximum(lo.abs(), hi.abs()) * scale)
    if largest <= FLOAT32_ELEVATED_LIMIT:
        return f  # as given: no shift needed, the same lattice bit for bit
    periods = torch.round((lo / 2 + hi / 2) * scale / dp1)  # (B, d), lo/2 + hi/2 cannot overflow
    shift = periods * dp1 / scale
    largest = _elevated_bound(torch.maximum((hi - shift).abs(), (lo - shift).abs()) * scale)
    if not largest <= ELEVATED_LIMIT:  # also catches inf / nan from overflowing spans
        spread = float((hi - lo).max())
        raise ValueError(
            f"features: after dividing by the bandwidths the points spread over {spread:.3g} in one dimension, "
            f"{largest:.3g} on the lattice, beyond the {ELEVATED_LIMIT:.3g} that any dtype can build: the "
            "bandwidths (θ) are far too small for these coordinates (or the features were not divided by them)"
        )
    dtype = f.dtype if f.dtype == torch.float64 or largest <= FLOAT32_ELEVATED_LIMIT else torch.float64
    n = m // batch_size
    shifted = f.to(torch.float64).reshape(batch_size, n, d) - shift[:, None, :]
    return shifted.reshape(m, d).to(dtype)


def _elevated_bound(c: torch.Tensor) -> float:
    """Max |E_j| over a batch from (B, d) bounds on |c_k|: Σ_{k ≥ j} |c_k| + j·|c_{j−1}|, and d·|c_{d−1}|."""
    d = c.shape[1]
    bound = c.flip(1).cumsum(1).flip(1)
    bound[:, 1:] += torch.arange(1, d, dtype=c.dtype, device=c.device) * c[:, :-1]
    return max(float(bound.max()), d * float(c[:, -1].max()))


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
        blur_matrices=tuple(cast(b) for b in s.blur_matrices),
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


def _check_vertices(m: int, d: int, num_vertices: int, device: torch.device | None = None) -> None:
    """Once V is known, before the splat layout, blur tables and operators are allocated."""
    check_memory(
        estimate_build_bytes(m, d, num_vertices),
        device or torch.device("cpu"),
        f"features: a lattice of {num_vertices} vertices over {m} points in {d} dimensions",
    )


def _build_numba(features: torch.Tensor, batch_size: int) -> LatticeStructure | None:
    """The Numba build (see :func:`build_lattice`), or None where packed codes do not fit."""
    from lab.lattice import numba_kernels

    m, d = features.shape
    dtype = features.dtype
    f = features.detach().contiguous()
    scale = _elevation_scale(d, dtype)  # as _elevate: the same rounding, so the same lattice
    jj = torch.arange(d + 2, dtype=dtype)
    numba_kernels.set_threads(torch.get_num_threads())
    arrays = numba_kernels.build_arrays(
        f.numpy(), scale.numpy(), jj.numpy(), batch_size, _MAX_PACKED_BITS, lambda v: _check_vertices(m, d, v)
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
        blur_matrices=tuple(blur_matrix(nb, weights.dtype) for nb in neighbours),
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

    rem0, rank, weights = _simplex(_elevate(features))
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
    _check_vertices(m, d, num_vertices, device)
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
            coords[sel] = _corner(rem0[rep_point[sel]], rank[rep_point[sel]], k)
        for k in range(dp1):  # every corner must have the coordinates of the vertex it was merged into
            if not bool((coords[inverse.view(m, dp1)[:, k]] == _corner(rem0, rank, k)).all()):
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
