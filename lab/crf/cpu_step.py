"""The fused mean-field iteration on the CPU, compiled with Numba: slice, weight, µ, unary, softmax per pixel.

One iteration of Algorithm 1 (Krähenbühl & Koltun's form, K = 2 kernels, L labels) in three compiled passes:

1. splat, per lattice: ``Y[v] = Σ_i pre_i · b_iv · Q[i]`` over the points i with a corner at v, summed in
   increasing i. Each parallel task owns a range of vertices and scans all points in order: no atomics, and
   every vertex's sum is formed in the same order whatever the thread count (bit for bit);
2. blur: the lattice's paired blur matrices B_{j+1}·B_j applied to the (V, L) vertex tables, CSR row by row;
3. per pixel i, with its rows in registers: Q̌ = Σ_m w(m) ⊙ post_m[i] Σ_k b_ik Y_m[v_ik], Q̂ = µ Q̌ (Potts:
   Σ Q̌ − Q̌), logits = U − Q̂, Q = softmax(logits). Only Q (and the logits in the last iteration) is written.

The kernels and why they are written the way they are: :mod:`lab.crf.cpu_kernels`.

Padded labels have U = −10³⁰ and are masked to Q = 0, so they never reach a vertex table. Results equal the
PyTorch path to float32 rounding (~1e-6 for normalised kernels; ``tests/crf/test_cpu_step.py``). Inference only: no
autograd (the training path is the PyTorch one). Indices are checked once, when :class:`CPUMeanField`
assembles its operands, before any kernel reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from lab.crf.cpu_kernels import (
    SMALL_GROUPS,
    available,
    compiling,
    csr_rows,
    kernel_of_ones,
    potts_kernel,
    softmax_rows,
    splat_kernel,
    update_kernel,
)
from lab.crf.cpu_lanes import LANES
from lab.lattice.normalize import scales
from lab.lattice.numba_kernels import _LOCK, numba
from lab.lattice.sparse import pair_products

if TYPE_CHECKING:
    from lab.lattice.lattice import PermutohedralLattice

__all__ = ["LANES", "CPUMeanField", "available", "warm_up"]

_PAD_UNARY = -1.0e30  # U of a padded label: never the max, exp → 0


class _Tables:
    """One lattice's operands, checked: corners, splat coefficients, paired blurs (CSR), the post-scale.

    The normaliser K·1 is computed here too (splat of ones by ``np.bincount``, the paired blurs, the slice),
    so the lattice's PyTorch operators are never built on this path.
    """

    def __init__(self, lattice: PermutohedralLattice, normalize: str) -> None:
        s = lattice.structure
        v, m = s.num_vertices, s.num_points
        self.index = np.ascontiguousarray(s.vertex_index.numpy(), np.int32)  # (M, d+1)
        if self.index.shape != (m, s.d + 1) or self.index.min(initial=0) < 0 or self.index.max(initial=0) >= v:
            raise ValueError(f"lattice: vertex_index must be ({m}, {s.d + 1}) vertices in 0..{v - 1}")
        self.bary = np.ascontiguousarray(s.barycentric.numpy(), np.float32)  # (M, d+1): slice weights
        self.blurs = [
            _csr_arrays(b.crow_indices(), b.col_indices(), b.values(), v, v, "blur")
            for b in pair_products(list(s.blur_neighbours), torch.float32)
        ]
        self.corners = s.d + 1
        self.num_vertices = v
        pre, post = scales(torch.from_numpy(self._kernel_of_ones())[:, None], normalize, s.kernel_scale)
        self.coef = np.ascontiguousarray((pre * torch.from_numpy(self.bary)).numpy())  # splat weights, pre folded in
        self.post = np.ascontiguousarray(post[:, 0].numpy(), np.float32)  # (M,)

    def _kernel_of_ones(self) -> np.ndarray:
        """K·1 per point, (M,) float32: splat, blur and slice of ones."""
        crow = np.concatenate([c for c, _, _ in self.blurs]) if self.blurs else np.zeros(0, np.int64)
        col = np.concatenate([c for _, c, _ in self.blurs]) if self.blurs else np.zeros(0, np.int32)
        val = np.concatenate([v for _, _, v in self.blurs]) if self.blurs else np.zeros(0, np.float32)
        # each matrix's pointers start at 0: shift them by the entries of the matrices before it
        offsets = np.cumsum([0] + [c.shape[0] for _, c, _ in self.blurs[:-1]])
        crow = crow + np.repeat(offsets, self.num_vertices + 1) if self.blurs else crow
        with _LOCK, compiling():
            return kernel_of_ones(self.index, self.bary, self.num_vertices, crow, col, val)


def _tables(lattice: PermutohedralLattice, normalize: str) -> _Tables:
    """The lattice's operands, made once per lattice and normalisation and kept on it (as its sparse operators are).

    Kept as an attribute, so the cached spatial lattice reuses them across calls, they go with the lattice,
    and :func:`lab.explore.memory.tensor_nbytes` counts them with it.
    """
    per_lattice = lattice.__dict__.setdefault("_cpu_tables", {})
    if normalize not in per_lattice:
        per_lattice[normalize] = _Tables(lattice, normalize)
    return per_lattice[normalize]


def _csr_arrays(crow, col, val, rows: int, cols: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays for :func:`~lab.crf.cpu_kernels.csr_rows`, checked.

    Row pointers from 0 to nnz, non-decreasing; columns in 0..cols−1.
    """
    crow = np.ascontiguousarray(crow.numpy(), np.int64)
    col = np.ascontiguousarray(col.numpy(), np.int32)
    val = np.ascontiguousarray(val.numpy(), np.float32)
    ok = (
        crow.shape == (rows + 1,)
        and crow[0] == 0
        and crow[-1] == col.shape[0] == val.shape[0]
        and bool((np.diff(crow) >= 0).all())
        and (col.size == 0 or (col.min() >= 0 and col.max() < cols))
    )
    if not ok:
        raise ValueError(f"lattice: its {name} matrix is not a valid ({rows}, {cols}) CSR matrix")
    return crow, col, val


