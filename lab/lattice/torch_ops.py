"""The lattice's three stages as PyTorch sparse × dense products: the CPU path and the reference.

:class:`TorchOps` and :class:`lab.lattice.triton.TritonOps` have the same three methods on point-layout values;
:class:`~lab.lattice.lattice.PermutohedralLattice` picks one of them once, when it is built.
"""

from __future__ import annotations

import torch

from lab.lattice.build import LatticeStructure
from lab.lattice.sparse import compute_csr, pair_products

__all__ = ["TorchOps"]


class _Matrices:
    """The CSR operators of one dtype: slice (M, V), splat (V, M), the paired blurs, their reverse (lazily)."""

    def __init__(self, structure: LatticeStructure, dtype: torch.dtype) -> None:
        self.structure = structure
        self.slice_ = compute_csr(structure.slice_matrix, dtype)
        self.splat = compute_csr(structure.splat_matrix, dtype)
        self.dtype = dtype
        self.blurs = tuple(compute_csr(b, dtype) for b in pair_products(list(structure.blur_neighbours), dtype))
        self._reverse: tuple[torch.Tensor, ...] | None = None

    @property
    def reverse_blurs(self) -> tuple[torch.Tensor, ...]:
        """The adjoint's pairs (the axes in the other order: each axis is symmetric), made on first use."""
        if self._reverse is None:
            reverse = list(self.structure.blur_neighbours.flip(0))
            self._reverse = tuple(compute_csr(b, self.dtype) for b in pair_products(reverse, self.dtype))
        return self._reverse


class TorchOps:
    """Splat, blur and slice of one lattice as CSR products, with matrices cached per dtype.

    The blur runs consecutive axes as one matrix (B1·B0, B3·B2, …, at most 9 entries a row): half the passes
    over the vertex values for the same operator.

    Args:
        structure: the built lattice.

    Example:
        >>> from lab.lattice.build import build_lattice
        >>> ops = TorchOps(build_lattice(torch.rand(40, 2) * 3))
        >>> x = torch.rand(40, 3)
        >>> ops.slice_(ops.blur(ops.splat(x))).shape
        torch.Size([40, 3])
    """

    def __init__(self, structure: LatticeStructure) -> None:
        self.structure = structure
        self._matrices: dict[torch.dtype, _Matrices] = {}

    def matrices(self, dtype: torch.dtype) -> _Matrices:
        """The operators in ``dtype`` (built on first use, then cached)."""
        if dtype not in self._matrices:
            self._matrices[dtype] = _Matrices(self.structure, dtype)
        return self._matrices[dtype]

    def splat(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C) point values → (V, C): each point onto its d+1 simplex corners, with its barycentric weights."""
        return self.matrices(x.dtype).splat @ x.contiguous()

    def blur(self, y: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """(V, C) → (V, C): [¼, ½, ¼] along each lattice axis in turn (in reverse order: the adjoint)."""
        m = self.matrices(y.dtype)
        for b in m.reverse_blurs if reverse else m.blurs:
            y = b @ y
        return y

    def slice_(self, y: torch.Tensor) -> torch.Tensor:
        """(V, C) vertex values → (M, C): interpolated at the points with the splat's weights (splatᵀ)."""
        return self.matrices(y.dtype).slice_ @ y.contiguous()
