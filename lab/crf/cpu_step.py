"""The fused mean-field iteration on the CPU, compiled with Numba: slice, weight, µ, unary, softmax per pixel.

One iteration of Algorithm 1 (Krähenbühl & Koltun's form, K = 2 kernels, L labels) in three compiled passes:

1. splat, per lattice: ``Y[v] = Σ_i pre_i · b_iv · Q[i]`` over the points i with a corner at v, summed in
   increasing i. Each parallel task owns a range of vertices and scans all points in order: no atomics, and
   every vertex's sum is formed in the same order whatever the thread count (bit for bit);
2. blur: the lattice's paired blur matrices B_{j+1}·B_j applied to the (V, L) vertex tables, CSR row by row;
3. per pixel i, with its rows in registers: Q̌ = Σ_m w(m) ⊙ post_m[i] Σ_k b_ik Y_m[v_ik], Q̂ = µ Q̌ (Potts:
   Σ Q̌ − Q̌), logits = U − Q̂, Q = softmax(logits). Only Q (and the logits in the last iteration) is written.

Why it is written the way it is (CPU time of one pass, one thread, 512², L = 21, on the 2-core Intel Xeon
development machine under load from other work: ratios, not absolute figures):

* Rows are padded to a multiple of 8 labels and every row operation is written as 8 scalar lanes
  (:mod:`lab.crf.cpu_lanes`): LLVM's SLP vectoriser turns each group into one 256-bit instruction. A plain
  ``for l in range(L)`` loop stays scalar for L = 21: the loop vectoriser interleaves 4 × 8 lanes, so a loop
  shorter than 32 runs only its scalar remainder (pass 3's gathers: 30 ms; 8 lanes: 11 ms). Numba turns the
  SLP vectoriser off by default (``NUMBA_SLP_VECTORIZE=0``), and its loop vectoriser turns a runtime-length
  corner loop into gathers, so these kernels compile with SLP on and loop vectorisation off
  (:func:`_compiling`), and with the corner and label-group counts as constants (18 → 10 ms).
* The splat scans points in order (reads Q as a stream; the (V, L) table it adds to is small and stays in
  cache) instead of gathering each vertex's points, which reads Q's rows at random (25 → 11 ms).
* exp is 2^k · e^f with the Taylor series of e^f to degree 6 and 2^k built from the exponent bits
  (:func:`lab.crf.cpu_lanes.exp_neg`): Numba's ``math.exp`` is a scalar libm call (no SVML here). Relative
  error ≤ 2e-7 beyond the rounding of t·log2(e); e^t is floored at 2^−100 for t below −69 (so no subnormal
  numbers, which are slow, reach the next iteration's sums).
* fastmath without ``nnan``/``ninf``: a NaN or Inf from an overflowing pairwise term stays NaN and is
  reported by the caller, never optimised away.

Padded labels have U = −10³⁰ and are masked to Q = 0, so they never reach a vertex table. Results equal the
PyTorch path to float32 rounding (~1e-6 for normalised kernels; ``tests/crf/test_cpu_step.py``). Inference only: no
autograd (the training path is the PyTorch one). Indices are checked once, when :class:`CPUMeanField`
assembles its operands, before any kernel reads them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from lab.crf.cpu_lanes import FASTMATH, LANES
from lab.lattice.multi import filter_scales
from lab.lattice.numba_kernels import _LOCK, numba

if TYPE_CHECKING:
    from lab.lattice.lattice import PermutohedralLattice

__all__ = ["LANES", "CPUMeanField", "available"]

_PAD_UNARY = -1.0e30  # U of a padded label: never the max, exp → 0
_ROWS_PER_TASK = 256  # pixels (or vertices) per parallel task; results do not depend on it


def available() -> bool:
    """Whether Numba is installed (the fused CPU iteration needs it)."""
    return numba is not None


@contextlib.contextmanager
def _compiling() -> Iterator[None]:
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
        softmax_term8,
        store8,
        sum8,
        vmax8,
    )

    _U = np.uint64  # unsigned offsets: no negative-index wrap-around code around every load
    _F = np.float32

    @njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False)
    def _csr_rows(crow, col, val, x, out):
        """out[r] = Σ_{j in row r} val[j] · x[col[j]], rows of ``out`` / ``x`` padded to a multiple of 8."""
        rows, width = out.shape
        groups = width // 8
        xf, of = x.ravel(), out.ravel()
        w = _U(width)
        for task in prange((rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
            for r in range(task * _ROWS_PER_TASK, min(rows, (task + 1) * _ROWS_PER_TASK)):
                for g in range(groups):
                    og = _U(8 * g)
                    acc = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
                    for j in range(crow[r], crow[r + 1]):
                        acc = fma8(acc, val[j], xf, _U(col[j]) * w + og)
                    store8(of, _U(r) * w + og, acc)


@functools.cache
def _update_kernel(corners_a: int, corners_b: int, groups: int):
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
        for task in prange((n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
            for i in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
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
                top = max8(top8)
                s8 = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
                for g in range(groups):  # Q = softmax(logits); padded labels masked to 0
                    og = _U(8 * g)
                    e = softmax_term8(load8(lf, row + og), top, load8(mask, og))
                    store8(qf, row + og, e)
                    s8 = add8(s8, e)
                r = _F(1) / sum8(s8)
                for g in range(groups):
                    og = _U(8 * g)
                    store8(qf, row + og, scale8(load8(qf, row + og), r))

    return pixel_update


@functools.cache
def _splat_kernel(corners: int, groups: int):
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


class _Tables:
    """One lattice's operands, checked: its corners and splat coefficients, paired blurs (CSR), post-scale."""

    def __init__(self, lattice: PermutohedralLattice, normalize: str) -> None:
        s = lattice.structure
        pre, post = filter_scales(lattice, normalize, torch.float32)
        v, m = s.num_vertices, s.num_points
        self.index = np.ascontiguousarray(s.vertex_index.numpy(), np.int32)  # (M, d+1)
        if self.index.shape != (m, s.d + 1) or self.index.min(initial=0) < 0 or self.index.max(initial=0) >= v:
            raise ValueError(f"lattice: vertex_index must be ({m}, {s.d + 1}) vertices in 0..{v - 1}")
        bary = s.barycentric.float()
        self.bary = np.ascontiguousarray(bary.numpy())  # (M, d+1): slice weights
        self.coef = np.ascontiguousarray((pre * bary).numpy())  # (M, d+1): splat weights, pre-scale folded in
        self.post = np.ascontiguousarray(post[:, 0].numpy(), np.float32)  # (M,)
        self.blurs = [
            _csr_arrays(b.crow_indices(), b.col_indices(), b.values(), v, v, "blur")
            for b in lattice.paired_blurs(torch.float32)
        ]
        self.corners = s.d + 1
        self.num_vertices = v


