"""Eight float32 lanes as Numba tuples: the building blocks of the compiled CPU iteration (:mod:`lab.crf.cpu_step`).

A row of L labels is padded to a multiple of 8 and handled 8 lanes at a time; each helper spells out its 8
scalar operations, which LLVM's SLP vectoriser turns into one 256-bit instruction when the caller is compiled
with it on (:func:`lab.crf.cpu_step._compiling`). Offsets are unsigned (``np.uint64``), so no negative-index
wrap-around code surrounds the loads. ``exp_neg`` is e^t for t ≤ 0 without a libm call (Numba's ``math.exp``
is a scalar call: no SVML here).
"""

from __future__ import annotations

import numpy as np

from lab.lattice.numba_kernels import numba

__all__ = ["FASTMATH", "LANES"]

LANES = 8  # labels per vector group: one 256-bit register of float32
FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}  # no nnan / ninf: a NaN stays visible

if numba is not None:
    from llvmlite import ir as _ir
    from numba import njit
    from numba.core import types as _types
    from numba.extending import intrinsic

    _U = np.uint64  # unsigned offsets: no negative-index wrap-around code around every load
    _F = np.float32

    @intrinsic
    def f32_from_bits(typingctx, bits):
        """The float32 whose IEEE-754 bits are the int32 ``bits`` (an LLVM bitcast: stays in a register)."""
        sig = _types.float32(_types.int32)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _ir.FloatType())

        return sig, codegen

    @njit(inline="always", fastmath=FASTMATH)
    def exp_neg(t):
        """e^t for t ≤ 0 (relative error ≤ 2e-7), at least 2^−100: 2^t = 2^k · 2^f, k = round(t), |f| ≤ ½.

        2^f by its Taylor series to degree 6 (remainder (½ ln 2)^7 / 7! ≈ 1.2e-7); 2^k from the exponent bits.
        """
        t = t * _F(1.4426950408889634)
        t = _F(-100.0) if t < _F(-100.0) else t  # keeps NaN
        k = np.floor(t + _F(0.5))
        f = (t - k) * _F(0.6931471805599453)  # 2^(t − k) = e^f
        p = _F(1.0 / 720.0)
        p = p * f + _F(1.0 / 120.0)
        p = p * f + _F(1.0 / 24.0)
        p = p * f + _F(1.0 / 6.0)
        p = p * f + _F(0.5)
        p = p * f + _F(1.0)
        p = p * f + _F(1.0)
        return p * f32_from_bits(np.int32(np.int32(k) + np.int32(127)) << np.int32(23))

    @njit(inline="always")
    def load8(a, o):
        return (a[o], a[o + _U(1)], a[o + _U(2)], a[o + _U(3)], a[o + _U(4)], a[o + _U(5)], a[o + _U(6)], a[o + _U(7)])

    @njit(inline="always")
    def store8(a, o, v):
        a[o], a[o + _U(1)], a[o + _U(2)], a[o + _U(3)] = v[0], v[1], v[2], v[3]
        a[o + _U(4)], a[o + _U(5)], a[o + _U(6)], a[o + _U(7)] = v[4], v[5], v[6], v[7]

    @njit(inline="always", fastmath=FASTMATH)
    def fma8(acc, c, a, o):
        """The lanes acc + c · a[o : o + 8]."""
        x = load8(a, o)
        return (
            acc[0] + c * x[0], acc[1] + c * x[1], acc[2] + c * x[2], acc[3] + c * x[3],
            acc[4] + c * x[4], acc[5] + c * x[5], acc[6] + c * x[6], acc[7] + c * x[7],
        )  # fmt: skip

    @njit(inline="always", fastmath=FASTMATH)
    def axpy8(a, x, b, y):
        """The lanes a ⊙ x + b ⊙ y."""
        return (
            a[0] * x[0] + b[0] * y[0], a[1] * x[1] + b[1] * y[1], a[2] * x[2] + b[2] * y[2],
            a[3] * x[3] + b[3] * y[3], a[4] * x[4] + b[4] * y[4], a[5] * x[5] + b[5] * y[5],
            a[6] * x[6] + b[6] * y[6], a[7] * x[7] + b[7] * y[7],
        )  # fmt: skip

    @njit(inline="always", fastmath=FASTMATH)
    def potts_logits8(u, weighted, total):
        """U − Q̂ for Potts, lane by lane: Q̂_l = Σ_l' Q̌_l' − Q̌_l, so U + Q̌ − Σ Q̌."""
        return (
            u[0] + weighted[0] - total, u[1] + weighted[1] - total, u[2] + weighted[2] - total,
            u[3] + weighted[3] - total, u[4] + weighted[4] - total, u[5] + weighted[5] - total,
            u[6] + weighted[6] - total, u[7] + weighted[7] - total,
        )  # fmt: skip

    @njit(inline="always", fastmath=FASTMATH)
    def sum8(v):
        return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))

    @njit(inline="always", fastmath=FASTMATH)
    def vmax8(a, b):
        """Lane-wise maximum."""
        return (
            a[0] if a[0] > b[0] else b[0], a[1] if a[1] > b[1] else b[1], a[2] if a[2] > b[2] else b[2],
            a[3] if a[3] > b[3] else b[3], a[4] if a[4] > b[4] else b[4], a[5] if a[5] > b[5] else b[5],
            a[6] if a[6] > b[6] else b[6], a[7] if a[7] > b[7] else b[7],
        )  # fmt: skip

    @njit(inline="always", fastmath=FASTMATH)
    def add8(a, b):
        return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7])

    @njit(inline="always", fastmath=FASTMATH)
    def max8(v):
        a = v[0] if v[0] > v[1] else v[1]
        b = v[2] if v[2] > v[3] else v[3]
        c = v[4] if v[4] > v[5] else v[5]
        d = v[6] if v[6] > v[7] else v[7]
        a = a if a > b else b
        c = c if c > d else d
        return a if a > c else c

    @njit(inline="always", fastmath=FASTMATH)
    def softmax_term8(x, m, mask):
        """The lanes mask ⊙ e^(x − m): one group's unnormalised softmax (m its row's maximum)."""
        return (
            mask[0] * exp_neg(x[0] - m), mask[1] * exp_neg(x[1] - m), mask[2] * exp_neg(x[2] - m),
            mask[3] * exp_neg(x[3] - m), mask[4] * exp_neg(x[4] - m), mask[5] * exp_neg(x[5] - m),
            mask[6] * exp_neg(x[6] - m), mask[7] * exp_neg(x[7] - m),
        )  # fmt: skip

    @njit(inline="always", fastmath=FASTMATH)
    def scale8(v, c):
        return (v[0] * c, v[1] * c, v[2] * c, v[3] * c, v[4] * c, v[5] * c, v[6] * c, v[7] * c)

    @njit(inline="always", fastmath=FASTMATH)
    def softmax_row(src, dst, row, groups, mask, top):
        """dst[row : row + 8·groups] = mask ⊙ softmax(src's row), given the row's maximum ``top``."""
        s8 = (_F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0), _F(0))
        for g in range(groups):
            og = _U(8 * g)
            e = softmax_term8(load8(src, row + og), top, load8(mask, og))
            store8(dst, row + og, e)
            s8 = add8(s8, e)
        r = _F(1) / sum8(s8)
        for g in range(groups):
            og = _U(8 * g)
            store8(dst, row + og, scale8(load8(dst, row + og), r))
