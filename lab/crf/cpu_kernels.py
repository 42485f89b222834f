"""The compiled passes of the CPU mean-field iteration (:mod:`lab.crf.cpu_step` assembles and runs them).

Why it is written the way it is (CPU time of one pass, one thread, 512², L = 21, on the 2-core Intel Xeon
development machine under load from other work: ratios, not absolute figures):

* Rows are padded to a multiple of 8 labels and every row operation is written as 8 scalar lanes
  (:mod:`lab.crf.cpu_lanes`): LLVM's SLP vectoriser turns each group into one 256-bit instruction. A plain
  ``for l in range(L)`` loop stays scalar for L = 21: the loop vectoriser interleaves 4 × 8 lanes, so a loop
  shorter than 32 runs only its scalar remainder (pass 3's gathers: 30 ms; 8 lanes: 11 ms). Numba turns the
  SLP vectoriser off by default (``NUMBA_SLP_VECTORIZE=0``), and its loop vectoriser turns a runtime-length
  corner loop into gathers, so these kernels compile with SLP on and loop vectorisation off
  (:func:`compiling`), and with the corner and label-group counts as constants (18 → 10 ms).
* The splat scans points in order (reads Q as a stream; the (V, L) table it adds to is small and stays in
  cache) instead of gathering each vertex's points, which reads Q's rows at random (25 → 11 ms).
* exp is 2^k · e^f with the Taylor series of e^f to degree 6 and 2^k built from the exponent bits
  (:func:`lab.crf.cpu_lanes.exp_neg`): Numba's ``math.exp`` is a scalar libm call (no SVML here). Relative
  error ≤ 2e-7 beyond the rounding of t·log2(e); e^t is floored at 2^−100 for t below −69 (so no subnormal
  numbers, which are slow, reach the next iteration's sums).
* fastmath without ``nnan``/``ninf``: a NaN or Inf from an overflowing pairwise term stays NaN and is
  reported by the caller, never optimised away.

Every kernel is compiled once per shape combination (corner counts, label groups) and cached on disk;
``warm_up`` compiles the common ones. Calls hold ``lab.lattice.numba_kernels._LOCK``: Numba's "workqueue"
threading layer is not thread-safe.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

from lab.crf.cpu_lanes import FASTMATH
from lab.lattice.numba_kernels import numba

__all__ = [
    "SMALL_GROUPS",
    "available",
    "compiling",
    "csr_rows",
    "kernel_of_ones",
    "potts_kernel",
    "softmax_rows",
    "splat_kernel",
    "update_kernel",
]

ROWS_PER_TASK = 256  # pixels (or vertices) per parallel task; results do not depend on it


def available() -> bool:
    """Whether Numba is installed (the fused CPU iteration needs it)."""
    return numba is not None


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Numba's vectoriser settings for these kernels while they (may) compile: SLP on, loop vectoriser off.

    Numba reads both settings when it optimises a function, so they apply to what compiles inside the block
    (the first call, or never when the disk cache has the kernels); they are restored afterwards.
    """
    config = numba.config
    saved = config.SLP_VECTORIZE, config.LOOP_VECTORIZE
    config.SLP_VECTORIZE, config.LOOP_VECTORIZE = 1, 0
    try:
        yield
    finally:
        config.SLP_VECTORIZE, config.LOOP_VECTORIZE = saved


