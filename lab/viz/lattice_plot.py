"""The permutohedral lattice made visible: vertices, enclosing simplices, blur axes, the kernel it computes.

The lattice lives on the plane Σ = 0 of R^{d+1}. The elevation (``lab.lattice.elevation.elevate``) is a linear
map of rank d from feature space onto that plane, so every lattice point has exactly one preimage in feature
space: these helpers map the lattice back there, where the points and the Gaussian's σ = 1 can be seen.
Nothing here is used by the filter itself; it recomputes the same simplices for plotting, and measures the
filter's kernel by filtering impulses with :class:`lab.PermutohedralLattice`.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lab._checks import check_finite, check_tensor
from lab.lattice.elevation import corner, elevate, simplex

__all__ = [
    "LatticeGeometry",
    "blur_steps",
    "draw_blur_steps",
    "draw_lattice_2d",
    "impulse_response",
    "lattice_geometry",
    "lattice_mesh_2d",
    "pair_response",
]


def _to_features(keys: torch.Tensor, d: int) -> torch.Tensor:
    """(..., d+1) points of the plane Σ = 0 → (..., d) feature coordinates (the elevation's preimage)."""
    basis = elevate(torch.eye(d, dtype=torch.float64)).T  # (d+1, d): column k is the image of e_k
    return keys.to(torch.float64) @ torch.linalg.pinv(basis).T


@dataclass(frozen=True)
class LatticeGeometry:
    """Where the lattice of a point set lies, in the points' own feature coordinates.

    Attributes:
        points: (N, d) the features (already divided by the bandwidths).
        corners: (N, d+1, d) the d+1 vertices of each point's enclosing simplex.
        barycentric: (N, d+1) the weight of each corner (rows sum to 1): the splat and slice weights.
        vertex_index: (N, d+1) index of each corner among the unique vertices.
        vertices: (V, d) the unique lattice vertices the points touch (in the lattice's vertex order).
        elevated: (N, d+1) the points elevated onto the plane Σ = 0.
        corner_keys: (N, d+1, d+1) int64, the corners as lattice points of that plane (all d+1
            coordinates; corner k's coordinates are all ≡ k modulo d+1). Σ_k barycentric_k · corner_keys_k
            = elevated.
    """

    points: np.ndarray
    corners: np.ndarray
    barycentric: np.ndarray
    vertex_index: np.ndarray
    vertices: np.ndarray
    elevated: np.ndarray
    corner_keys: np.ndarray


def lattice_geometry(features: torch.Tensor) -> LatticeGeometry:
    """The enclosing simplex of every point and the positions of the lattice vertices, in feature units.

    The vertex order matches :class:`lab.PermutohedralLattice` built on the same features, so vertex values
    from ``lattice.splat`` can be drawn at ``vertices``.

    Args:
        features: (N, d) features divided by the bandwidths.

    Returns:
        A :class:`LatticeGeometry`.

    Example:
        >>> g = lattice_geometry(torch.tensor([[0.3, 0.4], [2.0, 1.0]]))
        >>> g.corners.shape, g.vertices.shape[1], bool(np.allclose(g.barycentric.sum(1), 1))
        ((2, 3, 2), 2, True)
        >>> bool(np.allclose((g.barycentric[..., None] * g.corners).sum(1), g.points))  # weights reproduce x
        True
    """
    from lab.lattice import PermutohedralLattice

    f = features.detach().to(torch.float64)
    if f.dim() != 2:
        raise ValueError(f"features: expected shape (N, d), got {tuple(f.shape)}")
    _, d = f.shape
    elevated = elevate(f)
    rem0, rank, weights = simplex(elevated)
    keys = []
    for k in range(d + 1):
        stored = corner(rem0, rank, k)  # (N, d); the last coordinate follows from Σ = 0
        keys.append(torch.cat([stored, -stored.sum(1, keepdim=True)], 1))
    corner_keys = torch.stack(keys, 1)  # (N, d+1, d+1)
    corners = _to_features(corner_keys, d)  # (N, d+1, d)
    index = PermutohedralLattice(f).structure.vertex_index
    vertices = torch.zeros(int(index.max()) + 1, d, dtype=torch.float64)
    vertices[index.reshape(-1)] = corners.reshape(-1, d)
    return LatticeGeometry(
        points=f.numpy(),
        corners=corners.numpy(),
        barycentric=weights.numpy(),
        vertex_index=index.numpy(),
        vertices=vertices.numpy(),
        elevated=elevated.numpy(),
        corner_keys=corner_keys.numpy(),
    )


def blur_steps(d: int) -> np.ndarray:
    """The d+1 axes of the blur, step_j = (−1, …, d, …, −1) (d at position j), in feature units.

    The blur mixes each vertex with its neighbours at ± step_j, one axis j after the other. In feature units
    every step is sqrt(3d / (2(d+1))) σ long (1 σ for d = 2), and the d+1 steps sum to zero.

    Args:
        d: the feature dimension, ≥ 1.

    Returns:
        (d+1, d) float64: row j is step_j.

    Example:
        >>> s = blur_steps(2)
        >>> np.linalg.norm(s, axis=1).round(6).tolist(), bool(np.allclose(s.sum(0), 0))
        ([1.0, 1.0, 1.0], True)
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d: expected an integer >= 1, got {d!r}")
    steps = (d + 1) * torch.eye(d + 1, dtype=torch.float64) - 1  # (d+1, d+1): −1 everywhere, d on the diagonal
    return _to_features(steps, d).numpy()


def _check_points(x: object, name: str) -> torch.Tensor:
    """A finite floating-point tensor, detached, as float64."""
    check_tensor(x, name)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    x = x.detach().to(torch.float64)
    check_finite(x, name)
    return x


def _reach(center: torch.Tensor) -> torch.Tensor:
    """(R, d) the lattice vertices the blur can carry an impulse at ``center`` (d,) to, in feature units.

    The impulse is splatted onto the d+1 corners of its simplex; blurring along axis j moves mass by ± step_j,
    once per axis, so it reaches corner + Σ_j a_j·step_j with every a_j ∈ {−1, 0, 1}: at most
    (d+1)·3^(d+1) vertices (6 for d = 1, 27 for d = 2, 108 for d = 3).
    """
    d = center.shape[0]
    geo = lattice_geometry(center[None])
    steps = (d + 1) * torch.eye(d + 1, dtype=torch.int64) - 1  # (d+1, d+1) on the plane Σ = 0
    a = torch.tensor(list(itertools.product((-1, 0, 1), repeat=d + 1)), dtype=torch.int64)  # (3^(d+1), d+1)
    moves = a @ steps  # (3^(d+1), d+1)
    keys = torch.from_numpy(geo.corner_keys[0])[:, None, :] + moves[None]  # (d+1, 3^(d+1), d+1)
    keys = torch.unique(keys.reshape(-1, d + 1), dim=0)
    return _to_features(keys, d)


def impulse_response(center: torch.Tensor, points: torch.Tensor) -> np.ndarray:
    """The lattice's kernel around one point: splat an impulse at ``center``, blur, slice at ``points``.

    The filter is linear, so its response to a value 1 at ``center`` (0 everywhere else) is its kernel
    K̃(p, center) for every position p. It is computed with ``normalize="none"`` (divided by the lattice's
    kernel scale c), so it approximates exp(−|p − center|²/2) directly. The blur drops mass it would move
    to a vertex that no point touches; to measure the lattice's own kernel, unaffected by that, the lattice
    is built over ``center``, ``points`` and every vertex the blur can reach from ``center``. (For the
    kernel between points with nothing around them, see :func:`pair_response`.) Cost: one lattice over
    at most P + 1 + (d+1)·3^(d+1) points.

    Args:
        center: (d,) the impulse's features, divided by the bandwidths.
        points: (P, d) where the response is read.

    Returns:
        (P,) float64, K̃(points, center) / c.

    Example:
        >>> c = torch.tensor([0.3, 0.2], dtype=torch.float64)
        >>> r = impulse_response(c, c + torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]))
        >>> bool(0.5 < r[0] < 1.2), bool(0.4 < r[1] < 0.8), float(r[2])  # exp(0), exp(−½), exp(−12.5)
        (True, True, 0.0)
    """
    center = _check_points(center, "center")
    if center.dim() != 1 or center.shape[0] < 1:
        raise ValueError(f"center: expected shape (d,) with d >= 1, got {tuple(center.shape)}")
    d = center.shape[0]
    points = _check_points(points, "points")
    if points.dim() != 2 or points.shape[1] != d:
        raise ValueError(f"points: expected shape (P, {d}) (the dimension of center), got {tuple(points.shape)}")
    from lab.lattice import PermutohedralLattice

    features = torch.cat([center[None], _reach(center), points])  # (1 + R + P, d)
    impulse = torch.zeros(features.shape[0], 1, dtype=torch.float64)
    impulse[0] = 1.0
    response = PermutohedralLattice(features).filter(impulse, normalize="none")[:, 0]
    return response[features.shape[0] - points.shape[0] :].numpy()


def pair_response(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The lattice's kernel between two points with nothing else around: each pair on a lattice of its own.

    Only the vertices of the two points' simplices exist, so the blur can carry mass from one point to the
    other only through those vertices: mass it would move to any other vertex is dropped. Each pair m is
    one batch element of a single lattice (batch elements never share a vertex).

    Args:
        a: (M, d) the first point of each pair (features divided by the bandwidths).
        b: (M, d) the second point.

    Returns:
        cross: (M,) K̃(b, a) / c, what b receives from an impulse at a (exact: exp(−|a − b|²/2)).
        own: (M,) K̃(a, a) / c, what a keeps of its own impulse (exact: 1).

    Example:
        >>> a = torch.zeros(2, 2, dtype=torch.float64)
        >>> cross, own = pair_response(a, torch.tensor([[0.5, 0.0], [9.0, 0.0]], dtype=torch.float64))
        >>> bool(cross[0] > 0.5), float(cross[1]), bool((own > 0.5).all())
        (True, 0.0, True)
    """
    a = _check_points(a, "a")
    b = _check_points(b, "b")
    if a.dim() != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"a: expected shape (M, d) with M, d >= 1, got {tuple(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    from lab.lattice import PermutohedralLattice

    features = torch.stack([a, b], 2)  # (M, d, 2): M batch elements of two points each
    impulse = torch.zeros(a.shape[0], 1, 2, dtype=torch.float64)
    impulse[:, 0, 0] = 1.0
    response = PermutohedralLattice(features).filter(impulse, normalize="none")[:, 0]  # (M, 2)
    return response[:, 1].numpy(), response[:, 0].numpy()


