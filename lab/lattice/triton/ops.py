"""Launchers of the lattice kernels, their ``torch.library`` registrations, and :class:`TritonOps`.

Each launcher checks and reshapes its inputs, picks the block sizes and launches one kernel of
:mod:`lab.lattice.triton.kernels` per stage (the blur: one per lattice axis, since each axis reads the
previous axis' output at other vertices and a single launch has no grid-wide barrier). Long splat rows are
summed in two passes (:class:`~lab.lattice.triton.layout.RowSplit`).

The backward pass needs no kernel of its own: splatᵀ = slice, sliceᵀ = splat and the adjoint of the blur is
the same blurs in reverse order (each blur matrix is symmetric); the lattice's autograd composes them.

Values may be float32, float64, float16 or bfloat16; products are accumulated in float32 (float64 for
float64 values) and stored in the dtype of the output. Block sizes are launcher parameters: on a GPU small
row blocks keep many programs in flight; the interpreter (``TRITON_INTERPRET=1``) pays a fixed cost per
program, so there the default rows-per-program is large.
"""

from __future__ import annotations

import os
import warnings

import torch
import triton
import triton.language as tl

from lab.lattice.build import LatticeStructure
from lab.lattice.triton.kernels import blur_kernel, csr_spmm_kernel, slice_kernel
from lab.lattice.triton.layout import RowSplit, TritonLattice

__all__ = [
    "TritonOps",
    "accumulator",
    "check_block",
    "csr_matmul",
    "default_block_rows",
    "lattice_blur",
    "lattice_slice",
    "lattice_splat",
    "register_op",
    "wrap_triton",
]

# The blur stencil of build.py: ½ on the vertex, ¼ on each neighbour along the axis.
_BLUR_CENTRE, _BLUR_SIDE = 0.5, 0.25
# Rows per program on a GPU: 64 rows × up to 32 channels fp32 keeps the (BLOCK_R, BLOCK_C) tile in registers
# with 4 warps. (Not yet tuned on a GPU: see docs/triton.md.)
_GPU_BLOCK_ROWS = 64
# In the interpreter every program costs ~10 ms of Python overhead: one program per 4096 rows.
_INTERPRETER_BLOCK_ROWS = 4096
_MAX_BLOCK_CHANNELS = 32


def default_block_rows() -> int:
    """Rows per program when a launcher is not told: large in the interpreter, GPU-sized otherwise."""
    return _INTERPRETER_BLOCK_ROWS if os.environ.get("TRITON_INTERPRET") == "1" else _GPU_BLOCK_ROWS


def check_block(value: int, name: str) -> None:
    """Raise ValueError unless ``value`` is a power of two ≥ 1 (a block size)."""
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name}: expected a power of two ≥ 1, got {value}")


