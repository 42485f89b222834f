"""The overlay ``crf-lab refine --overlay`` writes: labels over the image, a legend, optionally before | after.

:func:`overlay_figure` blends the label colours over the image (:func:`lab.viz.overlay`), and beside it, with
``before``, the unary's arg-max the same way (unary arg-max | CRF result, each panel titled). To the right a
legend lists the classes present (in either panel), each with its palette colour
(:func:`lab.viz.palette.colorize`) and its name: the unary's class names where it has them (the VOC network's
21 classes), else the label numbers. The legend wraps into more columns when the classes do not fit the
image's height. Text is Pillow's built-in font, scaled with the image.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["overlay_figure", "present_labels"]


def present_labels(*maps: np.ndarray) -> list[int]:
    """The labels that occur in any of the label maps, ascending.

    Example:
        >>> present_labels(np.array([[3, 0]]), np.array([[0, 5]]))
        [0, 3, 5]
    """
    seen = np.zeros(256, dtype=bool)
    for m in maps:
        seen[np.unique(m)] = True
    return [int(i) for i in np.flatnonzero(seen)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except (TypeError, ValueError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay_figure(
    image: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...] | list[str] | None = None,
    *,
    before: np.ndarray | None = None,
    titles: tuple[str, str] = ("unary (arg-max)", "CRF"),
    legend: bool = True,
) -> np.ndarray:
    """The overlay picture: (H', W', 3) uint8.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) integer class ids 0..255 (the CRF's result).
        names: class names by id; None (or too short a list): the label numbers.
        before: (H, W) class ids of the unary's arg-max; given, the picture is before | after with titles.
        titles: the two panels' titles (with ``before`` only).
        legend: add the legend to the right.

    Example:
        >>> fig = overlay_figure(np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), int), legend=False)
        >>> fig.shape
        (40, 60, 3)
    """
    from PIL import Image, ImageDraw

    from lab.viz import overlay
    from lab.viz.palette import colorize

    h, w = labels.shape
    text = max(10, min(48, round(max(h, w) / 40)))  # font size in pixels
    pad = max(2, text // 3)
    font = _font(text)
    panels = [overlay(image, labels)]
    if before is not None:
        panels.insert(0, overlay(image, before))
    title_h = text + 2 * pad if before is not None else 0
    ids = present_labels(labels) if before is None else present_labels(before, labels)

    def name(i: int) -> str:
        return str(names[i]) if names is not None and i < len(names) else str(i)

    gap = pad * 2 if before is not None else 0
    body_w = len(panels) * w + gap * (len(panels) - 1)
    legend_w, rows, column_w, line_h = 0, 0, 0, text + pad
    if legend:
        rows = max(1, (h - pad) // line_h)
        columns = math.ceil(len(ids) / rows)
        widest = max(font.getbbox(name(i))[2] for i in ids)
        column_w = text + pad + widest + 2 * pad
        legend_w = columns * column_w + pad
    canvas = Image.new("RGB", (body_w + legend_w, h + title_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, panel in enumerate(panels):
        x = k * (w + gap)
        canvas.paste(Image.fromarray(panel), (x, title_h))
        if before is not None:
            draw.text((x + pad, pad), titles[k], fill=(0, 0, 0), font=font)
    if legend:
        colours = colorize(np.array(ids))
        for n, (i, colour) in enumerate(zip(ids, colours, strict=True)):
            x = body_w + pad + (n // rows) * column_w
            y = title_h + pad + (n % rows) * line_h
            draw.rectangle((x, y, x + text - 1, y + text - 1), fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
            draw.text((x + text + pad, y), name(i), fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
