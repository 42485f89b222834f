"""The permutohedral lattice made visible: vertex positions, enclosing simplices and a 2-D drawing.

The lattice lives on the plane Σ = 0 of R^{d+1}. The elevation (``lab.lattice.elevation.elevate``) is a linear
map of rank d from feature space onto that plane, so every lattice point has exactly one preimage in feature
space: these helpers map the lattice back there, where the points and the Gaussian's σ = 1 can be seen.
Nothing here is used by the filter itself; it recomputes the same simplices for plotting.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from lab.lattice.elevation import corner, elevate, simplex

__all__ = ["LatticeGeometry", "draw_lattice_2d", "lattice_geometry", "lattice_mesh_2d"]


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
    """

    points: np.ndarray
    corners: np.ndarray
    barycentric: np.ndarray
    vertex_index: np.ndarray
    vertices: np.ndarray


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
    rem0, rank, weights = simplex(elevate(f))
    keys = []
    for k in range(d + 1):
        stored = corner(rem0, rank, k)  # (N, d); the last coordinate follows from Σ = 0
        keys.append(torch.cat([stored, -stored.sum(1, keepdim=True)], 1))
    corners = _to_features(torch.stack(keys, 1), d)  # (N, d+1, d)
    index = PermutohedralLattice(f).structure.vertex_index
    vertices = torch.zeros(int(index.max()) + 1, d, dtype=torch.float64)
    vertices[index.reshape(-1)] = corners.reshape(-1, d)
    return LatticeGeometry(
        points=f.numpy(),
        corners=corners.numpy(),
        barycentric=weights.numpy(),
        vertex_index=index.numpy(),
        vertices=vertices.numpy(),
    )


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


def draw_lattice_2d(ax, features: torch.Tensor, highlight: int = 0, annotate: bool = True) -> LatticeGeometry:
    """Draw 2-D points on their lattice: the mesh, the touched vertices, one point's simplex and weights.

    Args:
        ax: a matplotlib Axes.
        features: (N, 2) features divided by the bandwidths.
        highlight: the point whose enclosing simplex and barycentric weights are drawn.
        annotate: write the three weights beside the highlighted simplex's corners.

    Returns:
        The :class:`LatticeGeometry` that was drawn.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Polygon

    geo = lattice_geometry(features)
    if geo.points.shape[1] != 2:
        raise ValueError(f"features: expected d = 2 features, got d = {geo.points.shape[1]}")
    lo, hi = geo.points.min(0) - 0.5, geo.points.max(0) + 0.5
    _, edges = lattice_mesh_2d(tuple(lo), tuple(hi))
    ax.add_collection(LineCollection(edges, colors="0.82", linewidths=0.8, zorder=0))
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