def accumulator(dtype: torch.dtype) -> tl.dtype:
    """The accumulation dtype of a kernel reading ``dtype`` values: float64 for float64, else float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _prepare(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name}: expected shape (rows, C), got {tuple(x.shape)}")
    if x.stride(1) != 1:
        x = x.contiguous()
    return x


def _blocks(num_channels: int, block_rows: int | None, block_channels: int | None) -> tuple[int, int]:
    """(rows, channels) per program: the defaults where not given, checked."""
    block_rows = block_rows or default_block_rows()
    if block_channels is None:
        block_channels = min(triton.next_power_of_2(max(num_channels, 1)), _MAX_BLOCK_CHANNELS)
    check_block(block_rows, "block_rows")
    check_block(block_channels, "block_channels")
    return block_rows, block_channels


# ------------------------------------------------------------------------------------- torch.library ops
# Each launch is a ``torch.library.triton_op`` (torch ≥ 2.6) whose body calls the kernel through
# ``wrap_triton``: eager calls run it directly, and ``torch.compile`` sees the kernel itself (it can trace
# its memory effects and fuse around it) instead of an opaque call. On older torch they are plain functions.
_triton_op = getattr(torch.library, "triton_op", None)
wrap_triton = getattr(torch.library, "wrap_triton", lambda kernel: kernel)


def register_op(name: str):
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


@register_op("lattice_csr_matmul")
def _csr_matmul_op(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    x: torch.Tensor,
    scale: torch.Tensor | None,
    out_dtype: torch.dtype,
    block_rows: int,
    block_channels: int,
) -> torch.Tensor:
    num_rows, num_channels = crow.shape[0] - 1, x.shape[1]
    out = torch.empty((num_rows, num_channels), dtype=out_dtype, device=x.device)
    if num_rows > 0 and num_channels > 0:
        grid = (triton.cdiv(num_rows, block_rows), triton.cdiv(num_channels, block_channels))
        wrap_triton(csr_spmm_kernel)[grid](
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
            ACC_DTYPE=accumulator(x.dtype),
            BLOCK_R=block_rows,
            BLOCK_C=block_channels,
        )
    return out


@register_op("lattice_slice")
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
        wrap_triton(slice_kernel)[grid](
            out,
            y,
            vertex_index,
            barycentric,
            num_rows,
            num_channels,
            out.stride(0),
            y.stride(0),
            DP1=vertex_index.shape[1],
            ACC_DTYPE=accumulator(y.dtype),
            BLOCK_R=block_rows,
            BLOCK_C=block_channels,
        )
    return out


@register_op("lattice_blur_axis")
def _blur_op(y: torch.Tensor, neighbours: torch.Tensor, block_rows: int, block_channels: int) -> torch.Tensor:
    num_rows, num_channels = y.shape
    out = torch.empty((num_rows, num_channels), dtype=y.dtype, device=y.device)
    if num_rows > 0 and num_channels > 0:
        grid = (triton.cdiv(num_rows, block_rows), triton.cdiv(num_channels, block_channels))
        wrap_triton(blur_kernel)[grid](
            out,
            y,
            neighbours,
            num_rows,
            num_channels,
            out.stride(0),
            y.stride(0),
            CENTRE=_BLUR_CENTRE,
            SIDE=_BLUR_SIDE,
            ACC_DTYPE=accumulator(y.dtype),
            BLOCK_R=block_rows,
            BLOCK_C=block_channels,
        )
    return out


# ----------------------------------------------------------------------------------------------- launchers
def csr_matmul(
    crow: torch.Tensor,
    col: torch.Tensor,
    val: torch.Tensor,
    x: torch.Tensor,
    *,
    scale: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    block_rows: int | None = None,
    block_channels: int | None = None,
    split: RowSplit | None = None,
) -> torch.Tensor:
    """A @ x (or A @ (scale · x)) for a CSR matrix A (R, Rx) given by its parts: a gather and segment sum.

    Each program takes a (block_rows × block_channels) tile and loops to the longest row of its block.

    Args:
        crow: (R + 1,) int64 row pointers.
        col: (nnz,) int32 or int64 column indices.
        val: (nnz,) float entries.
        x: (Rx, C) dense values (any float dtype; accumulated in float32, float64 for float64).
        scale: optional (Rx,) or (Rx, 1) per-row scale of x, applied in the kernel (no scaled copy of x).
        out_dtype: dtype of the result (default: that of ``x``).
        block_rows: rows per program (power of two; default :func:`default_block_rows`).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).
        split: :func:`~lab.lattice.triton.layout.row_split` of ``crow``: two passes, no program loops over
            more than its ``max_entries`` entries (the partial sums stay in float32 / float64).

    Returns:
        (R, C) tensor.
    """
    x = _prepare(x, "x")
    block_rows, block_channels = _blocks(x.shape[1], block_rows, block_channels)
    if scale is not None:
        scale = scale.reshape(-1).contiguous()
        if scale.shape[0] != x.shape[0]:
            raise ValueError(f"scale: expected {x.shape[0]} entries (one per row of x), got {scale.shape[0]}")
    out_dtype = out_dtype or x.dtype
    if split is None:
        return _csr_matmul_op(crow, col, val, x, scale, out_dtype, block_rows, block_channels)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = _csr_matmul_op(split.crow, col, val, x, scale, acc_dtype, block_rows, block_channels)  # per piece
    return _csr_matmul_op(  # pass 2: the pieces of each row
        split.piece_crow, split.piece_col, split.piece_val, partial, None, out_dtype, block_rows, block_channels
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
        vertex_index: (M, d+1) int vertex of each simplex corner (``TritonLattice.vertex_index``).
        barycentric: (M, d+1) corner weights (``TritonLattice.barycentric``).
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
) -> torch.Tensor:
    """Splat: accumulate point values onto the vertices, ``out[v] = Σ_{(m, k) → v} b[m, k] · x[m]``.

    Args:
        x: (M, C) point values.
        lattice: the compact layout of the lattice (:attr:`TritonOps.layout`).
        scale: optional (M, 1) per-point scale folded into the splat weights (mean field's D^−½ pre-scale),
            so that ``splat(scale · x)`` costs no extra pass over x.
        out_dtype: dtype of the result (default: that of ``x``).
        block_rows: vertices per program (power of two; default :func:`default_block_rows`).
        block_channels: channels per program (power of two; default next power of two of C, at most 32).

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
        lattice: the compact layout of the lattice (:attr:`TritonOps.layout`).
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


class TritonOps:
    """Splat, blur and slice of one lattice as Triton kernels, on the compact layout it builds once.

    The same three methods as :class:`~lab.lattice.torch_ops.TorchOps`, on point-layout values; the same
    results within float32 rounding.

    Args:
        structure: the built lattice (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).

    Attributes:
        structure: the lattice.
        layout: its :class:`~lab.lattice.triton.layout.TritonLattice`, what the kernels read.
    """

    def __init__(self, structure: LatticeStructure) -> None:
        self.structure = structure
        self.layout = TritonLattice.from_structure(structure)

    def splat(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C) point values → (V, C): each point onto its d+1 simplex corners, with its barycentric weights."""
        return lattice_splat(x, self.layout)

    def blur(self, y: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """(V, C) → (V, C): [¼, ½, ¼] along each lattice axis in turn (in reverse order: the adjoint)."""
        return lattice_blur(y, self.layout, reverse)

    def slice_(self, y: torch.Tensor) -> torch.Tensor:
        """(V, C) vertex values → (M, C): interpolated at the points with the splat's weights (splatᵀ)."""
        return lattice_slice(y, self.layout.vertex_index, self.layout.barycentric)