class CPUMeanField:
    """The fused iteration's operands for two lattice kernels over the same points, assembled once.

    Args:
        lattices: the two lattices (bilateral, spatial) of a :class:`~lab.crf.kernels.CRFKernels`, on the CPU.
        normalize: "none", "after" or "symmetric".
        weights: (2, L) w(m)_l (scalar weights: equal columns).
        compat: µ as an (L, L) tensor, or "potts".

    Example:
        >>> from lab.crf import CRFKernels, CRFParams
        >>> kernels = CRFKernels(torch.rand(1, 3, 8, 8) * 255, CRFParams())
        >>> u = torch.randn(64, 3)
        >>> step = CPUMeanField(kernels.lattices, "symmetric", torch.ones(2, 3), "potts")
        >>> logits, q = step.run(u, 2)
        >>> q.shape, bool(torch.allclose(q.sum(1), torch.ones(64)))
        (torch.Size([64, 3]), True)
    """

    def __init__(
        self,
        lattices: Sequence[PermutohedralLattice],
        normalize: str,
        weights: torch.Tensor,
        compat: torch.Tensor | str,
    ) -> None:
        if not available():
            raise RuntimeError("the fused CPU iteration needs Numba (pip install numba)")
        if len(lattices) != 2:
            raise ValueError(f"lattices: expected two (bilateral, spatial), got {len(lattices)}")
        self.num_points = lattices[0].num_points
        if lattices[1].num_points != self.num_points:
            raise ValueError("lattices: expected two lattices over the same points")
        num_labels = weights.shape[1]
        if tuple(weights.shape) != (2, num_labels) or num_labels < 1:
            raise ValueError(f"weights: expected (2, L), got {tuple(weights.shape)}")
        self.num_labels = num_labels
        self.width = -(-num_labels // LANES) * LANES
        self.tables = [_tables(lat, normalize) for lat in lattices]
        pad = self.width - num_labels
        w = torch.nn.functional.pad(weights.detach().float(), (0, pad))
        self.weights = [np.ascontiguousarray(w[k].numpy()) for k in range(2)]
        self.mask = np.zeros(self.width, np.float32)
        self.mask[:num_labels] = 1
        self.potts = isinstance(compat, str)
        if self.potts:
            self.mu_t = np.zeros((num_labels, self.width), np.float32)
        else:
            if tuple(compat.shape) != (num_labels, num_labels):
                raise ValueError(f"compat: expected ({num_labels}, {num_labels}), got {tuple(compat.shape)}")
            mu_t = torch.nn.functional.pad(compat.detach().float().T.contiguous(), (0, pad))
            self.mu_t = np.ascontiguousarray(mu_t.numpy())

    def _padded(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        """(M, width) float32: ``x`` (M, L, any strides) in the first L columns, ``fill`` in the others."""
        out = torch.empty(self.num_points, self.width)
        out[:, : self.num_labels].copy_(x.detach())
        out[:, self.num_labels :] = fill
        return out

    def run(
        self, unary: torch.Tensor, iterations: int, history: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1 from Q ← softmax(U): T iterations.

        Args:
            unary: (M, L) U in point layout (any strides: it is copied once, into the padded rows).
            iterations: T ≥ 1.
            history: where Q_0 … Q_T, each (M, L), are appended, or None.

        Returns:
            (logits U − Q̂, Q) of the last iteration, each (M, L) float32: views of the padded rows (Q: the
            history's last map, when a history is kept).
        """
        shape = (self.num_points, self.num_labels)
        if tuple(unary.shape) != shape:
            raise ValueError(f"unary: expected {shape}, got {tuple(unary.shape)}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations: expected an int ≥ 1, got {iterations!r}")
        u_t = self._padded(unary, _PAD_UNARY)
        q_t, logits_t = torch.empty_like(u_t), torch.empty_like(u_t)
        u, qp, logits = u_t.numpy(), q_t.numpy(), logits_t.numpy()
        vertex = [tuple(np.empty((t.num_vertices, self.width), np.float32) for _ in range(2)) for t in self.tables]
        a, b = self.tables
        groups = self.width // LANES
        cut = slice(0, self.num_labels)
        with _LOCK, compiling():
            small = self.potts and groups <= SMALL_GROUPS
            update = (potts_kernel if small else update_kernel)(a.corners, b.corners, groups)
            splats = [splat_kernel(t.corners, groups) for t in self.tables]
            parts = numba.get_num_threads()
            softmax_rows(u, self.mask, qp)  # Q ← softmax(U)
            if history is not None:
                history.append(q_t[:, cut].clone())
            for it in range(iterations):
                blurred = []
                for t, splat, (y, spare) in zip(self.tables, splats, vertex, strict=True):
                    splat(t.index, t.coef, qp, y, parts)
                    for pair in t.blurs:
                        csr_rows(*pair, y, spare)
                        y, spare = spare, y
                    blurred.append(y)
                last = it == iterations - 1
                operands = (
                    u, self.mask,
                    a.index, a.bary, a.post, blurred[0], self.weights[0],
                    b.index, b.bary, b.post, blurred[1], self.weights[1],
                )  # fmt: skip
                if small:
                    update(*operands, qp, logits, last)
                else:
                    update(*operands, self.mu_t, self.potts, qp, logits if last or not self.potts else qp)
                if history is not None:
                    history.append(q_t[:, cut].clone())
        # Q_T is the history's last map where one is kept: the padded buffer then goes, and the next run reuses it
        return logits_t[:, cut], (history[-1] if history else q_t[:, cut])


def warm_up(label_counts: Sequence[int] = (2, 21)) -> None:
    """Compile (or load from the disk cache) the kernels for RGB images with these label counts, Potts.

    ``make`` runs this after installing, so that the first inference does not wait for the compiler
    (about 10 s per label count on the 2-core development machine).
    """
    from lab.crf.kernels import CRFKernels
    from lab.crf.params import CRFParams

    kernels = CRFKernels(torch.rand(1, 3, 8, 8) * 255, CRFParams())
    for num_labels in label_counts:
        u = torch.randn(kernels.num_points, num_labels)
        CPUMeanField(kernels.lattices, "symmetric", torch.ones(2, num_labels), "potts").run(u, 1)
