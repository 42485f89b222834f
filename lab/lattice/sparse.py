"""Sparse matrices of the lattice: CSR construction, the per-axis blur stencil and its paired products.

The blur along one lattice axis is new[v] = ½ old[v] + ¼ (old[v + step] + old[v − step]), a (V, V) matrix
with at most 3 entries a row built from the axis' neighbour table. The PyTorch backend multiplies by two
consecutive axes at once (B1·B0, B3·B2, …: at most 9 entries a row, half the passes over the vertex values),
formed from the neighbour tables directly (:func:`pair_products`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

__all__ = ["blur_matrix", "compute_csr", "csr", "pair_products"]


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
        >>> from lab.lattice.build import build_lattice
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
    rows (:func:`lab.lattice.numba_stencils.stencil_arrays`); the vectorised PyTorch code below is the fallback
    and runs on other devices.
    """
    first, second = [*axes, None][:2]
    device = next((nb.device for nb in axes if nb is not None), torch.device("cpu"))
    if device.type == "cpu":
        from lab.lattice import numba_kernels

        if numba_kernels.available():
            from lab.lattice.numba_stencils import stencil_arrays

            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
            crow, col, val = stencil_arrays(
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
