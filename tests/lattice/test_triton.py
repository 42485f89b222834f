"""The Triton lattice kernels against the PyTorch ones (one rung down the ladder of oracles).

Every test that takes ``device`` runs twice (``tests/conftest.py``): on CPU tensors in the Triton interpreter
(``-m interpreter``, small inputs; ``TRITON_INTERPRET=1`` must be set before Triton is imported, so they run
in their own pytest process) and compiled on a CUDA device (``-m gpu``, real sizes where the size matters):

    TRITON_INTERPRET=1 .venv/bin/pytest -m interpreter tests/lattice/test_triton.py
    .venv/bin/pytest -m gpu tests/lattice/test_triton.py

The compile tests run in the main process (no ``TRITON_INTERPRET``): they build every kernel for sm_90
without a GPU. The fused mean-field step is tested in ``tests/crf/test_triton_step.py``.
"""

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import lab
from lab.lattice.torch_ops import TorchOps

triton = pytest.importorskip("triton", reason="Triton is not installed")

from lab.lattice.triton import TritonOps  # noqa: E402  (after the importorskip)
from lab.lattice.triton import kernels as tk  # noqa: E402
from lab.lattice.triton.layout import row_split  # noqa: E402
from lab.lattice.triton.ops import csr_matmul, lattice_blur, lattice_slice, lattice_splat  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import triton_schedules  # noqa: E402  (benchmarks/: the schedule benchmarks/gpu.py measures)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# Tolerances. Triton and torch sum the same products in float32, in the same order for splat (measured
# bit-identical) and in another order for blur (½·centre + ¼·(left + right)) and slice. Measured 2026-11-25 in
# the interpreter on the cases below: filter max |Δ| 2.9e-6 on outputs up to 17 ("none"), gradient 3.8e-6:
# relative ≤ 3e-7 everywhere. The bounds, atol + rtol·|want|, allow ~30x that relative error (GPU FMA
# contraction and cuSPARSE's summation order differ again).
F32_ATOL, F32_RTOL = 5e-6, 1e-5
# float64 through the kernels (float64 accumulation) vs torch float64: measured 8.9e-16.
F64_ATOL = 1e-12
# bf16 / fp16 inputs accumulated in float32 vs the float64 reference of the same rounded inputs: only the
# final store rounds. The interpreter's float32 → half store truncates (measured 2026-11-25: bf16 max relative
# error 0.0077 ≈ 2^-7, one ulp) where a GPU rounds to nearest (half an ulp), so the bound is one ulp:
# 2^-7 (bf16, 8 significant bits) and 2^-10 (fp16, 11 bits), plus fp16's subnormal spacing 2^-24 as atol
# (tiny barycentric weights give outputs below fp16's normal range; measured max |Δ| 2.9e-8).
HALF_TOL = {torch.bfloat16: (2**-7, 0.0), torch.float16: (2**-10, 2**-24)}  # (rtol, atol)

# (B, H, W) of the filter comparison: small in the interpreter (its cost is per program), real on a GPU.
FILTER_SHAPES = {
    "cpu": [(2, 24, 32)],
    "cuda": [(2, 480, 640), (1, 1000, 1000), (1, 333, 517)],  # 0.6 MP, 1 MP, a non-aligned 0.17 MP
}


def image_features(d, b=2, h=24, w=32, seed=0, device="cpu"):
    """(B, d, H, W) features: bilateral for d=5, spatial for d=2, of a random image (24x32 by default)."""
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(b, 3, h, w, generator=g) * 255).to(device)
    if d == 5:
        return lab.bilateral_features(img, theta_alpha=8.0, theta_beta=13.0)
    return lab.spatial_features(img, theta_gamma=3.0)


def structure(d, device, **size):
    """The lattice structure of :func:`image_features` on ``device``."""
    return lab.PermutohedralLattice(image_features(d, device=device, **size)).structure


# ---------------------------------------------------------------------------------- backend selection
def test_backend_selection(device):
    f = image_features(2, b=1, h=5, w=7, device=device)
    lat = lab.PermutohedralLattice(f, backend="triton")
    assert lat.backend == "triton" and isinstance(lat.ops, TritonOps)
    # "auto": Triton on CUDA tensors, PyTorch on CPU ones (even under the interpreter)
    assert lab.PermutohedralLattice(f, backend="auto").backend == ("triton" if device == "cuda" else "torch")


