"""A seeded synthetic segmentation set: shapes on cluttered textured backgrounds, with exact pixel labels.

The class of an object is its *shape* (disc, square, triangle, ring, cross); colour does not decide it,
because every class draws its colour from the same palette as the others and as the background. Scenes
are built to show the failure a dense CRF exists to fix: objects overlap and touch, edges are blurred and
noisy, the background is textured with stripes, colour blobs, line clutter and specks, so that a coarse
(output stride 8) network predicts the right blobs but misplaces their boundaries.

Geometry (pixel units; x = column, y = row; the pixel (row r, column c) has its centre at (x=c, y=r)).
Each object is a :class:`Shape` with centre (cx, cy), size s, angle θ (radians) and one extra number ``aux``.
A local point (u, v) maps to the image as x = cx + u·cosθ − v·sinθ, y = cy + u·sinθ + v·cosθ.

====  ==========  =====================================================================
id    class       region
====  ==========  =====================================================================
0     background  everything not covered by an object
1     disc        distance to centre ≤ s
2     square      local |u| ≤ 0.8·s and |v| ≤ 0.8·s
3     triangle    the triangle with local vertices s·(cos φ, sin φ), φ = −90°, 30°, 150°
4     ring        aux·s ≤ distance to centre ≤ s (the hole shows what lies below)
5     cross       the union of local |u| ≤ s, |v| ≤ aux·s and |u| ≤ aux·s, |v| ≤ s
====  ==========  =====================================================================

Objects are painted in order; a pixel's label is the class of the last object whose region holds the pixel
centre. The image is anti-aliased (coverage from the signed distance), then blurred and noised; the labels
are not.

Difficulty, per image: 2–4 objects of size s ∈ [7, 15]·min(H, W)/64 px, half of them placed touching or
overlapping an earlier one; 3–8 clutter lines and 5–15 specks; uneven illumination (×0.8..1.2); Gaussian blur
σ ∈ [0.6, 1.3] px; Gaussian noise σ ∈ [6, 16] (0..255 units).

Each image depends only on (seed, split, index), so items are reproducible one by one and the three splits
never share an image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lab._checks import check_choice

__all__ = ["CLASS_NAMES", "Scene", "Shape", "SyntheticShapes", "render_scene"]

CLASS_NAMES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross")

# Colours objects and background are painted with, shared by every class (0..255 RGB).
_PAINT = np.array(
    [
        [200, 60, 50],
        [60, 150, 70],
        [60, 90, 190],
        [210, 190, 60],
        [150, 80, 170],
        [70, 170, 180],
        [220, 140, 70],
        [130, 130, 130],
        [90, 60, 40],
        [200, 200, 190],
    ],
    dtype=np.float64,
)

_SPLITS = {"train": 0, "val": 1, "test": 2}
_TRIANGLE_ANGLES = np.deg2rad([-90.0, 30.0, 150.0])


@dataclass(frozen=True)
class Shape:
    """One object of a scene; see the module docstring for the region each class covers.

    Attributes:
        label: class id in 1..5 (index into ``CLASS_NAMES``).
        cx: centre column x in pixels.
        cy: centre row y in pixels.
        size: the size s in pixels.
        angle: rotation θ in radians.
        aux: ring: inner/outer radius ratio; cross: arm half-width / arm half-length; unused (0) otherwise.
    """

    label: int
    cx: float
    cy: float
    size: float
    angle: float
    aux: float = 0.0

    @property
    def name(self) -> str:
        """The class name, e.g. ``"ring"``."""
        return CLASS_NAMES[self.label]


@dataclass(frozen=True)
class Scene:
    """A rendered scene.

    Attributes:
        image: (H, W, 3) uint8 RGB, 0..255.
        label: (H, W) uint8 class ids, 0 = background.
        instance: (H, W) uint8; 0 = background, k = the k-th object of ``shapes`` (1-based).
        shapes: the objects in painting order.
    """

    image: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    shapes: tuple[Shape, ...]


# ---------------------------------------------------------------------------------------------------------------
# Signed distances (pixels; negative inside). x, y: (N,) pixel-centre coordinates.


def _segment_distance(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, E) distance from each point to each segment a[e] -> b[e]; a, b: (E, 2)."""
    d = b - a  # (E, 2)
    px = x[:, None] - a[None, :, 0]  # (N, E)
    py = y[:, None] - a[None, :, 1]
    t = np.clip((px * d[:, 0] + py * d[:, 1]) / np.maximum((d * d).sum(1), 1e-12), 0.0, 1.0)
    return np.hypot(px - t * d[:, 0], py - t * d[:, 1])


