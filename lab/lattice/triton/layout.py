"""The compact copy of a lattice that the Triton kernels read, and the row split of long splat rows.

:class:`TritonLattice` holds int32 indices instead of the int64 ones of
:class:`~lab.lattice.build.LatticeStructure`, and the blur as neighbour tables instead of CSR matrices
(8 bytes per vertex and axis instead of 44). For C = 21 float32 channels on the 1-MP astronaut, index and
weight arrays are then 31 % (bilateral) and 17 % (spatial) of the bytes a filter moves, instead of 42 % and
26 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.lattice.build import LatticeStructure

__all__ = ["SPLAT_MAX_ENTRIES", "RowSplit", "TritonLattice", "row_split"]

# Splat rows (points per vertex) longer than this are cut into pieces and summed in two passes (RowSplit):
# at 1 MP the bilateral lattice has vertices of up to 15 239 points (median 18), and one program looping
# over such a row would set the time of the whole launch.
SPLAT_MAX_ENTRIES = 256


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

    Example:
        >>> split = row_split(torch.tensor([0, 1, 6, 6]), 2)  # rows of 1, 5 and 0 entries
        >>> split.crow.tolist(), split.piece_crow.tolist()
        ([0, 1, 3, 5, 6], [0, 1, 4, 4])
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
        splat_split: the splat rows cut into pieces of at most :data:`SPLAT_MAX_ENTRIES` entries (None if
            none is longer).
        neighbours: (d+1, V, 2) int32, for each blur axis the vertex one step forward and one step back,
            −1 where missing (``LatticeStructure.blur_neighbours``).
    """

    vertex_index: torch.Tensor
    barycentric: torch.Tensor
    splat_crow: torch.Tensor
    splat_col: torch.Tensor
    splat_val: torch.Tensor
    splat_split: RowSplit | None
    neighbours: torch.Tensor

    @classmethod
    def from_structure(cls, structure: LatticeStructure) -> TritonLattice:
        """The compact layout of a lattice structure (int32 indices: at most 2³¹ − 1 points and vertices).

        Args:
            structure: the built lattice.

        Returns:
            Its :class:`TritonLattice`.

        Example:
            >>> from lab.lattice.build import build_lattice
            >>> layout = TritonLattice.from_structure(build_lattice(torch.rand(40, 2) * 3))
            >>> layout.vertex_index.dtype, layout.neighbours.shape[0]
            (torch.int32, 3)
        """
        if structure.num_vertices >= 2**31 or structure.num_points >= 2**31:
            raise ValueError("structure: more than 2^31 - 1 points or vertices do not fit int32 indices")
        splat = structure.splat_matrix
        return cls(
            vertex_index=structure.vertex_index.to(torch.int32).contiguous(),
            barycentric=structure.barycentric.contiguous(),
            splat_crow=splat.crow_indices(),
            splat_col=splat.col_indices().to(torch.int32),
            splat_val=splat.values(),
            splat_split=row_split(splat.crow_indices(), SPLAT_MAX_ENTRIES),
            neighbours=structure.blur_neighbours.to(torch.int32).contiguous(),
        )
