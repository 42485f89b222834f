"""The Triton lattice kernels against the PyTorch backend (one rung down the ladder of oracles).

Interpreter tests (``-m interpreter``) run the kernels on CPU tensors with ``TRITON_INTERPRET=1``, which must
be set before this module imports Triton, so they run in their own pytest process:

    TRITON_INTERPRET=1 .venv/bin/pytest -m interpreter

GPU tests (``-m gpu``) run the compiled kernels at real sizes and skip without CUDA. The compile tests run in
the main process (no ``TRITON_INTERPRET``): they build every kernel for sm_90 without a GPU.
"""

import os

import pytest
import torch

import lab
from lab.lattice.build import csr
from lab.lattice.triton_fused import fused_mean_field_iteration, fused_mean_field_iteration_reference

triton = pytest.importorskip("triton", reason="Triton is not installed")

from lab.lattice import triton_kernels as tk  # noqa: E402  (after the importorskip)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreter = [
    pytest.mark.interpreter,
    pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 set before import (pytest -m interpreter)"),
]
gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(INTERPRET, reason="compiled kernels: run without TRITON_INTERPRET"),
]


def apply_marks(marks):
    def wrap(obj):
        for mark in reversed(marks):
            obj = mark(obj)
        return obj

    return wrap


# Tolerances. Triton and torch sum the same products in float32, in the same order for splat (measured
# bit-identical) and in another order for blur (½·centre + ¼·(left + right)) and slice. Measured 2026-11-25 in
# the interpreter on the cases below: filter max |Δ| 2.9e-6 on outputs up to 17 ("none"), gradient 3.8e-6,
# fused step 1.9e-6 on logits up to 21: relative ≤ 3e-7 everywhere. The bounds, atol + rtol·|want|, allow
# ~30x that relative error (GPU FMA contraction and cuSPARSE's summation order differ again).
F32_ATOL, F32_RTOL = 5e-6, 1e-5
FUSED_ATOL, FUSED_RTOL = 2e-5, 1e-5
# float64 through the kernels (float64 accumulation) vs torch float64: measured 8.9e-16.
F64_ATOL = 1e-12
# bf16 / fp16 inputs accumulated in float32 vs the float64 reference of the same rounded inputs: only the
# final store rounds. The interpreter's float32 → half store truncates (measured 2026-11-25: bf16 max relative
# error 0.0077 ≈ 2^-7, one ulp) where a GPU rounds to nearest (half an ulp), so the bound is one ulp:
# 2^-7 (bf16, 8 significant bits) and 2^-10 (fp16, 11 bits), plus fp16's subnormal spacing 2^-24 as atol
# (tiny barycentric weights give outputs below fp16's normal range; measured max |Δ| 2.9e-8).
HALF_TOL = {torch.bfloat16: (2**-7, 0.0), torch.float16: (2**-10, 2**-24)}  # (rtol, atol)


def image_features(d, b=2, h=24, w=32, seed=0, device="cpu"):
    """(B, d, H, W) features: bilateral for d=5, spatial for d=2, of a random image (24x32 by default)."""
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(b, 3, h, w, generator=g) * 255).to(device)
    if d == 5:
        return lab.bilateral_features(img, theta_alpha=8.0, theta_beta=13.0)
    return lab.spatial_features(img, theta_gamma=3.0)


def dense(matrix, dtype):
    """A CSR matrix with its values cast, for the torch reference products."""
    return csr(matrix.crow_indices(), matrix.col_indices(), matrix.values().to(dtype), matrix.shape)


# ---------------------------------------------------------------------------------- backend selection
@apply_marks(interpreter)
def test_backend_selection():
    f = image_features(2, b=1, h=5, w=7)
    assert lab.PermutohedralLattice(f, backend="triton").backend == "triton"
    assert lab.PermutohedralLattice(f, backend="auto").backend == "torch"  # CPU tensors: auto stays on torch