def lattice_mesh_2d(lo: tuple[float, float], hi: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """All lattice points and edges of the d = 2 lattice inside a feature-space box, for a background mesh.

    The lattice points are the integer (a, b, c), a + b + c = 0, with a ≡ b ≡ c (mod 3); two points are joined
    when they differ by one of the blur steps ±(2, −1, −1), ±(−1, 2, −1), ±(−1, −1, 2).

    Args:
        lo: (x, y) lower corner of the box in feature units.
        hi: (x, y) upper corner.

    Returns:
        points (P, 2) and edges (E, 2, 2), in feature units.

    Example:
        >>> pts, edges = lattice_mesh_2d((0.0, 0.0), (2.0, 2.0))
        >>> pts.shape[1], edges.shape[1:]
        (2, (2, 2))
    """
    box = torch.tensor([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]], dtype=torch.float64)
    span = elevate(box)
    r = int(np.ceil(float(span.abs().max()))) + 3
    keys = []
    for a, b in itertools.product(range(-r, r + 1), repeat=2):
        c = -a - b
        if (a - b) % 3 == 0 and (b - c) % 3 == 0:
            keys.append((a, b, c))
    keys_t = torch.tensor(keys, dtype=torch.float64)
    pts = _to_features(keys_t, 2).numpy()
    margin = 1.5
    keep = np.all((pts >= np.array(lo) - margin) & (pts <= np.array(hi) + margin), axis=1)
    key_set = {k for k, ok in zip(keys, keep, strict=True) if ok}
    edges = []
    for k in key_set:
        for step in ((2, -1, -1), (-1, 2, -1), (-1, -1, 2)):
            other = tuple(int(x) + s for x, s in zip(k, step, strict=True))
            if other in key_set:
                edges.append((k, other))
    if edges:
        ends = _to_features(torch.tensor(edges, dtype=torch.float64), 2).numpy()  # (E, 2, 2)
    else:
        ends = np.zeros((0, 2, 2))
    return pts[keep], ends