if numba is not None:
    from numba import njit, prange

    from lab.crf.cpu_lanes import (
        add8,
        axpy8,
        fma8,
        load8,
        max8,
        potts_logits8,
        scale8,
        softmax_row,
        softmax_term8,
        store8,
        sum8,
        vmax8,
    )

    _U = np.uint64  # unsigned offsets: no negative-index wrap-around code around every load
    _F = np.float32

    @njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False)
    def csr_rows(crow, col, val, x, out):
        """out[r] = Σ_{j in row r} val[j] · x[col[j]], rows of ``out`` / ``x`` padded to a multiple of 8."""
        rows, width = out.shape
        groups = width // 8
        xf, of = x.ravel(), out.ravel()
        w = _U(width)
        for task in prange((rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
            for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
                for g in range(groups):
                    og = _U(8 * g)
                    acc = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
                    for j in range(crow[r], crow[r + 1]):
                        acc = fma8(acc, val[j], xf, _U(col[j]) * w + og)
                    store8(of, _U(r) * w + og, acc)

    @njit(parallel=True, cache=True, boundscheck=False)
    def kernel_of_ones(index, bary, num_vertices, blurs_crow, blurs_col, blurs_val):
        """K·1 per point (float32): splat ones (Σ of each vertex's weights, points in order), blur, slice.

        The splat is sequential (a vertex's sum in point order, whatever the thread count); the paired blurs
        are given as one list of CSR matrices laid end to end (``blurs_crow`` holds each one's V + 1 pointers).
        """
        n, corners = index.shape
        y = np.zeros(num_vertices, np.float32)
        for i in range(n):
            for k in range(corners):
                y[index[i, k]] += bary[i, k]
        spare = np.empty_like(y)
        for p in range(blurs_crow.shape[0] // (num_vertices + 1)):
            crow = blurs_crow[p * (num_vertices + 1) : (p + 1) * (num_vertices + 1)]
            for r in prange(num_vertices):
                acc = np.float32(0)
                for j in range(crow[r], crow[r + 1]):
                    acc += blurs_val[j] * y[blurs_col[j]]
                spare[r] = acc
            y, spare = spare, y
        out = np.empty(n, np.float32)
        for i in prange(n):
            acc = np.float32(0)
            for k in range(corners):
                acc += bary[i, k] * y[index[i, k]]
            out[i] = acc
        return out

    @njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False)
    def softmax_rows(x, mask, out):
        """out[i] = mask ⊙ softmax(x[i]) for every row (padded labels: x = −10³⁰, mask 0): Q ← softmax(U)."""
        n, width = x.shape
        groups = width // 8
        xf, of = x.ravel(), out.ravel()
        w = _U(width)
        for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
            for i in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
                row = _U(i) * w
                top8 = load8(xf, row)
                for g in range(1, groups):
                    top8 = vmax8(top8, load8(xf, row + _U(8 * g)))
                softmax_row(xf, of, row, groups, mask, max8(top8))


@functools.cache
def update_kernel(corners_a: int, corners_b: int, groups: int):
    """Pass 3 compiled for lattices of ``corners_a`` and ``corners_b`` corners and ``groups`` × 8 labels.

    The counts are compile-time constants, so every corner and label-group loop unrolls and each group's
    sums stay in registers (a runtime count left the corner loop rolled: 18 ms instead of 10 at 512², L = 21).
    Compiled once per combination and cached on disk, like every kernel here.
    """

    @njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False)
    def pixel_update(u, mask, idx_a, bary_a, post_a, y_a, w_a, idx_b, bary_b, post_b, y_b, w_b, mu_t, potts, q, logits):
        """Pass 3 for every pixel: Q̌ from both kernels' tables, Q̂, logits = U − Q̂ and Q = softmax(logits).

        ``q`` receives Q̌ first (its row is this pixel's scratch), then Q. ``mu_t`` is µᵀ, (L, width):
        row l' holds µ[:, l'] (read only when ``potts`` is False). ``logits`` receives U − Q̂; for Potts it
        may be ``q`` itself (each row's logits then stay in its row until the softmax: one (M, L) write less).
        """
        n, width = u.shape
        num_labels = mu_t.shape[0]
        uf, qf, lf, yaf, ybf, mtf = u.ravel(), q.ravel(), logits.ravel(), y_a.ravel(), y_b.ravel(), mu_t.ravel()
        iaf, baf, ibf, bbf = idx_a.ravel(), bary_a.ravel(), idx_b.ravel(), bary_b.ravel()
        w = _U(width)
        for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
            for i in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
                row = _U(i) * w
                ia, ib = _U(i) * _U(corners_a), _U(i) * _U(corners_b)
                pa, pb = post_a[i], post_b[i]
                total8 = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
                for g in range(groups):  # Q̌ = Σ_m w(m) ⊙ post_m Σ_k b_k Y_m[v_k]
                    og = _U(8 * g)
                    a = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
                    for k in range(corners_a):
                        a = fma8(a, pa * baf[ia + _U(k)], yaf, _U(iaf[ia + _U(k)]) * w + og)
                    b = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
                    for k in range(corners_b):
                        b = fma8(b, pb * bbf[ib + _U(k)], ybf, _U(ibf[ib + _U(k)]) * w + og)
                    weighted = axpy8(load8(w_a, og), a, load8(w_b, og), b)
                    store8(qf, row + og, weighted)
                    total8 = add8(total8, weighted)
                total = sum8(total8)
                top8 = (_F(-3.0e38), _F(-3.0e38), _F(-3.0e38), _F(-3.0e38),
                        _F(-3.0e38), _F(-3.0e38), _F(-3.0e38), _F(-3.0e38))  # fmt: skip
                for g in range(groups):  # logits = U − Q̂
                    og = _U(8 * g)
                    if potts:  # Q̂ = Σ_l' Q̌_l' − Q̌_l
                        x = potts_logits8(load8(uf, row + og), load8(qf, row + og), total)
                    else:  # Q̂_l = Σ_l' µ[l, l'] Q̌_l'
                        x = load8(uf, row + og)
                        for lp in range(num_labels):
                            x = fma8(x, -qf[row + _U(lp)], mtf, _U(lp) * w + og)
                    store8(lf, row + og, x)
                    top8 = vmax8(top8, x)
                softmax_row(lf, qf, row, groups, mask, max8(top8))  # Q = softmax(logits); padded labels 0

    return pixel_update


SMALL_GROUPS = 4  # up to 32 labels: the Potts kernel keeps every group of a row in registers


@functools.cache
def potts_kernel(corners_a: int, corners_b: int, groups: int):
    """Pass 3 for Potts and at most 32 labels, every label group of a pixel in registers from gather to store.

    The corner loops are outermost: each corner's vertex offset and weight are formed once for all groups
    (the general kernel forms them once per group), and Q is stored once per group, after the softmax.
    ``logits`` is written only when ``keep`` is True.
    """
    if groups > SMALL_GROUPS:
        raise ValueError(f"groups: at most {SMALL_GROUPS}, got {groups}")

    @njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False)
    def potts_update(u, mask, idx_a, bary_a, post_a, y_a, w_a, idx_b, bary_b, post_b, y_b, w_b, q, logits, keep):
        n, width = u.shape
        uf, qf, lf, yaf, ybf = u.ravel(), q.ravel(), logits.ravel(), y_a.ravel(), y_b.ravel()
        iaf, baf, ibf, bbf = idx_a.ravel(), bary_a.ravel(), idx_b.ravel(), bary_b.ravel()
        w = _U(width)
        z = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
        low = (_F(-3e38), _F(-3e38), _F(-3e38), _F(-3e38), _F(-3e38), _F(-3e38), _F(-3e38), _F(-3e38))
        for task in prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
            wa0 = load8(w_a, _U(0))
            wb0 = load8(w_b, _U(0))
            m0 = load8(mask, _U(0))
            wa1 = z
            wb1 = z
            m1 = z
            wa2 = z
            wb2 = z
            m2 = z
            wa3 = z
            wb3 = z
            m3 = z
            if groups > 1:
                wa1 = load8(w_a, _U(8))
                wb1 = load8(w_b, _U(8))
                m1 = load8(mask, _U(8))
            if groups > 2:
                wa2 = load8(w_a, _U(16))
                wb2 = load8(w_b, _U(16))
                m2 = load8(mask, _U(16))
            if groups > 3:
                wa3 = load8(w_a, _U(24))
                wb3 = load8(w_b, _U(24))
                m3 = load8(mask, _U(24))
            for i in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
                row = _U(i) * w
                ia, ib = _U(i) * _U(corners_a), _U(i) * _U(corners_b)
                pa, pb = post_a[i], post_b[i]
                a0 = z
                a1 = z
                a2 = z
                a3 = z
                b0 = z
                b1 = z
                b2 = z
                b3 = z
                for k in range(corners_a):  # Σ_k b_k Y_a[v_k], every group at once
                    c, o = pa * baf[ia + _U(k)], _U(iaf[ia + _U(k)]) * w
                    a0 = fma8(a0, c, yaf, o)
                    if groups > 1:
                        a1 = fma8(a1, c, yaf, o + _U(8))
                    if groups > 2:
                        a2 = fma8(a2, c, yaf, o + _U(16))
                    if groups > 3:
                        a3 = fma8(a3, c, yaf, o + _U(24))
                for k in range(corners_b):
                    c, o = pb * bbf[ib + _U(k)], _U(ibf[ib + _U(k)]) * w
                    b0 = fma8(b0, c, ybf, o)
                    if groups > 1:
                        b1 = fma8(b1, c, ybf, o + _U(8))
                    if groups > 2:
                        b2 = fma8(b2, c, ybf, o + _U(16))
                    if groups > 3:
                        b3 = fma8(b3, c, ybf, o + _U(24))
                q0 = axpy8(wa0, a0, wb0, b0)
                q1 = axpy8(wa1, a1, wb1, b1)  # Q̌ (zero in unused groups)
                q2 = axpy8(wa2, a2, wb2, b2)
                q3 = axpy8(wa3, a3, wb3, b3)
                total = sum8(add8(add8(q0, q1), add8(q2, q3)))
                x0 = potts_logits8(load8(uf, row), q0, total)  # U − Q̂, Q̂ = Σ Q̌ − Q̌
                x1 = low
                x2 = low
                x3 = low
                if groups > 1:
                    x1 = potts_logits8(load8(uf, row + _U(8)), q1, total)
                if groups > 2:
                    x2 = potts_logits8(load8(uf, row + _U(16)), q2, total)
                if groups > 3:
                    x3 = potts_logits8(load8(uf, row + _U(24)), q3, total)
                top = max8(vmax8(vmax8(x0, x1), vmax8(x2, x3)))
                e0 = softmax_term8(x0, top, m0)
                e1 = softmax_term8(x1, top, m1)
                e2 = softmax_term8(x2, top, m2)
                e3 = softmax_term8(x3, top, m3)
                r = _F(1) / sum8(add8(add8(e0, e1), add8(e2, e3)))
                store8(qf, row, scale8(e0, r))
                if groups > 1:
                    store8(qf, row + _U(8), scale8(e1, r))
                if groups > 2:
                    store8(qf, row + _U(16), scale8(e2, r))
                if groups > 3:
                    store8(qf, row + _U(24), scale8(e3, r))
                if keep:
                    store8(lf, row, x0)
                    if groups > 1:
                        store8(lf, row + _U(8), x1)
                    if groups > 2:
                        store8(lf, row + _U(16), x2)
                    if groups > 3:
                        store8(lf, row + _U(24), x3)

    return potts_update


