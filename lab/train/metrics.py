"""Segmentation metrics: the confusion matrix and the mean intersection over union (PASCAL VOC's mIoU)."""

from __future__ import annotations

import torch

from lab._checks import check_shape

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou"]


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
