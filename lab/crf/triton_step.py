"""One fused mean-field iteration: slice every kernel's blurred lattice, weight, compatibility, unary, softmax.

Krähenbühl & Koltun's Algorithm 1 after message passing, per pixel i and label l (K kernels, L labels):

    Q̌[i, l] = Σ_k w[k, l] · norm_k[i] · slice_k(blurred_k)[i, l]      (weighting filter outputs)
    Q̂[i, l] = Σ_l' µ[l, l'] · Q̌[i, l']                               (compatibility transform)
    logits  = U − Q̂                                                   (adding unary potentials)
    q       = softmax(logits, over l)                                  (normalising)

Unfused, this is K slices writing (M, L) maps, K scaled adds, a matmul, a subtraction and a softmax: about
2K + 6 passes over (M, L) float32 in memory. The kernel keeps a (BLOCK_M, L) tile in registers from the first
gather to the two stores, so it reads the unary, the norms and the slice gathers once and writes logits and
q once. Two kernels (the bilateral and spatial ones of a dense CRF) are sliced inside the kernel; any further
kernels are sliced beforehand by the lattice's slice kernel and passed in as one precomputed Q̌ term.

The splat of the new q for the next iteration is not fused in: splat is a gather over the points of each
*vertex*, which come from all over the image, so it cannot start before every block of q is written; the
fused alternative, scattering b·q onto the vertices with atomic adds, is non-deterministic on a GPU and
contends on shared vertices (every spatial-kernel vertex receives tens of points). See ``docs/triton.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from lab.lattice.backend import resolve_backend
from lab.lattice.triton import TritonOps
from lab.lattice.triton.kernels import slice_tile
from lab.lattice.triton.layout import TritonLattice
from lab.lattice.triton.ops import check_block, default_block_rows, lattice_slice, register_op, wrap_triton

if TYPE_CHECKING:
    from lab.lattice.lattice import PermutohedralLattice

__all__ = [
    "MAX_FUSED_LABELS",
    "fused_mean_field_iteration",
    "fused_mean_field_iteration_reference",
    "mean_field_step",
]

# The fused kernel holds a (BLOCK_M, L) tile and the (L, L) compatibility matrix in registers;
# above this many labels (padded to a power of two) it would spill, so larger L uses the reference.
MAX_FUSED_LABELS = 128


# -------------------------------------------------------------------------------------------------- kernel
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
    sliced = slice_tile(
        blurred_a_ptr, num_labels, index_a_ptr, bary_a_ptr, rows, row_mask, labels, label_mask,
        DP1_A, tl.float32, BLOCK_M, BLOCK_L,
    )  # fmt: skip
    norm = tl.load(norm_a_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    weight = tl.load(weight_a_ptr + labels, mask=label_mask, other=0.0).to(tl.float32)
    qcheck = sliced * norm[:, None] * weight[None, :]
    if HAS_B:
        sliced = slice_tile(
            blurred_b_ptr, num_labels, index_b_ptr, bary_b_ptr, rows, row_mask, labels, label_mask,
            DP1_B, tl.float32, BLOCK_M, BLOCK_L,
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


@register_op("mean_field_step")
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
        wrap_triton(_mean_field_kernel)[(triton.cdiv(m, block_m),)](
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
        block_m: points per program (power of two ≥ 16; default
            :func:`~lab.lattice.triton.ops.default_block_rows`).

    Returns:
        (logits, q), both (M, L) float32.
    """
    if not 1 <= len(kernels) <= 2:
        raise ValueError(f"kernels: expected one or two lattices, got {len(kernels)}")
    block_m = block_m or default_block_rows()
    check_block(block_m, "block_m")
    if block_m < 16:
        raise ValueError(f"block_m: expected ≥ 16 (tl.dot's minimum tile), got {block_m}")
    weights = weights.contiguous()
    parts = [[t.contiguous() for t in kernel] + [weights[i]] for i, kernel in enumerate(kernels)]
    parts_b = parts[1] if len(parts) == 2 else [None] * 5
    extra = extra.contiguous() if extra is not None else None
    return _mean_field_op(unary.contiguous(), *parts[0], *parts_b, compat.contiguous(), extra, block_m)


