"""What the CRF changed: per-class pixels gained and lost, the flips old → new, erased classes, and IoU.

"Why did the CRF make things worse?" is the most-asked question about dense CRFs. :func:`crf_changes`
compares the label map before the CRF (the unary's arg-max) with the one after, and, given a ground truth,
the IoU per class, mIoU and pixel accuracy of both. :func:`flip_map` encodes each pixel's old → new pair as
one id for a coloured view.

It lives in lab.explore (not lab.unary) because the IoU is lab.train.metrics' (``confusion_matrix``,
``iou_per_class``, ``mean_iou``), which sits above lab.unary in the layers: one definition of mIoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lab.train.metrics import confusion_matrix, iou_per_class, mean_iou
from lab.unary.sources import MAX_LABELS

__all__ = ["ERASED_FRACTION", "ERASED_MIN_PIXELS", "ChangeReport", "crf_changes", "flip_backs", "flip_map"]

# A class is "erased" when the CRF took at least 80 % of its pixels: most of the object is gone, not just
# its boundary (boundary erosion of a compact object of a few thousand pixels removes well under half).
ERASED_FRACTION = 0.8
# ... and it had at least 64 pixels (8 × 8) before: smaller specks are at or below the stride-8 resolution
# of the networks here, usually unary noise that removing is the point of the CRF, not an object.
ERASED_MIN_PIXELS = 64


@dataclass(frozen=True)
class ChangeReport:
    """The label maps before and after the CRF compared (counts over all pixels of the batch).

    Per-class tuples are indexed by class id 0..L−1.

    Attributes:
        class_names: L names (``"0"``, ``"1"``, … when none were given).
        pixels: the number of pixels compared (B·H·W).
        before: pixels per class before the CRF.
        after: pixels per class after.
        gained: pixels per class that became that class (after = before + gained − lost).
        lost: pixels per class that were that class and became another.
        flips: (old, new) → pixels, old ≠ new, most pixels first (ties by class ids).
        erased: classes that lost ≥ :data:`ERASED_FRACTION` of at least :data:`ERASED_MIN_PIXELS` pixels.
        truth: pixels per class in the ground truth (None without one; ignored pixels not counted).
        iou_before: IoU per class against the truth before the CRF (None without truth; NaN for a class in
            neither that prediction nor the truth, on the pixels not ignored).
        iou_after: the same after.
        miou_before: the mean of ``iou_before`` over its non-NaN classes (lab.train.metrics.mean_iou).
        miou_after: the same after. The two means may run over different classes: a wrongly predicted class
            that the CRF removes leaves the mean (as in per-image VOC evaluation).
        accuracy_before: the fraction of truth pixels (not ignored) predicted right before the CRF.
        accuracy_after: the same after.
    """

    class_names: tuple[str, ...]
    pixels: int
    before: tuple[int, ...]
    after: tuple[int, ...]
    gained: tuple[int, ...]
    lost: tuple[int, ...]
    flips: dict[tuple[int, int], int]
    erased: tuple[int, ...]
    truth: tuple[int, ...] | None = None
    iou_before: tuple[float, ...] | None = None
    iou_after: tuple[float, ...] | None = None
    miou_before: float | None = None
    miou_after: float | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None

    @property
    def changed(self) -> int:
        """Pixels whose label the CRF changed."""
        return sum(self.flips.values())

    def table(self) -> list[dict[str, object]]:
        """One row per class present before, after or in the truth (by class id), for display.

        Keys: ``id``, ``class``, ``before``, ``after``, ``gained``, ``lost``, and with a truth ``truth``,
        ``iou_before``, ``iou_after`` (floats in 0..1, NaN where undefined).
        """
        rows = []
        for c, name in enumerate(self.class_names):
            in_truth = self.truth is not None and self.truth[c] > 0
            if not (self.before[c] or self.after[c] or in_truth):
                continue
            row: dict[str, object] = {
                "id": c,
                "class": name,
                "before": self.before[c],
                "after": self.after[c],
                "gained": self.gained[c],
                "lost": self.lost[c],
            }
            if self.truth is not None:
                row.update(truth=self.truth[c], iou_before=self.iou_before[c], iou_after=self.iou_after[c])
            rows.append(row)
        return rows

    def notes(self) -> list[str]:
        """Sentences: how much changed, each erased class and where its pixels went."""
        share = self.changed / self.pixels if self.pixels else 0.0
        out = [f"The CRF changed {self.changed} of {self.pixels} pixels ({100 * share:.3g} %)."]
        for c in self.erased:
            went = [(new, n) for (old, new), n in self.flips.items() if old == c][:3]
            to = ", ".join(f"{self.class_names[new]}: {n}" for new, n in went)
            out.append(
                f"'{self.class_names[c]}' lost {100 * self.lost[c] / self.before[c]:.3g} % of its {self.before[c]} "
                f"pixels (to {to}): a small object may have been erased; a weaker or shorter-range bilateral "
                "kernel (a smaller w_bilateral or theta_alpha) keeps it."
            )
        return out

    def __str__(self) -> str:
        rows = self.table()
        keys = list(rows[0]) if rows else ["id", "class", "before", "after", "gained", "lost"]
        lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        lines += ["| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
        lines += ["", *self.notes()]
        if self.miou_before is not None:
            lines.append(
                f"mIoU {_cell(self.miou_before)} → {_cell(self.miou_after)}; pixel accuracy "
                f"{_cell(self.accuracy_before)} → {_cell(self.accuracy_after)}."
            )
        return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _labels(x: object, name: str, allow: int | None = None) -> torch.Tensor:
    """An integer (H, W) or (B, H, W) label map as a (B, H, W) int64 tensor; ``allow`` is also accepted below 0."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"{name}: expected integer class ids, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or a torch.Tensor of class ids, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class ids, got dtype {x.dtype}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape (H, W) or (B, H, W), got {tuple(x.shape)}")
    x = x.detach().cpu().long()
    x = x[None] if x.dim() == 2 else x  # (B, H, W)
    real = x if allow is None else x[x != allow]
    if real.numel() and int(real.min()) < 0:
        raise ValueError(f"{name}: expected class ids >= 0, got a minimum of {int(real.min())}")
    if real.numel() and int(real.max()) >= MAX_LABELS:
        raise ValueError(f"{name}: expected class ids below {MAX_LABELS}, got a maximum of {int(real.max())}")
    return x


