"""Unaries U = −ψ_u from class probabilities or from a label map, as pydensecrf's ``utils`` but in our sign.

pydensecrf's ``unary_from_softmax`` / ``unary_from_labels`` return energies −log p of shape (L, N); these
return U = log p of shape (B, L, H, W), so ``pydensecrf_unary == -U.reshape(L, -1)`` for B = 1.
"""

from __future__ import annotations

import math
import numbers

import torch

from lab._checks import check_finite, check_shape

__all__ = ["unary_from_labels", "unary_from_softmax"]

# Probabilities may miss [0, 1] and a sum of 1 by rounding: softmax in float32, resampled maps, or half
# precision (each stored p off by up to eps/2 relative, so the sum by up to eps/2). Both are checked with
# max(1e-3, 2·eps(dtype)): far above rounding, far below a wrong input (logits, a permuted layout).
_PROB_TOL = 1e-3


def _number(value: object, name: str) -> float:
    """A real number (int, float, numpy scalar) as float; bools, None, strings, arrays, tensors refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    return float(value)


def unary_from_softmax(prob: torch.Tensor, scale: float | None = None, clip: float | None = 1e-5) -> torch.Tensor:
    """U = log p from class probabilities (pydensecrf's ``unary_from_softmax``, negated).

    Accepts probabilities in [0, 1] summing to 1 over L, each within max(1e-3, 2·eps(dtype)) (rounding).
    With ``clip=None`` a probability of exactly 0 gives U = −inf, which :func:`lab.mean_field` refuses:
    use a ``clip`` for maps with zeros. Differentiable in ``prob`` (except where clipped).

    Refuses (naming the argument): a non-tensor ``prob`` (numpy: use ``torch.from_numpy``), a shape other
    than (B, L, H, W), a non-float dtype (``TypeError``); NaN/Inf, values outside [0, 1], sums over L
    other than 1 (e.g. logits, or a (B, H, W, L) layout); ``scale`` outside (0, 1]; ``clip`` outside
    (0, 1/L) — it is a floor for small probabilities, and a floor at or above the uniform 1/L would flatten
    them all (``clip=2`` once gave U = 0 everywhere) — or so small it rounds to 0 in ``prob``'s dtype;
    ``scale``/``clip`` that are not numbers (``TypeError``).

    Args:
        prob: (B, L, H, W) probabilities summing to 1 over L.
        scale: if given, in (0, 1]: mix with the uniform distribution, p ← scale·p + (1 − scale)/L.
        clip: if given, in (0, 1/L): clip p to [clip, 1] before the log (None: no clipping; log 0 = −inf).

    Returns:
        (B, L, H, W) U, the dtype of ``prob``.

    Example:
        >>> unary_from_softmax(torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)).flatten()
        tensor([-0.6931, -0.6931])
    """
    check_shape(prob, "prob", ["B", "L", "H", "W"])
    if not prob.is_floating_point():
        raise TypeError(f"prob: expected a floating-point tensor, got {prob.dtype}")
    n_labels = prob.shape[1]
    if scale is not None:
        scale = _number(scale, "scale")
        if not 0 < scale <= 1:
            raise ValueError(f"scale: expected a number in (0, 1], got {scale!r}")
    if clip is not None:
        clip = _number(clip, "clip")
        if not 0 < clip < 1 / max(n_labels, 1):
            raise ValueError(
                f"clip: expected a number in (0, 1/L) = (0, {1 / max(n_labels, 1):.4g}) for L = {n_labels} labels "
                f"(a floor for small probabilities), got {clip!r}"
            )
        if float(torch.tensor(clip, dtype=prob.dtype)) == 0:
            raise ValueError(f"clip: {clip!r} rounds to 0 in {prob.dtype}, so log would give -inf")
    if prob.numel():
        check_finite(prob, "prob")
        tol = max(_PROB_TOL, 2 * torch.finfo(prob.dtype).eps)
        lo, hi = float(prob.detach().min()), float(prob.detach().max())
        if lo < -tol or hi > 1 + tol:
            raise ValueError(f"prob: expected probabilities in [0, 1], got values in {lo:.4g}..{hi:.4g}")
        sums = prob.detach().sum(1, dtype=torch.float64)  # (B, H, W)
        s_lo, s_hi = float(sums.min()), float(sums.max())
        if s_lo < 1 - tol or s_hi > 1 + tol:
            raise ValueError(
                f"prob: expected probabilities summing to 1 over the L = {n_labels} labels (dim 1 of (B, L, H, W)), "
                f"got sums in {s_lo:.4g}..{s_hi:.4g}"
            )
    if scale is not None:
        prob = scale * prob + (1 - scale) / n_labels
    # within the tolerance, values past 0 or 1 are rounding: clamp them (without clip, −1e-8 would give NaN)
    return torch.log(prob.clamp(0.0 if clip is None else clip, 1.0))


def unary_from_labels(
    labels: torch.Tensor, n_labels: int, gt_prob: float = 0.5, zero_unsure: bool = True
) -> torch.Tensor:
    """U from a (possibly partial) label map: the annotated label gets probability ``gt_prob``.

    As pydensecrf's ``unary_from_labels``, negated: with ``zero_unsure`` label 0 means "unknown" (uniform
    1/L) and labels 1..L map to classes 0..L−1; otherwise labels 0..L−1 are the classes. The other classes
    share 1 − gt_prob equally.

    Refuses (naming the argument): a non-tensor ``labels`` (numpy: use ``torch.from_numpy``), a shape other
    than (B, H, W), float/complex/bool labels (``TypeError``), labels outside 0..L (``zero_unsure``) or
    0..L−1; ``n_labels`` that is not an integer ≥ 2; ``gt_prob`` outside (0, 1); ``n_labels``/``gt_prob``
    that are not numbers and a ``zero_unsure`` that is not a bool (``TypeError``).

    Args:
        labels: (B, H, W) integer label map.
        n_labels: L, the number of classes (not counting the "unknown" 0 when ``zero_unsure``), ≥ 2.
        gt_prob: the probability of the given label, in (0, 1).
        zero_unsure: whether 0 means "unknown".

    Returns:
        (B, L, H, W) float32 U = log p, on the labels' device.

    Example:
        >>> u = unary_from_labels(torch.tensor([[[0, 1, 2]]]), n_labels=2, gt_prob=0.75)
        >>> u.exp()[0, :, 0].T
        tensor([[0.5000, 0.5000],
                [0.7500, 0.2500],
                [0.2500, 0.7500]])
    """
    check_shape(labels, "labels", ["B", "H", "W"])
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor, got {labels.dtype}")
    n = _number(n_labels, "n_labels")
    if not n.is_integer() or n < 2:
        raise ValueError(f"n_labels: expected an integer >= 2, got {n_labels!r}")
    n_labels = int(n)
    gt_prob = _number(gt_prob, "gt_prob")
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob: expected a number in (0, 1), got {gt_prob!r}")
    if not isinstance(zero_unsure, bool):
        raise TypeError(f"zero_unsure: expected a bool, got {type(zero_unsure).__name__}")
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
