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
kernels are sliced beforehand by the plain slice kernel and passed in as one precomputed Q̌ term.

The splat of the new q for the next iteration is not fused in: splat is a gather over the points of each
*vertex*, which come from all over the image, so it cannot start before every block of q is written; the
fused alternative, scattering b·q onto the vertices with atomic adds, is non-deterministic on a GPU and
contends on shared vertices (every spatial-kernel vertex receives tens of points). See ``docs/triton.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lab.lattice.backend import resolve_backend

if TYPE_CHECKING:
    from lab.lattice.lattice import PermutohedralLattice

__all__ = ["fused_mean_field_iteration", "fused_mean_field_iteration_reference"]

# The fused kernel holds a (BLOCK_M, L) tile and the (L, L) compatibility matrix in registers;
# above this many labels (padded to a power of two) it would spill, so larger L uses the reference.
MAX_FUSED_LABELS = 128


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
        lattices: the K lattices (their ``structure.vertex_index`` / ``barycentric`` slice).
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
        lattices: the K :class:`~lab.PermutohedralLattice` s (their ``structure.vertex_index`` and
            ``structure.barycentric`` slice).
        norms: K (M, 1) scales applied after the slice (e.g. 1/K1, or D^−½ for symmetric normalisation).
        weights: (K, L) weight of each kernel for each label.
        compat: (L, L) label compatibility µ.
        block_m: points per program (power of two ≥ 16; default 64 on a GPU, 4096 in the interpreter).

    Returns:
        (logits, q), both (M, L) float32.

    Raises:
        RuntimeError: if an input requires grad while grad mode is on (no backward here: use the unfused
            steps to train), or Triton cannot run on the tensors' device.
    """
    tensors = [unary, weights, compat, *blurred, *norms]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(
            "fused_mean_field_iteration: is inference-only (no backward); an input requires grad. Run it "
            "under torch.no_grad(), or use the unfused mean-field steps to train"
        )
    _check_inputs(unary, blurred, lattices, norms, weights, compat)
    resolve_backend("triton", unary.device)  # raises when Triton cannot run here
    from lab.lattice import triton_kernels as tk

    num_labels = unary.shape[1]
    if _next_power_of_2(num_labels) > MAX_FUSED_LABELS:
        return fused_mean_field_iteration_reference(unary, blurred, lattices, norms, weights, compat)
    extra = None
    if len(lattices) > 2:  # Q̌ of the kernels beyond the first two, by the plain slice kernel
        extra = torch.zeros_like(unary, dtype=torch.float32)
        for y, lat, n, w in zip(blurred[2:], lattices[2:], norms[2:], weights[2:], strict=True):
            c = tk.triton_lattice(lat.structure)
            extra += w.float() * n.float() * tk.lattice_slice(y, c.vertex_index, c.barycentric, out_dtype=torch.float32)
    compact = [tk.triton_lattice(lat.structure) for lat in lattices[:2]]
    kernels = [(y, c.vertex_index, c.barycentric, n) for y, c, n in zip(blurred, compact, norms, strict=False)]
    return tk.mean_field_step(unary, kernels, weights[:2], compat, extra, block_m=block_m)


def _next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ n (without importing Triton)."""
    return 1 << max(n - 1, 0).bit_length()
