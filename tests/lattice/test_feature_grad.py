"""Gradients of the Gaussian filter with respect to the features.

The ladder: autograd through the exact filter (the oracle, float64) ← the analytic formula of
``lab.lattice.feature_grad`` run with the exact kernel in place of the lattice (must agree to rounding) ← the
same formula with the lattice filter (an approximation, bounded by measured tolerances) ← the Triton backend
(equal to the PyTorch backend to float32 rounding; interpreter test).
"""

import math
import os

import pytest
import torch
from inputs import image_tensor, photo

import lab
from lab.lattice.feature_grad import KernelProduct

NORMS = ["none", "after", "symmetric"]

# The formula with the exact kernel vs autograd through exact_gaussian_filter, float64: measured max difference
# 6.5e-15 relative to the largest gradient entry (2026-11-25); 1e-10 leaves room for other summation orders.
EXACT_RTOL = 1e-10

# The lattice's feature gradient vs the exact filter's: cosine similarity over all N·d entries, and relative
# L2 error |g_lattice − g_exact| / |g_exact|. Measured 2026-11-25 on exactly the cases below (none / after /
# symmetric; float32 equals float64 to 1e-8):
#   random points, 300 × 3 uniform in a 4.5-wide cube:  cos 0.995 / 0.987 / 0.992, rel 0.103 / 0.164 / 0.137
#   photo bilateral features, 24 × 24 astronaut crop, θα = 5, θβ = 13 (d = 5):
#                                                        cos 0.991 / 0.933 / 0.959, rel 0.253 / 0.372 / 0.295
# A wider sweep (4 crops × θ in {(8, 20), (5, 13), (3, 10)} × 3 normalisations) gave cos min 0.922 (mean 0.97)
# and rel max 0.39 (mean 0.23); sparse random 5-d Gaussian clouds of 200 points are worse (cos down to 0.63,
# rel up to 0.79). The gradient is as accurate as the filter, which is coarse (about one lattice vertex per σ
# along each axis, docs/lattice.md): relative errors of 0.2–0.3 are the filter's own on photo features.
RANDOM_COS_MIN, RANDOM_REL_MAX = 0.97, 0.20
PHOTO_COS_MIN, PHOTO_REL_MAX = 0.91, 0.42


def exact_lattice(f: torch.Tensor) -> lab.PermutohedralLattice:
    """A lattice over f whose K is replaced by the exact Gaussian (times the kernel scale): tests the formula."""
    lat = lab.PermutohedralLattice(f, backend="torch")
    fd = f.detach()
    k = torch.exp(-0.5 * torch.cdist(fd, fd).square()) * lat.structure.kernel_scale  # (N, N), symmetric
    lat.apply_kernel = lambda x, transpose=False: (k.T if transpose else k) @ x
    return lat


def random_case(n=300, d=3, c=2, side=4.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, d, generator=g, dtype=torch.float64) * side
    v = torch.rand(n, c, generator=g, dtype=torch.float64)
    grad_out = torch.randn(n, c, generator=g, dtype=torch.float64)  # one shared grad_output
    return f, v, grad_out


def photo_features(row=100, col=150, size=24, theta_alpha=5.0, theta_beta=13.0):
    """(1, 5, size, size) float64 bilateral features of an astronaut crop."""
    img = image_tensor(photo("astronaut", slice(row, row + size), slice(col, col + size))).double()
    return lab.bilateral_features(img, theta_alpha, theta_beta, dtype=torch.float64)


def grads(filter_fn, v, f, grad_out):
    """(output, ∂L/∂f, ∂L/∂v) for L = <filter_fn(v, f), grad_out>."""
    f = f.detach().clone().requires_grad_()
    v = v.detach().clone().requires_grad_()
    out = filter_fn(v, f)
    gf, gv = torch.autograd.grad(out, (f, v), grad_out)
    return out.detach(), gf, gv


def cos_rel(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.nn.functional.cosine_similarity(a, b, 0)), float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- the formula with the exact kernel
@pytest.mark.parametrize("normalize", NORMS)
def test_formula_with_exact_kernel_equals_autograd(normalize):
    """The primitive's two backward terms and the composed normalisations are the exact derivative."""
    f, v, grad_out = random_case(n=60, d=3, c=2)
    out, gf, gv = grads(lambda v, f: exact_lattice(f).filter(v, normalize), v, f, grad_out)
    want, wf, wv = grads(lambda v, f: lab.exact_gaussian_filter(v, f, normalize), v, f, grad_out)
    torch.testing.assert_close(out, want, rtol=EXACT_RTOL, atol=0)
    torch.testing.assert_close(gf, wf, rtol=EXACT_RTOL, atol=EXACT_RTOL * float(wf.abs().max()))
    torch.testing.assert_close(gv, wv, rtol=EXACT_RTOL, atol=EXACT_RTOL * float(wv.abs().max()))


