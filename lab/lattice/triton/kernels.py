"""The ``@triton.jit`` kernels of the lattice's three stages: splat (a CSR × dense product), blur, slice.

All are gathers with a per-row sum over (rows × channels) tiles, so every output element is written by
exactly one program: deterministic, no atomics.

* **slice** ``out[m] = Σ_k b[m, k] · y[vertex[m, k]]`` reads the (M, d+1) vertex indices and barycentric
  weights directly (a fixed-width gather, d+1 unrolled at compile time).
* **splat** ``out[v] = Σ_{(m, k) → v} b[m, k] · x[m]`` is sliceᵀ: a CSR product with the (V, M) splat
  matrix, whose rows hold a varying number of points; each program loops to the longest row of its block.
* **blur** along lattice axis j: ``out[v] = ½ y[v] + ¼ (y[v + step_j] + y[v − step_j])`` from a (V, 2) table
  of the two neighbours (−1 where missing).

Products are accumulated in ``ACC_DTYPE`` (float32, or float64 for float64 values) and stored in the dtype
of the output. The launchers are in :mod:`lab.lattice.triton.ops`.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["blur_kernel", "csr_entries", "csr_spmm_kernel", "slice_kernel", "slice_tile"]


@triton.jit
def slice_tile(
    y_ptr,  # (V, C) vertex values
    stride_y,  # row stride of y
    index_ptr,  # (M, DP1) int vertex of each simplex corner, contiguous
    weight_ptr,  # (M, DP1) barycentric weight of each corner, contiguous
    rows,  # (BLOCK_M,) int64 point indices of this tile
    row_mask,  # (BLOCK_M,) rows < M
    cols,  # (BLOCK_C,) int64 channel indices
    col_mask,  # (BLOCK_C,) cols < C
    DP1: tl.constexpr,  # d + 1 corners per point
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 values
    BLOCK_M: tl.constexpr,  # len(rows)
    BLOCK_C: tl.constexpr,  # len(cols)
):
    """(BLOCK_M, BLOCK_C) tile of Σ_k b[m, k] · y[vertex[m, k], c], accumulated in ACC_DTYPE."""
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=ACC_DTYPE)
    mask = row_mask[:, None] & col_mask[None, :]
    for k in tl.static_range(DP1):
        vertex = tl.load(index_ptr + rows * DP1 + k, mask=row_mask, other=0).to(tl.int64)
        weight = tl.load(weight_ptr + rows * DP1 + k, mask=row_mask, other=0.0).to(ACC_DTYPE)
        y = tl.load(y_ptr + vertex[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        acc += weight[:, None] * y
    return acc


@triton.jit
def slice_kernel(
    out_ptr,  # (M, C) output point values
    y_ptr,  # (V, C) vertex values
    index_ptr,  # (M, DP1) vertex_index
    weight_ptr,  # (M, DP1) barycentric
    num_rows,  # M
    num_channels,  # C
    stride_out,  # row stride of out
    stride_y,  # row stride of y
    DP1: tl.constexpr,  # d + 1
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 values
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Slice: a (BLOCK_R, BLOCK_C) tile of out[m, c] = Σ_k b[m, k] · y[vertex[m, k], c]."""
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    col_mask = cols < num_channels
    acc = slice_tile(
        y_ptr, stride_y, index_ptr, weight_ptr, rows, row_mask, cols, col_mask, DP1, ACC_DTYPE, BLOCK_R, BLOCK_C
    )
    out = out_ptr + rows[:, None] * stride_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def csr_entries(
    entry,  # (E,) int64 entry numbers, one per row of the tile (or E entries of one row)
    entry_mask,  # (E,) which of them exist
    x_mask,  # (E, BLOCK_C) entry_mask[:, None] & (cols < C), formed by the caller (see below)
    col_ptr,  # (nnz,) column of each entry = the row of x it reads
    val_ptr,  # (nnz,) value of each entry
    x_ptr,  # (Rx, C) dense input
    scale_ptr,  # (Rx,) scale of each row of x (read when HAS_SCALE)
    stride_x,  # row stride of x
    cols,  # (BLOCK_C,) int64 channel indices
    HAS_SCALE: tl.constexpr,
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 values
):
    """(E, BLOCK_C) products A[·, col] · scale[col] · x[col, c] of the given entries (0 where masked).

    The 2-D mask is an argument because Triton 3.6 fails to compile (``TritonGPURemoveLayoutConversions``)
    the broadcast ``entry_mask[:, None]`` of a mask that changes in a runtime loop: the tile loop forms it
    from loop-invariant 2-D tensors instead.
    """
    col = tl.load(col_ptr + entry, mask=entry_mask, other=0).to(tl.int64)
    val = tl.load(val_ptr + entry, mask=entry_mask, other=0.0).to(ACC_DTYPE)
    if HAS_SCALE:
        val *= tl.load(scale_ptr + col, mask=entry_mask, other=0.0).to(ACC_DTYPE)
    x = tl.load(x_ptr + col[:, None] * stride_x + cols[None, :], mask=x_mask, other=0.0).to(ACC_DTYPE)
    return val[:, None] * x


