"""The fused mean-field step (one Triton kernel) against the same update as separate PyTorch steps.

Tests that take ``device`` run in the Triton interpreter (``-m interpreter``, own pytest process with
``TRITON_INTERPRET=1``, small images) and compiled on a CUDA device (``-m gpu``, 512×512); see
``tests/conftest.py``. The compile test runs in the main process and builds the kernel for sm_90 without a GPU.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

import lab
from lab.lattice.torch_ops import TorchOps

triton = pytest.importorskip("triton", reason="Triton is not installed")

from lab.crf import triton_step  # noqa: E402  (after the importorskip)
from lab.crf.triton_step import fused_mean_field_iteration, fused_mean_field_iteration_reference  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lattice"))
from test_triton import cuda_compile  # noqa: E402  (the lattice kernels' compile helper)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# The fused step against the unfused PyTorch steps: measured 2026-11-25 in the interpreter, max |Δ| 1.9e-6 on
# logits up to 21 (relative ≤ 1e-7); the bound allows for the GPU's FMA contraction and summation order.
FUSED_ATOL, FUSED_RTOL = 2e-5, 1e-5
# (B, H, W) of the comparison: small in the interpreter (its cost is per program), real on a GPU.
FUSED_SHAPE = {"cpu": (2, 24, 32), "cuda": (2, 512, 512)}


def mean_field_inputs(kernels, labels, seed=0, b=2, h=24, w=32, device="cpu", backend="triton"):
    """Lattices (bilateral, spatial, a wider spatial), blurred prescaled Q, norms, weights and µ.

    The blurred tables and the norms (symmetric normalisation, D^−½) come from the PyTorch ops.
    """
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(b, 3, h, w, generator=g) * 255).to(device)
    feats = [
        lab.bilateral_features(img, 8.0, 13.0),
        lab.spatial_features(img, theta_gamma=3.0),
        lab.spatial_features(img, theta_gamma=6.0),
    ][:kernels]
    lattices = [lab.PermutohedralLattice(f, backend=backend) for f in feats]
    ops = [TorchOps(lat.structure) for lat in lattices]
    m = b * h * w
    unary = (torch.randn(m, labels, generator=g) * 3).to(device)
    q = unary.softmax(1)
    ones = torch.ones(m, 1, device=device)
    norms = [torch.rsqrt(op.slice_(op.blur(op.splat(ones))) + 1e-20) for op in ops]  # D^−½, D = K·1
    blurred = [op.blur(op.splat(n * q)) for op, n in zip(ops, norms, strict=True)]
    weights = (torch.rand(kernels, labels, generator=g) * 5).to(device)
    compat = (1 - torch.eye(labels) + 0.1 * torch.rand(labels, labels, generator=g)).to(device)
    return unary, blurred, lattices, norms, weights, compat


def unfused_steps(unary, blurred, lattices, norms, weights, compat):
    """The mean-field update as separate PyTorch steps (TorchOps slice, weights, µ, softmax)."""
    qcheck = sum(
        w * n * TorchOps(lat.structure).slice_(y)  # Q̌ = Σ_k w_k · norm_k · slice_k(blurred_k)
        for y, lat, n, w in zip(blurred, lattices, norms, weights, strict=True)
    )
    logits = unary - qcheck @ compat.T  # U − µ Q̌
    return logits, logits.softmax(1)


@pytest.mark.parametrize("kernels", [1, 2, 3])  # 3: the third kernel goes through the precomputed Q̌ term
@pytest.mark.parametrize("labels", [3, 21])
@pytest.mark.parametrize("block_m", [None, 128])  # the default; 128 (12 programs in the interpreter)
def test_fused_matches_unfused(device, kernels, labels, block_m):
    b, h, w = FUSED_SHAPE[device]
    args = mean_field_inputs(kernels, labels, seed=kernels + labels, b=b, h=h, w=w, device=device)
    with torch.no_grad():
        logits, q = fused_mean_field_iteration(*args, block_m=block_m)
        ref_logits, ref_q = fused_mean_field_iteration_reference(*args)
        want_logits, want_q = unfused_steps(*args)
    torch.testing.assert_close(logits, want_logits, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    torch.testing.assert_close(q, want_q, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    torch.testing.assert_close(ref_logits, want_logits, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    torch.testing.assert_close(ref_q, want_q, atol=FUSED_ATOL, rtol=FUSED_RTOL)


def test_fused_many_labels_uses_reference(device):
    args = mean_field_inputs(1, 130, b=1, h=6, w=7, device=device)  # 130 labels pad to 256 > MAX_FUSED_LABELS
    assert triton.next_power_of_2(130) > triton_step.MAX_FUSED_LABELS
    with torch.no_grad():
        got = fused_mean_field_iteration(*args)
        want = unfused_steps(*args)
    torch.testing.assert_close(got, want, atol=FUSED_ATOL, rtol=FUSED_RTOL)


def test_fused_rejects_grad_bad_shapes_and_torch_lattices(device):
    unary, blurred, lattices, norms, weights, compat = mean_field_inputs(2, 3, b=1, h=6, w=7, device=device)
    with pytest.raises(RuntimeError, match="inference-only"):
        fused_mean_field_iteration(unary, blurred, lattices, norms, weights.requires_grad_(True), compat)
    weights = weights.detach()
    with pytest.raises(ValueError, match=r"compat: expected shape \(3, 3\)"):
        fused_mean_field_iteration(unary, blurred, lattices, norms, weights, compat[:2])
    with pytest.raises(ValueError, match=r"norms\[1\]: expected shape"):
        fused_mean_field_iteration(unary, blurred, lattices, [norms[0], norms[1][:5]], weights, compat)
    _, _, torch_lattices, *_ = mean_field_inputs(2, 3, b=1, h=6, w=7, device=device, backend="torch")
    with pytest.raises(ValueError, match=r"lattices\[1\]: has backend 'torch'"):
        fused_mean_field_iteration(unary, blurred, [lattices[0], torch_lattices[1]], norms, weights, compat)


@pytest.mark.skipif(INTERPRET, reason="compiles the real kernel: run without TRITON_INTERPRET")
def test_kernel_compiles_for_cuda_without_a_gpu():
    """The interpreter accepts code the GPU compiler rejects (tl.dot shapes, types): compile it for sm_90."""
    pointers = {n: "*fp32" for n in ("logits_ptr", "q_ptr", "unary_ptr", "extra_ptr", "compat_ptr")}
    for k in "ab":
        pointers |= {f"blurred_{k}_ptr": "*fp32", f"index_{k}_ptr": "*i32", f"bary_{k}_ptr": "*fp32"}
        pointers |= {f"norm_{k}_ptr": "*fp32", f"weight_{k}_ptr": "*fp32"}
    constexprs = {"DP1_A": 6, "DP1_B": 3, "HAS_B": True, "HAS_EXTRA": True, "BLOCK_M": 64, "BLOCK_L": 32}
    asm = cuda_compile(triton_step._mean_field_kernel, pointers, constexprs)
    assert "cubin" in asm and len(asm["cubin"]) > 0
