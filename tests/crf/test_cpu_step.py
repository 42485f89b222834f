"""The compiled CPU iteration (lab.crf.cpu_step): the same Q as the PyTorch path, the same bits for any thread count.

References: the PyTorch path of :func:`lab.mean_field` (its steps are checked against the paper's formulas
and pydensecrf elsewhere), ``numpy.exp`` for the exponential, and the kernel's own input checks.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
import torch
from inputs import image_tensor, photo, synthetic_unary

from lab.crf import CRFKernels, CRFParams, mean_field
from lab.lattice.normalize import NORMALIZATIONS

numba = pytest.importorskip("numba", reason="the compiled CPU iteration needs Numba")
cpu_step = importlib.import_module("lab.crf.cpu_step")
cpu_lanes = importlib.import_module("lab.crf.cpu_lanes")
cpu_kernels = importlib.import_module("lab.crf.cpu_kernels")
mf = importlib.import_module("lab.crf.mean_field")


def _problem(h=14, w=17, labels=5, batch=1, seed=0):
    img = photo("astronaut", slice(40, 40 + h), slice(160, 160 + w))
    image = image_tensor(img).expand(batch, 3, h, w).contiguous()
    if batch > 1:  # a different image per batch element
        image[1] = image_tensor(photo("chelsea", slice(90, 90 + h), slice(120, 120 + w)))[0]
    unary = torch.cat([synthetic_unary(labels, h, w, seed=seed + b) * 2 for b in range(batch)])
    return unary, image


def _torch_path(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("LAB_CPU_FUSED", "0")
        return mean_field(*args, **kwargs)


def _assert_float32_close(fused, torch32, exact, what):
    """The compiled path is as close to the float64 result as the float32 PyTorch path is.

    Within 4× that path's error + 1e-6: both round in float32, in different orders.
    """
    err_fused = float((fused.double() - exact).abs().max())
    err_torch = float((torch32.double() - exact).abs().max())
    assert err_fused <= 4 * err_torch + 1e-6, f"{what}: compiled {err_fused:.3g}, PyTorch float32 {err_torch:.3g}"


@pytest.mark.parametrize("labels", [2, 5, 8, 21, 30])
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_q_equals_the_pytorch_path(monkeypatch, labels, normalize):
    unary, image = _problem(labels=labels)
    params = CRFParams(normalize=normalize)
    fused = mean_field(unary, image, params, iterations=5, keep="q")
    reference = _torch_path(monkeypatch, unary, image, params, iterations=5, keep="q")
    exact = mean_field(unary.double(), image, params, iterations=5, keep="q")  # float64: the PyTorch path
    for t, (a, b, c) in enumerate(zip(fused.history, reference.history, exact.history, strict=True)):
        if normalize != "none":  # unnormalised messages reach ~10³ here: float32 logits carry ~1e-4 of noise
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        _assert_float32_close(a, b, c, f"Q_{t}")
    _assert_float32_close(fused.logits, reference.logits, exact.logits, "logits")


@pytest.mark.parametrize(
    "params",
    [
        CRFParams(compat=torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [2.0, 0.5, 0.0]])),  # a full µ
        CRFParams(w_bilateral=torch.tensor([1.0, 4.0, 9.0]), w_spatial=torch.tensor([0.5, 3.0, 1.0])),  # per class
        CRFParams(theta_alpha=20.0, theta_beta=5.0, theta_gamma=1.5, w_bilateral=3.0, w_spatial=7.0),
    ],
    ids=["full-mu", "per-class-weights", "other-bandwidths"],
)
def test_other_parameters_equal_the_pytorch_path(monkeypatch, params):
    unary, image = _problem(labels=3, batch=2)
    fused = mean_field(unary, image, params, iterations=4, keep=None)
    reference = _torch_path(monkeypatch, unary, image, params, iterations=4, keep=None)
    torch.testing.assert_close(fused.q, reference.q, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused.logits, reference.logits, rtol=1e-5, atol=2e-5)


def test_inference_runs_the_compiled_iteration_by_default(monkeypatch):
    runs = []
    real = cpu_step.CPUMeanField.run

    def counting(self, *args, **kwargs):
        runs.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cpu_step.CPUMeanField, "run", counting)
    unary, image = _problem()
    mean_field(unary, image, iterations=3, keep=None)  # inference: compiled
    mean_field(unary, image, iterations=3, keep="steps")  # every intermediate asked for: PyTorch steps
    mean_field(unary.double(), image, iterations=3, keep=None)  # float64: PyTorch
    with torch.enable_grad():
        mean_field(unary.clone().requires_grad_(), image, iterations=3)  # training: PyTorch, with autograd
    monkeypatch.setenv("LAB_CPU_FUSED", "0")
    mean_field(unary, image, iterations=3, keep=None)  # switched off
    assert len(runs) == 1


def test_bitwise_the_same_for_any_thread_count():
    unary, image = _problem(h=40, w=50, labels=21)
    kernels = CRFKernels(image, CRFParams())
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS, 1):
            numba.set_num_threads(threads)
            results.append(mean_field(unary, image, iterations=5, keep=None, kernels=kernels).q)
    finally:
        numba.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_splat_sums_in_the_gather_order():
    """The owned-range scatter equals Σ over each vertex's points in CSR order, for 1 and 3 ranges."""
    _, image = _problem(h=20, w=23, labels=9)
    lattice = CRFKernels(image, CRFParams()).lattices[0]
    tables = cpu_step._Tables(lattice, "after")
    x = np.random.default_rng(0).random((lattice.num_points, 16), dtype=np.float32)
    splat = cpu_kernels.splat_kernel(tables.corners, 2)
    outs = []
    for parts in (1, 3):
        out = np.full((tables.num_vertices, 16), np.nan, np.float32)
        with cpu_kernels.compiling():
            splat(tables.index, tables.coef, x, out, parts)
        outs.append(out)
    s = lattice.structure.splat_matrix
    reference = (s.to_dense().double() @ torch.from_numpy(x).double()).numpy()
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], reference, rtol=1e-5, atol=1e-6)