def _same_shape(x: object, name: str, like: object) -> None:
    """``x`` (a label map as given) must have the shape of ``like`` (``before`` as given)."""
    if tuple(np.shape(x)) != tuple(np.shape(like)):
        raise ValueError(f"{name}: expected shape {tuple(np.shape(like))} like before, got {tuple(np.shape(x))}")


def crf_changes(
    before: np.ndarray | torch.Tensor,
    after: np.ndarray | torch.Tensor,
    class_names: Sequence[str] | None = None,
    truth: np.ndarray | torch.Tensor | None = None,
    ignore_index: int | None = 255,
) -> ChangeReport:
    """Compare the label maps before and after the CRF, per class and, given a truth, by IoU and accuracy.

    Args:
        before: (H, W) or (B, H, W) integer class ids before the CRF (e.g. the unary's arg-max), ≥ 0.
        after: the same shape, after the CRF.
        class_names: L names; class ids must be below L. None: L = the largest id + 1, names "0", "1", ….
        truth: optional ground truth of the same shape; pixels equal to ``ignore_index`` are skipped in the
            IoU and accuracy (they still count in the before / after columns).
        ignore_index: the truth's "void" id (VOC: 255), or None. It only applies to ``truth``.

    Returns:
        A :class:`ChangeReport`: ``table()`` rows, ``notes()``, ``str()`` a Markdown table.

    Raises:
        TypeError: a label map that is not an integer numpy array or tensor; ``class_names`` a string.
        ValueError: not (H, W) / (B, H, W), shapes that differ, ids below 0, ids ≥ 256 or ≥ len(class_names).

    Example:
        >>> r = crf_changes(np.array([[0, 0, 1]]), np.array([[0, 0, 0]]), ["background", "cat"])
        >>> r.gained, r.lost, r.flips
        ((1, 0), (0, 1), {(1, 0): 1})
    """
    b = _labels(before, "before")
    a = _labels(after, "after")
    _same_shape(after, "after", before)
    t = None
    if truth is not None:
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise TypeError(f"ignore_index: expected an int or None, got {type(ignore_index).__name__}")
        t = _labels(truth, "truth", allow=ignore_index)
        _same_shape(truth, "truth", before)
    real_truth = None if t is None else t if ignore_index is None else t[t != ignore_index]  # (K,) or (B, H, W)
    maps = {"before": b, "after": a, "truth": real_truth}
    if class_names is None:
        n = max((int(x.max()) + 1 for x in maps.values() if x is not None and x.numel()), default=0)
        names = tuple(str(c) for c in range(n))
    else:
        if isinstance(class_names, str):
            raise TypeError("class_names: expected a sequence of names, got a str")
        names = tuple(str(c) for c in class_names)
        n = len(names)
        for name, x in maps.items():
            if x is not None and x.numel() and int(x.max()) >= n:
                raise ValueError(
                    f"{name}: expected class ids below len(class_names) = {n}, got a maximum of {int(x.max())}"
                )
    moves = confusion_matrix(a, b, n)  # (L, L): row = class before, column = class after
    stay = moves.diagonal()
    off = moves.clone()
    off.fill_diagonal_(0)
    flips = {(int(i), int(j)): int(off[i, j]) for i, j in off.nonzero().tolist()}
    flips = dict(sorted(flips.items(), key=lambda kv: (-kv[1], kv[0])))
    before_n, after_n = moves.sum(1), moves.sum(0)
    lost, gained = before_n - stay, after_n - stay
    erased = tuple(
        c
        for c in range(n)
        if int(before_n[c]) >= ERASED_MIN_PIXELS and int(lost[c]) >= ERASED_FRACTION * int(before_n[c])
    )
    extra = {}
    if t is not None:
        target = t if ignore_index is None else torch.where(t == ignore_index, -1, t)  # −1: outside 0..L−1
        cm_before, cm_after = confusion_matrix(b, target, n), confusion_matrix(a, target, n)
        valid = int(cm_before.sum())
        extra = dict(
            truth=tuple(int(x) for x in cm_before.sum(1)),
            iou_before=tuple(float(x) for x in iou_per_class(cm_before)),
            iou_after=tuple(float(x) for x in iou_per_class(cm_after)),
            miou_before=mean_iou(cm_before),
            miou_after=mean_iou(cm_after),
            accuracy_before=int(cm_before.trace()) / valid if valid else math.nan,
            accuracy_after=int(cm_after.trace()) / valid if valid else math.nan,
        )
    return ChangeReport(
        class_names=names,
        pixels=b.numel(),
        before=tuple(int(x) for x in before_n),
        after=tuple(int(x) for x in after_n),
        gained=tuple(int(x) for x in gained),
        lost=tuple(int(x) for x in lost),
        flips=flips,
        erased=erased,
        **extra,
    )


