"""The Algorithm-1 teaching figure's maps against an explicit dense CRF and the identities of the update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.crf import CRFParams, mean_field
from lab.viz.algorithm import PANELS, step_figure, step_limits, step_maps

H, W, L, T = 6, 7, 3, 4


@pytest.fixture(scope="module")
def run():
    g = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (1, 3, H, W), generator=g).to(torch.float32)
    unary = torch.randn(1, L, H, W, generator=g) * 2
    params = CRFParams(theta_alpha=3.0, theta_beta=25.0, theta_gamma=1.5, w_bilateral=5.0, w_spatial=2.0)
    trace = mean_field(unary, image, params, iterations=T, keep="steps", message_passing="exact")
    return image, unary, params, trace


def _explicit_messages(image, params, q_prev):
    """Both kernels' messages from (N, N) Gaussians written out from coordinates and colours ("after")."""
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    rgb = image[0].reshape(3, -1).T.double().numpy()
    d_pos = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    d_rgb = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)
    out = []
    for k in (np.exp(-d_pos / (2 * params.theta_alpha**2) - d_rgb / (2 * params.theta_beta**2)),
              np.exp(-d_pos / (2 * params.theta_gamma**2))):  # fmt: skip
        out.append((k @ q_prev.reshape(L, -1).T / k.sum(1, keepdims=True)).T.reshape(L, H, W))
    return out


@pytest.mark.parametrize("t", [1, 2, T])
def test_maps_follow_the_update(run, t):
    image, unary, params, trace = run
    label = 1
    maps = step_maps(trace, unary, t, label)
    assert list(maps) == [p[0] for p in PANELS]
    q_prev = trace.history[t - 1][0].double().numpy()
    bil, spa = _explicit_messages(image, params, q_prev)
    np.testing.assert_allclose(maps["bilateral"], bil[label], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps["spatial"], spa[label], rtol=1e-5, atol=1e-7)
    weighted = 5.0 * bil + 2.0 * spa
    np.testing.assert_allclose(maps["weighted"], weighted[label], rtol=1e-5, atol=1e-6)
    # Potts: the penalty of l is what the related pixels believe in the other labels
    np.testing.assert_allclose(maps["penalty"], weighted.sum(0) - weighted[label], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps["logits"], maps["unary"] - maps["penalty"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps["q_prev"], q_prev[label], atol=0)
    np.testing.assert_allclose(maps["q"], trace.history[t][0, label].double().numpy(), atol=0)


def test_initialisation_is_the_softmax_of_the_unary(run):
    _, unary, _, trace = run
    maps = step_maps(trace, unary, 0, 2)
    assert list(maps) == ["unary", "q"]
    np.testing.assert_allclose(maps["q"], torch.softmax(unary.double(), 1)[0, 2].numpy(), atol=1e-6)


def test_limits_hold_for_every_iteration(run):
    _, unary, _, trace = run
    limits = step_limits(trace, unary, 0)
    assert limits.prob == (0.0, 1.0) and limits.score[0] == -limits.score[1]
    assert limits.unary[1] == pytest.approx(float(unary[0, 0].abs().max()))
    for t in range(T + 1):
        for key, value in step_maps(trace, unary, t, 0).items():
            group = next(p[3] for p in PANELS if p[0] == key)
            low, high = getattr(limits, group)
            assert low - 1e-9 <= value.min() and value.max() <= high + 1e-9, (t, key)
    assert limits.message[1] == pytest.approx(max(float(m[0, 0].max()) for s in trace.steps for m in s.messages))


def test_figure_panels_formulas_and_colour_bars(run):
    _, unary, _, trace = run
    fig = step_figure(trace, unary, 2, 1, class_name="cat")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [p[1].format(prev="1", t="2") for p in PANELS]
    assert panels[1].get_title() == "Q_1" and panels[-1].get_title() == "Q_2"
    assert [ax.get_xlabel() for ax in panels] == [p[2] for p in PANELS]
    assert len(fig.axes) == 2 * len(PANELS)  # one colour bar per panel
    assert "class cat" in fig.get_suptitle() and "Q_1 → Q_2" in fig.get_suptitle()
    # shared scales: the same limits at every t
    clims = [ax.images[0].get_clim() for ax in panels]
    clims_t4 = [ax.images[0].get_clim() for ax in step_figure(trace, unary, T, 1).axes if ax.get_title()]
    assert clims == clims_t4
    init = step_figure(trace, unary, 0, 1)
    assert [ax.get_title() for ax in init.axes if ax.get_title()] == ["U (unary scores)", "Q_0"]


def test_refusals_name_the_argument(run):
    image, unary, params, trace = run
    with pytest.raises(ValueError, match=r"^t: "):
        step_maps(trace, unary, T + 1, 0)
    with pytest.raises(ValueError, match=r"^label: "):
        step_maps(trace, unary, 1, L)
    with pytest.raises(ValueError, match=r"^unary: "):
        step_maps(trace, unary[:, :2], 1, 0)
    no_steps = mean_field(unary, image, params, iterations=2, keep="q", message_passing="exact")
    with pytest.raises(ValueError, match="keep='steps'"):
        step_figure(no_steps, unary, 1, 0)
