"""Impulse responses: the exact one against the Gaussian written out, the window as its truncation, the lattice
against the exact one within the accuracy docs/lattice.md measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.crf import CRFParams
from lab.explore.impulse import FILTERS, impulse_figure, impulse_responses

H, W = 40, 44


def _image() -> torch.Tensor:
    # a smooth colour ramp with a darker square: points fill feature space densely, as in a photo region
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    image = torch.stack([3.0 * xs, 2.0 * ys + 20, torch.full_like(xs, 90.0, dtype=torch.float32)]).float()
    image[:, 10:24, 12:28] *= 0.4
    return image[None]


PARAMS = CRFParams(theta_alpha=5.0, theta_beta=20.0, theta_gamma=3.0, window_size=7)


@pytest.mark.parametrize("kernel", ["bilateral", "spatial"])
def test_exact_window_and_lattice(kernel):
    image = _image()
    y, x = 17, 20
    r = impulse_responses(image, PARAMS, y, x, kernel)
    assert list(r) == list(FILTERS)
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    d2 = ((xs - x) ** 2 + (ys - y) ** 2) / (PARAMS.theta_alpha if kernel == "bilateral" else PARAMS.theta_gamma) ** 2
    if kernel == "bilateral":
        rgb = image[0].double().numpy()
        d2 = d2 + ((rgb - rgb[:, y : y + 1, x : x + 1]) ** 2).sum(0) / PARAMS.theta_beta**2
    np.testing.assert_allclose(r["exact"], np.exp(-0.5 * d2), rtol=1e-12, atol=1e-300)
    # the window is the exact kernel cut to k × k around each receiving pixel
    inside = (np.abs(ys - y) <= 3) & (np.abs(xs - x) <= 3)
    np.testing.assert_allclose(r["window"][inside], r["exact"][inside], rtol=1e-9)
    assert not r["window"][~inside].any()
    # the lattice: same shape (correlation), mass within the 0.7–1.0 of the exact sum docs/lattice.md reports
    corr = np.corrcoef(r["exact"].ravel(), r["lattice"].ravel())[0, 1]
    assert corr > 0.95, corr
    assert 0.6 < r["lattice"].sum() / r["exact"].sum() < 1.1


def test_figure_and_refusals():
    image = _image()
    r = impulse_responses(image, PARAMS, 5, 6, "spatial")
    fig = impulse_figure(r, 5, 6, "spatial")
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("lattice − exact: max |Δ|") for t in titles)
    assert any(t.startswith("exact: Σ = ") for t in titles)
    with pytest.raises(ValueError, match=r"^kernel: "):
        impulse_responses(image, PARAMS, 0, 0, "gaussian")
    with pytest.raises(ValueError, match=r"^y: "):
        impulse_responses(image, PARAMS, H, 0)
    with pytest.raises(ValueError, match=r"^responses: "):
        impulse_figure({"exact": r["exact"]}, 0, 0)
