"""lab.viz.lattice_plot: the drawing helpers of notebook 02 agree with the lattice they draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lab
from lab.viz.lattice_plot import (
    blur_steps,
    draw_blur_steps,
    draw_lattice_2d,
    impulse_response,
    lattice_geometry,
    lattice_mesh_2d,
    pair_response,
)

ATOL = 1e-9  # float64 geometry: exact up to rounding


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_corners_are_the_lattice_vertices_and_reproduce_the_points(d):
    f = torch.rand(57, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64) * 4
    g = lattice_geometry(f)
    lat = lab.PermutohedralLattice(f)
    assert g.vertices.shape == (lat.num_vertices, d)
    np.testing.assert_allclose(g.vertices[g.vertex_index], g.corners, atol=ATOL)
    np.testing.assert_allclose((g.barycentric[..., None] * g.corners).sum(1), g.points, atol=ATOL)
    np.testing.assert_allclose(g.barycentric, lat.structure.barycentric.numpy(), atol=ATOL)


def test_mesh_edges_have_one_length():
    _, edges = lattice_mesh_2d((0.0, 0.0), (3.0, 3.0))
    lengths = np.linalg.norm(edges[:, 0] - edges[:, 1], axis=1)
    assert len(edges) > 10
    np.testing.assert_allclose(lengths, lengths[0], rtol=1e-9)  # equilateral triangles


def test_rejects_image_layout():
    with pytest.raises(ValueError, match="expected shape"):
        lattice_geometry(torch.zeros(1, 2, 3, 3))


def test_drawing_labels_each_corner_with_its_weight():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = torch.rand(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    fig, ax = plt.subplots()
    try:
        g = draw_lattice_2d(ax, f, highlight=5, annotate=True)
        labels = {t.get_text(): tuple(t.xy) for t in ax.texts}
        assert len(labels) <= 3 and len(ax.texts) == 3  # one per corner of the highlighted simplex
        for corner, b in zip(g.corners[5], g.barycentric[5], strict=True):
            assert labels[f"b = {b:.2f}"] == pytest.approx(tuple(corner))
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ barycentric weights on the plane Σ = 0
def _elevate_by_the_formula(f: np.ndarray) -> np.ndarray:
    """E_0 = Σ_k c_k, E_j = Σ_{k≥j} c_k − j·c_{j−1}, c_k = f_k·(d+1)·sqrt(2/3)/sqrt((k+1)(k+2)) (LATTICE.md §1)."""
    n, d = f.shape
    c = f * np.array([(d + 1) * np.sqrt(2 / 3) / np.sqrt((k + 1) * (k + 2)) for k in range(d)])
    e = np.zeros((n, d + 1))
    for j in range(d + 1):
        e[:, j] = c[:, j:].sum(1) - (j * c[:, j - 1] if j > 0 else 0)
    return e


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_barycentric_weights_reconstruct_the_elevated_point(d):
    f = torch.randn(200, d, generator=torch.Generator().manual_seed(10 + d), dtype=torch.float64) * 3
    g = lattice_geometry(f)
    keys = g.corner_keys  # (N, d+1, d+1) lattice points of the plane Σ = 0
    assert keys.dtype == np.int64 and (keys.sum(2) == 0).all()
    for k in range(d + 1):  # corner k has remainder k: every coordinate ≡ k (mod d+1)
        assert ((keys[:, k] - k) % (d + 1) == 0).all()
    assert (g.barycentric >= -ATOL).all()
    np.testing.assert_allclose(g.barycentric.sum(1), 1.0, atol=ATOL)
    elevated = _elevate_by_the_formula(f.numpy())
    np.testing.assert_allclose(g.elevated, elevated, atol=1e-9 * (1 + np.abs(elevated).max()))
    np.testing.assert_allclose((g.barycentric[..., None] * keys).sum(1), elevated, atol=1e-9 * d * 10)


# ------------------------------------------------------------------ blur steps
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_blur_steps_are_the_lattice_axes(d):
    s = blur_steps(d)
    assert s.shape == (d + 1, d)
    # elevated, step j is (−1, …, −1) with d at position j (LATTICE.md §7)
    want = (d + 1) * np.eye(d + 1) - 1
    np.testing.assert_allclose(_elevate_by_the_formula(s), want, atol=1e-12)
    # |step| = sqrt(d(d+1)) on the plane, over the elevation's stretch (d+1)·sqrt(2/3): sqrt(3d / (2(d+1))) σ
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), np.sqrt(3 * d / (2 * (d + 1))), rtol=1e-12)
    np.testing.assert_allclose(s.sum(0), 0.0, atol=1e-12)


def test_blur_steps_of_the_2d_lattice_are_120_degrees_apart():
    s = blur_steps(2)
    cosines = s @ s.T
    np.testing.assert_allclose(cosines[~np.eye(3, dtype=bool)], -0.5, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_blur_steps_rejects_bad_d(bad):
    with pytest.raises(ValueError, match="d: expected an integer >= 1"):
        blur_steps(bad)


# ------------------------------------------------------------------ the kernel: impulse responses
# max |K̃(p, c)/c_d − exp(−|p − c|²/2)| on a 0.05 σ grid, over 20 random centres c (2026-12-03): 0.095 for d = 1
# (0.050 at best), 0.166 for d = 2 (0.085 at best). The bound adds a margin.
IMPULSE_MAX_ERR = {1: 0.11, 2: 0.18}
# The kernel's support: the impulse's corners lie within one edge of it, the blur moves mass at most one step
# per axis (at most 2 steps in all: Σ_j a_j·step_j with a_j ∈ {−1, 0, 1}, and Σ_j step_j = 0), and a query point
# lies within one edge of its corners: 4 edges, 4 · sqrt(3d / (2(d+1))) σ.
SUPPORT = {1: 4 * np.sqrt(3 / 4), 2: 4.0}


def _grid(d, half, step):
    axis = torch.arange(-half, half + step / 2, step, dtype=torch.float64)
    if d == 1:
        return axis[:, None]
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


@pytest.mark.parametrize("d", [1, 2])
def test_impulse_response_is_a_gaussian_of_unit_mass(d):
    step = 0.05 if d == 2 else 0.01
    offsets = _grid(d, 4.5, step)
    r2 = (offsets**2).sum(1).numpy()
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        center = torch.rand(d, generator=gen, dtype=torch.float64) * 5
        k = impulse_response(center, center + offsets)
        assert np.abs(k - np.exp(-r2 / 2)).max() <= IMPULSE_MAX_ERR[d]
        # splat, blur and slice conserve mass: ∫ K̃/c = ∫ exp(−|Δ|²/2) = (2π)^{d/2}
        assert k.sum() * step**d == pytest.approx((2 * np.pi) ** (d / 2), rel=1e-3)
        assert (k >= 0).all() and (k[np.sqrt(r2) > SUPPORT[d]] == 0).all()


def test_impulse_response_reads_the_kernel_of_a_dense_lattice():
    # Reference: the lattice over the impulse, the query points and a dense grid around them (so every vertex
    # the blur reaches exists), filtered with lab.PermutohedralLattice itself.
    center = torch.tensor([1.3, -0.4], dtype=torch.float64)
    queries = center + torch.tensor([[0.0, 0.0], [0.7, 0.2], [-1.5, 1.1], [2.4, -0.3], [0.1, 3.1]])
    k = impulse_response(center, queries.double())
    dense = torch.cat([center[None], queries.double(), center + _grid(2, 5.0, 0.1)])
    impulse = torch.zeros(dense.shape[0], 1, dtype=torch.float64)
    impulse[0] = 1.0
    want = lab.PermutohedralLattice(dense).filter(impulse, normalize="none")[1 : 1 + len(queries), 0]
    np.testing.assert_allclose(k, want.numpy(), atol=1e-12)
    assert k[0] == pytest.approx(float(want[0]))  # the self term, not 1


def test_impulse_response_rejects_bad_input():
    c = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="center: expected shape"):
        impulse_response(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"points: expected shape \(P, 2\)"):
        impulse_response(c, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="points: expected a floating-point tensor"):
        impulse_response(c, torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="points: expected finite values"):
        impulse_response(c, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(TypeError, match=r"center: expected a torch\.Tensor"):
        impulse_response([0.0, 0.0], torch.zeros(3, 2))


# ------------------------------------------------------------------ the kernel between two lone points
def test_pair_response_is_each_pair_on_its_own_lattice():
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(12, 2, generator=gen, dtype=torch.float64) * 3
    b = a + torch.randn(12, 2, generator=gen, dtype=torch.float64) * 1.5
    cross, own = pair_response(a, b)
    for m in range(12):  # one lattice per pair, built separately
        impulse = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
        out = lab.PermutohedralLattice(torch.stack([a[m], b[m]])).filter(impulse, normalize="none")[:, 0]
        assert cross[m] == pytest.approx(float(out[1]), abs=1e-12)
        assert own[m] == pytest.approx(float(out[0]), abs=1e-12)


def test_pair_response_never_exceeds_the_dense_kernel():
    # The lone pair's lattice lacks vertices; the blur's weights are non-negative, so dropping vertices can
    # only lose mass: the pair gets at most what the dense lattice gives, and nothing beyond the support.
    gen = torch.Generator().manual_seed(5)
    a = torch.rand(15, 2, generator=gen, dtype=torch.float64) * 3
    b = a + torch.randn(15, 2, generator=gen, dtype=torch.float64) * 2
    cross, own = pair_response(a, b)
    for m in range(15):
        dense = impulse_response(a[m], torch.stack([a[m], b[m]]))
        assert cross[m] <= dense[1] + 1e-12 and own[m] <= dense[0] + 1e-12
    far = (b - a).norm(dim=1).numpy() > SUPPORT[2]
    assert (cross[far] == 0).all()
    same_cross, same_own = pair_response(a[:3], a[:3].clone())  # a point paired with itself
    np.testing.assert_allclose(same_cross, same_own, atol=1e-12)


def test_pair_response_rejects_mismatched_pairs():
    with pytest.raises(ValueError, match="b: expected the shape of a"):
        pair_response(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="a: expected shape"):
        pair_response(torch.zeros(3), torch.zeros(3))


# ------------------------------------------------------------------ drawings
def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    return plt, fig, ax


def test_drawing_shades_the_triangle_of_each_listed_point():
    from matplotlib.patches import Polygon

    plt, fig, ax = _axes()
    try:
        f = torch.rand(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
        g = draw_lattice_2d(ax, f, highlight=1, shade=[0, 2, 5])
        polygons = [p for p in ax.patches if isinstance(p, Polygon)]
        assert len(polygons) == 4  # the three shaded triangles and the highlighted one
        drawn = sorted(tuple(np.round(p.get_xy()[:3], 9).ravel()) for p in polygons)
        want = sorted(tuple(np.round(g.corners[i], 9).ravel()) for i in (0, 2, 5, 1))
        assert drawn == want
        with pytest.raises(ValueError, match=r"point indices in 0\.\.5"):
            draw_lattice_2d(ax, f, highlight=6)
        with pytest.raises(ValueError, match=r"point indices in 0\.\.5"):
            draw_lattice_2d(ax, f, shade=[-1])
    finally:
        plt.close(fig)


def test_blur_arrows_point_along_the_steps():
    plt, fig, ax = _axes()
    try:
        steps = draw_blur_steps(ax, (1.0, 2.0))
        np.testing.assert_allclose(steps, blur_steps(2))
        arrows = [t for t in ax.texts if t.get_text() == ""]
        labels = sorted(t.get_text() for t in ax.texts if t.get_text())
        assert labels == ["axis 0", "axis 1", "axis 2"]
        tips = sorted(tuple(np.round(np.asarray(t.xy) - (1.0, 2.0), 9)) for t in arrows)
        assert tips == sorted(tuple(np.round(s, 9)) for s in np.concatenate([steps, -steps]))
        with pytest.raises(ValueError, match="origin: expected two finite numbers"):
            draw_blur_steps(ax, (0.0, float("nan")))
        with pytest.raises(ValueError, match="colors: expected 3 colours"):
            draw_blur_steps(ax, (0.0, 0.0), colors=("r",))
    finally:
        plt.close(fig)
