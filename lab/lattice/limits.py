"""What the lattice can build, and how much memory a build and a mean-field run take.

* Representability: features are bounded on the lattice (:func:`prepare_features`): built as given where
  float32 holds their elevation, shifted by whole lattice periods and built in float64 where it does not,
  refused where no dtype can (bandwidths far too small for the coordinates).
* Memory: an upper estimate of a build's peak bytes for any θ (:func:`estimate_build_bytes`), checked against
  the free memory before the corner pass and again once the number of vertices is known
  (:func:`check_memory`: a ``MemoryError`` naming what and both sizes). ``docs/limits.md`` has the
  measurements behind the constants.
"""

from __future__ import annotations

import torch

from lab.lattice.elevation import elevation_scale
from lab.lattice.sparse import _STENCIL_ROWS

__all__ = [
    "ELEVATED_LIMIT",
    "FLOAT32_ELEVATED_LIMIT",
    "available_memory",
    "check_memory",
    "check_vertices",
    "estimate_build_bytes",
    "estimate_kernel_bytes",
    "prepare_features",
]

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


def estimate_kernel_bytes(num_points: int, d: int, dtype: torch.dtype, *, lattice: bool = True) -> int:
    """Memory a CRF's bilateral kernel over M points in d dimensions takes at least, in bytes (a lower estimate).

    For a lattice: its features in ``dtype`` (size·d bytes per point), alive when the build's corner pass
    starts, plus that pass (the build's first check, with the compiled builder's
    :data:`_BYTES_BEFORE_VERTICES`). Otherwise (the exact and window filters): the features as they are formed,
    in float64 and then rounded, 2·(8 + size)·d bytes per point. Checked by :class:`~lab.crf.CRFKernels` before
    any feature is formed, so that a volume far too large is refused before it allocates; the build checks its
    own estimates again as it goes.

    Example:
        >>> estimate_kernel_bytes(256**3, 4, torch.float32) / 2**30  # a 256³ one-channel volume: 16.8 M points
        9.625
    """
    size = torch.finfo(dtype).bits // 8
    if not lattice:
        return 2 * (8 + size) * d * num_points
    return (size * d + _BYTES_BEFORE_VERTICES["numba"] * (d + 1)) * num_points


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
    scale = elevation_scale(d, torch.float64, f.device)
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


def check_vertices(m: int, d: int, num_vertices: int, device: torch.device | None = None) -> None:
    """Once V is known, before the splat layout, blur tables and operators are allocated."""
    check_memory(
        estimate_build_bytes(m, d, num_vertices),
        device or torch.device("cpu"),
        f"features: a lattice of {num_vertices} vertices over {m} points in {d} dimensions",
    )
