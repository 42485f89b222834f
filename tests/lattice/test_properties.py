"""Property tests over random sizes, dimensions, channels, batches and bandwidths (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.crf import CRFParams, mean_field

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def lattice_case(draw):
    b = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    d = draw(st.integers(1, 7))
    c = draw(st.integers(1, 5))
    scale = draw(st.floats(0.05, 20.0))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(b, d, h, w, generator=g, dtype=torch.float64) * scale
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    y = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    return f, x, y


@SETTINGS
@given(lattice_case(), st.floats(-3, 3), st.floats(-3, 3), st.sampled_from(["none", "after", "symmetric"]))
def test_filter_is_linear(case, a, b, normalize):
    f, x, y = case
    lat = lab.PermutohedralLattice(f)
    lhs = lat.filter(a * x + b * y, normalize)
    rhs = a * lat.filter(x, normalize) + b * lat.filter(y, normalize)
    torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=1e-10)


@SETTINGS
@given(lattice_case())
def test_adjoint_identity(case):
    f, x, y = case
    lat = lab.PermutohedralLattice(f)
    xp, yp = lat.to_points(x), lat.to_points(y)
    kx = lat.slice(lat.blur(lat.splat(x)))
    kty = lat.to_points(lat.slice(lat.blur(lat.splat(y), reverse=True)))
    lhs, rhs = float((lat.to_points(kx) * yp).sum()), float((xp * kty).sum())
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(lhs))


@SETTINGS
@given(lattice_case())
def test_normalisation_invariants(case):
    f, x, _ = case
    lat = lab.PermutohedralLattice(f)
    ones = torch.ones_like(x)
    torch.testing.assert_close(lat.filter(ones, "after"), ones)  # "after" keeps constants
    # "symmetric": D^-½ K D^-½ maps D^½·1 to D^-½ K 1 = D^½·1 (D = K 1): sqrt(K 1) is a fixed point
    root = lat.normalizer(torch.float64).sqrt()
    torch.testing.assert_close(lat.filter_points(root, "symmetric"), root, atol=1e-10, rtol=1e-8)
    # "after" is an average: the output lies within each channel's input range
    out = lat.filter(x, "after")
    lo = x.amin(dim=(0, 2, 3), keepdim=True) - 1e-9
    hi = x.amax(dim=(0, 2, 3), keepdim=True) + 1e-9
    assert bool(((out >= lo) & (out <= hi)).all())


@SETTINGS
@given(lattice_case(), st.sampled_from(["none", "after", "symmetric"]))
def test_batch_independence(case, normalize):
    f, x, _ = case
    together = lab.PermutohedralLattice(f).filter(x, normalize)
    for i in range(f.shape[0]):
        alone = lab.PermutohedralLattice(f[i : i + 1]).filter(x[i : i + 1], normalize)
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-12, rtol=1e-12)


@SETTINGS
@given(lattice_case())
def test_bitwise_determinism(case):
    f, x, _ = case
    a = lab.PermutohedralLattice(f.float()).filter(x.float(), "symmetric")
    b = lab.PermutohedralLattice(f.float()).filter(x.float(), "symmetric")
    assert torch.equal(a, b)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    st.integers(1, 2),
    st.integers(2, 6),
    st.integers(2, 10),
    st.integers(2, 10),
    st.integers(0, 6),
    st.floats(1.0, 100.0),
    st.floats(1.0, 40.0),
    st.floats(0.5, 8.0),
    st.floats(0.0, 20.0),
    st.sampled_from(["none", "after", "symmetric"]),
    st.integers(0, 2**31 - 1),
)
def test_probabilities_sum_to_one_after_every_iteration(b, n_labels, h, w, t, ta, tb, tg, wb, normalize, seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, 3, h, w, generator=g) * 255
    unary = torch.randn(b, n_labels, h, w, generator=g) * 3
    params = CRFParams(theta_alpha=ta, theta_beta=tb, theta_gamma=tg, w_bilateral=wb, normalize=normalize)
    trace = mean_field(unary, img, params, iterations=t, keep="q")
    assert len(trace.history) == t + 1
    for q in trace.history:
        assert bool(torch.isfinite(q).all())
        torch.testing.assert_close(q.sum(1), torch.ones(b, h, w), atol=1e-5, rtol=0)
        assert bool((q >= 0).all())
