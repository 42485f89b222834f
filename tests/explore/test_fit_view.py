"""The app's fit to one ground truth (lab.explore.fit_view): it fits, clamps into the knobs' ranges, refuses."""

import numpy as np
import pytest
import torch

from lab.crf import CRFParams, mean_field
from lab.data.synthetic import render_scene
from lab.explore.fit_view import fit_to_truth
from lab.train.metrics import confusion_matrix, mean_iou
from lab.unary import unary_from_labels

RANGES = {
    "theta_alpha": (1.0, 200.0),
    "theta_beta": (1.0, 50.0),
    "theta_gamma": (0.5, 10.0),
    "w_bilateral": (-10.0, 50.0),
    "w_spatial": (-10.0, 50.0),
}


@pytest.fixture(scope="module")
def scene():
    s = render_scene([3, 1], 32)
    truth = s.label.astype(np.int64)
    g = torch.Generator().manual_seed(0)
    unary = unary_from_labels(torch.from_numpy(truth)[None], 6, gt_prob=0.5, zero_unsure=False)
    unary = (unary + 1.5 * torch.randn(unary.shape, generator=g)).log_softmax(1)  # noisy: the CRF has work
    return s.image, unary, truth


def scores(image, unary, params, t):
    return mean_field(unary, torch.from_numpy(image).permute(2, 0, 1)[None].float(), params, t, keep=None).logits


def miou(image, unary, truth, params, t):
    return mean_iou(confusion_matrix(scores(image, unary, params, t).argmax(1), torch.from_numpy(truth)[None], 6))


def test_the_fit_improves_the_image_it_fits_and_its_knobs_reproduce_it(scene):
    image, unary, truth = scene
    start = CRFParams(theta_alpha=10.0, theta_beta=20.0, theta_gamma=2.0, w_bilateral=2.0, w_spatial=1.0)
    fit = fit_to_truth(image, unary, truth, start, 5, RANGES, seconds=60, steps=15)
    r = fit.result
    target = torch.from_numpy(truth)[None]
    start_loss = float(torch.nn.functional.cross_entropy(scores(image, unary, start, 5), target))
    fitted_loss = float(torch.nn.functional.cross_entropy(scores(image, unary, r.params, 5), target))
    assert r.steps_run > 0 and r.loss[0] == pytest.approx(start_loss, rel=1e-4)
    assert fitted_loss < 0.9 * start_loss
    # the mIoU the fit reports is the mean field's own at the start and at the fitted values (pooled over pixels)
    assert r.miou_before == pytest.approx(miou(image, unary, truth, start, 5), abs=1e-9)
    knob_params = CRFParams(**fit.knobs, compat=fit.compat)  # what the app runs after moving its knobs
    assert miou(image, unary, truth, knob_params, 5) == pytest.approx(r.miou_after, abs=0.01)
    assert fit.clamped == [] and fit.num_labels == 6 and fit.compat.shape == (6, 6)
    assert fit.summary().startswith(f"{r.steps_run} gradient steps")


def test_values_outside_a_knob_range_are_clamped_with_a_note(scene):
    image, unary, truth = scene
    narrow = {**RANGES, "w_bilateral": (0.0, 1.0), "theta_alpha": (50.0, 60.0)}
    fit = fit_to_truth(image, unary, truth, CRFParams(w_bilateral=5.0, theta_alpha=10.0), 2, narrow, steps=1)
    assert fit.knobs["w_bilateral"] == 1.0 and fit.knobs["theta_alpha"] == 50.0
    assert any(n.startswith("w_bilateral = ") and "knob range 0–1" in n for n in fit.clamped)
    assert any(n.startswith("theta_alpha = ") for n in fit.clamped)


def test_refusals_name_what_is_wrong(scene):
    image, unary, truth = scene
    with pytest.raises(ValueError, match="iterations: expected T >= 1"):
        fit_to_truth(image, unary, truth, CRFParams(), 0, RANGES)
    with pytest.raises(ValueError, match="truth: expected some labelled pixels"):
        fit_to_truth(image, unary, np.full_like(truth, 255), CRFParams(), 5, RANGES)
    with pytest.raises(ValueError, match=r"ranges: .*missing \['w_spatial'\]"):
        fit_to_truth(image, unary, truth, CRFParams(), 5, {k: v for k, v in RANGES.items() if k != "w_spatial"})
    with pytest.raises((ValueError, FloatingPointError)):
        fit_to_truth(image, torch.full_like(unary, float("nan")), truth, CRFParams(), 5, RANGES, steps=1)


def test_a_large_image_is_fitted_smaller_and_its_pixel_bandwidths_scaled_back():
    s = render_scene([3, 2], 120)
    truth = s.label.astype(np.int64)
    unary = unary_from_labels(torch.from_numpy(truth)[None], 6, gt_prob=0.6, zero_unsure=False)
    start = CRFParams(theta_alpha=30.0, theta_beta=20.0, theta_gamma=3.0, w_bilateral=4.0, w_spatial=2.0)
    still = fit_to_truth(s.image, unary, truth, start, 2, RANGES, steps=0, fit_side=40)  # no step: the start back
    assert still.fit_shape == (40, 40) and still.result.params.theta_alpha == pytest.approx(10.0)
    assert still.knobs == {
        "theta_alpha": 30.0,
        "theta_beta": 20.0,
        "theta_gamma": 3.0,
        "w_bilateral": 4.0,
        "w_spatial": 2.0,
    }
    assert any("scaled by 3 back to the working size" in n for n in still.notes)
    moved = fit_to_truth(s.image, unary, truth, start, 2, RANGES, steps=3, fit_side=40)
    assert moved.knobs["theta_alpha"] == pytest.approx(3 * moved.result.params.theta_alpha, abs=0.01)
    none = fit_to_truth(s.image, unary, truth, CRFParams(normalize="none"), 2, RANGES, steps=0, fit_side=40)
    assert none.fit_shape == (120, 120)  # unnormalised messages depend on the size: fitted where they run
