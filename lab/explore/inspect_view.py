"""The app's pixel inspector, scribbles and θ notes, as arrays and text: what the widgets show, testable alone.

A click on a displayed image arrives in the browser's pixels (the image enlarged by whole pixels, then fitted
to its column): :func:`display_to_pixel` maps it back to the working-size pixel. :func:`footprint_image`
draws a kernel row k(f_i, ·) (:class:`lab.explore.inspector.PixelReport`'s footprints) over the photo: which
pixels vote for pixel i, and how strongly. :func:`mark_pixel` puts a cross on the inspected pixel.
:func:`strokes_from_drawing` reads the scribble canvas (or an uploaded stroke PNG) at the working size, and
:func:`theta_note` says what a bandwidth in pixels means at the working size.
"""

from __future__ import annotations

import numbers

import numpy as np

from lab.unary.scribbles import strokes_from_canvas

__all__ = ["display_to_pixel", "footprint_image", "mark_pixel", "strokes_from_drawing", "theta_note"]


def display_to_pixel(click: dict, shape: tuple[int, int]) -> tuple[int, int]:
    """The working-size pixel (y, x) under a click on the image as displayed.

    Args:
        click: ``streamlit_image_coordinates``' value: ``x``, ``y`` (the click, in displayed pixels from the
            image's top-left corner) and ``width``, ``height`` (the image as displayed).
        shape: (H, W) of the working-size image the display shows (enlarged by any factor).

    Returns:
        (y, x), row and column, each clipped into the image (a click on the last displayed pixel's far edge).

    Example:
        >>> display_to_pixel({"x": 511, "y": 0, "width": 512, "height": 256}, (64, 128))
        (0, 127)
    """
    if not isinstance(click, dict) or not {"x", "y", "width", "height"} <= set(click):
        raise ValueError(f"click: expected a dict with x, y, width and height, got {click!r}")
    values = [click[k] for k in ("x", "y", "width", "height")]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) for v in values):
        raise ValueError(f"click: expected finite numbers for x, y, width and height, got {click!r}")
    height, width = shape
    if click["width"] <= 0 or click["height"] <= 0:
        raise ValueError(f"click: expected a displayed width and height > 0, got {click!r}")
    x = int(np.floor(click["x"] * width / click["width"]))
    y = int(np.floor(click["y"] * height / click["height"]))
    return min(max(y, 0), height - 1), min(max(x, 0), width - 1)


def mark_pixel(rgb: np.ndarray, y: int, x: int, colour=(255, 255, 255), arm: int = 3) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 image with a cross of ``arm`` pixels each way around (y, x), the pixel kept.

    The pixel itself keeps its colour (its label stays readable); the arms are drawn in ``colour`` with a black
    outline pixel at their ends so the cross shows on light and dark images alike.
    """
    out = np.array(rgb, copy=True)
    if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
        raise ValueError(f"rgb: expected an (H, W, 3) uint8 image, got {out.shape} {out.dtype}")
    height, width = out.shape[:2]
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"y, x: expected a pixel inside {height}×{width}, got ({y}, {x})")
    for d in range(1, arm + 2):
        shade = colour if d <= arm else (0, 0, 0)
        for yy, xx in ((y - d, x), (y + d, x), (y, x - d), (y, x + d)):
            if 0 <= yy < height and 0 <= xx < width:
                out[yy, xx] = shade
    return out


def footprint_image(image: np.ndarray, footprint: np.ndarray, y: int, x: int, cmap: str = "inferno") -> np.ndarray:
    """A kernel row k(f_i, f_j) over the photo: each pixel j in the colormap, as opaque as its weight.

    Pixels that barely vote (k ≈ 0) show the faded grey photo; strong voters its colour at ``cmap``'s top. The
    scale is 0..1, the kernel's own (1 at the pixel itself), the same for every pixel and θ.

    Args:
        image: (H, W, 3) uint8 RGB.
        footprint: (H, W) k(f_i, ·) in 0..1.
        y: the pixel i's row (marked with a cross).
        x: its column.
        cmap: a matplotlib colormap name.

    Returns:
        (H, W, 3) uint8.
    """
    from matplotlib import colormaps

    from lab.explore.voc_view import faded_grey

    k = np.asarray(footprint, np.float64)
    if k.shape != np.asarray(image).shape[:2]:
        raise ValueError(f"footprint: expected the image's (H, W) = {np.asarray(image).shape[:2]}, got {k.shape}")
    if not np.isfinite(k).all() or k.min() < 0 or k.max() > 1 + 1e-9:
        raise ValueError("footprint: expected kernel values in 0..1")
    grey = faded_grey(image, 0.5).astype(np.float64)
    heat = colormaps[cmap](np.clip(k, 0, 1))[..., :3] * 255
    alpha = np.clip(k, 0, 1)[..., None] ** 0.5  # √k: the half-weight ring is visible, not only the centre
    out = np.clip(np.rint((1 - alpha) * grey + alpha * heat), 0, 255).astype(np.uint8)
    return mark_pixel(out, y, x, colour=(0, 255, 255))


def strokes_from_drawing(drawing: np.ndarray, shape: tuple[int, int], class_colours, tolerance: float = 40.0):
    """The (H, W) stroke map at the working size from a drawing of any whole multiple of it.

    Args:
        drawing: (kH, kW, 4) RGBA (transparent = not marked; the canvas) or (kH, kW, 3) RGB (black = not marked;
            an uploaded stroke PNG), in the class colours.
        shape: (H, W), the working size.
        class_colours: the stroke colour of class 0, 1, … (the app's class colours).
        tolerance: as in :func:`lab.unary.strokes_from_canvas`.

    Returns:
        (H, W) int64: 0 not marked, k = class k − 1 (a block of the drawing counts as marked where any of its
        pixels is, with that pixel's class).
    """
    drawing = np.asarray(drawing)
    height, width = shape
    if drawing.ndim != 3 or drawing.shape[2] not in (3, 4):
        raise ValueError(f"drawing: expected an (H, W, 3) or (H, W, 4) image, got shape {drawing.shape}")
    dh, dw = drawing.shape[:2]
    if dh % height or dw % width or dh // height != dw // width:
        raise ValueError(
            f"drawing: expected the working size {width}×{height} or a whole multiple of it, got {dw}×{dh}"
        )
    if drawing.shape[2] == 3:
        alpha = np.where(drawing.max(-1) > 0, 255, 0).astype(drawing.dtype)
        drawing = np.concatenate([drawing, alpha[..., None]], -1)
    strokes = strokes_from_canvas(drawing, class_colours, tolerance)
    k = dh // height
    if k == 1:
        return strokes
    blocks = strokes.reshape(height, k, width, k).transpose(0, 2, 1, 3).reshape(height, width, k * k)
    return blocks.max(-1)  # a marked pixel in the block marks it (the highest class where two meet)


def theta_note(theta: float, side: int) -> str:
    """A bandwidth in pixels and as a share of the working image's longer side.

    Example:
        >>> theta_note(80, 256)
        '80 px = 31 % of the longer side (256 px)'
    """
    if not side > 0:
        raise ValueError(f"side: expected a positive size in pixels, got {side!r}")
    share = 100 * theta / side
    percent = f"{share:.0f}" if share >= 10 else f"{share:.2g}"
    return f"{theta:g} px = {percent} % of the longer side ({side} px)"