def test_exp_is_within_float32_rounding():
    @numba.njit
    def exp_all(t):
        out = np.empty_like(t)
        for i in range(t.shape[0]):
            out[i] = cpu_lanes.exp_neg(t[i])
        return out

    t = np.linspace(-69.0, 0.0, 100_001).astype(np.float32)
    got = exp_all(t).astype(np.float64)
    true = np.exp(t.astype(np.float64))
    # t·log2(e) is rounded to float32 first: a relative error of |t|·2^−24 is the argument's, not the series'
    np.testing.assert_array_less(np.abs(got / true - 1), 3e-7 + np.abs(t) * 2.0**-23)
    assert exp_all(np.array([-200.0, np.nan], np.float32))[0] == np.float32(2.0**-100)
    assert np.isnan(exp_all(np.array([np.nan], np.float32))[0])


def test_nan_and_inf_stay_visible():
    """No fast-math assumption hides a NaN: an infinite weight gives NaN in Q (which mean_field then reports)."""
    unary, image = _problem(labels=4)
    kernels = CRFKernels(image, CRFParams())
    u = kernels.to_points(unary)
    step = cpu_step.CPUMeanField(kernels.lattices, "symmetric", torch.full((2, 4), float("inf")), "potts")
    _, q = step.run(u, 2)
    assert bool(torch.isnan(q).any())


def test_bad_operands_are_refused_before_a_kernel_runs():
    unary, image = _problem(labels=4)
    kernels = CRFKernels(image, CRFParams())
    lattices = kernels.lattices
    weights = torch.ones(2, 4)
    with pytest.raises(ValueError, match="lattices: expected two"):
        cpu_step.CPUMeanField(lattices[:1], "after", weights, "potts")
    with pytest.raises(ValueError, match=r"weights: expected \(2, L\)"):
        cpu_step.CPUMeanField(lattices, "after", torch.ones(3, 4), "potts")
    with pytest.raises(ValueError, match=r"compat: expected \(4, 4\)"):
        cpu_step.CPUMeanField(lattices, "after", weights, torch.zeros(3, 3))
    step = cpu_step.CPUMeanField(lattices, "after", weights, "potts")
    u = kernels.to_points(unary)
    with pytest.raises(ValueError, match=r"unary: expected"):
        step.run(u[:, :3], 1)
    broken = CRFKernels(image, CRFParams()).lattices[0]  # a lattice no operands were made for yet
    s = broken.structure
    index = s.vertex_index.clone()
    index[0, 0] = s.num_vertices  # one past the last vertex
    object.__setattr__(broken, "structure", dataclasses.replace(s, vertex_index=index))
    try:
        with pytest.raises(ValueError, match="vertex_index must be"):
            cpu_step.CPUMeanField([broken, lattices[1]], "after", weights, "potts")
    finally:
        object.__setattr__(broken, "structure", s)
    crow = torch.tensor([0, 2, 1])
    with pytest.raises(ValueError, match="not a valid"):
        cpu_step._csr_arrays(crow, torch.tensor([0]), torch.tensor([1.0]), 2, 2, "blur")
