"""A second SpMM schedule for the splat, for ``benchmarks/gpu.py`` to measure against the library's.

The library (:mod:`lab.lattice.triton`) runs one schedule: each program takes a tile of rows and loops to
the longest row of its block, with rows longer than 256 entries cut into pieces summed in two passes. Here
is the CSR-vector alternative: each program walks ``rows`` rows one after another and gathers
``block_entries`` entries of a row at once, summed with ``tl.sum``, so a row costs its own length, not its
block's longest. Which is faster on a GPU for the splat's uneven rows (1 to thousands of points per vertex)
is what ``benchmarks/gpu.py`` prints; the interpreter test (``tests/lattice/test_triton.py``) checks it
against the PyTorch splat.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lab.lattice.triton.kernels import csr_entries
from lab.lattice.triton.layout import TritonLattice
from lab.lattice.triton.ops import accumulator, check_block, csr_matmul

__all__ = ["csr_vector_kernel", "splat_csr_vector"]


@triton.jit
def csr_vector_kernel(
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
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 values
    ROWS: tl.constexpr,  # rows per program, one after another
    BLOCK_E: tl.constexpr,  # entries of one row gathered at once
    BLOCK_C: tl.constexpr,
):
    """CSR-vector SpMM: one row at a time, its entries vectorised BLOCK_E at a time and summed with tl.sum."""
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
        acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
        for first in range(start, end, BLOCK_E):
            entry = first + lanes
            entry_mask = entry < end
            x_mask = entry_mask[:, None] & col_mask[None, :]
            acc += tl.sum(
                csr_entries(
                    entry, entry_mask, x_mask, col_ptr, val_ptr, x_ptr, scale_ptr, stride_x, cols, HAS_SCALE,
                    ACC_DTYPE,
                ),
                axis=0,
            )  # fmt: skip
        store_mask = col_mask & (row + 0 * cols < num_rows)  # a (BLOCK_C,) mask, not a scalar one
        tl.store(out_ptr + row * stride_out + cols, acc.to(out_ptr.dtype.element_ty), mask=store_mask)


def _csr_vector(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor | None,
    out_dtype: torch.dtype,
    rows: int,
    block_entries: int,
    block_channels: int,
) -> torch.Tensor:
    num_rows, num_channels = crow.shape[0] - 1, x.shape[1]
    out = torch.empty((num_rows, num_channels), dtype=out_dtype, device=x.device)
    if num_rows > 0 and num_channels > 0:
        grid = (triton.cdiv(num_rows, rows), triton.cdiv(num_channels, block_channels))
        csr_vector_kernel[grid](
            out, crow, col, val, x, scale if scale is not None else val, num_rows, num_channels,
            out.stride(0), x.stride(0),
            HAS_SCALE=scale is not None, ACC_DTYPE=accumulator(x.dtype), ROWS=rows, BLOCK_E=block_entries,
            BLOCK_C=block_channels,
        )  # fmt: skip
    return out


def splat_csr_vector(
    x: torch.Tensor,
    lattice: TritonLattice,
    *,
    scale: torch.Tensor | None = None,
    rows: int = 8,
    block_entries: int = 32,
    block_channels: int | None = None,
) -> torch.Tensor:
    """The splat of :func:`lab.lattice.triton.ops.lattice_splat` with the CSR-vector schedule.

    Long rows are cut as the library cuts them (``lattice.splat_split``): pass 1 sums each piece with this
    schedule, pass 2 adds each row's pieces with the library's tile schedule.

    Args:
        x: (M, C) point values (contiguous rows).
        lattice: the compact layout (``TritonOps(structure).layout``).
        scale: optional (M, 1) per-point scale folded into the splat weights.
        rows: rows per program (power of two).
        block_entries: entries of a row gathered per step (power of two).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).

    Returns:
        (V, C) vertex values, dtype of ``x``.
    """
    for value, name in [(rows, "rows"), (block_entries, "block_entries")]:
        check_block(value, name)
    block_channels = block_channels or min(triton.next_power_of_2(max(x.shape[1], 1)), 32)
    x = x.contiguous()
    scale = scale.reshape(-1).contiguous() if scale is not None else None
    split = lattice.splat_split
    if split is None:
        return _csr_vector(
            lattice.splat_crow, lattice.splat_col, lattice.splat_val, x, scale, x.dtype, rows, block_entries,
            block_channels,
        )  # fmt: skip
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = _csr_vector(
        split.crow, lattice.splat_col, lattice.splat_val, x, scale, acc_dtype, rows, block_entries, block_channels
    )
    return csr_matmul(
        split.piece_crow, split.piece_col, split.piece_val, partial, out_dtype=x.dtype, block_rows=rows,
        block_channels=block_channels,
    )  # fmt: skip
