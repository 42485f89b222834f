"""Several lattices over the same points as one linear operator: the weighted sum of their filters.

Mean field filters the same Q map with K kernels (bilateral and spatial) and sums the results with
weights. Splat, blur and slice are linear and act on rows only, so the K filterings fuse into three block
sparse products instead of 3·K:

* splat: the splat matrices stacked vertically, each with its pre-scale folded into its columns
  (D^−½ for "symmetric"): one (ΣV, M) CSR product.
* blur: consecutive axes of every lattice paired into one matrix (B1·B0, B3·B2, …; the identity for axes a
  lattice does not have), pair p of all lattices as one block-diagonal (ΣV, ΣV) matrix: half the passes.
* slice: the slice matrices side by side, each row scaled by w(m)·norm_m[i]: one (M, ΣV) CSR product that
  also performs the weighted sum Q̌ = Σ_m w(m) Q̃(m).

The result equals Σ_m w(m)·lattice_m.filter_points(x, normalize) up to float rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from lab._checks import check_choice, check_shape
from lab.lattice.lattice import PermutohedralLattice
from lab.lattice.normalize import NORMALIZATIONS, scales
from lab.lattice.sparse import compute_csr, csr

__all__ = ["MultiLatticeFilter"]


def filter_scales(
    lattice: PermutohedralLattice, normalize: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-splat and post-slice per-point scales of a normalised lattice filter.

    ``filter_points(x, normalize) == post * slice(blur(splat(pre * x)))``.

    Args:
        lattice: the lattice.
        normalize: "none", "after" or "symmetric".
        dtype: float dtype of the result.

    Returns:
        pre, post: (M, 1) each. "symmetric": D^−½, D^−½; "after": 1, 1/(K1); "none": 1, 1/kernel_scale.

    Example:
        >>> lat = PermutohedralLattice(torch.rand(50, 2) * 3)
        >>> pre, post = filter_scales(lat, "after", torch.float32)
        >>> x = torch.rand(50, 4)
        >>> bool(torch.allclose(post * lat.slice(lat.blur(lat.splat(pre * x))), lat.filter_points(x), atol=1e-6))
        True
    """
    check_choice(normalize, "normalize", NORMALIZATIONS)
    return scales(lattice.normalizer(dtype), normalize, lattice.structure.kernel_scale)


def _block_diagonal(blocks: Sequence[torch.Tensor | int], dtype: torch.dtype, device) -> torch.Tensor:
    """CSR block-diagonal of square CSR blocks; an int n stands for an n × n identity."""
    crows, cols, vals = [torch.zeros(1, dtype=torch.int64, device=device)], [], []
    row_off, nnz_off = 0, 0
    for b in blocks:
        if isinstance(b, int):
            crow = torch.arange(b + 1, dtype=torch.int64, device=device)
            col = torch.arange(b, dtype=torch.int64, device=device)
            val = torch.ones(b, dtype=dtype, device=device)
            n = b
        else:
            crow, col, val, n = b.crow_indices().long(), b.col_indices().long(), b.values().to(dtype), b.shape[0]
        crows.append(crow[1:] + nnz_off)
        cols.append(col + row_off)
        vals.append(val)
        row_off += n
        nnz_off += col.shape[0]
    return csr(torch.cat(crows), torch.cat(cols), torch.cat(vals), (row_off, row_off))


