"""Every path of mean_field runs the one update (lab.crf.steps.iteration), and the filters share one protocol."""

from __future__ import annotations

import importlib

import pytest
import torch
from inputs import small_problem

from lab.crf import CRFParams, mean_field
from lab.lattice.exact import ExactGaussian, exact_gaussian_filter
from lab.lattice.normalize import NORMALIZATIONS
from lab.lattice.window import WindowGaussian

mf = importlib.import_module("lab.crf.mean_field")  # the module (lab.crf.mean_field is also the function)


@pytest.mark.parametrize(
    ("case", "grad", "keep", "checkpoint", "params"),
    [
        ("fused inference", False, None, False, CRFParams()),
        ("per-class weights", False, "q", False, CRFParams(w_bilateral=torch.tensor([1.0, 2.0, 3.0]))),
        ("steps", False, "steps", False, CRFParams()),
        ("autograd", True, "q", False, CRFParams()),
        ("checkpointed", True, "q", True, CRFParams()),
    ],
)
def test_every_path_runs_the_one_update(monkeypatch, case, grad, keep, checkpoint, params):
    """Every PyTorch path; the compiled CPU iteration (on by default for inference) is switched off here and
    checked against these paths in test_cpu_step.py."""
    monkeypatch.setenv("LAB_CPU_FUSED", "0")
    calls = []
    real = mf.iteration

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mf, "iteration", counting)
    unary, image = small_problem()
    unary = unary.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        trace = mean_field(unary, image, params, iterations=3, keep=keep, checkpoint=checkpoint)
    if grad:
        trace.q.sum().backward()  # a checkpointed iteration runs again here
    assert len(calls) == (6 if checkpoint else 3), case


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_window_covering_the_image_is_the_exact_filter(normalize):
    """A k × k window at least twice the image in each direction holds every pair: the exact Gaussian."""
    g = torch.Generator().manual_seed(3)
    features = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64) * 2
    x = torch.rand(2 * 5 * 7, 4, generator=g, dtype=torch.float64)
    window = WindowGaussian(features, window_size=15).filter_points(x, normalize)
    exact = ExactGaussian(features).filter_points(x, normalize)
    torch.testing.assert_close(window, exact, rtol=1e-12, atol=1e-12)
    image = x.view(2, 5, 7, 4).permute(0, 3, 1, 2)  # and the object equals the function it wraps
    direct = exact_gaussian_filter(image, features, normalize).permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(exact, direct, rtol=0, atol=0)
