"""Scribble unaries: the colour model against the truth of a two-colour image, the temperature identity, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.unary.scribbles import scribble_unary, strokes_from_canvas


def _two_regions(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = np.empty((30, 40, 3))
    image[:, :20] = rng.normal((200, 60, 50), 12, (30, 20, 3))  # reddish left
    image[:, 20:] = rng.normal((40, 70, 190), 12, (30, 20, 3))  # bluish right
    truth = np.zeros((30, 40), np.int64)
    truth[:, 20:] = 1
    strokes = np.zeros((30, 40), np.int64)
    strokes[5, 3:9] = 1
    strokes[25, 30:36] = 2
    return np.clip(image, 0, 255).astype(np.uint8), truth, strokes


def test_the_colour_model_labels_both_regions():
    image, truth, strokes = _two_regions()
    u = scribble_unary(image, strokes)
    assert u.shape == (1, 2, 30, 40) and u.dtype == torch.float32
    np.testing.assert_allclose(u.exp().sum(1).numpy(), 1.0, atol=1e-5)
    assert (u[0].argmax(0).numpy() == truth).mean() > 0.99
    # a marked pixel keeps its class with stroke_prob
    assert u[0, 0, 5, 3].exp().item() == pytest.approx(0.9, abs=1e-6)


def test_temperature_softens_as_a_power_of_the_posterior():
    image, _, strokes = _two_regions(1)
    u1 = scribble_unary(image, strokes, temperature=1.0).double()
    u3 = scribble_unary(image, strokes, temperature=3.0).double()
    unmarked = torch.from_numpy(strokes == 0)
    expected = torch.log_softmax(u1 / 3.0, 1)  # p^(1/T), renormalised
    np.testing.assert_allclose(u3[0][:, unmarked].numpy(), expected[0][:, unmarked].numpy(), atol=1e-5)
    assert (u3.exp().amax(1) <= u1.exp().amax(1) + 1e-6)[0][unmarked].all()


def test_canvas_strokes_and_refusals():
    canvas = np.zeros((30, 40, 4), np.uint8)
    canvas[5, 3:9] = (230, 30, 30, 255)
    canvas[25, 30:36] = (30, 30, 230, 200)
    canvas[10, 10] = (0, 255, 0, 255)  # a colour of no class: not a stroke
    strokes = strokes_from_canvas(canvas, [(230, 30, 30), (30, 30, 230)])
    _, _, expected = _two_regions()
    np.testing.assert_array_equal(strokes, expected)
    image = _two_regions()[0]
    with pytest.raises(
        ValueError, match=r"^strokes: every class needs marked pixels; none for stroke value\(s\) \[2\]"
    ):
        scribble_unary(image, np.where(strokes == 2, 3, strokes))
    with pytest.raises(ValueError, match=r"^strokes: expected the image's"):
        scribble_unary(image, strokes[:-1])
    with pytest.raises(TypeError, match=r"^strokes: expected integers"):
        scribble_unary(image, strokes.astype(float))
    with pytest.raises(ValueError, match=r"^n_labels: "):
        scribble_unary(image, np.minimum(strokes, 1))
    with pytest.raises(ValueError, match=r"^temperature: "):
        scribble_unary(image, strokes, temperature=float("nan"))
    with pytest.raises(ValueError, match=r"^stroke_prob: "):
        scribble_unary(image, strokes, stroke_prob=1.0)
    with pytest.raises(ValueError, match=r"^image: "):
        scribble_unary(image[..., :2], strokes)
    with pytest.raises(ValueError, match=r"^rgba: "):
        strokes_from_canvas(canvas[..., :3], [(0, 0, 0)])