@pytest.mark.parametrize("normalize", NORMS)
def test_gradcheck_formula_with_exact_kernel(normalize):
    """Finite differences of the filter with the exact kernel (rebuilt at every perturbed f) vs the formula,
    and the same for the second derivative (the backward is written with the primitive itself)."""
    f, v, _ = random_case(n=12, d=2, c=2, side=2.0, seed=1)

    def fn(v, f):
        return exact_lattice(f).filter(v, normalize)

    inputs = (v.clone().requires_grad_(), f.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("normalize", NORMS)
def test_gradcheck_exact_filter_features(normalize):
    """The oracle itself: autograd through exact_gaussian_filter is the derivative, in both arguments."""
    f, v, _ = random_case(n=10, d=3, c=2, side=2.0, seed=2)
    inputs = (v.clone().requires_grad_(), f.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda v, f: lab.exact_gaussian_filter(v, f, normalize), inputs)


# ----------------------------------------------------------------- the lattice vs the exact filter
@pytest.mark.parametrize("normalize", NORMS)
def test_lattice_feature_grad_random_points(normalize):
    f, v, grad_out = random_case()
    _, gf, _ = grads(lambda v, f: lab.gaussian_filter(v, f, normalize, backend="torch"), v, f, grad_out)
    _, wf, _ = grads(lambda v, f: lab.exact_gaussian_filter(v, f, normalize), v, f, grad_out)
    cos, rel = cos_rel(gf, wf)
    assert cos > RANDOM_COS_MIN and rel < RANDOM_REL_MAX, (cos, rel)


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lattice_feature_grad_photo(normalize, dtype):
    """Bilateral features of a photo (d = 5, coordinates up to 255/θβ ≈ 20): float32 included."""
    f = photo_features().to(dtype)
    g = torch.Generator().manual_seed(4)
    v = torch.softmax(2 * torch.randn(1, 4, 24, 24, generator=g, dtype=torch.float64), 1).to(dtype)
    grad_out = torch.randn(1, 4, 24, 24, generator=g, dtype=torch.float64).to(dtype)
    _, gf, _ = grads(lambda v, f: lab.gaussian_filter(v, f, normalize, backend="torch"), v, f, grad_out)
    _, wf, _ = grads(lambda v, f: lab.exact_gaussian_filter(v, f, normalize), v, f, grad_out)
    assert gf.dtype == dtype and gf.shape == f.shape
    cos, rel = cos_rel(gf, wf)
    assert cos > PHOTO_COS_MIN and rel < PHOTO_REL_MAX, (cos, rel)


@pytest.mark.parametrize("normalize", NORMS)
def test_value_gradient_is_still_the_adjoint(normalize):
    """With features that require grad, ∂L/∂v is exactly what it is with detached features."""
    f, v, grad_out = random_case(n=200)
    results = []
    for features in (f.clone().requires_grad_(), f):
        vv = v.clone().requires_grad_()
        out = lab.PermutohedralLattice(features, backend="torch").filter(vv, normalize)
        results.append((out.detach(), torch.autograd.grad(out, vv, grad_out)[0]))
    (out, gv), (want, wv) = results
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(gv, wv, rtol=1e-13, atol=1e-13)


def test_extra_channels_only_when_features_need_grad():
    """Values only: K on C channels forward, Kᵀ on C backward. Features: + K on d·C, Kᵀ on (d+1)·C."""
    f, v, grad_out = random_case(n=100, d=3, c=2)
    channels = []

    def counted(lat):
        apply = lat.apply_kernel
        lat.apply_kernel = lambda x, transpose=False: (
            channels.append(("Kt" if transpose else "K", x.shape[1])) or apply(x, transpose)
        )
        lat.normalizer()  # cached before counting
        channels.clear()
        return lat

    lat = counted(lab.PermutohedralLattice(f, backend="torch"))
    lat.filter(v.clone().requires_grad_(), "after").backward(grad_out)
    assert channels == [("K", 2), ("Kt", 2)]  # K v forward, Kᵀ g backward, nothing else

    channels.clear()
    fg = f.clone().requires_grad_()
    lat = counted(lab.PermutohedralLattice(fg, backend="torch"))
    with torch.no_grad():
        lat.filter(v, "after")
    assert channels == [("K", 2)]  # no grad mode: the plain path
    channels.clear()
    lat.filter(v, "after").backward(grad_out)
    # forward K v (2); backward of K v: K(f⊙v) (3·2) and Kᵀ[g, f⊙g] (4·2); of K·1: K(f) (3) and Kᵀ[g, f⊙g] (4)
    assert sorted(channels) == sorted([("K", 2), ("K", 6), ("Kt", 8), ("K", 3), ("Kt", 4)])
    assert fg.grad is not None and fg.grad.abs().sum() > 0


def test_batch_feature_gradient_equals_per_element():
    """(B, d, H, W) features: each element's gradient is its own (no vertex shared, per-element centring)."""
    g = torch.Generator().manual_seed(5)
    f = torch.rand(3, 2, 6, 7, generator=g, dtype=torch.float64) * 3
    f[1] += 40.0  # far away: centring per element keeps float32-size cancellation out
    v = torch.rand(3, 2, 6, 7, generator=g, dtype=torch.float64)
    grad_out = torch.randn(3, 2, 6, 7, generator=g, dtype=torch.float64)
    _, gf, _ = grads(lambda v, f: lab.gaussian_filter(v, f, "symmetric", backend="torch"), v, f, grad_out)
    for b in range(3):
        one = (v[b : b + 1], f[b : b + 1], grad_out[b : b + 1])
        _, want, _ = grads(lambda v, f: lab.gaussian_filter(v, f, "symmetric", backend="torch"), *one)
        torch.testing.assert_close(gf[b : b + 1], want, rtol=1e-12, atol=1e-12)


def test_primitive_transpose_flag_is_the_adjoint():
    """KernelProduct(transpose=True) applies Kᵀ: <K x, y> = <x, Kᵀ y> on the (non-symmetric) lattice K."""
    f, v, grad_out = random_case(n=150, d=3, c=2)
    fg = f.clone().requires_grad_()
    lat = lab.PermutohedralLattice(fg, backend="torch")
    kx = KernelProduct.apply(v, fg, lat, False, None)
    kty = KernelProduct.apply(grad_out, fg, lat, True, None)
    lhs, rhs = float((kx * grad_out).sum().detach()), float((v * kty).sum().detach())
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)
    assert not torch.allclose(kx, KernelProduct.apply(v, fg, lat, True, None))  # K is not symmetric


