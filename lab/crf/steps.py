"""The steps of one mean-field iteration (CRF-RNN's Algorithm 1) as functions, and the KL divergence.

Q ← softmax(U); then T times (Zheng et al. 2015, Alg. 1):

1. message passing           Q̃(m) = k(m) ∗ Q           one Gaussian filtering per kernel m
2. weighting filter outputs  Q̌ = Σ_m w(m) Q̃(m)        w(m) a number or one per class
3. compatibility transform   Q̂ = µ Q̌                   Q̂_l = Σ_l' µ(l, l') Q̌_l'
4. adding unary potentials   U − Q̂
5. normalisation             Q = softmax(U − Q̂)

(step 0, the initialisation Q ← softmax(U), makes the paper's six). :func:`iteration` chains steps 2–5 after
the messages: the one place the update is written in PyTorch, used by every PyTorch path of
:func:`lab.crf.mean_field.mean_field`; the compiled iterations (:mod:`lab.crf.cpu_step`,
:mod:`lab.crf.triton_step`) are tested against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lab.crf.kernels import CRFKernels

__all__ = [
    "add_unary",
    "compatibility_transform",
    "initialization",
    "iteration",
    "kl_divergence",
    "message_passing",
    "normalization",
    "softmax",
    "weighting",
]

_KL_CLAMP = 1e-20  # pydensecrf's klDivergence: Q·log(max(Q, 1e-20))


_FAST_SOFTMAX_BELOW = 16  # labels


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.softmax, computed as exp(x − max) / Σ where that is faster: fewer than 16 labels, no autograd.

    PyTorch's CPU softmax along a short contiguous dimension does not vectorise: for (262144, L) float32 on
    the 2-core development machine, L = 2: 8.4 ms, L = 4: 11 ms, L = 12: 28 ms, against 2.6–6.4 ms for the
    three-pass form here (and 4–6 ms for torch.softmax at L = 16–21, where it stays in use). Results agree
    to float rounding (~1e-7).

    Args:
        x: scores.
        dim: the label dimension.

    Returns:
        softmax(x) along ``dim``.

    Example:
        >>> softmax(torch.tensor([[0.0, 0.0]]), 1).tolist()
        [[0.5, 0.5]]
    """
    if x.shape[dim] >= _FAST_SOFTMAX_BELOW or (torch.is_grad_enabled() and x.requires_grad):
        return torch.softmax(x, dim)
    y = x - x.amax(dim, keepdim=True)
    y.exp_()
    return y.div_(y.sum(dim, keepdim=True))