@functools.cache
def splat_kernel(corners: int, groups: int):
    """The splat compiled for ``corners`` corners per point and ``groups`` × 8 labels.

    ``out[v] = Σ_i coef[i, k] · x[i]`` over the points i with corner k at v, **in increasing i**: each of the
    ``parts`` tasks owns a range of vertices, scans every point and adds only to its own rows. A vertex's sum
    is then formed in the same order whatever ``parts`` is (the CSR gather's order, bit for bit), with no
    atomics; scanning points in order reads Q as a stream and keeps the (V, L) table, which is small, in cache
    (measured at 512², L = 21: 11 ms against 25 ms for the gather, which reads Q's rows at random).
    """

    @njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False)
    def splat(idx, coef, x, out, parts):
        n = idx.shape[0]
        rows, width = out.shape
        xf, of, idf, cf = x.ravel(), out.ravel(), idx.ravel(), coef.ravel()
        w = _U(width)
        for part in prange(parts):
            lo, hi = (rows * part) // parts, (rows * (part + 1)) // parts
            for o in range(_U(lo) * w, _U(hi) * w):
                of[o] = _F(0)
            for i in range(n):
                xo = _U(i) * w
                for k in range(corners):
                    v = idf[_U(i) * _U(corners) + _U(k)]
                    if v >= lo and v < hi:
                        c = cf[_U(i) * _U(corners) + _U(k)]
                        vo = _U(v) * w
                        for g in range(groups):
                            og = _U(8 * g)
                            store8(of, vo + og, fma8(load8(of, vo + og), c, xf, xo + og))

    return splat
