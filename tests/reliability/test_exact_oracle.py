"""The exact oracle against a plain numpy float64 double loop, on the inputs that are hard for it.

Features spread over 1e9 (where |a|² + |b|² − 2ab would cancel the self term), integer and bool values
(promoted to float64, never truncated), NaN/Inf (refused by name), float16 whose result overflows (refused,
not inf), and gradients in both arguments.
"""

import numpy as np
import pytest
import torch

import lab

# The oracle and the double loop compute the same float64 differences; the rest is summation order:
# ~N·(d + 2)·2⁻⁵³·max|v| ≈ 1e-14 for N ≤ 23, d ≤ 5, |v| ≤ 4, so 1e-12 leaves room and still catches any real error.
ATOL = 1e-12
NORMALIZE = ["none", "after", "symmetric"]


def _loop_kernel(f):
    """(N, N) kernel exp(−|f_i − f_j|²/2), one pair at a time, numpy float64."""
    f = np.asarray(f, dtype=np.float64)
    n = f.shape[0]
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = np.exp(-0.5 * np.sum((f[i] - f[j]) ** 2))
    return k


def _loop(v, f, normalize):
    """The filter by the definition, from the double-loop kernel (N, C) values, (N, d) features."""
    v = np.asarray(v, dtype=np.float64)
    k = _loop_kernel(f)
    d = k.sum(1, keepdims=True)
    if normalize == "none":
        return k @ v
    if normalize == "after":
        return (k @ v) / d
    return (k @ (v / np.sqrt(d))) / np.sqrt(d)