def initialization(unary: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Step 0: Q ← softmax(U) over the labels.

    Args:
        unary: U, (B, L, H, W) (or any layout with the labels along ``dim``).
        dim: the label dimension.

    Returns:
        Q, the shape of ``unary``.

    Example:
        >>> initialization(torch.zeros(1, 2, 1, 1)).flatten().tolist()
        [0.5, 0.5]
    """
    return softmax(unary, dim)


def message_passing(q: torch.Tensor, kernels: CRFKernels) -> tuple[torch.Tensor, ...]:
    """Step 1: Q̃(m) = k(m) ∗ Q, one normalised Gaussian filtering per kernel (bilateral, spatial).

    Args:
        q: (B, L, H, W) or (M, L) probabilities.
        kernels: the image's kernels.

    Returns:
        (Q̃(bilateral), Q̃(spatial)), each the shape of ``q``.

    Example:
        >>> from lab.crf import CRFKernels, CRFParams
        >>> kernels = CRFKernels(torch.rand(1, 3, 4, 4) * 255, CRFParams())
        >>> len(message_passing(torch.rand(1, 2, 4, 4), kernels))
        2
    """
    return kernels.filter(q)


def weighting(messages: Sequence[torch.Tensor], weights: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Step 2: Q̌ = Σ_m w(m) Q̃(m), the weighted sum of the filter outputs.

    Args:
        messages: K maps, (B, L, H, W) (labels along ``dim``).
        weights: (K, L) weights w(m)_l (equal columns for scalar weights).
        dim: the label dimension.

    Returns:
        Q̌, the shape of a message.

    Example:
        >>> ones = torch.ones(1, 2, 1, 1)
        >>> weighting([ones, ones], torch.tensor([[1.0, 2.0], [3.0, 3.0]]))[0, :, 0, 0]
        tensor([4., 5.])
    """
    shape = [1] * messages[0].dim()
    shape[dim] = -1
    out = weights[0].view(shape) * messages[0]
    for w, msg in zip(weights[1:], messages[1:], strict=True):
        out = out + w.view(shape) * msg
    return out


def compatibility_transform(weighted: torch.Tensor, compat: torch.Tensor | str, dim: int = 1) -> torch.Tensor:
    """Step 3: Q̂_l = Σ_l' µ(l, l') Q̌_l'.

    Args:
        weighted: Q̌, (B, L, H, W) (labels along ``dim``).
        compat: µ as an (L, L) tensor, or "potts" (µ = [l ≠ l'], computed as Σ_l' Q̌_l' − Q̌_l).
        dim: the label dimension.

    Returns:
        Q̂, the shape of ``weighted``.

    Example:
        >>> compatibility_transform(torch.tensor([[1.0, 2.0, 4.0]]), "potts", dim=1)
        tensor([[6., 5., 3.]])
    """
    if isinstance(compat, str):
        return weighted.sum(dim, keepdim=True) - weighted
    moved = weighted.movedim(dim, -1)
    return (moved @ compat.T).movedim(-1, dim)


def add_unary(unary: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """Step 4: the pre-softmax scores U − Q̂.

    Args:
        unary: U, (B, L, H, W).
        transformed: Q̂, same shape.

    Returns:
        U − Q̂.

    Example:
        >>> add_unary(torch.tensor([1.0]), torch.tensor([0.25]))
        tensor([0.7500])
    """
    return unary - transformed


def normalization(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Step 5: Q = softmax(U − Q̂) over the labels.

    Args:
        logits: U − Q̂, (B, L, H, W).
        dim: the label dimension.

    Returns:
        Q, the shape of ``logits``.

    Example:
        >>> normalization(torch.tensor([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    return softmax(logits, dim)


def kl_divergence(q: torch.Tensor, unary: torch.Tensor, transformed: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """The mean-field KL divergence up to log Z, as pydensecrf's ``klDivergence``.

    KL(Q‖P) − log Z = Σ_i,l Q log Q − Σ_i,l U·Q + Σ_i,l Q·Q̂ with Q̂ = µ Σ_m w(m) k(m) ∗ Q: every ordered pair
    of pixels counted once, the self pair included (as pydensecrf). pydensecrf's Potts compat (−w·Q̃) differs
    from µ = [l ≠ l'] by Σ_i Σ_m w(m) (k(m) ∗ 1)_i, a constant for a given image.

    Args:
        q: (M, L) probabilities in point layout (or (B, L, H, W)).
        unary: U, same shape.
        transformed: Q̂ computed from ``q``, same shape.
        batch_size: B (for point layout: rows of element b are b·N .. (b+1)·N − 1).

    Returns:
        (B,) float64 values, one per batch element.

    Example:
        >>> q = torch.full((4, 2), 0.5)
        >>> kl_divergence(q, torch.zeros(4, 2), torch.zeros(4, 2))  # 4 pixels × log ½
        tensor([-2.7726], dtype=torch.float64)
    """
    if q.dim() == 4:
        batch_size = q.shape[0]
    q64 = q.to(torch.float64)
    # Q·(log Q − U + Q̂) per pixel and label, the bracket built in one float64 buffer (differentiable: the
    # gradient is checked against finite differences in the tests)
    terms = torch.log(q64.clamp_min(_KL_CLAMP)).sub_(unary).add_(transformed).mul(q64)
    return terms.reshape(batch_size, -1).sum(1)


def iteration(
    q: torch.Tensor,
    unary: torch.Tensor,
    weighted_messages: Callable[[torch.Tensor], tuple[tuple[torch.Tensor, ...] | None, torch.Tensor]],
    compat: torch.Tensor | str,
    *,
    logits_needed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None, torch.Tensor, torch.Tensor | None]:
    """One mean-field update in point layout: steps 1–5 on Q.

    Args:
        q: (M, L) Q of the previous iteration.
        unary: (M, L) U.
        weighted_messages: Q ↦ (the K messages Q̃(m) or None where they are not formed, Q̌ = Σ_m w(m) Q̃(m)).
        compat: µ as an (L, L) tensor, or "potts".
        logits_needed: False lets Potts skip Σ_l' Q̌_l' (constant per pixel, it cancels in the softmax): the
            returned q is the same to rounding, the returned logits are then U + Q̌ (not U − Q̂).

    Returns:
        (logits U − Q̂, new Q, messages, Q̌, Q̂), each (M, L); Q̌ and Q̂ are None where Potts skipped them.

    Example:
        >>> u = torch.log(torch.tensor([[0.7, 0.3]]))
        >>> logits, q, _, _, _ = iteration(torch.tensor([[0.5, 0.5]]), u, lambda q: (None, q), "potts")
        >>> [round(v, 3) for v in q.flatten().tolist()]
        [0.7, 0.3]
    """
    messages, weighted = weighted_messages(q)  # Q̃(m) = k(m) ∗ Q, Q̌ = Σ_m w(m) Q̃(m)  (steps 1, 2)
    if isinstance(compat, str) and not logits_needed and not (torch.is_grad_enabled() and weighted.requires_grad):
        # Potts: U − Q̂ = U + Q̌ − Σ_l' Q̌_l'; the last term cancels in the softmax
        logits = weighted.add_(unary)
        return logits, softmax(logits, 1), messages, None, None  # Q̌ was consumed in place
    transformed = compatibility_transform(weighted, compat)  # Q̂ = µ Q̌  (step 3)
    logits = add_unary(unary, transformed)  # U − Q̂  (step 4)
    return logits, normalization(logits), messages, weighted, transformed  # softmax(U − Q̂)  (step 5)
