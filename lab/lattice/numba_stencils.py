"""The blur's paired stencils compiled with Numba for the CPU: rows of B_{i+1}·B_i from two neighbour tables.

The compiled form of :func:`lab.lattice.sparse.pair_products` (which falls back to PyTorch where Numba is
missing or the tables are not on the CPU): each vertex's at most 9 entries, formed in registers and kept
sorted by insertion, then compacted into CSR. The neighbour tables are checked before any kernel reads them.
"""

from __future__ import annotations

import numpy as np

from lab.lattice.numba_kernels import _LOCK, numba

__all__ = ["stencil_arrays"]

if numba is not None:
    from numba import njit, prange

    @njit(cache=True, inline="always")
    def _stencil_point(nb, has, r, a):
        """Point a (0 back, 1 self, 2 forward) of vertex r's [¼, ½, ¼] stencil along an axis: (vertex or −1, weight).

        An identity axis (``has`` False) has only its centre, with weight 1.
        """
        if not has:
            return (r, 1.0) if a == 1 else (np.int64(-1), 0.0)
        if a == 1:
            return r, 0.5
        return (nb[r, 1] if a == 0 else nb[r, 0]), 0.25

    @njit(parallel=True, cache=True)
    def stencil_pairs(first, second, has_first, has_second):
        """The rows of the blur pair B_{i+1}·B_i: (V, 9) sorted columns, their values, and counts.

        ``first`` / ``second`` are the (V, 2) (forward, backward) neighbour tables of axes i and i+1 (ignored
        where ``has_*`` is False: that axis is the identity). Row v reaches u along axis i+1, then w along
        axis i, with weight c_a·c_b (c = ¼, ½, ¼); columns are kept sorted by insertion and equal columns
        (opposite axes, d = 1) summed. Entries after a row's count are undefined.
        """
        v = first.shape[0] if has_first else second.shape[0]
        cols = np.empty((v, 9), np.int64)
        vals = np.empty((v, 9), np.float64)
        counts = np.empty(v, np.int64)
        for ri in prange(v):
            r = np.int64(ri)
            n = 0
            for a in range(3):
                u, wa = _stencil_point(second, has_second, r, a)
                if u < 0:
                    continue
                for b in range(3):
                    t, wb = _stencil_point(first, has_first, u, b)
                    if t < 0:
                        continue
                    j = 0
                    while j < n and cols[r, j] < t:
                        j += 1
                    if j < n and cols[r, j] == t:
                        vals[r, j] += wa * wb
                        continue
                    for k in range(n, j, -1):
                        cols[r, k] = cols[r, k - 1]
                        vals[r, k] = vals[r, k - 1]
                    cols[r, j] = t
                    vals[r, j] = wa * wb
                    n += 1
            counts[r] = n
        return cols, vals, counts

    @njit(parallel=True, cache=True)
    def compact_rows(cols, vals, counts, crow, out_col, out_val):
        """Row r's first counts[r] entries of (V, 9) cols / vals → out_col / out_val at crow[r] (CSR)."""
        for r in prange(cols.shape[0]):
            start = crow[r]
            for k in range(counts[r]):
                out_col[start + k] = cols[r, k]
                out_val[start + k] = vals[r, k]


def stencil_arrays(first: np.ndarray | None, second: np.ndarray | None, num_vertices: int, dtype: np.dtype):
    """The blur pair B_{i+1}·B_i of :func:`lab.lattice.sparse.pair_products` as CSR arrays.

    Args:
        first: (V, 2) int64 neighbour table of axis i, or None for an identity axis.
        second: the same for axis i+1.
        num_vertices: V.
        dtype: float dtype of the values.

    Returns:
        crow (V+1,), col (nnz,) sorted within each row, val (nnz,) in ``dtype``.
    """
    dummy = np.full((1, 2), -1, np.int64)
    tables = []
    for t in (first, second):
        if t is None:
            tables.append(dummy)
            continue
        t = np.ascontiguousarray(t, np.int64)
        if t.shape != (num_vertices, 2) or t.max(initial=-1) >= num_vertices or t.min(initial=-1) < -1:
            raise ValueError(f"neighbours: expected ({num_vertices}, 2) tables of vertices in −1..{num_vertices - 1}")
        tables.append(t)
    with _LOCK:
        if first is None and second is None:
            crow = np.arange(num_vertices + 1, dtype=np.int64)
            return crow, np.arange(num_vertices, dtype=np.int64), np.ones(num_vertices, dtype)
        cols, vals, counts = stencil_pairs(tables[0], tables[1], first is not None, second is not None)
        crow = np.zeros(num_vertices + 1, np.int64)
        np.cumsum(counts, out=crow[1:])
        col = np.empty(crow[-1], np.int64)
        val = np.empty(crow[-1], dtype)
        compact_rows(cols, vals, counts, crow, col, val)
    return crow, col, val
