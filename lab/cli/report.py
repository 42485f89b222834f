"""What an image's line says about its unary and its result: the unary check's verdict, the classes found."""

from __future__ import annotations

import numpy as np

__all__ = ["REPORT_PIXELS", "class_summary", "unary_summary"]

# unary_report reads every value it gets in float64; on at most 128 × 128 pixels (a strided copy of larger
# unaries) it takes ≈ 15 ms at L = 21 on 2 cores against ≈ 70–90 ms on 256 × 256 (measured 2026-12-02), so
# the check stays a few per cent of a refine
REPORT_PIXELS = 128 * 128


def class_summary(labels: np.ndarray, names: tuple[str, ...], most: int = 4) -> str:
    """The classes present in a label map by share of pixels, e.g. ``"cat 77 %, background 23 %"``.

    Example:
        >>> class_summary(np.array([[8, 8, 8, 0]]), ("background",) + ("x",) * 7 + ("cat",))
        'cat 75 %, background 25 %'
    """
    counts = np.bincount(labels.ravel(), minlength=len(names))
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i]]
    shares = [100 * counts[i] / labels.size for i in order]
    parts = [f"{names[i]} {s:.0f} %" if s >= 0.5 else f"{names[i]} <1 %" for i, s in zip(order, shares, strict=True)]
    return ", ".join(parts[:most]) + (f", +{len(parts) - most} more" if len(parts) > most else "")


def unary_summary(unary) -> list[str]:
    """The unary report's verdict for an image's line: one ``unary: …`` line, then one ``warning: …`` per finding.

    The report reads a strided copy above :data:`REPORT_PIXELS` pixels
    (:func:`lab.explore.voc_view.report_sample`), which the first line then names.

    Example:
        >>> import torch
        >>> p = torch.full((1, 2, 4, 4), 0.5)  # probabilities where U = log p belongs
        >>> lines = unary_summary(p)
        >>> lines[0]
        'unary: probabilities, values 0.5..0.5, near one-hot 0 % of pixels, mean entropy 0.693 of log L = 0.693 nats'
        >>> lines[1][:60]
        'warning: These look like probabilities, not log-probabilitie'
    """
    from lab.explore.voc_view import report_sample
    from lab.unary import unary_report

    sample, stride = report_sample(unary, REPORT_PIXELS)
    r = unary_report(sample)
    where = "" if stride == 1 else f" (sampled: 1 pixel in {stride} × {stride})"
    head = (
        f"unary: {r.kind}, values {r.value_min:.3g}..{r.value_max:.3g}, near one-hot "
        f"{100 * r.near_one_hot_fraction:.3g} % of pixels, mean entropy {r.entropy_mean:.3g} of log L = "
        f"{r.entropy_max:.3g} nats{where}"
    )
    return [head, *(f"warning: {m}" for m in r.messages)]
