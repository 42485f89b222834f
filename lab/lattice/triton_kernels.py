"""Triton kernels for the permutohedral lattice: splat, blur and slice, and their launchers.

All three stages are sparse-times-dense products over (rows × channels) tiles, computed as gathers with a
segment sum, so every output element is written by exactly one program: deterministic, no atomics.

* **slice** ``out[m] = Σ_k b[m, k] · y[vertex[m, k]]`` reads the (M, d+1) vertex indices and barycentric
  weights directly (a fixed-width gather, d+1 unrolled at compile time).
* **splat** ``out[v] = Σ_{(m, k) → v} b[m, k] · x[m]`` is sliceᵀ: a CSR product with the (V, M) splat
  matrix, whose rows hold a varying number of points; each program loops to the longest row of its block
  (or, with ``block_entries``, walks rows one by one, gathering many entries of a row at once: CSR-vector).
  Rows longer than 256 entries are cut into pieces summed in two passes (:class:`RowSplit`).
  :func:`csr_matmul` is the general CSR × dense product behind it.
* **blur** along lattice axis j: ``out[v] = ½ y[v] + ¼ (y[v + step_j] + y[v − step_j])`` from a (V, 2)
  table of the two neighbours (−1 where missing). One launch per axis: each axis reads the previous axis'
  output at other vertices, so the d+1 passes need a grid-wide barrier between them, which a single Triton
  launch does not have.

The kernels read a compact copy of the lattice, :class:`TritonLattice` (built once per lattice and cached):
int32 indices instead of the int64 ones of :class:`~lab.lattice.build.LatticeStructure`, and the blur as a
neighbour table instead of CSR matrices (8 bytes per vertex and axis instead of 44). For C = 21 float32
channels on the 1-MP astronaut, index and weight arrays are then 31 % (bilateral) and 17 % (spatial) of the
bytes a filter moves, instead of 42 % and 26 %.

The math of the backward pass needs no kernel of its own: splatᵀ = slice, sliceᵀ = splat and the adjoint of
the blur is the same blurs in reverse order (each blur matrix is symmetric).

Values may be float32, float64, float16 or bfloat16; products are accumulated in float32 (float64 for
float64 values) and stored in the dtype of the output. Block sizes are launcher parameters: on a GPU small
row blocks keep many programs in flight; the interpreter (``TRITON_INTERPRET=1``) pays a fixed cost per
program, so there the default rows-per-program is large.
"""

from __future__ import annotations

import os
import warnings
import weakref
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

__all__ = [
    "RowSplit",
    "TritonLattice",
    "csr_matmul",
    "default_block_rows",
    "lattice_blur",
    "lattice_slice",
    "lattice_splat",
    "mean_field_step",
    "row_split",
    "triton_lattice",
]

# The blur stencil of build.py: ½ on the vertex, ¼ on each neighbour along the axis.
_BLUR_CENTRE, _BLUR_SIDE = 0.5, 0.25
# Rows per program on a GPU: 64 rows × up to 32 channels fp32 keeps the (BLOCK_R, BLOCK_C) tile in registers
# with 4 warps. (Not yet tuned on a GPU: see docs/triton.md.)
_GPU_BLOCK_ROWS = 64
# In the interpreter every program costs ~10 ms of Python overhead: one program per 4096 rows.
_INTERPRETER_BLOCK_ROWS = 4096
_MAX_BLOCK_CHANNELS = 32
# Splat rows (points per vertex) longer than this are cut into pieces and summed in two passes (RowSplit):
# at 1 MP the bilateral lattice has vertices of up to 15 239 points (median 18), and one program looping
# over such a row would set the time of the whole launch.
_SPLAT_MAX_ENTRIES = 256


def default_block_rows() -> int:
    """Rows per program when a launcher is not told: large in the interpreter, GPU-sized otherwise."""
    return _INTERPRETER_BLOCK_ROWS if os.environ.get("TRITON_INTERPRET") == "1" else _GPU_BLOCK_ROWS


def _block_channels(num_channels: int, block_channels: int | None) -> int:
    if block_channels is None:
        return min(triton.next_power_of_2(max(num_channels, 1)), _MAX_BLOCK_CHANNELS)
    return block_channels


def _check_block(value: int, name: str) -> None:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name}: expected a power of two ≥ 1, got {value}")