# ------------------------------------------------------------------------- filter: Triton vs PyTorch
@apply_marks(interpreter)
@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("channels", [3, 21])
@pytest.mark.parametrize("normalize", ["none", "symmetric"])
def test_filter_and_gradient_match_torch(d, channels, normalize):
    """24x32 images, B=2: forward and the gradient with respect to the values (the adjoint kernels)."""
    f = image_features(d)
    g = torch.Generator().manual_seed(channels)
    values = torch.randn(2, channels, 24, 32, generator=g)
    grad_out = torch.randn(2, channels, 24, 32, generator=g)  # one shared grad_output
    results = {}
    for backend in ("torch", "triton"):
        v = values.clone().requires_grad_(True)
        out = lab.PermutohedralLattice(f, backend=backend).filter(v, normalize)
        out.backward(grad_out)
        results[backend] = (out.detach(), v.grad)
    torch.testing.assert_close(results["triton"][0], results["torch"][0], atol=F32_ATOL, rtol=F32_RTOL)
    torch.testing.assert_close(results["triton"][1], results["torch"][1], atol=F32_ATOL, rtol=F32_RTOL)


@apply_marks(interpreter)
def test_adjoint_identity_float64():
    """<K x, y> = <x, Kᵀ y> with the Triton kernels in float64: the backward pass is exactly the adjoint."""
    f = image_features(5, b=1, h=9, w=13).double()
    lat = lab.PermutohedralLattice(f, backend="triton")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 9, 13, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 9, 13, generator=g, dtype=torch.float64)
    kx = lat.filter(x, "none")
    (kty,) = torch.autograd.grad((kx * y).sum(), x)  # Kᵀ y through the reversed kernels
    lhs, rhs = float((kx * y).sum().detach()), float((x * kty).sum().detach())
    assert abs(lhs - rhs) < F64_ATOL * abs(lhs)
    want = lab.PermutohedralLattice(f, backend="torch").filter(x, "none")
    torch.testing.assert_close(kx, want, atol=F64_ATOL, rtol=0)


# ------------------------------------------------------------------ launchers: tiling, dtypes, edges
# Non-aligned sizes with small blocks, so that every kernel runs several row blocks and channel tiles
# with partial masks (the GPU's launch shape, not the interpreter's single big block).
LAUNCH_CASES = [
    # (d, batch, height, width, channels, block_rows, block_channels)
    (2, 1, 17, 23, 21, 64, 8),  # 21 channels in 3 tiles of 8, partial last tile
    (5, 2, 7, 11, 3, 32, 4),  # 3 channels in a 4-wide tile, B=2
    (5, 1, 9, 5, 1, 128, 1),  # one channel; one row block
]


@apply_marks(interpreter)
@pytest.mark.parametrize(("d", "b", "h", "w", "channels", "block_rows", "block_channels"), LAUNCH_CASES)
def test_launchers_multi_block(d, b, h, w, channels, block_rows, block_channels):
    s = lab.PermutohedralLattice(image_features(d, b=b, h=h, w=w, seed=d + h)).structure
    g = torch.Generator().manual_seed(h)
    x = torch.randn(s.num_points, channels, generator=g, dtype=torch.float64)
    blocks = {"block_rows": block_rows, "block_channels": block_channels}

    c = tk.triton_lattice(s)

    splat = tk.lattice_splat(x, c, **blocks)
    torch.testing.assert_close(splat, dense(s.splat_matrix, torch.float64) @ x, atol=F64_ATOL, rtol=0)
    scale = torch.rand(s.num_points, 1, generator=g, dtype=torch.float64)
    got = tk.lattice_splat(x, c, scale=scale, **blocks)  # the pre-scale folded into the splat weights
    torch.testing.assert_close(got, dense(s.splat_matrix, torch.float64) @ (scale * x), atol=F64_ATOL, rtol=0)
    for reverse in (False, True):
        want = splat
        for m in reversed(s.blur_matrices) if reverse else s.blur_matrices:
            want = dense(m, torch.float64) @ want
        got = tk.lattice_blur(splat, c, reverse, **blocks)
        torch.testing.assert_close(got, want, atol=F64_ATOL, rtol=0)
    sliced = tk.lattice_slice(splat, c.vertex_index, c.barycentric, **blocks)
    torch.testing.assert_close(sliced, dense(s.slice_matrix, torch.float64) @ splat, atol=F64_ATOL, rtol=0)
    # The general CSR product: unrolled (max_nnz known) and looping, on the blur and slice matrices.
    for m, max_nnz in [(s.blur_matrices[0], 3), (s.blur_matrices[-1], 0), (s.slice_matrix, d + 1)]:
        rhs = x if m.shape[1] == s.num_points else splat
        got = tk.csr_matmul(m.crow_indices(), m.col_indices(), m.values(), rhs, max_nnz=max_nnz, **blocks)
        torch.testing.assert_close(got, dense(m, torch.float64) @ rhs, atol=F64_ATOL, rtol=0)