# ------------------------------------------------------------------------- filter: Triton vs PyTorch
@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("channels", [3, 21])
@pytest.mark.parametrize("normalize", ["none", "symmetric"])
def test_filter_and_gradient_match_torch(device, d, channels, normalize):
    """Forward and the gradient with respect to the values (the adjoint kernels), through the lattice."""
    for b, h, w in FILTER_SHAPES[device]:
        f = image_features(d, b=b, h=h, w=w, device=device)
        g = torch.Generator().manual_seed(channels)
        values = torch.randn(b, channels, h, w, generator=g).to(device)
        grad_out = torch.randn(b, channels, h, w, generator=g).to(device)  # one shared grad_output
        results = {}
        for backend in ("torch", "triton"):
            v = values.clone().requires_grad_(True)
            out = lab.PermutohedralLattice(f, backend=backend).filter(v, normalize)
            out.backward(grad_out)
            results[backend] = (out.detach(), v.grad)
        torch.testing.assert_close(results["triton"][0], results["torch"][0], atol=F32_ATOL, rtol=F32_RTOL)
        torch.testing.assert_close(results["triton"][1], results["torch"][1], atol=F32_ATOL, rtol=F32_RTOL)


def test_adjoint_identity_float64(device):
    """<K x, y> = <x, Kᵀ y> with the Triton kernels in float64: the backward pass is exactly the adjoint."""
    f = image_features(5, b=1, h=9, w=13, device=device).double()
    lat = lab.PermutohedralLattice(f, backend="triton")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 9, 13, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    y = torch.randn(1, 4, 9, 13, generator=g, dtype=torch.float64).to(device)
    kx = lat.filter(x, "none")
    (kty,) = torch.autograd.grad((kx * y).sum(), x)  # Kᵀ y through the reversed kernels
    lhs, rhs = float((kx * y).sum().detach()), float((x * kty).sum().detach())
    assert abs(lhs - rhs) < F64_ATOL * abs(lhs)
    want = lab.PermutohedralLattice(f, backend="torch").filter(x, "none")
    torch.testing.assert_close(kx, want, atol=F64_ATOL, rtol=0)


# ------------------------------------------------------- ops objects: TritonOps vs TorchOps, stage by stage
def stages(ops, x):
    """Every stage of an ops object on (M, C) point values: splat, blur both ways, slice, the whole filter."""
    y = ops.splat(x)
    return {
        "splat": y,
        "blur": ops.blur(y),
        "blur reversed": ops.blur(y, reverse=True),
        "slice_": ops.slice_(y),
        "filter": ops.slice_(ops.blur(ops.splat(x))),
    }