def draw_lattice_2d(
    ax, features: torch.Tensor, highlight: int = 0, annotate: bool = True, shade: Sequence[int] = ()
) -> LatticeGeometry:
    """Draw 2-D points on their lattice: the mesh, the touched vertices, one point's simplex and weights.

    Args:
        ax: a matplotlib Axes.
        features: (N, 2) features divided by the bandwidths.
        highlight: the point whose enclosing simplex and barycentric weights are drawn.
        annotate: write the three weights beside the highlighted simplex's corners.
        shade: further points whose enclosing triangles are shaded (lighter, without weights).

    Returns:
        The :class:`LatticeGeometry` that was drawn.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Polygon

    geo = lattice_geometry(features)
    n, d = geo.points.shape
    if d != 2:
        raise ValueError(f"features: expected d = 2 features, got d = {d}")
    for i in (highlight, *shade):
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < n:
            raise ValueError(f"highlight, shade: expected point indices in 0..{n - 1}, got {i!r}")
    lo, hi = geo.points.min(0) - 0.5, geo.points.max(0) + 0.5
    _, edges = lattice_mesh_2d(tuple(lo), tuple(hi))
    ax.add_collection(LineCollection(edges, colors="0.82", linewidths=0.8, zorder=0))
    for i in shade:
        ax.add_patch(Polygon(geo.corners[i], closed=True, facecolor="tab:blue", alpha=0.12, edgecolor="none"))
    ax.scatter(
        *geo.vertices.T, s=28, c="tab:orange", edgecolors="k", linewidths=0.5, zorder=2, label="lattice vertices"
    )
    ax.scatter(*geo.points.T, s=10, c="tab:blue", zorder=3, label="points (features)")
    tri = geo.corners[highlight]
    ax.add_patch(Polygon(tri, closed=True, facecolor="tab:green", alpha=0.25, edgecolor="tab:green", zorder=1))
    p = geo.points[highlight]
    for vertex, b in zip(tri, geo.barycentric[highlight], strict=True):
        ax.plot([p[0], vertex[0]], [p[1], vertex[1]], color="tab:green", lw=1.2 + 3 * b, zorder=2)
        if annotate:
            ax.annotate(
                f"b = {b:.2f}", vertex, textcoords="offset points", xytext=(6, 6), fontsize=9, color="darkgreen"
            )
    ax.scatter(*p, s=60, marker="*", c="crimson", zorder=4, label=f"point {highlight}")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("feature 1 (units of σ)")
    ax.set_ylabel("feature 2 (units of σ)")
    return geo


def draw_blur_steps(ax, origin: Sequence[float], colors: Sequence[str] = ("C0", "C3", "C4")) -> np.ndarray:
    """Draw the 3 blur axes of the d = 2 lattice as double arrows ± step_j from a vertex, labelled by j.

    Args:
        ax: a matplotlib Axes (feature units, as :func:`draw_lattice_2d` draws).
        origin: (x, y) where the arrows start, usually a lattice vertex.
        colors: one colour per axis.

    Returns:
        (3, 2) the steps that were drawn (:func:`blur_steps`).
    """
    steps = blur_steps(2)
    o = np.asarray(origin, dtype=np.float64)
    if o.shape != (2,) or not np.isfinite(o).all():
        raise ValueError(f"origin: expected two finite numbers (x, y), got {origin!r}")
    if len(colors) != 3:
        raise ValueError(f"colors: expected 3 colours, one per blur axis, got {len(colors)}")
    for j, (step, color) in enumerate(zip(steps, colors, strict=True)):
        for sign in (1, -1):
            ax.annotate("", o + sign * step, o, arrowprops={"arrowstyle": "->", "color": color, "lw": 2}, zorder=5)
        at = o + 0.5 * step + 0.14 * np.array([-step[1], step[0]])  # beside the middle of the + arrow
        ax.annotate(f"axis {j}", at, ha="center", va="center", fontsize=9, color=color, fontweight="bold")
    return steps