@apply_marks(interpreter)
@pytest.mark.parametrize(("d", "h", "w", "block_channels"), [(2, 6, 7, 8), (5, 5, 6, 32)])
def test_splat_csr_vector_schedule(d, h, w, block_channels):
    """Rows one by one, 16 per program (a partial last program), 4 entries per step (several steps per row).

    Small images: the interpreter pays per row here (~10 ms), not per block.
    """
    s = lab.PermutohedralLattice(image_features(d, b=1, h=h, w=w)).structure
    g = torch.Generator().manual_seed(d)
    x = torch.randn(s.num_points, 21, generator=g, dtype=torch.float64)
    scale = torch.rand(s.num_points, 1, generator=g, dtype=torch.float64)
    got = tk.lattice_splat(
        x, tk.triton_lattice(s), scale=scale, block_rows=16, block_channels=block_channels, block_entries=4
    )
    torch.testing.assert_close(got, dense(s.splat_matrix, torch.float64) @ (scale * x), atol=F64_ATOL, rtol=0)


@apply_marks(interpreter)
@pytest.mark.parametrize("block_entries", [0, 4])  # tile schedule; CSR-vector schedule
def test_csr_row_split_two_passes(block_entries):
    """Rows cut into pieces of at most 5 entries, summed in two passes, equal the one-pass product."""
    s = lab.PermutohedralLattice(image_features(2, b=1, h=6, w=7)).structure
    crow = s.splat_matrix.crow_indices()
    split = tk.row_split(crow, 5)
    assert split is not None and split.crow.shape[0] > crow.shape[0]
    assert int((split.crow[1:] - split.crow[:-1]).max()) <= 5
    x = torch.randn(s.num_points, 21, dtype=torch.float64)
    got = tk.csr_matmul(
        crow, s.splat_matrix.col_indices(), s.splat_matrix.values(), x, split=split, block_rows=16,
        block_channels=32, block_entries=block_entries,
    )  # fmt: skip
    torch.testing.assert_close(got, dense(s.splat_matrix, torch.float64) @ x, atol=F64_ATOL, rtol=0)
    assert tk.row_split(crow, int((crow[1:] - crow[:-1]).max())) is None  # nothing to cut


@apply_marks(interpreter)
def test_filter_flat_image_splits_long_splat_rows():
    """A two-colour image: 36 vertices collect up to 384 points each, so the lattice splat runs in two passes."""
    img = torch.full((2, 3, 24, 32), 100.0)
    img[:, :, :, 16:] = 200.0
    f = lab.bilateral_features(img, 80.0, 13.0)
    lat = lab.PermutohedralLattice(f, backend="triton")
    assert tk.triton_lattice(lat.structure).splat_split is not None
    v = torch.randn(2, 21, 24, 32, generator=torch.Generator().manual_seed(0))
    want = lab.PermutohedralLattice(f, backend="torch").filter(v, "symmetric")
    torch.testing.assert_close(lat.filter(v, "symmetric"), want, atol=F32_ATOL, rtol=F32_RTOL)


@apply_marks(interpreter)
def test_triton_lattice_cached_and_checked():
    s = lab.PermutohedralLattice(image_features(2, b=1, h=6, w=5)).structure
    c = tk.triton_lattice(s)
    assert tk.triton_lattice(s) is c
    assert c.vertex_index.dtype == torch.int32 and c.neighbours.shape == (3, s.num_vertices, 2)
    not_a_blur = csr(
        s.blur_matrices[0].crow_indices(),
        s.blur_matrices[0].col_indices(),
        s.blur_matrices[0].values() * 2,
        s.blur_matrices[0].shape,
    )
    with pytest.raises(ValueError, match="stencil"):
        tk._neighbour_table(not_a_blur)


