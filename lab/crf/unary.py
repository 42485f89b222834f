"""Unaries U = −ψ_u from class probabilities or from a label map, as pydensecrf's ``utils`` but in our sign.

pydensecrf's ``unary_from_softmax`` / ``unary_from_labels`` return energies −log p of shape (L, N); these
return U = log p of shape (B, L, H, W), so ``pydensecrf_unary == -U.reshape(L, -1)`` for B = 1.
"""

from __future__ import annotations

import math

import torch

from lab._checks import check_shape

__all__ = ["unary_from_labels", "unary_from_softmax"]


def unary_from_softmax(prob: torch.Tensor, scale: float | None = None, clip: float | None = 1e-5) -> torch.Tensor:
    """U = log p from class probabilities (pydensecrf's ``unary_from_softmax``, negated).

    Args:
        prob: (B, L, H, W) probabilities summing to 1 over L.
        scale: if given, in (0, 1]: mix with the uniform distribution, p ← scale·p + (1 − scale)/L.
        clip: clip p to [clip, 1] before the log (None: no clipping; log 0 = −inf).

    Returns:
        (B, L, H, W) U, the dtype of ``prob``.

    Example:
        >>> unary_from_softmax(torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)).flatten()
        tensor([-0.6931, -0.6931])
    """
    check_shape(prob, "prob", ["B", "L", "H", "W"])
    if not prob.is_floating_point():
        raise TypeError(f"prob: expected a floating-point tensor, got {prob.dtype}")
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale: expected a number in (0, 1], got {scale!r}")
        prob = scale * prob + (1 - scale) / prob.shape[1]
    if clip is not None:
        prob = prob.clamp(clip, 1.0)
    return torch.log(prob)


def unary_from_labels(
    labels: torch.Tensor, n_labels: int, gt_prob: float = 0.5, zero_unsure: bool = True
) -> torch.Tensor:
    """U from a (possibly partial) label map: the annotated label gets probability ``gt_prob``.

    As pydensecrf's ``unary_from_labels``, negated: with ``zero_unsure`` label 0 means "unknown" (uniform
    1/L) and labels 1..L map to classes 0..L−1; otherwise labels 0..L−1 are the classes. The other classes
    share 1 − gt_prob equally.

    Args:
        labels: (B, H, W) integer label map.
        n_labels: L, the number of classes (not counting the "unknown" 0 when ``zero_unsure``), ≥ 2.
        gt_prob: the probability of the given label, in (0, 1).
        zero_unsure: whether 0 means "unknown".

    Returns:
        (B, L, H, W) float32 U = log p.

    Example:
        >>> u = unary_from_labels(torch.tensor([[[0, 1, 2]]]), n_labels=2, gt_prob=0.75)
        >>> u.exp()[0, :, 0].T
        tensor([[0.5000, 0.5000],
                [0.7500, 0.2500],
                [0.2500, 0.7500]])
    """
    check_shape(labels, "labels", ["B", "H", "W"])
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels: expected an integer tensor, got {labels.dtype}")
    if int(n_labels) != n_labels or n_labels < 2:
        raise ValueError(f"n_labels: expected an integer >= 2, got {n_labels!r}")
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob: expected a number in (0, 1), got {gt_prob!r}")
    classes = labels.long() - 1 if zero_unsure else labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(classes.max()) >= n_labels):
        want = f"0..{n_labels}" if zero_unsure else f"0..{n_labels - 1}"
        raise ValueError(f"labels: expected values in {want}, got {int(labels.min())}..{int(labels.max())}")
    b, h, w = labels.shape
    u = torch.full((b, n_labels, h, w), math.log((1 - gt_prob) / (n_labels - 1)), device=labels.device)
    u.scatter_(1, classes.clamp_min(0)[:, None], math.log(gt_prob))
    if zero_unsure:
        u = torch.where((labels == 0)[:, None], math.log(1.0 / n_labels), u)
    return u