# ------------------------------------------------------------------------------- the iteration, checked
def _check_inputs(
    unary: torch.Tensor,
    blurred: list[torch.Tensor],
    lattices: list[PermutohedralLattice],
    norms: list[torch.Tensor],
    weights: torch.Tensor,
    compat: torch.Tensor,
) -> None:
    if unary.dim() != 2:
        raise ValueError(f"unary: expected shape (M, L), got {tuple(unary.shape)}")
    m, num_labels = unary.shape
    k = len(lattices)
    if k == 0 or len(blurred) != k or len(norms) != k:
        raise ValueError(
            f"blurred, lattices, norms: expected one entry per kernel (K ≥ 1), got {len(blurred)}, {k}, {len(norms)}"
        )
    if tuple(weights.shape) != (k, num_labels):
        raise ValueError(f"weights: expected shape ({k}, {num_labels}), got {tuple(weights.shape)}")
    if tuple(compat.shape) != (num_labels, num_labels):
        raise ValueError(f"compat: expected shape ({num_labels}, {num_labels}), got {tuple(compat.shape)}")
    for i, (y, lat, n) in enumerate(zip(blurred, lattices, norms, strict=True)):
        if lat.num_points != m:
            raise ValueError(f"lattices[{i}]: has {lat.num_points} points, unary has {m} rows")
        if tuple(y.shape) != (lat.num_vertices, num_labels):
            raise ValueError(f"blurred[{i}]: expected shape ({lat.num_vertices}, {num_labels}), got {tuple(y.shape)}")
        if tuple(n.shape) != (m, 1):
            raise ValueError(f"norms[{i}]: expected shape ({m}, 1), got {tuple(n.shape)}")
    tensors = [unary, weights, compat, *blurred, *norms]
    if any(t.device != unary.device for t in tensors):
        raise ValueError("fused_mean_field_iteration: all tensors must be on one device")


def _layout(lattice: PermutohedralLattice, i: int) -> TritonLattice:
    """The compact layout the kernels read: the one the lattice's Triton ops own."""
    if not isinstance(lattice.ops, TritonOps):
        raise ValueError(
            f"lattices[{i}]: has backend {lattice.backend!r}; the fused step reads the Triton layout "
            "(build the lattice with backend='triton')"
        )
    return lattice.ops.layout