def _csr_arrays(crow, col, val, rows: int, cols: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays for :func:`_csr_rows`, checked: row pointers 0 … nnz non-decreasing, columns in 0..cols−1."""
    crow = np.ascontiguousarray(crow.numpy(), np.int64)
    col = np.ascontiguousarray(col.numpy(), np.int32)
    val = np.ascontiguousarray(val.numpy(), np.float32)
    ok = (
        crow.shape == (rows + 1,)
        and crow[0] == 0
        and crow[-1] == col.shape[0] == val.shape[0]
        and bool((np.diff(crow) >= 0).all())
        and (col.size == 0 or (col.min() >= 0 and col.max() < cols))
    )
    if not ok:
        raise ValueError(f"lattice: its {name} matrix is not a valid ({rows}, {cols}) CSR matrix")
    return crow, col, val


class CPUMeanField:
    """The fused iteration's operands for two lattice kernels over the same points, assembled once.

    Args:
        lattices: the two lattices (bilateral, spatial) of a :class:`~lab.crf.kernels.CRFKernels`, on the CPU.
        normalize: "none", "after" or "symmetric".
        weights: (2, L) w(m)_l (scalar weights: equal columns).
        compat: µ as an (L, L) tensor, or "potts".

    Example:
        >>> from lab.crf import CRFKernels, CRFParams
        >>> kernels = CRFKernels(torch.rand(1, 3, 8, 8) * 255, CRFParams())
        >>> u = torch.randn(64, 3)
        >>> step = CPUMeanField(kernels.lattices, "symmetric", torch.ones(2, 3), "potts")
        >>> logits, q = step.run(u, torch.softmax(u, 1), 2)
        >>> q.shape, bool(torch.allclose(q.sum(1), torch.ones(64)))
        (torch.Size([64, 3]), True)
    """

    def __init__(
        self,
        lattices: Sequence[PermutohedralLattice],
        normalize: str,
        weights: torch.Tensor,
        compat: torch.Tensor | str,
    ) -> None:
        if not available():
            raise RuntimeError("the fused CPU iteration needs Numba (pip install numba)")
        if len(lattices) != 2:
            raise ValueError(f"lattices: expected two (bilateral, spatial), got {len(lattices)}")
        self.num_points = lattices[0].num_points
        if lattices[1].num_points != self.num_points:
            raise ValueError("lattices: expected two lattices over the same points")
        num_labels = weights.shape[1]
        if tuple(weights.shape) != (2, num_labels) or num_labels < 1:
            raise ValueError(f"weights: expected (2, L), got {tuple(weights.shape)}")
        self.num_labels = num_labels
        self.width = -(-num_labels // LANES) * LANES
        self.tables = [_Tables(lat, normalize) for lat in lattices]
        pad = self.width - num_labels
        w = torch.nn.functional.pad(weights.detach().float(), (0, pad))
        self.weights = [np.ascontiguousarray(w[k].numpy()) for k in range(2)]
        self.mask = np.zeros(self.width, np.float32)
        self.mask[:num_labels] = 1
        self.potts = isinstance(compat, str)
        if self.potts:
            self.mu_t = np.zeros((num_labels, self.width), np.float32)
        else:
            if tuple(compat.shape) != (num_labels, num_labels):
                raise ValueError(f"compat: expected ({num_labels}, {num_labels}), got {tuple(compat.shape)}")
            mu_t = torch.nn.functional.pad(compat.detach().float().T.contiguous(), (0, pad))
            self.mu_t = np.ascontiguousarray(mu_t.numpy())

    def _padded(self, x: torch.Tensor, fill: float) -> np.ndarray:
        out = np.full((self.num_points, self.width), fill, np.float32)
        out[:, : self.num_labels] = x.detach().float().numpy()
        return out

    def run(
        self, unary: torch.Tensor, q: torch.Tensor, iterations: int, history: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T iterations from Q.

        Args:
            unary: (M, L) U in point layout.
            q: (M, L) the starting Q (softmax(U) for Algorithm 1).
            iterations: T ≥ 1.
            history: where each iteration's Q (M, L) is appended, or None.

        Returns:
            (logits U − Q̂, Q) of the last iteration, each (M, L) float32.
        """
        shape = (self.num_points, self.num_labels)
        if tuple(unary.shape) != shape or tuple(q.shape) != shape:
            raise ValueError(f"unary, q: expected {shape}, got {tuple(unary.shape)} and {tuple(q.shape)}")
        u = self._padded(unary, _PAD_UNARY)
        qp = self._padded(q, 0.0)
        logits = np.empty_like(u)
        vertex = [
            (np.empty((t.num_vertices, self.width), np.float32), np.empty((t.num_vertices, self.width), np.float32))
            for t in self.tables
        ]
        a, b = self.tables
        groups = self.width // LANES
        with _LOCK, _compiling():
            update = _update_kernel(a.corners, b.corners, groups)
            splats = [_splat_kernel(t.corners, groups) for t in self.tables]
            parts = numba.get_num_threads()
            for it in range(iterations):
                blurred = []
                for t, splat, (y, spare) in zip(self.tables, splats, vertex, strict=True):
                    splat(t.index, t.coef, qp, y, parts)
                    for pair in t.blurs:
                        _csr_rows(*pair, y, spare)
                        y, spare = spare, y
                    blurred.append(y)
                update(
                    u, self.mask,
                    a.index, a.bary, a.post, blurred[0], self.weights[0],
                    b.index, b.bary, b.post, blurred[1], self.weights[1],
                    self.mu_t, self.potts, qp, logits if it == iterations - 1 or not self.potts else qp,
                )  # fmt: skip
                if history is not None:
                    history.append(torch.from_numpy(qp[:, : self.num_labels].copy()))
        cut = slice(0, self.num_labels)
        return (
            torch.from_numpy(np.ascontiguousarray(logits[:, cut])),
            torch.from_numpy(np.ascontiguousarray(qp[:, cut])),
        )
