"""The lattice build compiled with Numba for the CPU: a per-point pass and a hash table instead of a sort.

The PyTorch build (:mod:`lab.lattice.build`) is vectorised but pays for it: it keeps (M, d+1)-sized
intermediates for every step of the simplex search and sorts all (d+1)·M corner codes to find the V
distinct vertices (V is usually 10–50 times smaller). Here:

1. one parallel pass over the points elevates each, finds its simplex, barycentric weights and the
   packed codes of its d+1 corners, with the corners in registers: the same float operations in the same
   dtype and order as the PyTorch build, so the lattice is the same, bit for bit;
2. an open-addressing hash table deduplicates the codes (sequential; it holds only the V distinct codes,
   so it stays in cache), and only those V codes are sorted: the same vertex order as sorting them all;
3. a counting sort lays the splat out (entries grouped by vertex, points in order within a vertex, as
   the PyTorch build's stable sort does), and the blur neighbours are looked up in the table.

Numba is optional: :func:`available` says whether it imports, and ``build_lattice`` falls back to PyTorch.
Compiled functions are cached on disk (``cache=True``), so only the first call on a machine compiles
(about 20 s for float32 and float64; ``make`` does it right after installing). Calls are serialised by a
lock, which keeps them safe under Numba's "workqueue" threading layer (not thread-safe; Streamlit runs
each session's script in its own thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

__all__ = ["available", "build_arrays", "set_threads", "warm_up"]

_LOCK = threading.RLock()


def available() -> bool:
    """Whether Numba is installed (the kernels compile on first use)."""
    return numba is not None


try:  # optional: without Numba, build_lattice uses the PyTorch build
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised where Numba is missing
    numba = None

# The kernels are module-level functions (not closures): Numba's disk cache only works for those.
if numba is not None:

    @njit(cache=True, inline="always")
    def simplex(f, scale, jj, c, elev, rem0f, rem0, rank, bary):
        """One point: elevate f, nearest remainder-0 point, ranks, barycentric weights; False if a rank is out of range.

        The same float operations, in the same dtype and order, as ``elevation.elevate`` and ``elevation.simplex``
        (jj holds 0..d+1 in the features' dtype so that no step is promoted to float64), so both builds give
        the same lattice.
        """
        d = f.shape[0]
        dp1 = d + 1
        fdp1 = jj[dp1]
        for k in range(d):
            c[k] = f[k] * scale[k]
        acc = 0.0  # PyTorch's CPU cumsum accumulates in float64 and rounds each output
        for k in range(d - 1, -1, -1):
            acc += c[k]
            elev[k] = acc
        for j in range(1, d):
            elev[j] = elev[j] - jj[j] * c[j - 1]
        elev[d] = -(jj[d] * c[d - 1])
        total = 0
        for i in range(dp1):
            down = np.floor(elev[i] / fdp1) * fdp1
            r = down + fdp1 if elev[i] - down > fdp1 / jj[2] else down
            rem0f[i] = r
            total += np.int64(r)
        s = total // dp1  # Σ rem0 is a multiple of d+1
        for i in range(dp1):
            c[i] = elev[i] - rem0f[i]  # Δ (c is free now; it has d+1 slots)
        for i in range(dp1):
            di = c[i]
            cnt = s
            for j in range(i):
                cnt += c[j] >= di  # ties: the earlier coordinate ranks first
            for j in range(i + 1, dp1):
                cnt += c[j] > di
            rank[i] = cnt
        for i in range(dp1):
            rem0[i] = np.int64(rem0f[i])
            if rank[i] < 0:
                rank[i] += dp1
                rem0[i] += dp1
            elif rank[i] > d:
                rank[i] -= dp1
                rem0[i] -= dp1
            if rank[i] < 0 or rank[i] > d:  # never index out of range, whatever the input
                return False
            rem0f[i] = rem0[i]
        for i in range(dp1 + 1):
            bary[i] = 0
        for i in range(dp1):
            delta = (elev[i] - rem0f[i]) / fdp1
            bary[d - rank[i]] += delta
            bary[d + 1 - rank[i]] -= delta
        bary[0] += jj[1] + bary[dp1]
        return True

    @njit(parallel=True, cache=True)
    def corners(features, scale, jj, lo, rem0_lo, rem0_hi, strides, batch_stride, points_per_batch, chunk):
        """(M, d+1) packed codes and barycentric weights of every point's simplex corners, and a fault count.

        A point whose ranks fall out of range or whose remainder-0 point lies outside [rem0_lo, rem0_hi] (the bounds
        the codes were sized for) is counted in ``faults`` and gets code 0 and weight 0: nothing is written out of
        bounds and nothing aliases silently; the caller raises when any fault is counted.
        """
        m, d = features.shape
        dp1 = d + 1
        codes = np.empty((m, dp1), np.int64)
        weights = np.empty((m, dp1), features.dtype)
        stride_sum = 0
        for i in range(d):
            stride_sum += strides[i]
        nchunks = (m + chunk - 1) // chunk
        faults = np.zeros(nchunks, np.int64)
        for ci in prange(nchunks):
            c = np.empty(dp1, features.dtype)
            elev = np.empty(dp1, features.dtype)
            rem0f = np.empty(dp1, features.dtype)
            rem0 = np.empty(dp1, np.int64)
            rank = np.empty(dp1, np.int64)
            bary = np.empty(dp1 + 1, features.dtype)
            by_rank = np.empty(dp1, np.int64)
            start = ci * chunk
            batch_base = (start // points_per_batch) * batch_stride
            next_batch = (start // points_per_batch + 1) * points_per_batch
            for p in range(start, min(m, start + chunk)):
                if p == next_batch:
                    batch_base += batch_stride
                    next_batch += points_per_batch
                ok = simplex(features[p], scale, jj, c, elev, rem0f, rem0, rank, bary)
                for i in range(d):
                    ok = ok and rem0_lo[i] <= rem0[i] <= rem0_hi[i]
                if not ok:
                    faults[ci] += 1
                    for k in range(dp1):
                        codes[p, k] = 0
                        weights[p, k] = 0
                    continue
                base = batch_base
                for r in range(dp1):
                    by_rank[r] = 0
                for i in range(d):
                    base += (rem0[i] - lo[i]) * strides[i]
                    by_rank[rank[i]] = strides[i]
                # corner k: base + k·Σ strides − (d+1)·Σ_{i: rank_i ≥ d+1−k} stride_i
                above = 0
                codes[p, 0] = base
                weights[p, 0] = bary[0]
                for k in range(1, dp1):
                    above += by_rank[dp1 - k]
                    codes[p, k] = base + k * stride_sum - dp1 * above
                    weights[p, k] = bary[k]
        return codes, weights, faults.sum()

    @njit(cache=True)
    def _slot(key, shift, mask):
        return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift)) & mask

    @njit(cache=True)
    def dedupe(codes):
        """Hash the flat codes: (table keys, table ids, first-seen id of every entry, distinct codes)."""
        n = codes.shape[0]
        bits = 12
        while (1 << bits) < n // 8:
            bits += 1
        keys = np.full(1 << bits, -1, np.int64)
        ids = np.empty(1 << bits, np.int64)
        entry_id = np.empty(n, np.int64)
        distinct = np.empty(1 << bits, np.int64)
        count = 0
        for e in range(n):
            key = codes[e]
            mask = (1 << bits) - 1
            s = _slot(key, 64 - bits, mask)
            while keys[s] != -1 and keys[s] != key:
                s = (s + 1) & mask
            if keys[s] == key:
                entry_id[e] = ids[s]
                continue
            keys[s] = key
            ids[s] = count
            distinct[count] = key
            entry_id[e] = count
            count += 1
            if 2 * count > (1 << bits):  # keep the load under ½: double and re-insert
                bits += 1
                mask = (1 << bits) - 1
                keys = np.full(1 << bits, -1, np.int64)
                ids = np.empty(1 << bits, np.int64)
                grown = np.empty(1 << bits, np.int64)
                grown[:count] = distinct[:count]
                distinct = grown
                for v in range(count):
                    t = _slot(distinct[v], 64 - bits, mask)
                    while keys[t] != -1:
                        t = (t + 1) & mask
                    keys[t] = distinct[v]
                    ids[t] = v
        return keys, ids, entry_id, distinct[:count].copy()

    @njit(cache=True)
    def lookup(keys, ids, key, bits):
        mask = keys.shape[0] - 1
        s = _slot(key, 64 - bits, mask)
        while keys[s] != -1:
            if keys[s] == key:
                return ids[s]
            s = (s + 1) & mask
        return -1

    @njit(parallel=True, cache=True)
    def finish(keys, ids, entry_id, distinct, weights_flat, dp1, axis_steps, parts):
        """Sorted vertex ids, the splat CSR and the blur neighbours.

        The splat layout is a counting sort over ``parts`` contiguous ranges of entries in parallel: each
        range counts its entries per vertex, an exclusive scan over (vertex, range) gives every range its
        write position in each vertex's segment, so entries stay in order within a vertex (a stable sort).
        """
        n = entry_id.shape[0]
        v = distinct.shape[0]
        order = np.argsort(distinct, kind="mergesort")
        sorted_id = np.empty(v, np.int64)
        for i in range(v):
            sorted_id[order[i]] = i
        inverse = np.empty(n, np.int64)
        m = n // dp1
        per = (m + parts - 1) // parts  # points per range
        counts = np.zeros((parts, v), np.int64)
        for r in prange(parts):
            for e in range(r * per * dp1, min(m, (r + 1) * per) * dp1):
                t = sorted_id[entry_id[e]]
                inverse[e] = t
                counts[r, t] += 1
        crow = np.zeros(v + 1, np.int64)
        for t in range(v):
            acc = 0
            for r in range(parts):
                acc += counts[r, t]
            crow[t + 1] = acc
        for t in range(v):
            crow[t + 1] += crow[t]
        for t in prange(v):  # counts become each range's write cursor within vertex t's segment
            pos = crow[t]
            for r in range(parts):
                c = counts[r, t]
                counts[r, t] = pos
                pos += c
        col = np.empty(n, np.int64)
        val = np.empty(n, weights_flat.dtype)
        for r in prange(parts):
            for p in range(r * per, min(m, (r + 1) * per)):
                for e in range(p * dp1, (p + 1) * dp1):
                    t = inverse[e]
                    pos = counts[r, t]
                    counts[r, t] = pos + 1
                    col[pos] = p
                    val[pos] = weights_flat[e]
        axes = axis_steps.shape[0]
        bits = 0
        while (1 << bits) < keys.shape[0]:
            bits += 1
        neighbours = np.empty((axes, v, 2), np.int64)  # [axis, vertex, (+step, −step)]
        for i in prange(v):
            code = distinct[order[i]]
            for j in range(axes):
                for side in range(2):
                    step = axis_steps[j] if side == 0 else -axis_steps[j]
                    prov = lookup(keys, ids, code + step, bits)
                    neighbours[j, i, side] = -1 if prov < 0 else sorted_id[prov]
        return inverse, crow, col, val, neighbours

    @njit(parallel=True, cache=True)
    def minmax(features, chunk):
        """Per-column min and max of (M, d) features."""
        m, d = features.shape
        nchunks = (m + chunk - 1) // chunk
        lo = np.empty((nchunks, d), features.dtype)
        hi = np.empty((nchunks, d), features.dtype)
        for ci in prange(nchunks):
            start = ci * chunk
            for i in range(d):
                lo[ci, i] = features[start, i]
                hi[ci, i] = features[start, i]
            for p in range(start + 1, min(m, start + chunk)):
                for i in range(d):
                    lo[ci, i] = min(lo[ci, i], features[p, i])
                    hi[ci, i] = max(hi[ci, i], features[p, i])
        out_lo = np.empty(d, np.float64)
        out_hi = np.empty(d, np.float64)
        for i in range(d):
            out_lo[i] = lo[:, i].min()
            out_hi[i] = hi[:, i].max()
        return out_lo, out_hi


def set_threads(n: int) -> None:
    """Use n threads (clipped to what Numba started with) for the parallel kernels."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


_CHUNK = 2048  # points per parallel work item


def warm_up() -> None:
    """Compile the kernels for float32 and float64 now (or load them from the disk cache): a tiny build each.

    ``make`` runs this once after installing, so that the app's first view does not wait for compilation.
    """
    import torch

    from lab.lattice.build import build_lattice
    from lab.lattice.sparse import pair_products

    for dtype in (torch.float32, torch.float64):
        s = build_lattice(torch.rand(64, 2, dtype=dtype) * 4, builder="numba")
    pair_products(list(s.blur_neighbours), torch.float32)


def _parts(num_vertices: int) -> int:
    """Ranges for the parallel counting sort: one per thread, fewer where (ranges × V) counts would be large."""
    threads = numba.get_num_threads()
    return max(1, min(threads, (64 << 20) // (8 * max(num_vertices, 1))))


def _remainder0_bounds(features: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the first d coordinates of every point's remainder-0 point, without visiting the points.

    The elevation is linear, E = A·f, so each E_j lies in the interval that A's row j maps the features'
    bounding box to; the remainder-0 point is a multiple of d+1 next to E (±(d+1) more after the wrap).
    The bounds can be looser than the exact ones (PyTorch's build): the packed codes then differ, their
    order, and so the vertex numbering, does not.
    """
    d = features.shape[1]
    dp1 = d + 1
    sc = scale.astype(np.float64)
    a = np.zeros((d, d))  # rows j < d of A (row d is not stored in the codes)
    for j in range(d):
        a[j, j:] = sc[j:]
        if j > 0:
            a[j, j - 1] = -j * sc[j - 1]
    with _LOCK:
        fmin, fmax = minmax(features, _CHUNK)
    e_lo = np.minimum(a * fmin, a * fmax).sum(1)
    e_hi = np.maximum(a * fmin, a * fmax).sum(1)
    slack = 1e-5 * np.maximum(np.abs(e_lo), np.abs(e_hi)) + 1  # the float32 rounding of the elevation
    lo = np.floor((e_lo - slack) / dp1) * dp1 - dp1
    hi = np.ceil((e_hi + slack) / dp1) * dp1 + dp1
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and np.abs(np.concatenate([lo, hi])).max() < 2.0**60):
        raise ValueError("features: beyond what the lattice represents (build_lattice prepares them first)")
    return lo.astype(np.int64), hi.astype(np.int64)


def build_arrays(
    features: np.ndarray,
    scale: np.ndarray,
    jj: np.ndarray,
    batch_size: int,
    max_bits: int,
    check_vertices: Callable[[int], None] | None = None,
) -> dict | None:
    """The lattice of (M, d) features as plain arrays, or None when packed codes would need > max_bits.

    Args:
        features: (M, d) float32 or float64, C-contiguous, already divided by the bandwidths.
        scale: (d,) the elevation scales (same dtype).
        jj: (d+2,) 0, 1, …, d+1 in the features' dtype.
        batch_size: B (points of element b are rows b·N .. (b+1)·N − 1).
        max_bits: the packed-code budget.
        check_vertices: called with V once the distinct vertices are known, before the rest is allocated
            (raises to stop the build, e.g. ``MemoryError``).

    Returns:
        dict with ``lo``, ``strides``, ``vertex_index`` (M, d+1), ``barycentric`` (M, d+1), ``codes`` (V,)
        sorted, ``splat_crow``, ``splat_col``, ``splat_val`` and ``neighbours`` (d+1, V, 2).
    """
    m, d = features.shape
    lo, hi = _remainder0_bounds(features, scale)
    margin = 2 * (d + 1)  # as build._Codec: corners and blur steps stay representable
    lo = lo - margin
    ranges = (hi + margin) - lo + 1
    bits = float(np.log2(ranges.astype(np.float64)).sum()) + float(np.log2(max(batch_size, 1)))
    if bits > max_bits:
        return None
    strides = np.ones(d, np.int64)
    for i in range(1, d):
        strides[i] = strides[i - 1] * ranges[i - 1]
    batch_stride = int(strides[-1] * ranges[-1])
    axis_steps = np.empty(d + 1, np.int64)  # code offset of step_j = (−1, …, −1) with entry j replaced by d
    for j in range(d + 1):
        step = np.full(d, -1, np.int64)
        if j < d:
            step[j] = d
        axis_steps[j] = int((step * strides).sum())
    with _LOCK:
        codes, weights, faults = corners(
            features, scale, jj, lo, lo + margin, hi, strides, batch_stride, m // batch_size, _CHUNK
        )
        if faults:
            raise RuntimeError(
                f"permutohedral lattice: {faults} points fell outside their simplex or the code bounds; "
                "build_lattice prepares features so that this cannot happen (lab.lattice.limits.prepare_features)"
            )
        keys, ids, entry_id, distinct = dedupe(codes.reshape(-1))
        if check_vertices is not None:
            check_vertices(distinct.shape[0])
        inverse, crow, col, val, neighbours = finish(
            keys, ids, entry_id, distinct, weights.reshape(-1), d + 1, axis_steps, _parts(distinct.shape[0])
        )
    return {
        "lo": lo,
        "strides": strides,
        "batch_stride": batch_stride,
        "vertex_index": inverse.reshape(m, d + 1),
        "barycentric": weights,
        "codes": np.sort(distinct),
        "splat_crow": crow,
        "splat_col": col,
        "splat_val": val,
        "neighbours": neighbours,
    }