class MultiLatticeFilter:
    """Σ_m w(m)·filter_m(x) over K lattices of the same M points, as three block-sparse products.

    Args:
        lattices: K lattices over the same M points (same batch layout).
        weights: K numbers w(m) (scalar weights; per-class weights do not fold into the slice).
        normalize: "none", "after" or "symmetric", for every lattice.
        dtype: float dtype the operator computes in.

    Not differentiable: for inference (the unfused steps carry gradients).

    Example:
        >>> f = torch.rand(200, 3) * 4
        >>> lats = [PermutohedralLattice(f), PermutohedralLattice(f[:, :2])]
        >>> op = MultiLatticeFilter(lats, [2.0, 0.5], "symmetric")
        >>> x = torch.rand(200, 5)
        >>> ref = 2.0 * lats[0].filter_points(x, "symmetric") + 0.5 * lats[1].filter_points(x, "symmetric")
        >>> bool(torch.allclose(op(x), ref, atol=1e-5))
        True
    """

    def __init__(
        self,
        lattices: Sequence[PermutohedralLattice],
        weights: Sequence[float],
        normalize: str,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_choice(normalize, "normalize", NORMALIZATIONS)
        if len(lattices) == 0 or len(lattices) != len(weights):
            raise ValueError(f"weights: expected one weight per lattice ({len(lattices)}), got {len(weights)}")
        m = lattices[0].num_points
        if any(lat.num_points != m for lat in lattices):
            raise ValueError("lattices: expected lattices over the same number of points")
        device = lattices[0].structure.slice_matrix.device
        self.num_points = m
        self.dtype = dtype
        splat_crow, splat_col, splat_val = [torch.zeros(1, dtype=torch.int64, device=device)], [], []
        slice_col, slice_val = [], []
        v_off, nnz_off = 0, 0
        for lat in lattices:
            s = lat.structure
            pre, post = filter_scales(lat, normalize, dtype)
            sp = s.splat_matrix  # (V, M): columns are points
            col = sp.col_indices()
            splat_crow.append(sp.crow_indices()[1:] + nnz_off)
            splat_col.append(col)
            splat_val.append(sp.values().to(dtype) * pre[col, 0])  # S · diag(pre)
            sl = s.slice_matrix  # (M, V), exactly d+1 entries per row
            dp1 = s.d + 1
            slice_col.append(sl.col_indices().view(m, dp1) + v_off)
            slice_val.append(sl.values().to(dtype).view(m, dp1) * post)  # diag(post) · Sᵀ; w(m) comes below
            v_off += s.num_vertices
            nnz_off += col.shape[0]
        self.num_vertices = v_off
        splat = csr(torch.cat(splat_crow), torch.cat(splat_col), torch.cat(splat_val), (v_off, m))
        # (M, Σ(d+1)): lattice m's corners in its block of columns (columns stay sorted: blocks are in order)
        self._unit_slice_val = torch.cat(slice_val, 1)
        self._widths = [c.shape[1] for c in slice_col]
        width = sum(self._widths)
        unit = compute_csr(
            csr(
                torch.arange(0, m * width + 1, width, device=device),
                torch.cat(slice_col, 1).reshape(-1),
                self._unit_slice_val.reshape(-1),
                (m, v_off),
            ),
            dtype,
        )
        self._slice_crow, self._slice_col = unit.crow_indices(), unit.col_indices()
        self._slice_matrix = self._weighted_slice(weights)
        # pair p of the fused operator is the block-diagonal of the lattices' pair p (each lattice's own cached
        # pairs; the identity where a lattice has fewer axes)
        pairs = [lat.paired_blurs(dtype) for lat in lattices]
        self.blurs = tuple(
            compute_csr(
                _block_diagonal(
                    [lp[p] if p < len(lp) else lat.num_vertices for lp, lat in zip(pairs, lattices, strict=True)],
                    dtype,
                    device,
                ),
                dtype,
            )
            for p in range(max(len(lp) for lp in pairs))
        )
        self._splat_matrix = compute_csr(splat, dtype)

    def _weighted_slice(self, weights: Sequence[float]) -> torch.Tensor:
        """The slice with each lattice's block of columns scaled by its weight: diag(w · post) · Sᵀ."""
        m = self._unit_slice_val.shape[0]
        if len(weights) != len(self._widths):
            raise ValueError(f"weights: expected one weight per lattice ({len(self._widths)}), got {len(weights)}")
        factor = torch.cat(
            [torch.full((n,), float(w), dtype=self.dtype) for w, n in zip(weights, self._widths, strict=True)]
        ).to(self._unit_slice_val.device)
        values = (self._unit_slice_val * factor).reshape(-1)
        return csr(self._slice_crow, self._slice_col, values, (m, self.num_vertices))

    def with_weights(self, weights: Sequence[float]) -> MultiLatticeFilter:
        """The same operator with other kernel weights: shares the splat and blurs, rescales the slice.

        Args:
            weights: K numbers w(m).

        Returns:
            A new :class:`MultiLatticeFilter` (this one is unchanged).

        Example:
            >>> f = torch.rand(100, 2) * 4
            >>> lats = [PermutohedralLattice(f), PermutohedralLattice(f[:, :1])]
            >>> op, x = MultiLatticeFilter(lats, [1.0, 1.0], "after"), torch.rand(100, 3)
            >>> bool(torch.allclose(op.with_weights([2.0, 0.0])(x), MultiLatticeFilter(lats, [2.0, 0.0], "after")(x)))
            True
        """
        other = copy.copy(self)
        other._slice_matrix = self._weighted_slice(weights)
        return other

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_m w(m)·filter_m(x).

        Args:
            x: (M, C) values in point layout, of the operator's dtype.

        Returns:
            (M, C) weighted sum of the K normalised filterings.
        """
        check_shape(x, "x", [self.num_points, "C"])
        y = self._splat_matrix @ x.contiguous()  # (ΣV, C)
        for b in self.blurs:
            y = b @ y
        return self._slice_matrix @ y
