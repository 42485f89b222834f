"""The Triton path on volumes and many-channel guides: d + 1 and L are launch parameters, not fixed shapes.

The fused mean-field kernel takes d + 1 corners per lattice (``DP1_A``, ``DP1_B``) and the labels padded to a
power of two (``BLOCK_L``) as compile-time constants, one compilation each; the lattice kernels take
``DP1`` (slice) and the number of blur axes (d + 1 launches). These tests run them at d = 4, 6 and 10
(3-D with C = 1, 2-D with C = 4, 3-D with C = 7) and L = 2, 17 and 64 against the PyTorch path on the same
lattice (tight), and against the exact CRF (loose).

Tests that take ``device`` run in the Triton interpreter (``-m interpreter``, own pytest process with
``TRITON_INTERPRET=1``, a few hundred points) and compiled on a CUDA device (``-m gpu``, ~0.1–0.2 M points);
see ``tests/conftest.py``. The compile test runs in the main process and builds the kernel for sm_90 without
a GPU:

    TRITON_INTERPRET=1 .venv/bin/python -m pytest -m interpreter tests/crf/test_triton_volumes.py
    .venv/bin/python -m pytest -m gpu tests/crf/test_triton_volumes.py
"""

import os
import sys
from pathlib import Path

import pytest
import torch

from lab.crf import CRFKernels, mean_field
from lab.lattice.multi import filter_scales
from lab.lattice.torch_ops import TorchOps

triton = pytest.importorskip("triton", reason="Triton is not installed")

from lab.crf import triton_step  # noqa: E402  (after the importorskip)
from lab.crf.triton_step import fused_mean_field_iteration  # noqa: E402
from lab.lattice.triton import TritonOps  # noqa: E402
from lab.lattice.triton.ops import lattice_blur, lattice_slice, lattice_splat  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))
from test_triton import F64_ATOL, cuda_compile, stages  # noqa: E402  (the lattice tests' helpers)
from test_triton_step import unfused_steps  # noqa: E402  (tests/crf: the unfused update in PyTorch)
from test_volumes import volume, volume_params  # noqa: E402  (tests/crf: the ellipsoid volume and its θ)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# (spatial shape on CPU, on CUDA; channels C; labels L): d = spatial axes + C on the bilateral lattice.
CASES = [
    pytest.param((5, 6, 7), (48, 56, 64), 1, 2, id="3d-C1-d4-L2"),  # 2 labels padded to a 16-wide tile
    pytest.param((12, 14), (384, 448), 4, 17, id="2d-C4-d6-L17"),  # 17 labels: a partial 32-wide tile
    pytest.param((5, 6, 7), (40, 48, 56), 7, 64, id="3d-C7-d10-L64"),  # 11 corners, a full 64-wide tile
]