@triton.jit
def csr_spmm_kernel(
    out_ptr,  # (R, C) output rows
    crow_ptr,  # (R + 1,) int64 first entry of each row
    col_ptr,  # (nnz,) int column of each entry = the row of x it reads
    val_ptr,  # (nnz,) value of each entry
    x_ptr,  # (Rx, C) dense input
    scale_ptr,  # (Rx,) scale of each row of x (read when HAS_SCALE): A·diag(scale)·x
    num_rows,  # R
    num_channels,  # C
    stride_out,  # row stride of out
    stride_x,  # row stride of x
    HAS_SCALE: tl.constexpr,
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 values
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """CSR × dense: a tile of rows, entry j of every row at step j, looping to the longest row of the block."""
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    col_mask = cols < num_channels
    start = tl.load(crow_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    length = tl.load(crow_ptr + rows + 1, mask=row_mask, other=0).to(tl.int64) - start
    tile_mask = row_mask[:, None] & col_mask[None, :]
    tile_length = length[:, None]  # (BLOCK_R, 1): the 2-D mask from loop-invariant tensors (csr_entries)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC_DTYPE)
    for j in range(tl.max(length, axis=0)):
        acc += csr_entries(
            start + j, row_mask & (j < length), tile_mask & (j < tile_length), col_ptr, val_ptr, x_ptr, scale_ptr,
            stride_x, cols, HAS_SCALE, ACC_DTYPE,
        )  # fmt: skip
    out = out_ptr + rows[:, None] * stride_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def blur_kernel(
    out_ptr,  # (V, C) blurred values
    y_ptr,  # (V, C) values
    neighbour_ptr,  # (V, 2) int32 the vertex one step forward and one step back along this axis, −1 = missing
    num_rows,  # V
    num_channels,  # C
    stride_out,  # row stride of out
    stride_y,  # row stride of y
    CENTRE: tl.constexpr,  # ½
    SIDE: tl.constexpr,  # ¼
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 values
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One blur axis: a (BLOCK_R, BLOCK_C) tile of out[v] = ½ y[v] + ¼ (y[v + step] + y[v − step])."""
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    col_mask = cols < num_channels
    mask = row_mask[:, None] & col_mask[None, :]
    centre = tl.load(y_ptr + rows[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
    fwd = tl.load(neighbour_ptr + rows * 2, mask=row_mask, other=-1).to(tl.int64)
    back = tl.load(neighbour_ptr + rows * 2 + 1, mask=row_mask, other=-1).to(tl.int64)
    fwd_mask = (fwd >= 0)[:, None] & mask
    back_mask = (back >= 0)[:, None] & mask
    ahead = tl.load(y_ptr + fwd[:, None] * stride_y + cols[None, :], mask=fwd_mask, other=0.0).to(ACC_DTYPE)
    behind = tl.load(y_ptr + back[:, None] * stride_y + cols[None, :], mask=back_mask, other=0.0).to(ACC_DTYPE)
    acc = CENTRE * centre + SIDE * (ahead + behind)  # a missing neighbour counts as zero
    out = out_ptr + rows[:, None] * stride_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)