def _slice_weighted(
    y: torch.Tensor, lattice: PermutohedralLattice, norm: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """w[l] · norm[i] · slice(y)[i, l] in plain torch, one simplex corner at a time: (M, L) float32."""
    s = lattice.structure
    sliced = torch.zeros(s.num_points, y.shape[1], dtype=torch.float32, device=y.device)
    for k in range(s.d + 1):
        sliced += s.barycentric[:, k : k + 1].float() * y[s.vertex_index[:, k]].float()
    return w.float() * norm.float() * sliced


def fused_mean_field_iteration_reference(
    unary: torch.Tensor,
    blurred: list[torch.Tensor],
    lattices: list[PermutohedralLattice],
    norms: list[torch.Tensor],
    weights: torch.Tensor,
    compat: torch.Tensor,
    *,
    block_m: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same computation as :func:`fused_mean_field_iteration` in plain PyTorch (any device, differentiable).

    Args:
        unary: (M, L) unary potentials U in point layout (rows ordered (b, y, x)).
        blurred: K tensors (V_k, L): blur(splat(prescaled Q)) on each kernel's lattice.
        lattices: the K lattices, of any backend (their ``structure.vertex_index`` / ``barycentric`` slice).
        norms: K (M, 1) scales applied after the slice.
        weights: (K, L) weight of each kernel for each label.
        compat: (L, L) label compatibility µ.
        block_m: ignored (the signature matches the fused kernel's).

    Returns:
        (logits, q), both (M, L) float32: logits = U − µ Q̌ and q = softmax(logits, dim=1).

    Example:
        >>> lat = lab.PermutohedralLattice(torch.rand(50, 2) * 3)
        >>> y = torch.rand(lat.num_vertices, 4)
        >>> logits, q = fused_mean_field_iteration_reference(
        ...     torch.zeros(50, 4), [y], [lat], [torch.ones(50, 1)], torch.ones(1, 4), torch.eye(4)
        ... )
        >>> bool(torch.allclose(q.sum(1), torch.ones(50)))
        True
    """
    _check_inputs(unary, blurred, lattices, norms, weights, compat)
    qcheck = sum(
        _slice_weighted(y, lat, n, w) for y, lat, n, w in zip(blurred, lattices, norms, weights, strict=True)
    )  # Q̌ = Σ_k w_k · norm_k · slice_k(blurred_k)
    qhat = qcheck @ compat.float().T  # Q̂ = µ Q̌
    logits = unary.float() - qhat
    return logits, torch.softmax(logits, dim=1)


def fused_mean_field_iteration(
    unary: torch.Tensor,
    blurred: list[torch.Tensor],
    lattices: list[PermutohedralLattice],
    norms: list[torch.Tensor],
    weights: torch.Tensor,
    compat: torch.Tensor,
    *,
    block_m: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mean-field update after message passing, as one Triton kernel (inference only).

    Q̌[i,l] = Σ_k weights[k,l] · norms[k][i] · slice_k(blurred_k)[i,l];  Q̂[i,l] = Σ_l' compat[l,l'] Q̌[i,l'];
    logits = unary − Q̂;  q = softmax(logits, dim=1).

    Args:
        unary: (M, L) float32 unary potentials U in point layout (rows ordered (b, y, x)).
        blurred: K tensors (V_k, L): blur(splat(prescaled Q)) on each kernel's lattice (float32, or
            bfloat16/float16: read as such, accumulated in float32).
        lattices: the K :class:`~lab.PermutohedralLattice` s, built with backend "triton" (the kernel reads
            the compact layout their :class:`~lab.lattice.triton.TritonOps` own).
        norms: K (M, 1) scales applied after the slice (e.g. 1/K1, or D^−½ for symmetric normalisation).
        weights: (K, L) weight of each kernel for each label.
        compat: (L, L) label compatibility µ.
        block_m: points per program (power of two ≥ 16; default 64 on a GPU, 4096 in the interpreter).

    Returns:
        (logits, q), both (M, L) float32.

    Raises:
        RuntimeError: if an input requires grad while grad mode is on (no backward here: use the unfused
            steps to train), or Triton cannot run on the tensors' device.
        ValueError: if the shapes disagree, or a lattice does not run on the Triton backend.
    """
    tensors = [unary, weights, compat, *blurred, *norms]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(
            "fused_mean_field_iteration: is inference-only (no backward); an input requires grad. Run it "
            "under torch.no_grad(), or use the unfused mean-field steps to train"
        )
    _check_inputs(unary, blurred, lattices, norms, weights, compat)
    resolve_backend("triton", unary.device)  # raises when Triton cannot run here
    layouts = [_layout(lat, i) for i, lat in enumerate(lattices)]

    num_labels = unary.shape[1]
    if triton.next_power_of_2(num_labels) > MAX_FUSED_LABELS:
        return fused_mean_field_iteration_reference(unary, blurred, lattices, norms, weights, compat)
    extra = None
    if len(lattices) > 2:  # Q̌ of the kernels beyond the first two, by the plain slice kernel
        extra = torch.zeros_like(unary, dtype=torch.float32)
        for y, c, n, w in zip(blurred[2:], layouts[2:], norms[2:], weights[2:], strict=True):
            extra += w.float() * n.float() * lattice_slice(y, c.vertex_index, c.barycentric, out_dtype=torch.float32)
    kernels = [(y, c.vertex_index, c.barycentric, n) for y, c, n in zip(blurred, layouts[:2], norms, strict=False)]
    return mean_field_step(unary, kernels, weights[:2], compat, extra, block_m=block_m)