# ------------------------------------------------------------------------------------------------- kernels
@triton.jit
def _slice_tile(
    y_ptr,  # (V, C) vertex values
    stride_y,  # row stride of y
    index_ptr,  # (M, DP1) int vertex of each simplex corner, contiguous
    weight_ptr,  # (M, DP1) barycentric weight of each corner, contiguous
    rows,  # (BLOCK_M,) int64 point indices of this tile
    row_mask,  # (BLOCK_M,) rows < M
    cols,  # (BLOCK_C,) int64 channel indices
    col_mask,  # (BLOCK_C,) cols < C
    DP1: tl.constexpr,  # d + 1 corners per point
    ACC_FP64: tl.constexpr,  # accumulate in float64 (for float64 values), else float32
    BLOCK_M: tl.constexpr,  # len(rows)
    BLOCK_C: tl.constexpr,  # len(cols)
):
    """(BLOCK_M, BLOCK_C) tile of Σ_k b[m, k] · y[vertex[m, k], c], accumulated in float32 (float64)."""
    if ACC_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    mask = row_mask[:, None] & col_mask[None, :]
    for k in tl.static_range(DP1):
        vertex = tl.load(index_ptr + rows * DP1 + k, mask=row_mask, other=0).to(tl.int64)
        weight = tl.load(weight_ptr + rows * DP1 + k, mask=row_mask, other=0.0).to(acc.dtype)
        y = tl.load(y_ptr + vertex[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(acc.dtype)
        acc += weight[:, None] * y
    return acc


@triton.jit
def _slice_kernel(
    out_ptr,  # (M, C) output point values
    y_ptr,  # (V, C) vertex values
    index_ptr,  # (M, DP1) vertex_index
    weight_ptr,  # (M, DP1) barycentric
    num_rows,  # M
    num_channels,  # C
    stride_out,  # row stride of out
    stride_y,  # row stride of y
    DP1: tl.constexpr,
    ACC_FP64: tl.constexpr,  # accumulate in float64 (for float64 values), else float32
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    col_mask = cols < num_channels
    acc = _slice_tile(
        y_ptr, stride_y, index_ptr, weight_ptr, rows, row_mask, cols, col_mask, DP1, ACC_FP64, BLOCK_R, BLOCK_C
    )
    out = out_ptr + rows[:, None] * stride_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _csr_spmm_kernel(
    out_ptr,  # (R, C) output rows
    crow_ptr,  # (R + 1,) int64 first entry of each row
    col_ptr,  # (nnz,) int64 column of each entry = the row of x it reads
    val_ptr,  # (nnz,) value of each entry
    x_ptr,  # (Rx, C) dense input
    scale_ptr,  # (Rx,) scale of each row of x (read when HAS_SCALE): A·diag(scale)·x
    num_rows,  # R
    num_channels,  # C
    stride_out,  # row stride of out
    stride_x,  # row stride of x
    HAS_SCALE: tl.constexpr,
    MAX_NNZ: tl.constexpr,  # entries per row known at compile time (blur: 3), or 0: loop to the block's longest row
    ACC_FP64: tl.constexpr,  # accumulate in float64 (for float64 values), else float32
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    col_mask = cols < num_channels
    start = tl.load(crow_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    length = tl.load(crow_ptr + rows + 1, mask=row_mask, other=0).to(tl.int64) - start
    if ACC_FP64:
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    if MAX_NNZ > 0:
        for j in tl.static_range(MAX_NNZ):
            entry_mask = row_mask & (j < length)
            entry = start + j
            col = tl.load(col_ptr + entry, mask=entry_mask, other=0).to(tl.int64)
            val = tl.load(val_ptr + entry, mask=entry_mask, other=0.0).to(acc.dtype)
            if HAS_SCALE:
                val *= tl.load(scale_ptr + col, mask=entry_mask, other=0.0).to(acc.dtype)
            x_mask = entry_mask[:, None] & col_mask[None, :]
            x = tl.load(x_ptr + col[:, None] * stride_x + cols[None, :], mask=x_mask, other=0.0).to(acc.dtype)
            acc += val[:, None] * x
    else:
        for j in range(tl.max(length, axis=0)):
            entry_mask = row_mask & (j < length)
            entry = start + j
            col = tl.load(col_ptr + entry, mask=entry_mask, other=0).to(tl.int64)
            val = tl.load(val_ptr + entry, mask=entry_mask, other=0.0).to(acc.dtype)
            if HAS_SCALE:
                val *= tl.load(scale_ptr + col, mask=entry_mask, other=0.0).to(acc.dtype)
            x_mask = entry_mask[:, None] & col_mask[None, :]
            x = tl.load(x_ptr + col[:, None] * stride_x + cols[None, :], mask=x_mask, other=0.0).to(acc.dtype)
            acc += val[:, None] * x
    out = out_ptr + rows[:, None] * stride_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _csr_vector_kernel(
    out_ptr,  # (R, C) output rows
    crow_ptr,  # (R + 1,) int64 first entry of each row
    col_ptr,  # (nnz,) column of each entry = the row of x it reads
    val_ptr,  # (nnz,) value of each entry
    x_ptr,  # (Rx, C) dense input
    scale_ptr,  # (Rx,) scale of each row of x (read when HAS_SCALE)
    num_rows,  # R
    num_channels,  # C
    stride_out,  # row stride of out
    stride_x,  # row stride of x
    HAS_SCALE: tl.constexpr,
    ACC_FP64: tl.constexpr,  # accumulate in float64 (for float64 values), else float32
    ROWS: tl.constexpr,  # rows per program, one after another
    BLOCK_E: tl.constexpr,  # entries of one row gathered at once
    BLOCK_C: tl.constexpr,
):
    """CSR-vector SpMM: one row at a time, its entries vectorised BLOCK_E at a time and summed with tl.sum.

    Long, uneven rows (the splat's vertices collect 1 to thousands of points) cost their own length only,
    instead of the longest row of a BLOCK_R block as in _csr_spmm_kernel.
    """
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < num_channels
    lanes = tl.arange(0, BLOCK_E)
    for i in range(ROWS):
        row = pid_r * ROWS + i
        in_range = row < num_rows
        start = tl.load(crow_ptr + tl.minimum(row, num_rows - 1)).to(tl.int64)
        end = tl.load(crow_ptr + tl.minimum(row, num_rows - 1) + 1).to(tl.int64)
        end = tl.where(in_range, end, start)  # a row past the end sums nothing and is not stored
        if ACC_FP64:
            acc = tl.zeros((BLOCK_C,), dtype=tl.float64)
        else:
            acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for first in range(start, end, BLOCK_E):
            entry = first + lanes
            entry_mask = entry < end
            col = tl.load(col_ptr + entry, mask=entry_mask, other=0).to(tl.int64)
            val = tl.load(val_ptr + entry, mask=entry_mask, other=0.0).to(acc.dtype)
            if HAS_SCALE:
                val *= tl.load(scale_ptr + col, mask=entry_mask, other=0.0).to(acc.dtype)
            x_mask = entry_mask[:, None] & col_mask[None, :]
            x = tl.load(x_ptr + col[:, None] * stride_x + cols[None, :], mask=x_mask, other=0.0).to(acc.dtype)
            acc += tl.sum(val[:, None] * x, axis=0)
        store_mask = col_mask & (row + 0 * cols < num_rows)  # a (BLOCK_C,) mask, not a scalar one
        tl.store(out_ptr + row * stride_out + cols, acc.to(out_ptr.dtype.element_ty), mask=store_mask)


@triton.jit
def _blur_kernel(
    out_ptr,  # (V, C) blurred values
    y_ptr,  # (V, C) values
    neighbour_ptr,  # (V, 2) int32 the two neighbours along this axis, −1 where missing
    num_rows,  # V
    num_channels,  # C
    stride_out,  # row stride of out
    stride_y,  # row stride of y
    CENTRE: tl.constexpr,  # ½
    SIDE: tl.constexpr,  # ¼
    ACC_FP64: tl.constexpr,  # accumulate in float64 (for float64 values), else float32
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    col_mask = cols < num_channels
    mask = row_mask[:, None] & col_mask[None, :]
    if ACC_FP64:
        centre = tl.load(y_ptr + rows[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float64)
    else:
        centre = tl.load(y_ptr + rows[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    lo = tl.load(neighbour_ptr + rows * 2, mask=row_mask, other=-1).to(tl.int64)
    hi = tl.load(neighbour_ptr + rows * 2 + 1, mask=row_mask, other=-1).to(tl.int64)
    lo_mask = (lo >= 0)[:, None] & mask
    hi_mask = (hi >= 0)[:, None] & mask
    left = tl.load(y_ptr + lo[:, None] * stride_y + cols[None, :], mask=lo_mask, other=0.0).to(centre.dtype)
    right = tl.load(y_ptr + hi[:, None] * stride_y + cols[None, :], mask=hi_mask, other=0.0).to(centre.dtype)
    acc = CENTRE * centre + SIDE * (left + right)  # a missing neighbour counts as zero
    out = out_ptr + rows[:, None] * stride_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _mean_field_kernel(
    logits_ptr,  # (M, L) output: U − µ Q̌
    q_ptr,  # (M, L) output: softmax of the logits over labels
    unary_ptr,  # (M, L) unary potentials U
    extra_ptr,  # (M, L) float32 Q̌ of kernels beyond the first two (read when HAS_EXTRA)
    blurred_a_ptr,  # (V_a, L) blurred vertex values of kernel a
    index_a_ptr,  # (M, DP1_A) vertex_index of lattice a
    bary_a_ptr,  # (M, DP1_A) barycentric of lattice a
    norm_a_ptr,  # (M,) post-slice scale of kernel a
    weight_a_ptr,  # (L,) per-label weight of kernel a
    blurred_b_ptr,  # the same for kernel b (read when HAS_B)
    index_b_ptr,
    bary_b_ptr,
    norm_b_ptr,
    weight_b_ptr,
    compat_ptr,  # (L, L) compatibility µ, contiguous
    num_rows,  # M
    num_labels,  # L: also the row stride of every (·, L) tensor (all contiguous)
    DP1_A: tl.constexpr,
    DP1_B: tl.constexpr,
    HAS_B: tl.constexpr,
    HAS_EXTRA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_L: tl.constexpr,  # labels padded to a power of two ≥ 16 (tl.dot's minimum)
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    labels = tl.arange(0, BLOCK_L).to(tl.int64)
    row_mask = rows < num_rows
    label_mask = labels < num_labels
    mask = row_mask[:, None] & label_mask[None, :]
    offsets = rows[:, None] * num_labels + labels[None, :]

    # Q̌ = Σ_k w_k[l] · norm_k[i] · slice_k(blurred_k)[i, l]
    sliced = _slice_tile(
        blurred_a_ptr, num_labels, index_a_ptr, bary_a_ptr, rows, row_mask, labels, label_mask,
        DP1_A, False, BLOCK_M, BLOCK_L,
    )  # fmt: skip
    norm = tl.load(norm_a_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    weight = tl.load(weight_a_ptr + labels, mask=label_mask, other=0.0).to(tl.float32)
    qcheck = sliced * norm[:, None] * weight[None, :]
    if HAS_B:
        sliced = _slice_tile(
            blurred_b_ptr, num_labels, index_b_ptr, bary_b_ptr, rows, row_mask, labels, label_mask,
            DP1_B, False, BLOCK_M, BLOCK_L,
        )  # fmt: skip
        norm = tl.load(norm_b_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
        weight = tl.load(weight_b_ptr + labels, mask=label_mask, other=0.0).to(tl.float32)
        qcheck += sliced * norm[:, None] * weight[None, :]
    if HAS_EXTRA:
        qcheck += tl.load(extra_ptr + offsets, mask=mask, other=0.0).to(tl.float32)

    # Q̂[i, l] = Σ_l' µ[l, l'] Q̌[i, l'] = (Q̌ µᵀ)[i, l]; µᵀ[l', l] = µ[l, l'] (zero padded). IEEE fp32: no TF32.
    compat_t = tl.load(
        compat_ptr + labels[None, :] * num_labels + labels[:, None],
        mask=label_mask[:, None] & label_mask[None, :],
        other=0.0,
    ).to(tl.float32)
    qhat = tl.dot(qcheck, compat_t, input_precision="ieee")

    logits = tl.load(unary_ptr + offsets, mask=mask, other=0.0).to(tl.float32) - qhat  # U − Q̂
    # q = softmax over the real labels (padded ones get −inf, so e^… = 0)
    shifted = tl.where(label_mask[None, :], logits, float("-inf"))
    shifted = shifted - tl.max(shifted, axis=1)[:, None]
    e = tl.exp(shifted)
    q = e / tl.sum(e, axis=1)[:, None]
    tl.store(logits_ptr + offsets, logits, mask=mask)
    tl.store(q_ptr + offsets, q, mask=mask)


# ------------------------------------------------------------------------------------- torch.library ops
# Each launch is a ``torch.library.triton_op`` (torch ≥ 2.6) whose body calls the kernel through
# ``wrap_triton``: eager calls run it directly, and ``torch.compile`` sees the kernel itself (it can trace
# its memory effects and fuse around it) instead of an opaque call. On older torch they are plain functions.
_triton_op = getattr(torch.library, "triton_op", None)
_wrap_triton = getattr(torch.library, "wrap_triton", lambda kernel: kernel)


def _register(name: str):
    """Register fn as the triton_op ``lab::name``; if this torch cannot, keep the plain function (and say so)."""

    def register(fn):
        if _triton_op is None:
            return fn
        try:
            return _triton_op(f"lab::{name}", mutates_args=())(fn)
        except Exception as exc:  # an older torch's schema inference: the kernels still run, uncompiled
            message = f"lab::{name} not registered with torch.library ({exc}); torch.compile will not trace it"
            warnings.warn(message, stacklevel=2)
            return fn

    return register


@_register("lattice_csr_matmul")
def _csr_matmul_op(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor | None,
    max_nnz: int,
    out_dtype: torch.dtype,
    block_rows: int,
    block_channels: int,
    block_entries: int,
) -> torch.Tensor:
    num_rows, num_channels = crow.shape[0] - 1, x.shape[1]
    out = torch.empty((num_rows, num_channels), dtype=out_dtype, device=x.device)
    if num_rows > 0 and num_channels > 0 and block_entries > 0:  # CSR-vector: rows one by one
        grid = (triton.cdiv(num_rows, block_rows), triton.cdiv(num_channels, block_channels))
        _wrap_triton(_csr_vector_kernel)[grid](
            out,
            crow,
            col,
            val,
            x,
            scale if scale is not None else val,  # not read without HAS_SCALE
            num_rows,
            num_channels,
            out.stride(0),
            x.stride(0),
            HAS_SCALE=scale is not None,
            ACC_FP64=x.dtype == torch.float64,
            ROWS=block_rows,
            BLOCK_E=block_entries,
            BLOCK_C=block_channels,
        )
    elif num_rows > 0 and num_channels > 0:  # tiles of rows
        grid = (triton.cdiv(num_rows, block_rows), triton.cdiv(num_channels, block_channels))
        _wrap_triton(_csr_spmm_kernel)[grid](
            out,
            crow,
            col,
            val,
            x,
            scale if scale is not None else val,  # not read without HAS_SCALE
            num_rows,
            num_channels,
            out.stride(0),
            x.stride(0),
            HAS_SCALE=scale is not None,
            MAX_NNZ=max_nnz,
            ACC_FP64=x.dtype == torch.float64,
            BLOCK_R=block_rows,
            BLOCK_C=block_channels,
        )
    return out


@_register("lattice_slice")
def _slice_op(
    y: torch.Tensor,
    vertex_index: torch.Tensor,
    barycentric: torch.Tensor,
    out_dtype: torch.dtype,
    block_rows: int,
    block_channels: int,
) -> torch.Tensor:
    num_rows, num_channels = vertex_index.shape[0], y.shape[1]
    out = torch.empty((num_rows, num_channels), dtype=out_dtype, device=y.device)
    if num_rows > 0 and num_channels > 0:
        grid = (triton.cdiv(num_rows, block_rows), triton.cdiv(num_channels, block_channels))
        _wrap_triton(_slice_kernel)[grid](
            out,
            y,
            vertex_index,
            barycentric,
            num_rows,
            num_channels,
            out.stride(0),
            y.stride(0),
            DP1=vertex_index.shape[1],
            ACC_FP64=y.dtype == torch.float64,
            BLOCK_R=block_rows,
            BLOCK_C=block_channels,
        )
    return out


@_register("lattice_blur_axis")
def _blur_op(y: torch.Tensor, neighbours: torch.Tensor, block_rows: int, block_channels: int) -> torch.Tensor:
    num_rows, num_channels = y.shape
    out = torch.empty((num_rows, num_channels), dtype=y.dtype, device=y.device)
    if num_rows > 0 and num_channels > 0:
        grid = (triton.cdiv(num_rows, block_rows), triton.cdiv(num_channels, block_channels))
        _wrap_triton(_blur_kernel)[grid](
            out,
            y,
            neighbours,
            num_rows,
            num_channels,
            out.stride(0),
            y.stride(0),
            CENTRE=_BLUR_CENTRE,
            SIDE=_BLUR_SIDE,
            ACC_FP64=y.dtype == torch.float64,
            BLOCK_R=block_rows,
            BLOCK_C=block_channels,
        )
    return out


@_register("mean_field_step")
def _mean_field_op(
    unary: torch.Tensor,
    blurred_a: torch.Tensor,
    index_a: torch.Tensor,
    bary_a: torch.Tensor,
    norm_a: torch.Tensor,
    weight_a: torch.Tensor,
    blurred_b: torch.Tensor | None,
    index_b: torch.Tensor | None,
    bary_b: torch.Tensor | None,
    norm_b: torch.Tensor | None,
    weight_b: torch.Tensor | None,
    compat: torch.Tensor,
    extra: torch.Tensor | None,
    block_m: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    m, num_labels = unary.shape
    logits = torch.empty((m, num_labels), dtype=torch.float32, device=unary.device)
    q = torch.empty((m, num_labels), dtype=torch.float32, device=unary.device)
    has_b = blurred_b is not None
    if m > 0:
        _wrap_triton(_mean_field_kernel)[(triton.cdiv(m, block_m),)](
            logits,
            q,
            unary,
            extra if extra is not None else logits,  # not read without HAS_EXTRA
            blurred_a,
            index_a,
            bary_a,
            norm_a,
            weight_a,
            blurred_b if has_b else blurred_a,  # not read without HAS_B
            index_b if has_b else index_a,
            bary_b if has_b else bary_a,
            norm_b if has_b else norm_a,
            weight_b if has_b else weight_a,
            compat,
            m,
            num_labels,
            DP1_A=index_a.shape[1],
            DP1_B=index_b.shape[1] if has_b else index_a.shape[1],
            HAS_B=has_b,
            HAS_EXTRA=extra is not None,
            BLOCK_M=block_m,
            BLOCK_L=max(16, triton.next_power_of_2(num_labels)),
        )
    return logits, q


# ------------------------------------------------------------------------------------ compact lattice
@dataclass(frozen=True, eq=False)
class RowSplit:
    """A CSR matrix's long rows cut into pieces of at most ``max_entries``, for a two-pass product.

    Pass 1 treats every piece as a row (``crow``: the same entries, more row boundaries) and writes one
    partial sum per piece; pass 2 adds each row's pieces (a CSR with unit weights: ``piece_crow``,
    ``piece_col``, ``piece_val``). No program then loops over more than ``max_entries`` entries, however
    uneven the rows: a splat vertex can collect thousands of points. Deterministic, no atomics.

    Attributes:
        crow: (P + 1,) int64 first entry of each piece.
        piece_crow: (R + 1,) int64 first piece of each row.
        piece_col: (P,) int32 0..P−1.
        piece_val: (P,) float32 ones.
        max_entries: the longest piece.
    """

    crow: torch.Tensor
    piece_crow: torch.Tensor
    piece_col: torch.Tensor
    piece_val: torch.Tensor
    max_entries: int


def row_split(crow: torch.Tensor, max_entries: int) -> RowSplit | None:
    """Cut the rows of a CSR matrix longer than ``max_entries`` into pieces; None if no row is that long.

    Args:
        crow: (R + 1,) int64 row pointers.
        max_entries: the most entries one piece may hold (≥ 1).

    Returns:
        The :class:`RowSplit`, or None when every row already fits.
    """
    length = crow[1:] - crow[:-1]
    pieces = (length + max_entries - 1) // max_entries  # an empty row has no piece (its sum is zero)
    if pieces.numel() == 0 or int(pieces.max()) <= 1:
        return None
    piece_crow = torch.zeros_like(crow)
    piece_crow[1:] = pieces.cumsum(0)
    num_pieces = int(piece_crow[-1])
    rows = torch.arange(length.shape[0], device=crow.device)
    piece_row = torch.repeat_interleave(rows, pieces)  # (P,) the row of each piece
    rank = torch.arange(num_pieces, device=crow.device) - piece_crow[piece_row]  # piece number within its row
    starts = crow[piece_row] + rank * max_entries
    return RowSplit(
        crow=torch.cat([starts, crow[-1:]]),
        piece_crow=piece_crow,
        piece_col=torch.arange(num_pieces, dtype=torch.int32, device=crow.device),
        piece_val=torch.ones(num_pieces, dtype=torch.float32, device=crow.device),
        max_entries=max_entries,
    )


@dataclass(frozen=True, eq=False)
class TritonLattice:
    """The arrays the kernels read, derived once from a :class:`~lab.lattice.build.LatticeStructure`.

    Attributes:
        vertex_index: (M, d+1) int32 vertex of each simplex corner.
        barycentric: (M, d+1) corner weights (the structure's dtype).
        splat_crow: (V + 1,) int64 row pointers of the splat matrix.
        splat_col: (M·(d+1),) int32 point of each splat entry, grouped by vertex.
        splat_val: (M·(d+1),) weight of each splat entry.
        splat_split: the splat rows cut into pieces of at most 256 entries (None if none is longer).
        neighbours: (d+1, V, 2) int32, for each blur axis the two neighbours of each vertex, −1 where missing.
    """

    vertex_index: torch.Tensor
    barycentric: torch.Tensor
    splat_crow: torch.Tensor
    splat_col: torch.Tensor
    splat_val: torch.Tensor
    splat_split: RowSplit | None
    neighbours: torch.Tensor


_LAYOUTS: dict[int, TritonLattice] = {}


def _neighbour_table(blur: torch.Tensor) -> torch.Tensor:
    """(V, 2) int32 off-diagonal columns of a blur CSR matrix (−1 padded), after checking its stencil."""
    v = blur.shape[0]
    crow, col, val = blur.crow_indices(), blur.col_indices(), blur.values()
    length = crow[1:] - crow[:-1]
    slot = torch.arange(3, device=col.device)
    valid = slot[None, :] < length[:, None]  # (V, 3)
    pos = (crow[:-1, None] + slot[None, :]).clamp_(max=max(col.numel() - 1, 0))
    cols = torch.where(valid, col[pos], -1)
    vals = torch.where(valid, val[pos], 0)
    centre = valid & (cols == torch.arange(v, device=col.device)[:, None])
    side = valid & ~centre
    stencil_ok = (
        bool((centre.sum(1) == 1).all())
        and bool((vals[centre] == _BLUR_CENTRE).all())
        and bool((vals[side] == _BLUR_SIDE).all())
    )
    if not stencil_ok:
        raise ValueError("blur_matrices: expected the [1/4, 1/2, 1/4] stencil of build_lattice on every row")
    cols = torch.where(side, cols, -1)
    return cols.sort(dim=1, descending=True).values[:, :2].to(torch.int32)  # neighbours first, then −1


def triton_lattice(structure) -> TritonLattice:
    """The compact :class:`TritonLattice` of a lattice structure, built on first use and cached with it.

    Args:
        structure: a :class:`~lab.lattice.build.LatticeStructure`.

    Returns:
        Its :class:`TritonLattice` (the same object on every call while the structure lives).
    """
    key = id(structure)
    layout = _LAYOUTS.get(key)
    if layout is None:
        if structure.num_vertices >= 2**31 or structure.num_points >= 2**31:
            raise ValueError("triton_lattice: more than 2^31 - 1 points or vertices do not fit int32 indices")
        splat = structure.splat_matrix
        layout = TritonLattice(
            vertex_index=structure.vertex_index.to(torch.int32).contiguous(),
            barycentric=structure.barycentric.contiguous(),
            splat_crow=splat.crow_indices(),
            splat_col=splat.col_indices().to(torch.int32),
            splat_val=splat.values(),
            splat_split=row_split(splat.crow_indices(), _SPLAT_MAX_ENTRIES),
            neighbours=torch.stack([_neighbour_table(b) for b in structure.blur_matrices]),
        )
        _LAYOUTS[key] = layout
        weakref.finalize(structure, _LAYOUTS.pop, key, None)  # forget it with the structure
    return layout


# ----------------------------------------------------------------------------------------------- launchers
def _prepare(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name}: expected shape (rows, C), got {tuple(x.shape)}")
    if x.stride(1) != 1:
        x = x.contiguous()
    return x


def _blocks(num_channels: int, block_rows: int | None, block_channels: int | None) -> tuple[int, int]:
    block_rows = block_rows or default_block_rows()
    block_channels = _block_channels(num_channels, block_channels)
    _check_block(block_rows, "block_rows")
    _check_block(block_channels, "block_channels")
    return block_rows, block_channels


def csr_matmul(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    x: torch.Tensor,
    *,
    scale: torch.Tensor | None = None,
    max_nnz: int = 0,
    out_dtype: torch.dtype | None = None,
    block_rows: int | None = None,
    block_channels: int | None = None,
    block_entries: int = 0,
    split: RowSplit | None = None,
) -> torch.Tensor:
    """A @ x (or A @ (scale · x)) for a CSR matrix A (R, Rx) given by its parts: a gather and segment sum.

    Two schedules: by default each program takes a (block_rows × channels) tile and loops to the longest
    row of its block (best for short, even rows); with ``block_entries`` > 0 each program walks its
    ``block_rows`` rows one by one, gathering ``block_entries`` entries of a row at once (CSR-vector: best
    for long, uneven rows, as the splat's).

    Args:
        crow: (R + 1,) int64 row pointers.
        col: (nnz,) int32 or int64 column indices.
        val: (nnz,) float entries.
        x: (Rx, C) dense values (any float dtype; accumulated in float32, float64 for float64).
        scale: optional (Rx,) or (Rx, 1) per-row scale of x, applied in the kernel (no scaled copy of x).
        max_nnz: the most entries any row has, when known and small (unrolled); 0 = any.
        out_dtype: dtype of the result (default: that of ``x``).
        block_rows: rows per program (power of two; default :func:`default_block_rows`).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).
        block_entries: entries per step of the CSR-vector schedule (power of two); 0 = tile schedule.
        split: :func:`row_split` of ``crow``: two passes, no program loops over more than its
            ``max_entries`` entries (the partial sums stay in float32 / float64).

    Returns:
        (R, C) tensor.
    """
    x = _prepare(x, "x")
    block_rows, block_channels = _blocks(x.shape[1], block_rows, block_channels)
    if scale is not None:
        scale = scale.reshape(-1).contiguous()
        if scale.shape[0] != x.shape[0]:
            raise ValueError(f"scale: expected {x.shape[0]} entries (one per row of x), got {scale.shape[0]}")
    if block_entries:
        _check_block(block_entries, "block_entries")
    out_dtype = out_dtype or x.dtype
    if split is None:
        return _csr_matmul_op(crow, col, val, x, scale, max_nnz, out_dtype, block_rows, block_channels, block_entries)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = _csr_matmul_op(  # pass 1: one sum per piece of a row
        split.crow, col, val, x, scale, 0, acc_dtype, block_rows, block_channels, block_entries
    )
    return _csr_matmul_op(  # pass 2: the pieces of each row
        split.piece_crow, split.piece_col, split.piece_val, partial, None, 0, out_dtype, block_rows, block_channels, 0
    )


def lattice_slice(
    y: torch.Tensor,
    vertex_index: torch.Tensor,
    barycentric: torch.Tensor,
    *,
    out_dtype: torch.dtype | None = None,
    block_rows: int | None = None,
    block_channels: int | None = None,
) -> torch.Tensor:
    """Slice: interpolate vertex values at the points, ``out[m] = Σ_k b[m, k] · y[vertex[m, k]]``.

    Args:
        y: (V, C) vertex values.
        vertex_index: (M, d+1) int vertex of each simplex corner (``LatticeStructure.vertex_index``).
        barycentric: (M, d+1) corner weights (``LatticeStructure.barycentric``).
        out_dtype: dtype of the result (default: that of ``y``).
        block_rows: points per program (power of two; default :func:`default_block_rows`).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).

    Returns:
        (M, C) point values.
    """
    y = _prepare(y, "y")
    block_rows, block_channels = _blocks(y.shape[1], block_rows, block_channels)
    return _slice_op(
        y, vertex_index.contiguous(), barycentric.contiguous(), out_dtype or y.dtype, block_rows, block_channels
    )


def lattice_splat(
    x: torch.Tensor,
    lattice: TritonLattice,
    *,
    scale: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    block_rows: int | None = None,
    block_channels: int | None = None,
    block_entries: int = 0,
) -> torch.Tensor:
    """Splat: accumulate point values onto the vertices, ``out[v] = Σ_{(m, k) → v} b[m, k] · x[m]``.

    Args:
        x: (M, C) point values.
        lattice: the :func:`triton_lattice` of the lattice's structure.
        scale: optional (M, 1) per-point scale folded into the splat weights (mean field's D^−½ pre-scale),
            so that ``splat(scale · x)`` costs no extra pass over x.
        out_dtype: dtype of the result (default: that of ``x``).
        block_rows: vertices per program (power of two; default :func:`default_block_rows`).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).
        block_entries: > 0 selects the CSR-vector schedule (see :func:`csr_matmul`); which is faster on a
            GPU is still to be measured (``benchmarks/gpu.py`` prints both).

    Returns:
        (V, C) vertex values.
    """
    return csr_matmul(
        lattice.splat_crow,
        lattice.splat_col,
        lattice.splat_val,
        x,
        scale=scale,
        out_dtype=out_dtype,
        block_rows=block_rows,
        block_channels=block_channels,
        block_entries=block_entries,
        split=lattice.splat_split,
    )


def lattice_blur(
    y: torch.Tensor,
    lattice: TritonLattice,
    reverse: bool = False,
    *,
    block_rows: int | None = None,
    block_channels: int | None = None,
) -> torch.Tensor:
    """Blur vertex values along each lattice axis in turn (reverse order for the adjoint): d+1 launches.

    Args:
        y: (V, C) vertex values.
        lattice: the :func:`triton_lattice` of the lattice's structure.
        reverse: apply the axes in reverse order.
        block_rows: vertices per program (power of two; default :func:`default_block_rows`).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).

    Returns:
        (V, C) blurred values, dtype of ``y``.
    """
    y = _prepare(y, "y")
    block_rows, block_channels = _blocks(y.shape[1], block_rows, block_channels)
    axes = range(lattice.neighbours.shape[0])
    for j in reversed(axes) if reverse else axes:
        y = _blur_op(y, lattice.neighbours[j], block_rows, block_channels)
    return y


def mean_field_step(
    unary: torch.Tensor,
    kernels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    weights: torch.Tensor,
    compat: torch.Tensor,
    extra: torch.Tensor | None = None,
    *,
    block_m: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused mean-field kernel for one or two lattices (plus an optional precomputed Q̌ term).

    Args:
        unary: (M, L) unary potentials.
        kernels: one or two tuples (blurred (V, L), vertex_index (M, d+1), barycentric (M, d+1), norm (M, 1)).
        weights: (len(kernels), L) per-label kernel weights.
        compat: (L, L) compatibility µ.
        extra: optional (M, L) float32 Q̌ of further kernels, added before the compatibility transform.
        block_m: points per program (power of two ≥ 16; default :func:`default_block_rows`).

    Returns:
        (logits, q), both (M, L) float32.
    """
    if not 1 <= len(kernels) <= 2:
        raise ValueError(f"kernels: expected one or two lattices, got {len(kernels)}")
    block_m = block_m or default_block_rows()
    _check_block(block_m, "block_m")
    if block_m < 16:
        raise ValueError(f"block_m: expected ≥ 16 (tl.dot's minimum tile), got {block_m}")
    weights = weights.contiguous()
    parts = [[t.contiguous() for t in kernel] + [weights[i]] for i, kernel in enumerate(kernels)]
    parts_b = parts[1] if len(parts) == 2 else [None] * 5
    extra = extra.contiguous() if extra is not None else None
    return _mean_field_op(unary.contiguous(), *parts[0], *parts_b, compat.contiguous(), extra, block_m)
