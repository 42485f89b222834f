"""The pixel inspector against a brute-force dense CRF written out here with explicit kernel matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.crf import CRFParams, mean_field
from lab.explore.inspector import inspect_pixel, kernel_footprints

H, W, L = 7, 6, 3


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1, 3, H, W), generator=g).to(torch.float32)
    image[:, :, :, : W // 2] = torch.tensor([200.0, 40.0, 40.0])[:, None, None]  # a red left half
    unary = torch.randn(1, L, H, W, generator=g) * 1.5
    return image, unary


def _kernel_matrices(image: torch.Tensor, params: CRFParams) -> tuple[np.ndarray, np.ndarray]:
    """The two (N, N) Gaussians of the paper's kernels, from pixel coordinates and colours directly."""
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    rgb = image[0].reshape(3, -1).T.double().numpy()
    d_pos = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    d_rgb = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)
    bilateral = np.exp(-d_pos / (2 * params.theta_alpha**2) - d_rgb / (2 * params.theta_beta**2))
    spatial = np.exp(-d_pos / (2 * params.theta_gamma**2))
    return bilateral, spatial


def _normalised(k: np.ndarray, q: np.ndarray, normalize: str) -> np.ndarray:
    d = k.sum(1, keepdims=True)
    if normalize == "after":
        return k @ q / d
    return (k / np.sqrt(d) / np.sqrt(d.T)) @ q  # symmetric: D^−½ K D^−½