@apply_marks(interpreter)
def test_launchers_strided_input():
    """A column slice of a wider tensor (row stride ≠ C) reads the right elements."""
    s = lab.PermutohedralLattice(image_features(2, b=1, h=8, w=9)).structure
    wide = torch.randn(s.num_points, 10, dtype=torch.float64)
    x = wide[:, 2:7]
    torch.testing.assert_close(
        tk.lattice_splat(x, tk.triton_lattice(s), block_rows=32),
        dense(s.splat_matrix, torch.float64) @ x,
        atol=F64_ATOL,
        rtol=0,
    )


@apply_marks(interpreter)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_values_accumulate_in_float32(dtype):
    s = lab.PermutohedralLattice(image_features(5, b=1, h=12, w=16)).structure
    x = torch.rand(s.num_points, 21, dtype=torch.float64).to(dtype)  # positive: no cancellation
    splat = tk.lattice_splat(x, tk.triton_lattice(s))
    assert splat.dtype == dtype
    want = dense(s.splat_matrix, torch.float64) @ x.double()
    rtol, atol = HALF_TOL[dtype]
    torch.testing.assert_close(splat.double(), want, rtol=rtol, atol=atol)
    sliced = tk.lattice_slice(splat, s.vertex_index, s.barycentric, out_dtype=torch.float32)
    assert sliced.dtype == torch.float32  # float32 accumulator stored unrounded
    want = dense(s.slice_matrix, torch.float64) @ splat.double()
    torch.testing.assert_close(sliced.double(), want, rtol=1e-6, atol=0)


@apply_marks(interpreter)
def test_launchers_empty_and_bad_blocks():
    s = lab.PermutohedralLattice(image_features(2, b=1, h=4, w=4)).structure
    assert tk.lattice_splat(torch.zeros(s.num_points, 0), tk.triton_lattice(s)).shape == (s.num_vertices, 0)
    with pytest.raises(ValueError, match="block_rows: expected a power of two"):
        tk.lattice_slice(torch.zeros(s.num_vertices, 2), s.vertex_index, s.barycentric, block_rows=48)


# ------------------------------------------------------------------------------ fused mean-field step
def mean_field_inputs(kernels, labels, seed=0, b=2, h=24, w=32, device="cpu"):
    """Lattices (bilateral, spatial, a wider spatial), blurred prescaled Q, norms, weights and µ."""
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(b, 3, h, w, generator=g) * 255).to(device)
    feats = [
        lab.bilateral_features(img, 8.0, 13.0),
        lab.spatial_features(img, theta_gamma=3.0),
        lab.spatial_features(img, theta_gamma=6.0),
    ][:kernels]
    lattices = [lab.PermutohedralLattice(f, backend="torch") for f in feats]
    m = b * h * w
    unary = (torch.randn(m, labels, generator=g) * 3).to(device)
    q = unary.softmax(1)
    norms = [torch.rsqrt(lat.normalizer() + 1e-20) for lat in lattices]  # symmetric normalisation
    blurred = [lat.blur(lat.splat(lat.from_points(n * q))) for lat, n in zip(lattices, norms, strict=True)]
    weights = (torch.rand(kernels, labels, generator=g) * 5).to(device)
    compat = (1 - torch.eye(labels) + 0.1 * torch.rand(labels, labels, generator=g)).to(device)
    return unary, blurred, lattices, norms, weights, compat


def unfused_steps(unary, blurred, lattices, norms, weights, compat):
    """The mean-field update as separate PyTorch-backend steps (lattice.slice, weights, µ, softmax)."""
    qcheck = sum(
        w * n * lat.to_points(lat.slice(y))  # Q̌ = Σ_k w_k · norm_k · slice_k(blurred_k)
        for y, lat, n, w in zip(blurred, lattices, norms, weights, strict=True)
    )
    logits = unary - qcheck @ compat.T  # U − µ Q̌
    return logits, logits.softmax(1)