def _polygon_sdf(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(N,) signed distance to a simple polygon (V, 2), inside by the even-odd rule."""
    a, b = vertices, np.roll(vertices, -1, axis=0)
    dist = _segment_distance(x, y, a, b).min(1)
    ya, yb = a[:, 1][None], b[:, 1][None]
    straddles = (ya > y[:, None]) != (yb > y[:, None])  # (N, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[:, 0][None] + (y[:, None] - ya) * (b[:, 0] - a[:, 0])[None] / (yb - ya)
    inside = (straddles & (x[:, None] < x_cross)).sum(1) % 2 == 1
    return np.where(inside, -dist, dist)


def _to_image(shape: Shape, local: np.ndarray) -> np.ndarray:
    """(V, 2) local (u, v) -> image (x, y)."""
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    u, v = local[:, 0], local[:, 1]
    return np.stack([shape.cx + u * c - v * s, shape.cy + u * s + v * c], 1)


def _outline(shape: Shape) -> np.ndarray:
    """(V, 2) polygon of a square, triangle or cross in image coordinates."""
    s = shape.size
    if shape.name == "square":
        h = 0.8 * s
        local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif shape.name == "triangle":
        local = s * np.stack([np.cos(_TRIANGLE_ANGLES), np.sin(_TRIANGLE_ANGLES)], 1)
    elif shape.name == "cross":
        w = shape.aux * s
        local = np.array(
            [[w, -s], [w, -w], [s, -w], [s, w], [w, w], [w, s], [-w, s], [-w, w], [-s, w], [-s, -w], [-w, -w], [-w, -s]]
        )
    else:
        raise ValueError(f"shape: no polygon outline for class {shape.name!r}")
    return _to_image(shape, local)


def _shape_sdf(shape: Shape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) signed distance in pixels to the shape's region."""
    if shape.name in ("disc", "ring"):
        r = np.hypot(x - shape.cx, y - shape.cy)
        outer = r - shape.size
        if shape.name == "disc":
            return outer
        return np.maximum(outer, shape.aux * shape.size - r)
    return _polygon_sdf(x, y, _outline(shape))


# ---------------------------------------------------------------------------------------------------------------
# Textures


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(H, W) bilinear upsampling of a (cells+1)² grid of U(0, 1) values: a smooth random field."""
    grid = rng.random((cells + 1, cells + 1))
    gy = np.linspace(0, cells, h)
    gx = np.linspace(0, cells, w)
    y0 = np.minimum(gy.astype(int), cells - 1)
    x0 = np.minimum(gx.astype(int), cells - 1)
    fy, fx = (gy - y0)[:, None], (gx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _stripes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sinusoidal stripes in -1..1 with random orientation, period (4..12 px) and phase."""
    theta = rng.uniform(0, math.pi)
    period = rng.uniform(4.0, 12.0)
    return np.sin((x * math.cos(theta) + y * math.sin(theta)) * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi))


def _colour(rng: np.random.Generator) -> np.ndarray:
    """(3,) a paint colour with a per-object jitter."""
    return np.clip(_PAINT[rng.integers(len(_PAINT))] + rng.normal(0.0, 12.0, 3), 0, 255)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image, reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    h, w = image.shape[:2]
    p = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = sum(k[i] * p[i : i + h] for i in range(len(k)))
    p = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(k[i] * p[:, i : i + w] for i in range(len(k)))


