"""lab.viz.lattice_plot: the drawing helpers of notebook 02 agree with the lattice they draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lab
from lab.viz.lattice_plot import lattice_geometry, lattice_mesh_2d

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

    from lab.viz.lattice_plot import draw_lattice_2d

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
