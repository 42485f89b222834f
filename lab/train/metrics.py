"""Segmentation metrics: the confusion matrix, the mean IoU (PASCAL VOC's mIoU) and the trimap accuracy.

The trimap accuracy (Kohli et al. 2009; Krähenbühl & Koltun 2011, Fig. 4) is the pixel accuracy inside a
band of ``radius`` pixels around the ground truth's label boundaries: where a CRF is meant to help, and
where a stride-8 network's blobs are wrong. The band is made from the label map alone: a boundary map (a
pixel whose label differs from a 4-neighbour's, both sides marked) dilated by a (2r + 1) × (2r + 1) max-pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab._checks import check_shape

__all__ = ["boundary_band", "confusion_matrix", "iou_per_class", "mean_iou", "trimap_accuracy", "trimap_counts"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Count pixels per (true class, predicted class).

    Args:
        pred: (B, H, W) predicted class ids in 0..L-1.
        target: (B, H, W) true class ids; ids outside 0..L-1 (e.g. 255 "void") are ignored.
        num_classes: L.

    Returns:
        (L, L) int64 counts, row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(torch.tensor([[[0, 1, 1]]]), torch.tensor([[[0, 1, 0]]]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    check_shape(pred, "pred", ["B", "H", "W"])
    if pred.shape != target.shape:
        raise ValueError(f"target: expected shape {tuple(pred.shape)} like pred, got {tuple(target.shape)}")
    valid = (target >= 0) & (target < num_classes)
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU_l = TP / (TP + FP + FN) per class; NaN for a class absent from both prediction and truth.

    Args:
        confusion: (L, L) counts from :func:`confusion_matrix`.

    Returns:
        (L,) float64.
    """
    c = confusion.to(torch.float64)
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """The mean over classes of :func:`iou_per_class`, classes absent everywhere left out (in 0..1).

    Example:
        >>> round(mean_iou(torch.tensor([[1, 1], [0, 1]])), 4)  # IoU 1/2 and 1/2
        0.5
    """
    return float(torch.nanmean(iou_per_class(confusion)))


def boundary_band(target: torch.Tensor, radius: int) -> torch.Tensor:
    """The pixels within ``radius`` pixels (Chebyshev distance) of a label boundary of ``target``.

    A boundary pixel is one whose label differs from its left, right, upper or lower neighbour's (both
    pixels of such a pair are marked; a change to or from void counts too). The band is the boundary map
    dilated by a (2·radius + 1)² max-pool, so ``radius = 0`` is the boundary map itself.

    Args:
        target: (B, H, W) class ids.
        radius: half-width of the band in pixels, >= 0.

    Returns:
        (B, H, W) bool.

    Example:
        >>> boundary_band(torch.tensor([[[0, 0, 0, 1, 1, 1]]]), 1).int().tolist()
        [[[0, 1, 1, 1, 1, 0]]]
    """
    check_shape(target, "target", ["B", "H", "W"])
    if int(radius) < 0:
        raise ValueError(f"radius: expected an integer >= 0, got {radius!r}")
    edge = torch.zeros(target.shape, dtype=torch.bool, device=target.device)
    horizontal = target[:, :, 1:] != target[:, :, :-1]  # (B, H, W-1)
    vertical = target[:, 1:, :] != target[:, :-1, :]  # (B, H-1, W)
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    r = int(radius)
    if r == 0:
        return edge
    band = F.max_pool2d(edge[:, None].float(), kernel_size=2 * r + 1, stride=1, padding=r)
    return band[:, 0] > 0


def trimap_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, radius: int) -> torch.Tensor:
    """Correct and counted pixels inside the boundary band of ``target`` (void pixels not counted).

    Counts add over batches and processes; :func:`trimap_accuracy` turns them into the accuracy.

    Args:
        pred: (B, H, W) predicted class ids.
        target: (B, H, W) true class ids; ids outside 0..L-1 (e.g. 255 "void") are ignored.
        num_classes: L.
        radius: the band's half-width in pixels (see :func:`boundary_band`).

    Returns:
        (2,) int64: [correct, counted].

    Example:
        >>> trimap_counts(torch.tensor([[[0, 0, 1, 1, 1, 1]]]), torch.tensor([[[0, 0, 0, 1, 1, 1]]]), 2, 1).tolist()
        [3, 4]
    """
    check_shape(pred, "pred", ["B", "H", "W"])
    if pred.shape != target.shape:
        raise ValueError(f"target: expected shape {tuple(pred.shape)} like pred, got {tuple(target.shape)}")
    counted = boundary_band(target, radius) & (target >= 0) & (target < num_classes)
    correct = counted & (pred == target)
    return torch.stack([correct.sum(), counted.sum()]).to(torch.int64)


def trimap_accuracy(counts: torch.Tensor) -> float:
    """Pixel accuracy in the band from :func:`trimap_counts` (in 0..1; NaN for an empty band).

    Example:
        >>> trimap_accuracy(torch.tensor([3, 4]))
        0.75
    """
    correct, counted = (int(c) for c in counts)
    return correct / counted if counted > 0 else float("nan")