# Triton against the PyTorch path, T = 3 in float32: measured 2026-12-02 in the interpreter over CASES and both
# normalisations, max |ΔQ| ≤ 1.2e-6 and max |Δlogits| ≤ 4.8e-6 on logits up to ~20 (relative ≤ 2.4e-7). The
# bound of tests/crf/test_triton_step.py: ~20x that, for the GPU's FMA contraction and tl.dot's summation order.
TRITON_ATOL, TRITON_RTOL = 2e-5, 1e-5
# The lattice CRF (either backend) against the exact CRF, T = 3, float64 exact vs float32 lattice, measured
# 2026-12-02 over CASES and both normalisations: argmax agreement 0.995–1.0 (d = 4), 0.935–0.946 (d = 6),
# 0.900–0.919 (d = 10, 64 labels, 18 % of the voxels with a top-two margin < 0.05). The mean total-variation
# distance ½ Σ_l |ΔQ| to the exact Q is at most 0.76 of the distance from softmax(U) to it (d = 10: 0.165 vs
# 0.22; d = 6: 0.045 vs 0.46; d = 4: 0.0007 vs 0.037): the lattice's own error, which grows with d
# (docs/lattice.md); the Triton path adds ~1e-6. Only where the exact CRF is cheap.
EXACT_MIN_AGREEMENT = 0.88
EXACT_MAX_TV_RATIO = 0.85
EXACT_MAX_POINTS = 4096  # N² dense kernel entries: the interpreter's sizes only
# One fused step over 14 programs, float32 through both paths: measured 2026-12-02 in the interpreter max
# |Δlogits| 1.9e-6 (L = 64) and 9.5e-7 (L = 17) on logits up to 18, max |Δq| 2.4e-7; the bound as above.
STEP_ATOL, STEP_RTOL = TRITON_ATOL, TRITON_RTOL
# The lattice stages, TritonOps vs TorchOps in the same dtype: the error relative to the stage's largest
# |output| (the blur at d = 10 shrinks random values ~1700x, so one absolute bound would be blind there).
# Measured 2026-12-02 over CASES: float32 ≤ 1.2e-7, float64 ≤ 2.4e-16 (summation order only).
OPS_REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def volume_case(shape, channels, labels, device, normalize="symmetric", seed=0):
    """(unary (1, L, *shape) float32, guide (1, C, *shape), params) on ``device``.

    The ellipsoid volume of tests/crf/test_volumes.py, its unary stretched over L labels and given per-label
    noise (σ = 1), so that the argmax spreads over many labels and the CRF changes some of them.
    """
    unary, guide = volume(channels, shape, labels=labels, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    unary = 3 * unary + torch.randn(unary.shape, generator=g, dtype=torch.float64)
    params = volume_params(channels, len(shape), normalize=normalize)
    return unary.float().to(device), guide.to(device), params


def total_variation(q: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over voxels of ½ Σ_l |q − exact| for (B, L, *spatial) maps."""
    return float((0.5 * (q.double() - exact).abs().sum(1)).mean())


def same_lattices(a: CRFKernels, b: CRFKernels) -> None:
    """The two backends' kernels hold the same lattices (the build does not depend on the backend)."""
    for la, lb in zip(a.lattices, b.lattices, strict=True):
        assert torch.equal(la.structure.vertex_index, lb.structure.vertex_index)
        assert torch.equal(la.structure.barycentric, lb.structure.barycentric)


# ------------------------------------------------------------------ the whole mean field: Triton vs PyTorch
@pytest.mark.parametrize(("cpu_shape", "cuda_shape", "channels", "labels"), CASES)
@pytest.mark.parametrize("normalize", ["after", "symmetric"])
def test_mean_field_matches_torch_path(device, cpu_shape, cuda_shape, channels, labels, normalize, monkeypatch):
    shape = cpu_shape if device == "cpu" else cuda_shape
    unary, guide, p = volume_case(shape, channels, labels, device, normalize)
    monkeypatch.setenv("LAB_CPU_FUSED", "0")  # on CPU tensors: the PyTorch path, not the compiled Numba one
    triton_kernels = CRFKernels(guide, p, backend="triton")
    torch_kernels = CRFKernels(guide, p, backend="torch")
    assert triton_kernels.lattices[0].d == len(shape) + channels
    same_lattices(triton_kernels, torch_kernels)
    with torch.no_grad():
        got = mean_field(unary, guide, p, 3, keep=None, kernels=triton_kernels)
        want = mean_field(unary, guide, p, 3, keep=None, kernels=torch_kernels)
    torch.testing.assert_close(got.logits, want.logits, atol=TRITON_ATOL, rtol=TRITON_RTOL)
    torch.testing.assert_close(got.q, want.q, atol=TRITON_ATOL, rtol=TRITON_RTOL)

    if guide[0, 0].numel() <= EXACT_MAX_POINTS:  # the exact CRF, float64, as the loose outside reference
        exact = mean_field(unary.double(), guide, p, 3, keep=None, message_passing="exact").q
        agreement = (exact.argmax(1) == got.q.argmax(1)).double().mean().item()
        assert agreement >= EXACT_MIN_AGREEMENT, agreement
        tv, tv_unary = total_variation(got.q, exact), total_variation(unary.softmax(1), exact)
        assert tv <= EXACT_MAX_TV_RATIO * tv_unary, (tv, tv_unary)  # closer to the exact Q than the unary is


# -------------------------------------------------------------- one fused step over many programs, d = 10
@pytest.mark.parametrize("labels", [17, 64])
def test_fused_step_multi_block_d10(device, labels):
    """The GPU's launch shape in the interpreter: 16 points per program (14 programs, a partial last one)."""
    shape = (5, 6, 7) if device == "cpu" else (40, 48, 56)
    unary, guide, p = volume_case(shape, 7, labels, device, seed=labels)
    kernels = CRFKernels(guide, p, backend="triton")
    lattices = list(kernels.lattices)
    assert [lat.structure.vertex_index.shape[1] for lat in lattices] == [11, 4]  # DP1_A, DP1_B
    u = kernels.to_points(unary).contiguous()
    q = u.softmax(1)
    scales = [filter_scales(lat, p.normalize, torch.float32) for lat in lattices]
    blurred = [lat.torch_ops.blur(lat.torch_ops.splat(pre * q)) for lat, (pre, _) in zip(lattices, scales, strict=True)]
    norms = [post for _, post in scales]
    g = torch.Generator().manual_seed(labels)
    weights = (torch.rand(2, labels, generator=g) * 5).to(device)
    compat = (1 - torch.eye(labels) + 0.1 * torch.rand(labels, labels, generator=g)).to(device)
    args = (u, blurred, lattices, norms, weights, compat)
    with torch.no_grad():
        got = fused_mean_field_iteration(*args, block_m=16)  # (logits, q)
        want = unfused_steps(*args)
    torch.testing.assert_close(got, want, atol=STEP_ATOL, rtol=STEP_RTOL)


# ------------------------------------------------------------------- the lattice stages at d = 4, 6 and 10
@pytest.mark.parametrize(("cpu_shape", "cuda_shape", "channels", "labels"), CASES)
def test_triton_ops_match_torch_ops(device, cpu_shape, cuda_shape, channels, labels):
    """Splat, blur both ways and slice of the bilateral lattice, TritonOps vs TorchOps, L channels."""
    shape = cpu_shape if device == "cpu" else cuda_shape
    _, guide, p = volume_case(shape, channels, labels, device)
    s = CRFKernels(guide, p, backend="triton").lattices[0].structure
    g = torch.Generator().manual_seed(labels)
    x = torch.randn(s.num_points, labels, generator=g, dtype=torch.float64).to(device)
    for dtype, tol in OPS_REL_TOL.items():
        got, want = stages(TritonOps(s), x.to(dtype)), stages(TorchOps(s), x.to(dtype))
        for name, value in got.items():
            assert value.dtype == dtype, name
            atol = tol * float(want[name].abs().max())  # scaled to the stage's magnitude
            msg = lambda m, n=name, dt=dtype: f"{n} {dt}: {m}"  # noqa: E731
            torch.testing.assert_close(value, want[name], atol=atol, rtol=0, msg=msg)


def test_launchers_multi_block_d10(device):
    """d = 10, 64 channels in two 32-wide tiles, 128 vertices per program (a partial last block)."""
    shape = (5, 6, 7) if device == "cpu" else (40, 48, 56)
    _, guide, p = volume_case(shape, 7, 64, device)
    s = CRFKernels(guide, p, backend="triton").lattices[0].structure
    assert s.d == 10
    layout, want = TritonOps(s).layout, TorchOps(s)
    x = torch.randn(s.num_points, 64, generator=torch.Generator().manual_seed(10), dtype=torch.float64).to(device)
    blocks = {"block_rows": 128, "block_channels": 32}
    splat = lattice_splat(x, layout, **blocks)
    torch.testing.assert_close(splat, want.splat(x), atol=F64_ATOL, rtol=0)
    for reverse in (False, True):
        got = lattice_blur(splat, layout, reverse, **blocks)
        torch.testing.assert_close(got, want.blur(splat, reverse), atol=F64_ATOL, rtol=0)
    sliced = lattice_slice(splat, layout.vertex_index, layout.barycentric, **blocks)
    torch.testing.assert_close(sliced, want.slice_(splat), atol=F64_ATOL, rtol=0)


# --------------------------------------------------------- compiled for a GPU, on a machine without one
@pytest.mark.skipif(INTERPRET, reason="compiles the real kernel: run without TRITON_INTERPRET")
def test_fused_kernel_compiles_for_cuda_at_d10_and_64_labels():
    """The interpreter accepts what the GPU compiler may reject: 11 + 4 corners, a (64, 64) tl.dot (~10 s)."""
    kernel = triton_step._mean_field_kernel
    pointers = {n: "*i32" if n.startswith("index_") else "*fp32" for n in kernel.arg_names if n.endswith("_ptr")}
    constexprs = {"DP1_A": 11, "DP1_B": 4, "HAS_B": True, "HAS_EXTRA": False, "BLOCK_M": 64, "BLOCK_L": 64}
    asm = cuda_compile(kernel, pointers, constexprs)
    assert "cubin" in asm and len(asm["cubin"]) > 0
