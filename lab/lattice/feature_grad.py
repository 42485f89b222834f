"""The lattice's Gaussian filter as an autograd primitive in both the values and the features.

For K_ij = exp(−|f_i − f_j|²/2) and out = K x (x: (M, C)), an upstream gradient g = ∂L/∂out gives

    ∂L/∂x   = Kᵀ g
    ∂L/∂f_i = Σ_c g_ic [K(f ⊙ x_c)_i − f_i (K x_c)_i]  +  Σ_c x_ic [Kᵀ(f ⊙ g_c)_i − f_i (Kᵀ g_c)_i]

(∂k_ij/∂f_i = k_ij (f_j − f_i): the first sum is the i-side of each pair, the second the j-side). Both are
filterings of feature × value products: d·C extra channels through the same lattice, forward and adjoint.
The derivation, and the three normalisations composed from this primitive, are in
``docs/feature_gradients.md``.

The lattice itself is built from detached features (its vertex set is piecewise constant in f, its
barycentric weights piecewise linear). So this is the *analytic* Gaussian gradient evaluated with the lattice
filter in place of the exact K — not the derivative of the lattice filter itself, which describes the
interpolation inside each simplex rather than the Gaussian. Its accuracy is that of the filter (cosine
similarity 0.93–0.995 with the exact gradient, relative error 0.1–0.4: ``tests/lattice/test_feature_grad.py``).

The formula is invariant to translating f (K(f ⊙ x) − f·Kx does not change when a constant is added to f)
within each batch element, so f is centred per batch element first: large coordinates (x/θα over a wide
image) would otherwise cancel catastrophically in float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lab.lattice.lattice import PermutohedralLattice

__all__ = ["KernelProduct", "centred_features"]


def centred_features(points: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Subtract each batch element's (detached) mean feature; the gradient passes through unchanged.

    Args:
        points: (M, d) features, M = B·N, rows of element b contiguous.
        batch_size: B.

    Returns:
        (M, d) centred features, differentiable with respect to ``points`` (identity Jacobian).

    Example:
        >>> centred_features(torch.tensor([[1.0], [3.0], [10.0], [20.0]]), 2).flatten().tolist()
        [-1.0, 1.0, -5.0, 5.0]
    """
    m, d = points.shape
    grouped = points.reshape(batch_size, m // batch_size, d)
    return (grouped - grouped.mean(1, keepdim=True).detach()).reshape(m, d)


def _products(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(M, d) features, (M, C) values → (M, C·d) products f_k x_c, channel c·d + k."""
    return (x[:, :, None] * f[:, None, :]).reshape(x.shape[0], -1)


class KernelProduct(torch.autograd.Function):
    """out = A x with A = K (``transpose=False``) or Kᵀ (``transpose=True``), differentiable in x and f.

    K is the lattice's unnormalised filter ``slice · blur · splat`` (the exact Gaussian times the lattice's
    kernel scale). The backward pass is written with this same Function, so it is itself differentiable
    (double backward works) and runs on whichever backend the lattice uses.

    Args (of ``apply``):
        x: (M, C) values in point layout.
        f: (M, d) features the gradient is taken with respect to (centred; the lattice is built from them,
            detached). Same dtype as x.
        lattice: the :class:`~lab.lattice.lattice.PermutohedralLattice` built from ``f``.
        transpose: apply Kᵀ instead of K (the adjoint: blur axes reversed).
        known: optional (M, C) precomputed A x (e.g. the cached normaliser K·1), returned instead of
            filtering again.

    Returns:
        (M, C) A x.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        f: torch.Tensor,
        lattice: PermutohedralLattice,
        transpose: bool,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A x, filtered now or taken from ``known``; saves x, f and A x for the backward pass."""
        ctx.lattice, ctx.transpose = lattice, transpose
        out = lattice.apply_kernel(x, transpose) if known is None else known.clone()
        ctx.save_for_backward(x, f, out)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        """∂L/∂x = Aᵀ g and ∂L/∂f by the formula of the module docstring, each only when needed."""
        x, f, out = ctx.saved_tensors
        lattice, t = ctx.lattice, ctx.transpose
        need_x, need_f = ctx.needs_input_grad[:2]
        grad_x = grad_f = None
        m, c = g.shape
        if need_f:
            # The adjoint on [g, f ⊙ g] at once: Aᵀ g is also ∂L/∂x.
            both = KernelProduct.apply(torch.cat([g, _products(f, g)], 1), f, lattice, not t)
            at_g, at_fg = both[:, :c], both[:, c:].reshape(m, c, -1)  # Aᵀ g (M, C), Aᵀ(f ⊙ g) (M, C, d)
            a_fx = KernelProduct.apply(_products(f, x), f, lattice, t).reshape(m, c, -1)  # A(f ⊙ x)
            # i-side: Σ_c g_c [A(f ⊙ x_c) − f A x_c];  j-side: Σ_c x_c [Aᵀ(f ⊙ g_c) − f Aᵀ g_c]
            grad_f = (
                torch.einsum("mc,mcd->md", g, a_fx)
                + torch.einsum("mc,mcd->md", x, at_fg)
                - f * ((g * out).sum(1, keepdim=True) + (x * at_g).sum(1, keepdim=True))
            )
            if need_x:
                grad_x = at_g
        elif need_x:
            grad_x = KernelProduct.apply(g, f, lattice, not t)
        return grad_x, grad_f, None, None, None
