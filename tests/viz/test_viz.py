import numpy as np
import pytest

from lab.explore import fit_image, label_png, params_from_json, params_to_json
from lab.viz import PALETTE, changed_mask, class_heatmap, colorize, entropy_map, kl_figure, overlay


def test_overlay_and_colorize():
    img = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(img, np.array([[0, 1], [2, 3]]), alpha=1.0)
    assert np.array_equal(out, colorize(np.array([[0, 1], [2, 3]])))
    assert np.array_equal(overlay(img, np.zeros((2, 2), int), alpha=0.0), img)
    with pytest.raises(ValueError, match="labels"):
        colorize(np.array([[-1]]))


def test_entropy_and_heatmap():
    q = np.stack([np.full((3, 3), 1.0), np.zeros((3, 3))])
    assert np.allclose(entropy_map(q), 0)
    u = np.full((4, 3, 3), 0.25)
    assert np.allclose(entropy_map(u), np.log(4))
    hm = class_heatmap(q, 0)
    assert hm.shape == (3, 3, 3) and hm.dtype == np.uint8
    with pytest.raises(ValueError, match="label"):
        class_heatmap(q, 5)


def test_entropy_map_is_the_shannon_entropy_of_each_pixel():
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        q = rng.dirichlet(np.full(21, 0.3), size=(30, 20)).transpose(2, 0, 1).astype(dtype)
        q[:, 0, 0] = 0
        q[3, 0, 0] = 1  # one-hot: 0 log 0 counts as 0
        want = entropy(q.astype(np.float64), axis=0)
        got = entropy_map(q)
        assert got.dtype == np.float64 and got.shape == (30, 20)
        assert np.allclose(got, want, atol=1e-6 if dtype == np.float32 else 1e-12)
    assert np.allclose(entropy_map(np.full((4, 2, 3), 0.25, np.float32)), np.log(4))


def test_changed_mask_and_kl_figure():
    assert changed_mask(np.array([1, 2]), np.array([1, 3])).tolist() == [False, True]
    fig = kl_figure(np.array([3.0, 2.0, 1.5]), current=1)
    assert fig.axes[0].get_xlabel() == "iteration t"


def test_label_png_roundtrip():
    from io import BytesIO

    from PIL import Image

    labels = np.array([[0, 1, 2], [20, 3, 0]])
    img = Image.open(BytesIO(label_png(labels)))
    assert img.mode == "P"
    assert np.array_equal(np.asarray(img), labels)
    assert img.getpalette()[3:6] == PALETTE[1].tolist()  # the lab's palette (tests/viz/test_palette.py)


def test_params_json_roundtrip_and_errors():
    import torch

    from lab.crf import CRFParams

    p = CRFParams(theta_alpha=55.0, w_bilateral=4.0, compat=torch.eye(3), normalize="symmetric")
    back, extra = params_from_json(params_to_json(p, iterations=9))
    assert (back.theta_alpha, back.w_bilateral, back.normalize) == (55.0, 4.0, "symmetric")
    assert torch.equal(back.compat, torch.eye(3)) and extra == {"iterations": 9}
    with pytest.raises(ValueError, match="params"):
        params_from_json("{not json")
    with pytest.raises(ValueError, match="theta_alpha"):
        params_from_json('{"theta_alpha": -1}')


def test_fit_image_keeps_small_images():
    img = np.zeros((30, 20, 3), np.uint8)
    assert fit_image(img, 64) is img
    assert fit_image(np.zeros((300, 200, 3), np.uint8), 64).shape == (64, 43, 3)