@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize(("dtype", "atol", "rtol"), [(torch.float32, F32_ATOL, F32_RTOL), (torch.float64, F64_ATOL, 0)])
def test_ops_match_torch_ops(device, d, dtype, atol, rtol):
    """The same structure through both ops objects: same results stage by stage, in the input's dtype."""
    s = structure(d, device, b=2, h=24, w=32)
    x = torch.randn(s.num_points, 21, generator=torch.Generator().manual_seed(d), dtype=dtype).to(device)
    got, want = stages(TritonOps(s), x), stages(TorchOps(s), x)
    for name, value in got.items():
        assert value.dtype == dtype, name
        torch.testing.assert_close(value, want[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def test_triton_ops_layout():
    """The compact layout: int32 indices, and the structure's own neighbour tables (forward, backward)."""
    s = structure(2, "cpu", b=1, h=6, w=5)
    layout = TritonOps(s).layout
    assert layout.vertex_index.dtype == torch.int32 and layout.splat_col.dtype == torch.int32
    assert layout.neighbours.dtype == torch.int32 and layout.neighbours.shape == (3, s.num_vertices, 2)
    assert torch.equal(layout.neighbours.long(), s.blur_neighbours)


# ------------------------------------------------------------------ launchers: tiling, dtypes, edges
# Non-aligned sizes with small blocks, so that every kernel runs several row blocks and channel tiles
# with partial masks (the GPU's launch shape, not the interpreter's single big block).
LAUNCH_CASES = [
    # (d, batch, height, width, channels, block_rows, block_channels)
    (2, 1, 17, 23, 21, 64, 8),  # 21 channels in 3 tiles of 8, partial last tile
    (5, 2, 7, 11, 3, 32, 4),  # 3 channels in a 4-wide tile, B=2
    (5, 1, 9, 5, 1, 128, 1),  # one channel; one row block
]


@pytest.mark.parametrize(("d", "b", "h", "w", "channels", "block_rows", "block_channels"), LAUNCH_CASES)
def test_launchers_multi_block(device, d, b, h, w, channels, block_rows, block_channels):
    s = structure(d, device, b=b, h=h, w=w, seed=d + h)
    g = torch.Generator().manual_seed(h)
    x = torch.randn(s.num_points, channels, generator=g, dtype=torch.float64).to(device)
    blocks = {"block_rows": block_rows, "block_channels": block_channels}
    layout, want = TritonOps(s).layout, TorchOps(s)

    splat = lattice_splat(x, layout, **blocks)
    torch.testing.assert_close(splat, want.splat(x), atol=F64_ATOL, rtol=0)
    scale = torch.rand(s.num_points, 1, generator=g, dtype=torch.float64).to(device)
    got = lattice_splat(x, layout, scale=scale, **blocks)  # the pre-scale folded into the splat weights
    torch.testing.assert_close(got, want.splat(scale * x), atol=F64_ATOL, rtol=0)
    for reverse in (False, True):
        got = lattice_blur(splat, layout, reverse, **blocks)
        torch.testing.assert_close(got, want.blur(splat, reverse), atol=F64_ATOL, rtol=0)
    sliced = lattice_slice(splat, layout.vertex_index, layout.barycentric, **blocks)
    torch.testing.assert_close(sliced, want.slice_(splat), atol=F64_ATOL, rtol=0)
    # The general CSR product: on rows of exactly d+1 entries (the slice matrix), and on the last blur axis'
    # matrix against the blur kernel's neighbour table for that axis alone.
    m = s.slice_matrix
    got = csr_matmul(m.crow_indices(), m.col_indices(), m.values(), splat, **blocks)
    torch.testing.assert_close(got, want.slice_(splat), atol=F64_ATOL, rtol=0)
    m, last_axis = s.blur_matrices[-1], replace(layout, neighbours=layout.neighbours[-1:])
    got = csr_matmul(m.crow_indices(), m.col_indices(), m.values().double(), splat, **blocks)
    torch.testing.assert_close(got, lattice_blur(splat, last_axis, **blocks), atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize("schedule", ["tile", "csr-vector"])  # the library's; the benchmark's alternative
def test_csr_row_split_two_passes(device, schedule):
    """Rows cut into pieces of at most 5 entries, summed in two passes, equal the one-pass product."""
    s = structure(2, device, b=1, h=6, w=7)
    crow = s.splat_matrix.crow_indices()
    split = row_split(crow, 5)
    assert split is not None and split.crow.shape[0] > crow.shape[0]
    assert int((split.crow[1:] - split.crow[:-1]).max()) <= 5
    assert row_split(crow, int((crow[1:] - crow[:-1]).max())) is None  # nothing to cut
    layout = replace(TritonOps(s).layout, splat_split=split)
    x = torch.randn(s.num_points, 21, dtype=torch.float64).to(device)
    if schedule == "tile":
        got = lattice_splat(x, layout, block_rows=16, block_channels=32)
    else:
        got = triton_schedules.splat_csr_vector(x, layout, rows=16, block_entries=4, block_channels=32)
    torch.testing.assert_close(got, TorchOps(s).splat(x), atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize(("d", "h", "w", "block_channels"), [(2, 6, 7, 8), (5, 5, 6, 32)])
def test_splat_csr_vector_schedule(device, d, h, w, block_channels):
    """The benchmark's CSR-vector splat: rows one by one, 16 per program (a partial last program), 4 entries
    per step (several steps per row), the pre-scale folded in.

    Small images: the interpreter pays per row here (~10 ms), not per block.
    """
    s = structure(d, device, b=1, h=h, w=w)
    g = torch.Generator().manual_seed(d)
    x = torch.randn(s.num_points, 21, generator=g, dtype=torch.float64).to(device)
    scale = torch.rand(s.num_points, 1, generator=g, dtype=torch.float64).to(device)
    got = triton_schedules.splat_csr_vector(
        x, TritonOps(s).layout, scale=scale, rows=16, block_entries=4, block_channels=block_channels
    )
    torch.testing.assert_close(got, TorchOps(s).splat(scale * x), atol=F64_ATOL, rtol=0)


def test_filter_flat_image_splits_long_splat_rows(device):
    """A two-colour image: 36 vertices collect up to 384 points each, so the lattice splat runs in two passes."""
    img = torch.full((2, 3, 24, 32), 100.0, device=device)
    img[:, :, :, 16:] = 200.0
    f = lab.bilateral_features(img, 80.0, 13.0)
    lat = lab.PermutohedralLattice(f, backend="triton")
    assert lat.ops.layout.splat_split is not None
    v = torch.randn(2, 21, 24, 32, generator=torch.Generator().manual_seed(0)).to(device)
    want = lab.PermutohedralLattice(f, backend="torch").filter(v, "symmetric")
    torch.testing.assert_close(lat.filter(v, "symmetric"), want, atol=F32_ATOL, rtol=F32_RTOL)


def test_launchers_strided_input(device):
    """A column slice of a wider tensor (row stride ≠ C) reads the right elements."""
    s = structure(2, device, b=1, h=8, w=9)
    wide = torch.randn(s.num_points, 10, dtype=torch.float64).to(device)
    x = wide[:, 2:7]
    got = lattice_splat(x, TritonOps(s).layout, block_rows=32)
    torch.testing.assert_close(got, TorchOps(s).splat(x), atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_values_accumulate_in_float32(device, dtype):
    s = structure(5, device, b=1, h=12, w=16)
    ops, want = TritonOps(s), TorchOps(s)
    x = torch.rand(s.num_points, 21, dtype=torch.float64).to(device, dtype)  # positive: no cancellation
    splat = ops.splat(x)
    assert splat.dtype == dtype
    rtol, atol = HALF_TOL[dtype]
    torch.testing.assert_close(splat.double(), want.splat(x.double()), rtol=rtol, atol=atol)
    sliced = lattice_slice(splat, ops.layout.vertex_index, ops.layout.barycentric, out_dtype=torch.float32)
    assert sliced.dtype == torch.float32  # float32 accumulator stored unrounded
    torch.testing.assert_close(sliced.double(), want.slice_(splat.double()), rtol=1e-6, atol=0)


def test_launchers_empty_and_bad_blocks(device):
    s = structure(2, device, b=1, h=4, w=4)
    ops = TritonOps(s)
    assert ops.splat(torch.zeros(s.num_points, 0, device=device)).shape == (s.num_vertices, 0)
    with pytest.raises(ValueError, match="block_rows: expected a power of two"):
        lattice_slice(
            torch.zeros(s.num_vertices, 2, device=device), ops.layout.vertex_index, ops.layout.barycentric,
            block_rows=48,
        )  # fmt: skip


# ------------------------------------------------------------------------------ GPU only: torch.library
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(INTERPRET, reason="compiled kernels: run without TRITON_INTERPRET")
def test_gpu_ops_opcheck_and_compile():
    """The torch.library.triton_op registrations: opcheck, and torch.compile(fullgraph=True) traces the kernels.

    GPU only: both trace the kernels, which needs a driver (they fail on CPU tensors).
    """
    s = structure(5, "cuda", b=1, h=64, w=48)
    x = torch.randn(s.num_points, 21, device="cuda")
    crow, col, val = s.splat_matrix.crow_indices(), s.splat_matrix.col_indices(), s.splat_matrix.values()
    torch.library.opcheck(torch.ops.lab.lattice_csr_matmul.default, (crow, col, val, x, None, torch.float32, 64, 32))
    y = torch.randn(s.num_vertices, 21, device="cuda")
    torch.library.opcheck(
        torch.ops.lab.lattice_slice.default, (y, s.vertex_index, s.barycentric, torch.float32, 64, 32)
    )

    def splat_slice(x, crow, col, val, index, bary):
        return lattice_slice(csr_matmul(crow, col, val, x), index, bary) * 2

    args = (x, crow, col, val, s.vertex_index, s.barycentric)
    compiled = torch.compile(splat_slice, fullgraph=True)
    torch.testing.assert_close(compiled(*args), splat_slice(*args), atol=F32_ATOL, rtol=F32_RTOL)


# ------------------------------------------------------------- compiled for a GPU, on a machine without one
def cuda_compile(kernel, pointer_types: dict, constexprs: dict, capability: int = 90) -> dict:
    """Compile a kernel to a cubin with Triton's own toolchain (ptxas ships with Triton); no device needed."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        names = kernel.arg_names
        signature = {n: "constexpr" if n in constexprs else pointer_types.get(n, "i32") for n in names}
        source = ASTSource(kernel, signature=signature, constexprs=constexprs)
        target = GPUTarget("cuda", capability, 32)
    except (ImportError, TypeError, AttributeError) as exc:  # another Triton's internal API: not our failure
        pytest.skip(f"this Triton's ASTSource/GPUTarget API differs: {exc}")
    return triton.compile(source, target=target).asm


FP32, FP64 = triton.language.float32, triton.language.float64
COMPILE_CASES = [
    # (kernel, pointer types (others are i32 scalars), constexprs)
    (tk.slice_kernel, {"out_ptr": "*fp32", "y_ptr": "*bf16", "index_ptr": "*i32", "weight_ptr": "*fp32"},
     {"DP1": 17, "ACC_DTYPE": FP32, "BLOCK_R": 64, "BLOCK_C": 32}),  # d = 16, bf16 values
    (tk.slice_kernel, {"out_ptr": "*fp64", "y_ptr": "*fp64", "index_ptr": "*i64", "weight_ptr": "*fp32"},
     {"DP1": 6, "ACC_DTYPE": FP64, "BLOCK_R": 64, "BLOCK_C": 32}),
    (tk.csr_spmm_kernel, {"out_ptr": "*fp32", "crow_ptr": "*i64", "col_ptr": "*i32", "val_ptr": "*fp32",
                          "x_ptr": "*fp32", "scale_ptr": "*fp32"},
     {"HAS_SCALE": True, "ACC_DTYPE": FP32, "BLOCK_R": 64, "BLOCK_C": 32}),  # the splat
    (tk.csr_spmm_kernel, {"out_ptr": "*fp64", "crow_ptr": "*i64", "col_ptr": "*i64", "val_ptr": "*fp64",
                          "x_ptr": "*fp64", "scale_ptr": "*fp64"},
     {"HAS_SCALE": False, "ACC_DTYPE": FP64, "BLOCK_R": 64, "BLOCK_C": 32}),
    (triton_schedules.csr_vector_kernel, {"out_ptr": "*fp32", "crow_ptr": "*i64", "col_ptr": "*i32",
                                          "val_ptr": "*fp32", "x_ptr": "*fp32", "scale_ptr": "*fp32"},
     {"HAS_SCALE": True, "ACC_DTYPE": FP32, "ROWS": 8, "BLOCK_E": 32, "BLOCK_C": 32}),
    (tk.blur_kernel, {"out_ptr": "*fp32", "y_ptr": "*fp32", "neighbour_ptr": "*i32"},
     {"CENTRE": 0.5, "SIDE": 0.25, "ACC_DTYPE": FP32, "BLOCK_R": 64, "BLOCK_C": 32}),
]  # fmt: skip


@pytest.mark.skipif(INTERPRET, reason="compiles the real kernels: run without TRITON_INTERPRET")
@pytest.mark.parametrize(
    ("kernel", "pointer_types", "constexprs"), COMPILE_CASES, ids=lambda v: getattr(v, "__name__", None)
)
def test_kernels_compile_for_cuda_without_a_gpu(kernel, pointer_types, constexprs):
    """The interpreter accepts code the GPU compiler rejects (types, dot shapes): compile each kernel for sm_90."""
    asm = cuda_compile(kernel, pointer_types, constexprs)
    assert "cubin" in asm and len(asm["cubin"]) > 0
