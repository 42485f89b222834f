"""MultiLatticeFilter (lab/lattice/multi.py): K lattices' weighted filterings as three block-sparse products."""

import pytest
import torch
from inputs import image_tensor, photo

import lab
from lab.lattice.multi import MultiLatticeFilter, filter_scales

# float32 rounding (another summation order), relative to max(1, the largest output): measured 1.9e-6 for
# "after" / "symmetric" (outputs ≤ 6) and 2.9e-7 for "none" (unnormalised sums, outputs ≈ 430).
REL_ATOL = 1e-5


@pytest.mark.parametrize("normalize", ["none", "after", "symmetric"])
def test_equals_weighted_sum_of_filters(normalize):
    img = torch.cat(
        [
            image_tensor(photo("astronaut", slice(0, 23), slice(0, 17))),
            image_tensor(photo("chelsea", slice(0, 23), slice(0, 17))),
        ]
    )  # B = 2, odd sizes
    lattices = [
        lab.PermutohedralLattice(lab.bilateral_features(img, 6.0, 20.0)),
        lab.PermutohedralLattice(lab.spatial_features(img, theta_gamma=2.0)),
    ]
    weights = [10.0, -3.0]
    op = MultiLatticeFilter(lattices, weights, normalize)
    x = torch.rand(lattices[0].num_points, 7, generator=torch.Generator().manual_seed(0))
    want = sum(w * lat.filter_points(x, normalize) for w, lat in zip(weights, lattices, strict=True))
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(op(x), want, atol=REL_ATOL * scale, rtol=0)
    assert len(op.blurs) == 3  # 6 axes of the d = 5 lattice, multiplied in pairs
    # other weights (one of them from 0): the slice rescaled, the same splat and blurs, this op unchanged
    for other in ([0.0, 2.5], [-1.0, 0.0]):
        reweighted = op.with_weights(other)
        want_other = sum(w * lat.filter_points(x, normalize) for w, lat in zip(other, lattices, strict=True))
        scale = max(1.0, float(want_other.abs().max()))
        torch.testing.assert_close(reweighted(x), want_other, atol=REL_ATOL * scale, rtol=0)
        assert reweighted._splat_matrix is op._splat_matrix and reweighted.blurs is op.blurs
    torch.testing.assert_close(op(x), want, atol=REL_ATOL * max(1.0, float(want.abs().max())), rtol=0)


@pytest.mark.parametrize("normalize", ["none", "after", "symmetric"])
def test_filter_scales(normalize):
    lat = lab.PermutohedralLattice(torch.rand(80, 3, generator=torch.Generator().manual_seed(1)) * 3)
    pre, post = filter_scales(lat, normalize, torch.float32)
    x = torch.rand(80, 2)
    torch.testing.assert_close(post * lat.slice(lat.blur(lat.splat(pre * x))), lat.filter_points(x, normalize))


def test_errors():
    lat = lab.PermutohedralLattice(torch.rand(10, 2))
    with pytest.raises(ValueError, match="weights: expected one weight per lattice"):
        MultiLatticeFilter([lat], [1.0, 2.0], "after")
    with pytest.raises(ValueError, match="normalize: expected one of"):
        MultiLatticeFilter([lat], [1.0], "before")
    with pytest.raises(ValueError, match="lattices: expected lattices over the same number of points"):
        MultiLatticeFilter([lat, lab.PermutohedralLattice(torch.rand(11, 2))], [1.0, 1.0], "after")