# ---------------------------------------------------------------------------------------------------------------
# Scenes


def _random_shapes(rng: np.random.Generator, h: int, w: int) -> list[Shape]:
    """2..4 objects; about half of them placed touching or overlapping an earlier one."""
    scale = min(h, w) / 64.0
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(2, 5))):
        label = int(rng.integers(1, len(CLASS_NAMES)))
        size = rng.uniform(7.0, 15.0) * scale
        aux = {"ring": rng.uniform(0.45, 0.65), "cross": rng.uniform(0.28, 0.4)}.get(CLASS_NAMES[label], 0.0)
        for _attempt in range(20):
            if shapes and rng.random() < 0.5:  # touch or overlap a previous object
                other = shapes[int(rng.integers(len(shapes)))]
                phi = rng.uniform(0, 2 * math.pi)
                dist = (other.size + size) * rng.uniform(0.65, 0.95)
                cx, cy = other.cx + dist * math.cos(phi), other.cy + dist * math.sin(phi)
            else:
                cx, cy = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
            inside = 0.5 * size <= cx <= w - 1 - 0.5 * size and 0.5 * size <= cy <= h - 1 - 0.5 * size
            # reject heavy overlap: an object hidden behind another teaches nothing
            apart = all(math.hypot(cx - o.cx, cy - o.cy) > 0.6 * (o.size + size) for o in shapes)
            if inside and apart:
                break
        shapes.append(Shape(label, float(cx), float(cy), float(size), float(rng.uniform(0, 2 * math.pi)), float(aux)))
    return shapes