@pytest.mark.parametrize("normalize", ["after", "symmetric"])
def test_messages_and_penalty_match_the_explicit_dense_crf(normalize):
    image, unary = _case()
    params = CRFParams(theta_alpha=3.0, theta_beta=30.0, theta_gamma=1.5, w_bilateral=4.0, w_spatial=2.0,
                       normalize=normalize)  # fmt: skip
    trace = mean_field(unary, image, params, iterations=4, keep="q", message_passing="exact")
    y, x = 3, 2
    report = inspect_pixel(trace, unary, image, params, y, x)
    kb, ks = _kernel_matrices(image, params)
    i = y * W + x
    potts = 1.0 - np.eye(L)
    for t in range(1, 5):
        q_prev = trace.history[t - 1][0].reshape(L, -1).T.double().numpy()  # (N, L)
        mb, ms = _normalised(kb, q_prev, normalize)[i], _normalised(ks, q_prev, normalize)[i]
        np.testing.assert_allclose(report.messages[t - 1, 0], mb, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(report.messages[t - 1, 1], ms, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(report.penalty[t - 1], potts @ (4.0 * mb + 2.0 * ms), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(report.unary, unary[0, :, y, x].numpy(), rtol=0, atol=0)


def test_logits_reproduce_the_runs_q_on_the_lattice_path():
    # the run takes the compiled CPU iteration; the inspector filters with the lattices: softmax of its
    # scores must give the run's Q_t at the pixel
    image, unary = _case(1)
    params = CRFParams(theta_alpha=4.0, theta_beta=20.0, theta_gamma=2.0, w_bilateral=6.0, w_spatial=3.0)
    trace = mean_field(unary, image, params, iterations=5, keep="q")
    for y, x in [(0, 0), (3, 4), (6, 5)]:
        report = inspect_pixel(trace, unary, image, params, y, x)
        np.testing.assert_allclose(torch.softmax(torch.from_numpy(report.logits), 1).numpy(), report.q[1:],
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(report.q, torch.stack([h[0, :, y, x] for h in trace.history]).numpy(), atol=0)


def test_footprints_are_the_exact_kernel_rows():
    image, _ = _case(2)
    params = CRFParams(theta_alpha=2.5, theta_beta=15.0, theta_gamma=1.2)
    kb, ks = _kernel_matrices(image, params)
    rows = kernel_footprints(image, params, 5, 1)
    np.testing.assert_allclose(rows[0].ravel(), kb[5 * W + 1], rtol=1e-12)
    np.testing.assert_allclose(rows[1].ravel(), ks[5 * W + 1], rtol=1e-12)
    assert rows[0, 5, 1] == rows[1, 5, 1] == 1.0


def test_flips_and_explanation_follow_the_labels():
    # one pixel whose unary disagrees weakly with a uniform neighbourhood is outvoted
    image = torch.full((1, 3, H, W), 128.0)
    unary = torch.zeros(1, 2, H, W)
    unary[:, 0] = 2.0
    unary[0, :, 3, 3] = torch.tensor([0.0, 0.5])
    params = CRFParams(theta_alpha=3.0, theta_beta=20.0, theta_gamma=2.0, w_bilateral=3.0, w_spatial=3.0)
    trace = mean_field(unary, image, params, iterations=3, keep="q", message_passing="exact")
    report = inspect_pixel(trace, unary, image, params, 3, 3)
    assert report.labels[0] == 1 and report.labels[-1] == 0
    assert report.flips() == [(1, 1, 0)]
    text = report.explain(["sky", "boat"])
    assert "boat → sky" in text and "Iteration 1" in text
    # a pixel that agrees with its neighbours never flips
    assert "never changed" in inspect_pixel(trace, unary, image, params, 0, 0).explain()
    votes = report.votes(0, trace.history[0][0].numpy())
    assert votes.shape == (2, H, W) and votes[1, 3, 3] == pytest.approx(trace.history[0][0, 1, 3, 3].item())


def test_refusals_name_the_argument():
    image, unary = _case()
    params = CRFParams()
    trace = mean_field(unary, image, params, iterations=1, keep="q", message_passing="exact")
    with pytest.raises(ValueError, match=r"^y"):
        inspect_pixel(trace, unary, image, params, H, 0)
    with pytest.raises(ValueError, match=r"^x"):
        inspect_pixel(trace, unary, image, params, 0, -1)
    with pytest.raises(ValueError, match=r"^unary"):
        inspect_pixel(trace, unary[:, :2], image, params, 0, 0)
    no_history = mean_field(unary, image, params, iterations=1, keep=None, message_passing="exact")
    with pytest.raises(ValueError, match="history"):
        inspect_pixel(no_history, unary, image, params, 0, 0)
    report = inspect_pixel(trace, unary, image, params, 0, 0)
    with pytest.raises(ValueError, match=r"^q_prev"):
        report.votes(0, np.zeros((L, 2, 2)))


@pytest.mark.parametrize("normalize", ["after", "symmetric", "none"])
def test_lattice_messages_are_one_row_of_the_runs_own_filtering(normalize):
    """On the lattice the inspector reads pixel i's row of the filter (its adjoint applied to e_i); the messages
    are what filtering every pixel of each Q_{t−1} gives at i."""
    from lab.explore import build_kernels
    from lab.explore.inspector import lattice_row

    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 24, 31, generator=g) * 255
    unary = torch.randn(1, 4, 24, 31, generator=g)
    params = CRFParams(theta_alpha=6.0, theta_beta=20.0, theta_gamma=2.0, normalize=normalize)
    kernels, _ = build_kernels(image, params)
    trace = mean_field(unary, image, params, iterations=3, keep="q", kernels=kernels)
    y, x = 17, 5
    report = inspect_pixel(trace, unary, image, params, y, x)
    for t in range(3):
        points = kernels.to_points(trace.history[t]).contiguous()
        for m, f in enumerate(kernels.filters):
            full = f.filter_points(points, normalize)[y * 31 + x].double().numpy()  # every pixel filtered
            np.testing.assert_allclose(report.messages[t, m], full, rtol=1e-5, atol=1e-6)
    # the row is linear: it filters any values, not only Q
    v = torch.randn(24 * 31, 2, generator=g)
    row = lattice_row(kernels.filters[0], 40, normalize)
    np.testing.assert_allclose((v.T @ row).numpy(), kernels.filters[0].filter_points(v, normalize)[40].numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