@apply_marks(interpreter)
@pytest.mark.parametrize("kernels", [1, 2, 3])  # 3: the third kernel goes through the precomputed Q̌ term
@pytest.mark.parametrize("labels", [3, 21])
@pytest.mark.parametrize("block_m", [None, 128])  # one program; 12 programs with a partial last block
def test_fused_matches_unfused(kernels, labels, block_m):
    args = mean_field_inputs(kernels, labels, seed=kernels + labels)
    with torch.no_grad():
        logits, q = fused_mean_field_iteration(*args, block_m=block_m)
        ref_logits, ref_q = fused_mean_field_iteration_reference(*args)
        want_logits, want_q = unfused_steps(*args)
    torch.testing.assert_close(logits, want_logits, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    torch.testing.assert_close(q, want_q, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    torch.testing.assert_close(ref_logits, want_logits, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    torch.testing.assert_close(ref_q, want_q, atol=FUSED_ATOL, rtol=FUSED_RTOL)


@apply_marks(interpreter)
def test_fused_many_labels_uses_reference():
    args = mean_field_inputs(1, 130, b=1, h=6, w=7)  # 130 labels pad to 256 > MAX_FUSED_LABELS
    with torch.no_grad():
        got = fused_mean_field_iteration(*args)
        want = unfused_steps(*args)
    torch.testing.assert_close(got, want, atol=FUSED_ATOL, rtol=FUSED_RTOL)


@apply_marks(interpreter)
def test_fused_rejects_grad_and_bad_shapes():
    unary, blurred, lattices, norms, weights, compat = mean_field_inputs(2, 3, b=1, h=6, w=7)
    with pytest.raises(RuntimeError, match="inference-only"):
        fused_mean_field_iteration(unary, blurred, lattices, norms, weights.requires_grad_(True), compat)
    weights = weights.detach()
    with pytest.raises(ValueError, match=r"compat: expected shape \(3, 3\)"):
        fused_mean_field_iteration(unary, blurred, lattices, norms, weights, compat[:2])
    with pytest.raises(ValueError, match=r"norms\[1\]: expected shape"):
        fused_mean_field_iteration(unary, blurred, lattices, [norms[0], norms[1][:5]], weights, compat)


# ---------------------------------------------------------------------------- GPU, at real sizes
@apply_marks(gpu)
@pytest.mark.parametrize(("d", "b", "h", "w"), [(5, 2, 480, 640), (2, 1, 1000, 1000), (5, 1, 333, 517)])
def test_gpu_filter_and_gradient_match_torch(d, b, h, w):
    f = image_features(d, b=b, h=h, w=w, device="cuda")
    values = torch.randn(b, 21, h, w, device="cuda")
    grad_out = torch.randn_like(values)
    results = {}
    for backend in ("torch", "triton"):
        v = values.clone().requires_grad_(True)
        out = lab.PermutohedralLattice(f, backend=backend).filter(v, "symmetric")
        out.backward(grad_out)
        results[backend] = (out.detach(), v.grad)
    # GPU sums may reorder (FMA contraction, cuSPARSE's own order): same bound as the interpreter's.
    torch.testing.assert_close(results["triton"][0], results["torch"][0], atol=F32_ATOL, rtol=F32_RTOL)
    torch.testing.assert_close(results["triton"][1], results["torch"][1], atol=F32_ATOL, rtol=F32_RTOL)


@apply_marks(gpu)
def test_gpu_auto_backend_is_triton():
    assert lab.PermutohedralLattice(image_features(2, b=1, h=8, w=8, device="cuda")).backend == "triton"


@apply_marks(gpu)
@pytest.mark.parametrize("kernels", [2, 3])
def test_gpu_fused_matches_unfused(kernels):
    args = mean_field_inputs(kernels, 21, b=2, h=512, w=512, device="cuda")
    with torch.no_grad():
        got = fused_mean_field_iteration(*args)
        want = unfused_steps(*args)
    torch.testing.assert_close(got, want, atol=FUSED_ATOL, rtol=FUSED_RTOL)


@apply_marks(gpu)
def test_gpu_ops_opcheck_and_compile():
    """The torch.library.triton_op registrations: opcheck, and torch.compile(fullgraph=True) traces the kernels."""
    s = lab.PermutohedralLattice(image_features(5, b=1, h=64, w=48, device="cuda")).structure
    x = torch.randn(s.num_points, 21, device="cuda")
    crow, col, val = s.splat_matrix.crow_indices(), s.splat_matrix.col_indices(), s.splat_matrix.values()
    torch.library.opcheck(
        torch.ops.lab.lattice_csr_matmul.default, (crow, col, val, x, None, 0, torch.float32, 64, 32, 0)
    )
    y = torch.randn(s.num_vertices, 21, device="cuda")
    torch.library.opcheck(
        torch.ops.lab.lattice_slice.default, (y, s.vertex_index, s.barycentric, torch.float32, 64, 32)
    )

    def splat_slice(x, crow, col, val, index, bary):
        return tk.lattice_slice(tk.csr_matmul(crow, col, val, x), index, bary) * 2

    args = (x, crow, col, val, s.vertex_index, s.barycentric)
    compiled = torch.compile(splat_slice, fullgraph=True)
    torch.testing.assert_close(compiled(*args), splat_slice(*args), atol=F32_ATOL, rtol=F32_RTOL)


# ------------------------------------------------------------- compiled for a GPU, on a machine without one
def _cuda_compile(kernel, pointer_types: dict, constexprs: dict, capability: int) -> dict:
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


COMPILE_CASES = [
    # (kernel name, pointer types (others are i32 scalars), constexprs)
    ("_slice_kernel", {"out_ptr": "*fp32", "y_ptr": "*bf16", "index_ptr": "*i32", "weight_ptr": "*fp32"},
     {"DP1": 17, "ACC_FP64": False, "BLOCK_R": 64, "BLOCK_C": 32}),  # d = 16, bf16 values
    ("_slice_kernel", {"out_ptr": "*fp64", "y_ptr": "*fp64", "index_ptr": "*i64", "weight_ptr": "*fp32"},
     {"DP1": 6, "ACC_FP64": True, "BLOCK_R": 64, "BLOCK_C": 32}),
    ("_csr_spmm_kernel", {"out_ptr": "*fp32", "crow_ptr": "*i64", "col_ptr": "*i32", "val_ptr": "*fp32",
                          "x_ptr": "*fp32", "scale_ptr": "*fp32"},
     {"HAS_SCALE": True, "MAX_NNZ": 0, "ACC_FP64": False, "BLOCK_R": 64, "BLOCK_C": 32}),  # the splat loop
    ("_csr_spmm_kernel", {"out_ptr": "*fp32", "crow_ptr": "*i64", "col_ptr": "*i64", "val_ptr": "*fp32",
                          "x_ptr": "*fp32", "scale_ptr": "*fp32"},
     {"HAS_SCALE": False, "MAX_NNZ": 3, "ACC_FP64": False, "BLOCK_R": 64, "BLOCK_C": 32}),
    ("_csr_vector_kernel", {"out_ptr": "*fp32", "crow_ptr": "*i64", "col_ptr": "*i32", "val_ptr": "*fp32",
                            "x_ptr": "*fp32", "scale_ptr": "*fp32"},
     {"HAS_SCALE": True, "ACC_FP64": False, "ROWS": 8, "BLOCK_E": 32, "BLOCK_C": 32}),
    ("_blur_kernel", {"out_ptr": "*fp32", "y_ptr": "*fp32", "neighbour_ptr": "*i32"},
     {"CENTRE": 0.5, "SIDE": 0.25, "ACC_FP64": False, "BLOCK_R": 64, "BLOCK_C": 32}),
    ("_mean_field_kernel", {**{n: "*fp32" for n in ("logits_ptr", "q_ptr", "unary_ptr", "extra_ptr", "compat_ptr")},
                            **{f"{p}_{k}_ptr": t for k in "ab" for p, t in
                               [("blurred", "*fp32"), ("index", "*i32"), ("bary", "*fp32"), ("norm", "*fp32"),
                                ("weight", "*fp32")]}},
     {"DP1_A": 6, "DP1_B": 3, "HAS_B": True, "HAS_EXTRA": True, "BLOCK_M": 64, "BLOCK_L": 32}),
]  # fmt: skip


@pytest.mark.skipif(INTERPRET, reason="compiles the real kernels: run without TRITON_INTERPRET")
@pytest.mark.parametrize(("name", "pointer_types", "constexprs"), COMPILE_CASES)
def test_kernels_compile_for_cuda_without_a_gpu(name, pointer_types, constexprs):
    """The interpreter accepts code the GPU compiler rejects (types, dot shapes): compile each kernel for sm_90."""
    asm = _cuda_compile(getattr(tk, name), pointer_types, constexprs, capability=90)
    assert "cubin" in asm and len(asm["cubin"]) > 0