def _background(rng: np.random.Generator, h: int, w: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(H, W, 3) float: two paint colours mixed by a smooth field, stripes, line clutter and specks."""
    mix = _smooth_field(rng, h, w, cells=int(rng.integers(2, 6)))[:, :, None]
    bg = _colour(rng) * (1 - mix) + _colour(rng) * mix
    bg *= 1.0 + rng.uniform(0.05, 0.25) * _stripes(rng, x, y).reshape(h, w, 1)
    flat_x, flat_y = x.ravel(), y.ravel()
    n_lines = int(rng.integers(3, 9))
    ends = rng.uniform(0, 1, (n_lines, 4)) * [w, h, w, h]
    dist = _segment_distance(flat_x, flat_y, ends[:, :2], ends[:, 2:])  # (N, lines)
    for i in range(n_lines):
        half = rng.uniform(0.4, 1.3)
        alpha = np.clip(half + 0.5 - dist[:, i], 0, 1).reshape(h, w, 1)
        bg = bg * (1 - alpha) + _colour(rng) * alpha
    n_specks = int(rng.integers(5, 16))
    centres = rng.uniform(0, 1, (n_specks, 2)) * [w, h]
    for i in range(n_specks):
        r = rng.uniform(0.7, 2.2)
        alpha = np.clip(r + 0.5 - np.hypot(x - centres[i, 0], y - centres[i, 1]), 0, 1)[:, :, None]
        bg = bg * (1 - alpha) + _colour(rng) * alpha
    return bg


def render_scene(seed: int | np.random.Generator | list[int], image_size: int | tuple[int, int] = 64) -> Scene:
    """Render one random scene: image, labels, instances and the objects' geometry.

    Args:
        seed: an int or list of ints (``numpy.random.default_rng`` seed), or a Generator (consumed).
        image_size: H = W, or (H, W), in pixels, each ≥ 16.

    Returns:
        A :class:`Scene` with a (H, W, 3) uint8 image and (H, W) uint8 label and instance maps.

    Example:
        >>> scene = render_scene(0, 32)
        >>> scene.image.shape, scene.label.shape, [s.name for s in scene.shapes]
        ((32, 32, 3), (32, 32), ['ring', 'cross', 'ring', 'triangle'])
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h < 16 or w < 16:
        raise ValueError(f"image_size: expected at least 16 pixels per side, got {image_size!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    shapes = _random_shapes(rng, h, w)
    image = _background(rng, h, w, x, y)
    label = np.zeros((h, w), np.uint8)
    instance = np.zeros((h, w), np.uint8)
    for k, shape in enumerate(shapes, start=1):
        sdf = _shape_sdf(shape, x.ravel(), y.ravel()).reshape(h, w)
        inside = sdf <= 0  # exact label: the pixel centre lies in the region
        label[inside] = shape.label
        instance[inside] = k
        # the object's surface: a paint colour, a linear shading ramp and, often, stripes of its own
        paint = _colour(rng)
        ramp = 1.0 + rng.uniform(-0.2, 0.2) * (x - shape.cx) / max(shape.size, 1.0)
        surface = paint * ramp[:, :, None]
        if rng.random() < 0.5:
            surface = surface * (1.0 + rng.uniform(0.1, 0.3) * _stripes(rng, x, y)[:, :, None])
        alpha = np.clip(0.5 - sdf, 0.0, 1.0)[:, :, None]  # anti-aliased coverage
        image = image * (1 - alpha) + surface * alpha
    image = image * (0.8 + 0.4 * _smooth_field(rng, h, w, cells=2))[:, :, None]  # uneven illumination
    image = _gaussian_blur(image, rng.uniform(0.6, 1.3))
    image = image + rng.normal(0.0, rng.uniform(6.0, 16.0), image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(image=image, label=label, instance=instance, shapes=tuple(shapes))


class SyntheticShapes(Dataset):
    """Seeded synthetic segmentation split: shapes on cluttered backgrounds (see the module docstring).

    All items are rendered when the split is built (≈7 ms per 64×64 image on one core) and kept as uint8.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; the splits never share an image.
        size: number of images.
        image_size: H = W, or (H, W), in pixels.
        seed: the dataset seed; the same (seed, split, index) always gives the same image.

    Attributes:
        class_names: ``CLASS_NAMES``; ``num_classes`` = L = 6 including background.
        scenes: the rendered :class:`Scene` objects, with geometry.

    Example:
        >>> ds = SyntheticShapes("val", size=2, image_size=32, seed=0)
        >>> image, label = ds[0]
        >>> image.shape, image.dtype, label.shape, label.dtype
        (torch.Size([3, 32, 32]), torch.float32, torch.Size([32, 32]), torch.int64)
    """

    class_names: tuple[str, ...] = CLASS_NAMES
    num_classes: int = len(CLASS_NAMES)

    def __init__(self, split: str = "train", size: int = 200, image_size: int | tuple[int, int] = 64, seed: int = 0):
        check_choice(split, "split", list(_SPLITS))
        if int(size) < 0:
            raise ValueError(f"size: expected a number of images ≥ 0, got {size!r}")
        self.split, self.size, self.image_size, self.seed = split, int(size), image_size, int(seed)
        self.scenes: tuple[Scene, ...] = tuple(
            render_scene([self.seed, _SPLITS[split], i], image_size) for i in range(self.size)
        )

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (image (3, H, W) float32 in 0..255, label (H, W) int64 in 0..L-1)."""
        scene = self.scenes[index]
        image = torch.from_numpy(scene.image).permute(2, 0, 1).to(torch.float32)
        return image, torch.from_numpy(scene.label).to(torch.int64)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split stacked: images (B, 3, H, W) float32 0..255 and labels (B, H, W) int64."""
        if self.size == 0:
            h, w = (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size
            return torch.zeros(0, 3, h, w), torch.zeros(0, h, w, dtype=torch.int64)
        images = np.stack([s.image for s in self.scenes])
        labels = np.stack([s.label for s in self.scenes])
        return torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(labels).long()