def flip_map(
    before: np.ndarray | torch.Tensor, after: np.ndarray | torch.Tensor, num_classes: int | None = None
) -> np.ndarray:
    """One id per changed pixel for its old → new pair: ``old · L + new``; −1 where the label stayed.

    Decode with ``old, new = divmod(id, L)``. Pass the same ``num_classes`` (e.g. ``len(class_names)``)
    for every image, so that one pair keeps one id across images (:func:`lab.explore.voc_view.flip_pairs_view`
    colours the pairs of one image by their pixel count).

    Args:
        before: (H, W) or (B, H, W) integer class ids before the CRF, ≥ 0.
        after: the same shape, after.
        num_classes: L, above every id; None: the largest id + 1.

    Returns:
        int64 numpy array of ``before``'s shape.

    Example:
        >>> flip_map(np.array([[0, 1, 2]]), np.array([[0, 2, 2]]), num_classes=3).tolist()
        [[-1, 5, -1]]
    """
    b, a = _labels(before, "before"), _labels(after, "after")
    _same_shape(after, "after", before)
    top = max([int(x.max()) + 1 for x in (b, a) if x.numel()], default=0)
    if num_classes is None:
        num_classes = top
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes: expected an int, got {type(num_classes).__name__}")
    elif num_classes < top:
        raise ValueError(f"num_classes: expected at least {top} (the largest class id + 1), got {num_classes}")
    ids = torch.where(b == a, -1, b * num_classes + a)
    return ids.reshape(np.shape(before)).numpy()


def flip_backs(labels: Sequence[object]) -> list[int]:
    """Per iteration t ≥ 2, the pixels that flipped at t − 1 and flipped back at t: mean field's 2-cycle.

    A pixel with labels (a, b, a) at (t − 2, t − 1, t), b ≠ a, is oscillating, not converging. Parallel mean
    field can fall into such a cycle (a negative weight, a µ that rewards disagreement, a large weight): a
    signal read off the arg-max maps alone, without the KL.

    Args:
        labels: the arg-max label maps of Q_0 … Q_T: integer arrays or tensors of one shape.

    Returns:
        T − 1 counts, for t = 2 … T ([] when T < 2).

    Example:
        >>> flip_backs([np.array([[0, 0, 1]]), np.array([[1, 0, 1]]), np.array([[0, 0, 0]])])
        [1]
    """
    maps = []
    for t, m in enumerate(labels):  # any integer ids: only equality is read, so no range check (the app calls
        name = f"labels[{t}]"  # this on every rerun, on T + 1 maps)
        m = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m
        if not isinstance(m, np.ndarray) or not np.issubdtype(m.dtype, np.integer):
            what = m.dtype if isinstance(m, np.ndarray) else type(m).__name__
            raise TypeError(f"{name}: expected an integer array of class ids, got {what}")
        if maps and m.shape != maps[0].shape:
            raise ValueError(f"{name}: expected shape {maps[0].shape} like labels[0], got {m.shape}")
        maps.append(m)
    return [int(((maps[t] == maps[t - 2]) & (maps[t] != maps[t - 1])).sum()) for t in range(2, len(maps))]