def _points(kind, n, d, seed):
    """(n, d) float64 features of one of the hard kinds."""
    rng = np.random.default_rng(seed)
    if kind == "standard":
        return rng.standard_normal((n, d))
    if kind in ("spread1e9", "spread1e12"):  # clusters of unit-scale neighbours, cluster centres spread widely
        scale = 1e9 if kind == "spread1e9" else 1e12
        centres = rng.standard_normal((4, d)) * scale
        return centres[rng.integers(0, 4, n)] + rng.standard_normal((n, d))
    if kind == "offset1e12":  # all points near 1e12, unit spread
        return 1e12 + rng.standard_normal((n, d))
    if kind == "tiny_bandwidth":  # features = positions / θ with θ tiny: almost no pair interacts
        return rng.standard_normal((n, d)) * 1e6
    if kind == "huge_bandwidth":  # θ huge: every pair has kernel ≈ 1
        return rng.standard_normal((n, d)) * 1e-8
    if kind == "duplicates":  # every point three times
        base = rng.standard_normal((n // 3 + 1, d))
        return np.repeat(base, 3, axis=0)[:n]
    raise AssertionError(kind)


KINDS = ["standard", "spread1e9", "spread1e12", "offset1e12", "tiny_bandwidth", "huge_bandwidth", "duplicates"]


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_double_loop(kind, d, normalize):
    f = _points(kind, 19, d, seed=d)
    v = np.random.default_rng(100 + d).standard_normal((19, 3))
    want = _loop(v, f, normalize)
    got = lab.exact_gaussian_filter(torch.from_numpy(v), torch.from_numpy(f), normalize, chunk_size=7)  # ragged
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_batches_at_different_offsets_match_the_loop(normalize):
    """(B, d, H, W): each batch element its own problem, one near 0, one spread over 1e9, one near 1e12."""
    h, w, d = 3, 5, 3
    pts = [_points(kind, h * w, d, seed=i) for i, kind in enumerate(["standard", "spread1e9", "offset1e12"])]
    f = torch.from_numpy(np.stack(pts)).reshape(3, h, w, d).permute(0, 3, 1, 2)
    v = torch.randn(3, 2, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = lab.exact_gaussian_filter(v, f, normalize, chunk_size=4)
    for b in range(3):
        pv = v[b].permute(1, 2, 0).reshape(h * w, 2).numpy()
        want = _loop(pv, pts[b], normalize).reshape(h, w, 2).transpose(2, 0, 1)
        np.testing.assert_allclose(got[b].numpy(), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("scale", [1e9, 1e12])
def test_self_term_is_exactly_one(scale):
    """Points that do not interact: K v = v exactly (the self term exp(0) = 1, every other term 0)."""
    f = torch.from_numpy(np.random.default_rng(0).standard_normal((30, 4)) * scale)
    v = torch.ones(30, 1, dtype=torch.float64)
    for normalize in NORMALIZE:
        assert torch.equal(lab.exact_gaussian_filter(v, f, normalize), v), normalize


def test_a_common_offset_changes_nothing_bitwise():
    """f and f − 1e12 have the same differences (Sterbenz: both subtractions exact), so the same output and
    gradients to the last bit."""
    rng = np.random.default_rng(3)
    far = torch.from_numpy(1e12 + rng.standard_normal((23, 3))).requires_grad_()
    near = (far.detach() - 1e12).requires_grad_()
    v = torch.from_numpy(rng.standard_normal((23, 2))).requires_grad_()
    for normalize in NORMALIZE:
        out_far = lab.exact_gaussian_filter(v, far, normalize)
        out_near = lab.exact_gaussian_filter(v, near, normalize)
        assert torch.equal(out_far, out_near), normalize
        g_far = torch.autograd.grad(out_far.square().sum(), (v, far))
        g_near = torch.autograd.grad(out_near.square().sum(), (v, near))
        assert all(torch.equal(a, b) for a, b in zip(g_far, g_near, strict=True)), normalize


def test_feature_gradient_far_from_the_origin_matches_the_formula():
    """∂/∂f_i of <g, K v> = Σ_j −k_ij (f_i − f_j) (g_i·v_j + g_j·v_i), summed by a numpy loop, at features
    spread over 1e9 (the derivative of the definition, not of our code)."""
    rng = np.random.default_rng(5)
    f = _points("spread1e9", 15, 3, seed=5)
    v, g = rng.standard_normal((15, 2)), rng.standard_normal((15, 2))
    k = _loop_kernel(f)
    want = np.zeros_like(f)
    for i in range(15):
        for j in range(15):
            want[i] -= k[i, j] * (f[i] - f[j]) * (g[i] @ v[j] + g[j] @ v[i])
    ft = torch.from_numpy(f).requires_grad_()
    out = lab.exact_gaussian_filter(torch.from_numpy(v), ft, "none", chunk_size=4)
    (got,) = torch.autograd.grad((out * torch.from_numpy(g)).sum(), ft)
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=0)


def test_empty_and_zero_dimensional_inputs_follow_the_sum():
    assert lab.exact_gaussian_filter(torch.zeros(0, 3), torch.zeros(0, 2)).shape == (0, 3)
    assert lab.exact_gaussian_filter(torch.zeros(1, 3, 0, 4), torch.zeros(1, 2, 0, 4)).shape == (1, 3, 0, 4)
    assert lab.exact_gaussian_filter(torch.zeros(5, 0), torch.zeros(5, 2)).shape == (5, 0)
    v = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # d = 0: every pair has kernel 1, so "none" is the column sum everywhere
    got = lab.exact_gaussian_filter(v, torch.zeros(6, 0, dtype=torch.float64), "none")
    np.testing.assert_allclose(got.numpy(), np.broadcast_to(v.numpy().sum(0), (6, 2)), atol=ATOL, rtol=0)


# --- dtypes


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_integer_and_bool_values_are_promoted_to_float64(dtype, normalize):
    f = _points("standard", 13, 2, seed=1)
    vi = np.random.default_rng(2).integers(0, 2 if dtype == torch.bool else 200, (13, 2))
    got = lab.exact_gaussian_filter(torch.from_numpy(vi).to(dtype), torch.from_numpy(f), normalize)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _loop(vi, f, normalize), atol=ATOL * 100, rtol=0)  # |v| up to 200


def test_large_integers_are_exact():
    """int64 values up to 2^53 survive the promotion: isolated points return them unchanged."""
    vi = torch.tensor([[2**53], [-(2**52) + 1], [12345678901234]])
    f = torch.tensor([[0.0], [1e6], [2e6]], dtype=torch.float64)
    out = lab.exact_gaussian_filter(vi, f, "none")
    assert out.dtype == torch.float64 and torch.equal(out, vi.double())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_values_keep_their_dtype_rounded_once(dtype):
    f = _points("standard", 11, 2, seed=4)
    v = torch.from_numpy(np.random.default_rng(4).standard_normal((11, 3))).to(dtype)
    got = lab.exact_gaussian_filter(v, torch.from_numpy(f).to(dtype), "after")
    assert got.dtype == dtype
    # features rounded to dtype too, so compare with the loop on exactly those rounded inputs
    want = _loop(v.double().numpy(), torch.from_numpy(f).to(dtype).double().numpy(), "after")
    assert torch.equal(got, torch.from_numpy(want).to(dtype))


def test_float16_overflow_is_refused_not_inf():
    v = torch.full((4, 1), 60000.0, dtype=torch.float16)  # K v = 240000 > 65504 = float16 max
    with pytest.raises(ValueError, match=r"values: the filtered result overflows torch\.float16"):
        lab.exact_gaussian_filter(v, torch.zeros(4, 2), "none")
    assert torch.equal(lab.exact_gaussian_filter(v, torch.zeros(4, 2), "after"), v)  # the average fits


# --- differentiability and memory


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("layout", ["points", "image"])
def test_gradcheck_in_both_arguments(normalize, layout):
    g = torch.Generator().manual_seed(7)
    if layout == "points":
        f = torch.randn(7, 3, generator=g, dtype=torch.float64) * 1.5
        v = torch.randn(7, 2, generator=g, dtype=torch.float64)
    else:
        f = torch.randn(2, 2, 2, 3, generator=g, dtype=torch.float64) * 1.5
        v = torch.randn(2, 2, 2, 3, generator=g, dtype=torch.float64)
    inputs = (v.requires_grad_(), f.requires_grad_())
    fn = lambda a, b: lab.exact_gaussian_filter(a, b, normalize, chunk_size=3)  # noqa: E731  (ragged chunks)
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradgradcheck_through_the_checkpointed_chunks():
    g = torch.Generator().manual_seed(8)
    f = (torch.randn(6, 2, generator=g, dtype=torch.float64)).requires_grad_()
    v = torch.randn(6, 2, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: lab.exact_gaussian_filter(a, b, "symmetric", chunk_size=4), (v, f))


def test_the_graph_holds_no_kernel_matrix():
    """Memory stays chunked in backward too: what autograd stores is O(N·(d + C)), not the N×N kernel
    (the unchunked graph stored about 3.5·N² floats here)."""
    n = 200
    g = torch.Generator().manual_seed(9)
    f = torch.randn(n, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(n, 2, generator=g, dtype=torch.float64, requires_grad=True)
    for normalize in NORMALIZE:
        storages = {}

        def pack(t, storages=storages):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = lab.exact_gaussian_filter(v, f, normalize, chunk_size=10)
        assert sum(storages.values()) < 8 * n * n / 10, normalize
        torch.autograd.grad(out.sum(), (v, f))  # and backward still runs


# --- bad input: refused with the argument's name

Z2 = torch.zeros(5, 2)
NAN = torch.tensor([[0.0, float("nan")], [1.0, 2.0]])
INF = torch.tensor([[0.0, float("inf")], [1.0, 2.0]])
BAD = [
    ("values ndarray", lambda: lab.exact_gaussian_filter(np.zeros((5, 2)), Z2), TypeError, "values"),
    ("features ndarray", lambda: lab.exact_gaussian_filter(Z2, np.zeros((5, 2))), TypeError, "features"),
    ("features list", lambda: lab.exact_gaussian_filter(Z2, [[0.0, 0.0]] * 5), TypeError, "features"),
    ("values rank 3", lambda: lab.exact_gaussian_filter(torch.zeros(1, 5, 2), Z2), ValueError, "values"),
    ("features rank 1", lambda: lab.exact_gaussian_filter(Z2, torch.zeros(5)), ValueError, "features"),
    ("complex values", lambda: lab.exact_gaussian_filter(Z2.to(torch.complex64), Z2), TypeError, "values"),
    ("int features", lambda: lab.exact_gaussian_filter(Z2, Z2.long()), TypeError, "features"),
    ("bool features", lambda: lab.exact_gaussian_filter(Z2, Z2.bool()), TypeError, "features"),
    ("NaN values", lambda: lab.exact_gaussian_filter(NAN, Z2[:2]), ValueError, "values"),
    ("Inf values", lambda: lab.exact_gaussian_filter(INF, Z2[:2]), ValueError, "values"),
    ("NaN features", lambda: lab.exact_gaussian_filter(Z2[:2], NAN), ValueError, "features"),
    ("Inf features", lambda: lab.exact_gaussian_filter(Z2[:2], INF), ValueError, "features"),
    ("huge features", lambda: lab.exact_gaussian_filter(Z2, Z2.double() + 1e308), ValueError, "features"),
    ("wrong N", lambda: lab.exact_gaussian_filter(torch.zeros(4, 2), Z2), ValueError, "values"),
    (
        "mixed layouts",
        lambda: lab.exact_gaussian_filter(torch.zeros(6, 2), torch.zeros(1, 2, 2, 3)),
        ValueError,
        "values",
    ),
    (
        "batch mismatch",
        lambda: lab.exact_gaussian_filter(torch.zeros(2, 1, 2, 3), torch.zeros(1, 2, 2, 3)),
        ValueError,
        "values",
    ),
    (
        "image size mismatch",
        lambda: lab.exact_gaussian_filter(torch.zeros(1, 1, 3, 2), torch.zeros(1, 2, 2, 3)),
        ValueError,
        "values",
    ),
    ("normalize unknown", lambda: lab.exact_gaussian_filter(Z2, Z2, "before"), ValueError, "normalize"),
    ("normalize None", lambda: lab.exact_gaussian_filter(Z2, Z2, None), ValueError, "normalize"),
    ("chunk 0", lambda: lab.exact_gaussian_filter(Z2, Z2, chunk_size=0), ValueError, "chunk_size"),
    ("chunk float", lambda: lab.exact_gaussian_filter(Z2, Z2, chunk_size=2.5), ValueError, "chunk_size"),
    ("chunk bool", lambda: lab.exact_gaussian_filter(Z2, Z2, chunk_size=True), ValueError, "chunk_size"),
    ("chunk str", lambda: lab.exact_gaussian_filter(Z2, Z2, chunk_size="3"), ValueError, "chunk_size"),
]


@pytest.mark.parametrize(("call", "exc", "name"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_refused_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(f"{name}:"), info.value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_is_refused():
    with pytest.raises(ValueError, match="values: on cpu"):
        lab.exact_gaussian_filter(Z2, Z2.cuda())
