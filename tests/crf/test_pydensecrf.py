"""Parity with pydensecrf (Krähenbühl's dense CRF, pydensecrf2 1.1), the de-facto reference.

Same photo, same unary, normalize="symmetric" (its default), Potts, the same θ and w: our Q after T
iterations against ``DenseCRF2D.inference(T)``, and our KL against its ``klDivergence``.
"""

import numpy as np
import pytest
import torch
from inputs import image_tensor, photo, synthetic_unary

from lab.crf import CRFParams, mean_field, unary_from_labels, unary_from_softmax

dcrf = pytest.importorskip(
    "pydensecrf.densecrf", reason="pydensecrf2 is not installed (`pip install -e .[peers]`; it needs a C++ compiler)"
)
eigen = pytest.importorskip("pydensecrf.eigen", reason="pydensecrf2 is not installed")
pd_utils = pytest.importorskip("pydensecrf.utils", reason="pydensecrf2 is not installed")

THETA = dict(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0)
# Measured 2026-11-25 on the 96×128 astronaut and chelsea crops below, L ∈ {2, 5, 21}, T ∈ {1, 5, 10}:
# argmax agreement 1.0 everywhere and max |ΔQ| ≤ 3.7e-6 (float32 rounding: our lattice builds the same
# vertices and weights, so the two compute the same sums in a different order). Bounds: 99.9 % agreement
# (a tie at a decision boundary may flip a label) and 1e-4.
MIN_AGREEMENT = 0.999
MAX_DQ = 1e-4
# KL: sums of N·L float32 terms on pydensecrf's side; measured relative gap ≤ 3.0e-6.
KL_REL = 1e-4


def pydensecrf_crf(img: np.ndarray, unary: torch.Tensor, p: CRFParams):
    """A DenseCRF2D set up as our model: energy −U, Potts compat = w, symmetric normalisation."""
    h, w = img.shape[:2]
    num_labels = unary.shape[1]
    d = dcrf.DenseCRF2D(w, h, num_labels)
    d.setUnaryEnergy(np.ascontiguousarray(-unary[0].reshape(num_labels, -1).numpy().astype(np.float32)))
    d.addPairwiseGaussian(sxy=p.theta_gamma, compat=p.w_spatial)
    d.addPairwiseBilateral(sxy=p.theta_alpha, srgb=p.theta_beta, rgbim=img, compat=p.w_bilateral)
    return d


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
@pytest.mark.parametrize("num_labels", [2, 5, 21])
def test_q_matches_pydensecrf(name, num_labels):
    img = photo(name)
    h, w = img.shape[:2]
    unary = synthetic_unary(num_labels, h, w, seed=num_labels)
    p = CRFParams(normalize="symmetric", **THETA)
    trace = mean_field(unary, image_tensor(img), p, iterations=10, keep="q")
    d = pydensecrf_crf(img, unary, p)
    for t in (1, 5, 10):
        q_ref = np.array(d.inference(t)).reshape(num_labels, h, w)
        q = trace.history[t][0].numpy()
        agreement = (q.argmax(0) == q_ref.argmax(0)).mean()
        max_dq = np.abs(q - q_ref).max()
        assert agreement >= MIN_AGREEMENT, (t, agreement)
        assert max_dq <= MAX_DQ, (t, max_dq)


def test_steps_path_matches_pydensecrf():
    """The unfused, differentiable path (keep="steps", as in training) gives the same Q."""
    img = photo("chelsea")
    h, w = img.shape[:2]
    unary = synthetic_unary(5, h, w, seed=11)
    p = CRFParams(normalize="symmetric", **THETA)
    q = mean_field(unary, image_tensor(img), p, iterations=5, keep="steps").q[0].numpy()
    q_ref = np.array(pydensecrf_crf(img, unary, p).inference(5)).reshape(5, h, w)
    assert np.abs(q - q_ref).max() <= MAX_DQ


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_kl_matches_pydensecrf(name):
    """trace.kl − c = pydensecrf's klDivergence, c = Σ_m w(m) Σ_i (k̃(m) ∗ 1)_i: its Potts (−w·Q̃) and our
    µ = [l ≠ l'] differ by w·Σ_l' Q̃_l' = w·(k̃ ∗ 1) per pixel, a constant of the image."""
    img = photo(name)
    h, w = img.shape[:2]
    unary = synthetic_unary(4, h, w, seed=3)
    p = CRFParams(normalize="symmetric", **THETA)
    trace = mean_field(unary, image_tensor(img), p, iterations=5, keep="q")
    d = pydensecrf_crf(img, unary, p)
    ones = torch.ones(h * w, 1)
    bil, spa = trace.kernels.lattices
    c = (
        p.w_bilateral * bil.filter_points(ones, "symmetric").double().sum()
        + p.w_spatial * spa.filter_points(ones, "symmetric").double().sum()
    )
    for t, q in enumerate(trace.history):
        ours = trace.kl[0, t].item() - c.item()
        q_np = np.ascontiguousarray(q[0].reshape(4, -1).numpy())
        theirs = d.klDivergence(eigen.matrixXf(q_np))
        assert ours == pytest.approx(theirs, rel=KL_REL), t
    assert trace.kl[0, -1] < trace.kl[0, 0]


def test_unary_from_softmax_matches_pydensecrf():
    g = torch.Generator().manual_seed(0)
    prob = torch.softmax(torch.randn(1, 4, 5, 6, generator=g) * 4, 1)
    for scale, clip in ((None, 1e-5), (0.8, 1e-3), (None, None)):
        ours = unary_from_softmax(prob, scale=scale, clip=clip)
        theirs = pd_utils.unary_from_softmax(prob[0].numpy(), scale=scale, clip=clip)
        np.testing.assert_allclose(-ours[0].reshape(4, -1).numpy(), theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("zero_unsure", [True, False])
def test_unary_from_labels_matches_pydensecrf(zero_unsure):
    g = torch.Generator().manual_seed(0)
    n = 3
    labels = torch.randint(0, n + 1 if zero_unsure else n, (1, 5, 6), generator=g)
    ours = unary_from_labels(labels, n, gt_prob=0.7, zero_unsure=zero_unsure)
    theirs = pd_utils.unary_from_labels(labels[0].numpy(), n, gt_prob=0.7, zero_unsure=zero_unsure)
    np.testing.assert_allclose(-ours[0].reshape(n, -1).numpy(), theirs, rtol=1e-6, atol=1e-6)