# ------------------------------------------------------------------------------- a tiny learning test
THETA_TRUE = 2.0


@pytest.mark.parametrize("filter_name", ["exact", "lattice"])
@pytest.mark.parametrize("theta_start", [4.0, 1.0])
def test_gradient_descent_on_log_theta_finds_the_bandwidth(filter_name, theta_start):
    """Points scaled by a wrong θ; the target made with the right θ by the exact filter. 30 Adam steps on
    log θ (measured 2026-11-25: exact 4 → 2.04, 1 → 2.22; lattice 4 → 1.99, 1 → 1.92)."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(150, 2, generator=g, dtype=torch.float64) * 10  # positions in pixels
    v = torch.rand(150, 3, generator=g, dtype=torch.float64)
    target = lab.exact_gaussian_filter(v, u / THETA_TRUE, "after")
    log_theta = torch.tensor(math.log(theta_start), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_theta], lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        f = u / log_theta.exp()
        if filter_name == "exact":
            out = lab.exact_gaussian_filter(v, f, "after")
        else:
            out = lab.gaussian_filter(v, f, "after", backend="torch")
        (out - target).square().mean().backward()
        opt.step()
    start_gap, end_gap = abs(math.log(theta_start / THETA_TRUE)), abs(float(log_theta.detach()) - math.log(THETA_TRUE))
    assert end_gap < 0.25 * start_gap, (math.exp(float(log_theta.detach())), theta_start)


# ------------------------------------------------------------------------------ Triton vs PyTorch
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Triton and torch sum the same float32 products in different orders (test_triton.py). Measured 2026-11-25 in
# the interpreter on the case below, max |Δ| / max |torch| per normalisation (none / after / symmetric):
# outputs and value gradients ≤ 3.3e-7; feature gradients 6.5e-7 / 1.7e-5 / 5.6e-6. "after" differentiates
# K v / K 1, whose two feature terms nearly cancel: the torch float32 path itself is 3.4e-5 from float64 there.
# Bounds, relative to the largest entry: 1e-5 (outputs, value gradients) and 1e-4 (feature gradients).
TRITON_TOL = {"out": 1e-5, "features": 1e-4, "values": 1e-5}


@pytest.mark.interpreter
@pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 set before import (pytest -m interpreter)")
@pytest.mark.parametrize("normalize", NORMS)
def test_triton_feature_gradient_equals_torch(normalize):
    pytest.importorskip("triton", reason="Triton is not installed")
    f = photo_features(size=12).float().repeat(2, 1, 1, 1)
    f[1] = f[1].flip(-1)  # two different elements in the batch
    g = torch.Generator().manual_seed(6)
    v = torch.rand(2, 3, 12, 12, generator=g)
    grad_out = torch.randn(2, 3, 12, 12, generator=g)  # one shared grad_output
    results = {}
    for backend in ("torch", "triton"):
        results[backend] = grads(
            lambda v, f, b=backend: lab.gaussian_filter(v, f, normalize, backend=b), v, f, grad_out
        )
    for name, got, want in zip(TRITON_TOL, results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=TRITON_TOL[name] * float(want.abs().max()))
