"""The Numba lattice build against the PyTorch build: the same lattice, bit for bit, on every kind of input.

The PyTorch build is itself checked against the exact O(N²) Gaussian in test_lattice.py; there, as
everywhere in the suite, ``builder="auto"`` builds with Numba where it is installed, so those tests also
measure the Numba-built lattice against the exact filter.
"""

import pytest
import torch
from inputs import image_tensor, photo

import lab
from lab.crf.kernels import kernel_features
from lab.lattice import numba_kernels
from lab.lattice.build import build_lattice

pytest.importorskip("numba", reason="Numba is not installed: the compiled CPU build is not available")


def astronaut(size=64):
    """(1, 3, size, size) float32 crop of the astronaut photo (every fourth pixel) in 0..255."""
    return image_tensor(photo("astronaut", slice(80, 80 + 4 * size, 4), slice(120, 120 + 4 * size, 4))).float()


def points(features):
    """(B, d, H, W) → (B·H·W, d)."""
    b, d, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(b * h * w, d).contiguous()


def photo_features(kind):
    params = lab.CRFParams(theta_alpha=20.0, theta_beta=13.0, theta_gamma=3.0)
    bil, spa = kernel_features(astronaut().repeat(2, 1, 1, 1), params)
    return points(bil if kind == "bilateral" else spa), 2


def clusters(d, spread=50.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, d, generator=g) * spread
    return (centres.repeat_interleave(40, 0) + 0.1 * torch.randn(200, d, generator=g)).double(), 1


CASES = {
    "photo bilateral d=5, batch 2": lambda: photo_features("bilateral"),
    "photo spatial d=2, batch 2": lambda: photo_features("spatial"),
    "random d=1 float64": lambda: (torch.randn(900, 1, generator=torch.Generator().manual_seed(1)).double(), 1),
    "random d=2 batch 3": lambda: (torch.randn(900, 2, generator=torch.Generator().manual_seed(2)) * 3, 3),
    "random d=3 float64 batch 3": lambda: (
        torch.randn(900, 3, generator=torch.Generator().manual_seed(3)).double() * 2,
        3,
    ),
    "clusters d=7": lambda: clusters(7, spread=5.0),
    "negative and 1e5-sigma coordinates": lambda: (
        torch.tensor([[-1e5, 3.0], [1e5, -2.0], [0.5, 0.25], [0.6, 0.2]], dtype=torch.float64),
        1,
    ),
    "ties: integer features": lambda: (
        torch.randint(-4, 5, (500, 3), generator=torch.Generator().manual_seed(5)).float(),
        1,
    ),
}


def assert_same(a, b):
    assert a.num_vertices == b.num_vertices
    assert a.hashed == b.hashed
    assert torch.equal(a.vertex_index, b.vertex_index)
    assert torch.equal(a.barycentric, b.barycentric)  # the same float operations: equal bits
    assert torch.equal(a.batch_num_vertices, b.batch_num_vertices)
    for name in ("splat_matrix", "slice_matrix"):
        ma, mb = getattr(a, name), getattr(b, name)
        assert torch.equal(ma.crow_indices(), mb.crow_indices()), name
        assert torch.equal(ma.col_indices(), mb.col_indices()), name
        assert torch.equal(ma.values(), mb.values()), name
    assert torch.equal(a.blur_neighbours, b.blur_neighbours)
    for ma, mb in zip(a.blur_matrices, b.blur_matrices, strict=True):
        assert torch.equal(ma.to_dense(), mb.to_dense())


@pytest.mark.parametrize("case", list(CASES))
def test_same_lattice_as_the_torch_build(case):
    features, batch = CASES[case]()
    want = build_lattice(features, batch, builder="torch")
    got = build_lattice(features, batch, builder="numba")
    assert not want.hashed  # packed codes: the Numba path ran (it returns None when they do not fit)
    assert_same(got, want)


def test_thread_count_does_not_change_the_lattice():
    """The build follows torch's thread count; the counting sort splits the work by threads."""
    features, batch = photo_features("bilateral")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = build_lattice(features, batch, builder="numba")
        torch.set_num_threads(2)
        two = build_lattice(features, batch, builder="numba")
    finally:
        torch.set_num_threads(before)
    assert_same(one, two)


def test_codes_that_do_not_fit_fall_back_to_the_hashed_torch_build():
    features, _ = clusters(16)  # 16 digits of ≥ 69 values: more than 62 bits, so codes are hashed
    got = build_lattice(features, builder="numba")
    assert got.hashed
    assert_same(got, build_lattice(features, builder="torch"))


def test_filters_agree_with_the_exact_gaussian_like_the_torch_build():
    """The Numba-built lattice filters as the PyTorch-built one does, both measured against the oracle."""
    features = photo_features("bilateral")[0][:1024].double()
    values = torch.rand(1024, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = lab.exact_gaussian_filter(values, features, "after")
    by_numba = lab.PermutohedralLattice(features, builder="numba").filter(values, "after")
    by_torch = lab.PermutohedralLattice(features, builder="torch").filter(values, "after")
    assert torch.equal(by_numba, by_torch)
    assert float((by_numba - exact).norm() / exact.norm()) < 0.075  # test_lattice.PHOTO_REL_ERR["after"]


def test_builder_errors_name_the_argument(monkeypatch):
    with pytest.raises(ValueError, match="builder"):
        lab.PermutohedralLattice(torch.rand(10, 2), builder="fast")
    monkeypatch.setattr(numba_kernels, "available", lambda: False)
    with pytest.raises(RuntimeError, match=r"builder='numba': Numba is not installed"):
        build_lattice(torch.rand(10, 2), builder="numba")
    # "auto" without Numba quietly builds with PyTorch: the same lattice
    features = torch.rand(300, 3) * 4
    monkeypatch.undo()
    want = build_lattice(features, builder="numba")
    monkeypatch.setattr(numba_kernels, "available", lambda: False)
    assert_same(build_lattice(features, builder="auto"), want)
