"""lab.fit_crf: recovery of known parameters, determinism, sizes, ignore_index, learn subsets, bad inputs.

Recovery: labels drawn from the marginals Q* of a CRF with known parameters P*. Cross-entropy is a proper
scoring rule, so P* minimises the expected loss against labels sampled from Q* (labels taken as the
arg-max of Q* reward ever sharper Q instead, and pull the weights past P*: seen in the study below). The
held-out mIoU is measured against the arg-max of Q* on other scenes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lab
from lab.crf import CRFParams, mean_field
from lab.data.synthetic import render_scene
from lab.explore import params_from_json
from lab.fit import THETA_BOUNDS, W_MAX, fit_crf
from lab.train.metrics import confusion_matrix, mean_iou

L = 6  # the synthetic scenes' classes
TRUE = CRFParams(theta_alpha=12.0, theta_beta=25.0, theta_gamma=2.0, w_bilateral=6.0, w_spatial=2.0)
START = CRFParams(theta_alpha=30.0, theta_beta=8.0, theta_gamma=5.0, w_bilateral=3.0, w_spatial=5.0)
NAMES = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial")
# Study (3 training scenes of 32 px, 20 steps, lr 0.1, 2026-12-02): the log-space distance to P* fell from
# 2.07 (START) to 1.02, each parameter closer (θα barely: 0.916 → 0.909; at 32 px θα of 12 and 30 both span
# most of an object); held-out mIoU 0.900 against 0.809 with CRFParams() and 1.0 with P* itself.
MAX_DISTANCE_RATIO = 0.75
MIN_MIOU_GAIN = 0.04


def scene(seed: int, size: int = 32, sample: bool = True):
    """(image (H, W, 3) uint8, U (L, H, W), labels (H, W), arg-max labels of Q*) of a synthetic scene."""
    s = render_scene(seed, size)
    g = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(s.label.astype(np.int64))
    onehot = torch.nn.functional.one_hot(y, L).permute(2, 0, 1).float()
    u = torch.log_softmax(2.0 * onehot + 1.5 * torch.randn(L, size, size, generator=g), 0)
    with torch.no_grad():
        q = mean_field(u[None], torch.from_numpy(s.image).permute(2, 0, 1)[None].float(), TRUE, 5, keep=None).q[0]
    drawn = torch.multinomial(q.permute(1, 2, 0).reshape(-1, L), 1, generator=g).reshape(size, size)
    return s.image, u, drawn if sample else q.argmax(0), q.argmax(0)


def log_distance(p: CRFParams) -> float:
    return math.sqrt(sum((math.log(getattr(p, n)) - math.log(getattr(TRUE, n))) ** 2 for n in NAMES))


def held_out_miou(params: CRFParams) -> float:
    confusion = torch.zeros(L, L, dtype=torch.int64)
    for seed in range(100, 104):
        image, u, _, target = scene(seed, 40)
        with torch.no_grad():
            q = mean_field(u[None], torch.from_numpy(image).permute(2, 0, 1)[None].float(), params, 5, keep=None).q
        confusion += confusion_matrix(q.argmax(1), target[None], L)
    return mean_iou(confusion)


def test_recovers_known_parameters_and_beats_the_defaults():
    data = [scene(s) for s in range(3)]
    result = fit_crf(
        [d[0] for d in data],
        [d[1] for d in data],
        [d[2] for d in data],
        learn=("weights", "bandwidths"),
        steps=20,
        lr=0.1,
        patience=20,
        params=START,
        progress=False,
    )
    fitted = result.params
    assert result.steps_run == 20 and result.stopped == "steps"
    assert log_distance(fitted) < MAX_DISTANCE_RATIO * log_distance(START), (fitted, log_distance(START))
    for name in NAMES[1:]:  # θα is weakly identifiable at 32 px (see the study above)
        closer = abs(math.log(getattr(fitted, name) / getattr(TRUE, name)))
        assert closer < abs(math.log(getattr(START, name) / getattr(TRUE, name))), name
    assert held_out_miou(fitted) > held_out_miou(CRFParams()) + MIN_MIOU_GAIN
    assert result.miou_on == "train" and result.miou_after > result.miou_before
    assert result.loss[-1] < result.loss[0]


def _small(n=2, size=24, seeds=(0, 1, 2, 3)):
    data = [scene(s, size + 4 * i, sample=False) for i, s in enumerate(seeds[:n])]
    return [d[0] for d in data], [d[1] for d in data], [d[2] for d in data]


def test_deterministic_and_sizes_may_differ():
    images, unaries, labels = _small(2)
    assert images[0].shape != images[1].shape
    runs = [fit_crf(images, unaries, labels, steps=3, progress=False, seed=7) for _ in range(2)]
    a, b = (r.params for r in runs)
    assert runs[0].loss == runs[1].loss
    assert [getattr(a, n) for n in NAMES] == [getattr(b, n) for n in NAMES]
    assert torch.equal(a.compat, b.compat)
    doc, extra = params_from_json(runs[0].to_json())
    assert extra["iterations"] == 5 and extra["fit"]["steps_run"] == runs[0].steps_run
    assert doc.theta_alpha == pytest.approx(a.theta_alpha) and torch.allclose(doc.compat, a.compat)


def test_learn_subsets_leave_the_rest_exactly():
    images, unaries, labels = _small(1)
    start = CRFParams(theta_alpha=20.0, w_bilateral=4.0)
    weights_only = fit_crf(images, unaries, labels, learn=("weights",), steps=3, params=start, progress=False)
    p = weights_only.params
    assert (p.theta_alpha, p.theta_beta, p.theta_gamma, p.compat) == (20.0, 13.0, 3.0, "potts")
    assert p.w_bilateral != 4.0
    compat_only = fit_crf(images, unaries, labels, learn="compat", steps=3, params=start, progress=False).params
    assert (compat_only.w_bilateral, compat_only.w_spatial, compat_only.theta_alpha) == (4.0, 3.0, 20.0)
    assert not torch.equal(compat_only.compat, 1 - torch.eye(L))
    theta_only = fit_crf(images, unaries, labels, learn="bandwidths", steps=2, params=start, progress=False).params
    assert (theta_only.w_bilateral, theta_only.compat) == (4.0, "potts") and theta_only.theta_alpha != 20.0


def test_ignore_index_pixels_do_not_count():
    images, unaries, labels = _small(1)
    scrambled = labels[0].clone()
    scrambled[:, :8] = (scrambled[:, :8] + 1) % L  # wrong labels, then marked as ignored
    a = fit_crf(images, unaries, [torch.where(torch.arange(24) < 8, 255, labels[0])], steps=2, progress=False)
    b = fit_crf(images, unaries, [torch.where(torch.arange(24) < 8, 255, scrambled)], steps=2, progress=False)
    assert a.loss == b.loss
    sevens = [torch.where(torch.arange(24) < 8, 7, scrambled)]
    c = fit_crf(images, unaries, sevens, steps=1, ignore_index=7, progress=False)
    assert c.loss[0] == a.loss[0]


def test_validation_drives_early_stopping_and_the_miou():
    images, unaries, labels = _small(3)
    calls = []
    result = fit_crf(
        images[:2], unaries[:2], labels[:2], val=(images[2:], unaries[2:], labels[2:]), steps=4, patience=1,
        learn=("weights", "compat"),
        lr=0.5, progress=lambda step, total, loss: calls.append((step, total)),
    )  # fmt: skip
    assert result.miou_on == "val" and len(result.val_loss) == len(result.val_miou) == len(result.eval_steps)
    assert result.val_loss[result.eval_steps.index(result.best_step)] == min(result.val_loss)
    assert calls[0] == (1, 4) and result.stopped in ("steps", "patience")
    cancelled = fit_crf(images, unaries, labels, learn="weights", steps=10, progress=lambda *a: False)
    assert cancelled.stopped == "cancelled" and cancelled.steps_run == 1
    timed = fit_crf(images, unaries, labels, learn="weights", steps=1000, max_seconds=0.01, progress=False)
    assert timed.stopped == "time" and timed.steps_run == 1


def test_parameters_stay_in_their_ranges():
    images, unaries, labels = _small(1)
    start = CRFParams(theta_gamma=0.1, w_bilateral=0.0, w_spatial=500.0)
    result = fit_crf(images, unaries, labels, learn=("weights", "bandwidths"), steps=2, lr=5.0, params=start,
                     progress=False)  # fmt: skip
    p = result.params
    for name, (lo, hi) in THETA_BOUNDS.items():
        assert lo <= getattr(p, name) <= hi
    assert 0 < p.w_bilateral < W_MAX and 0 < p.w_spatial < W_MAX
    assert any("theta_gamma" in n for n in result.notes) and any("w_spatial" in n for n in result.notes)


def test_bad_inputs_name_the_argument():
    images, unaries, labels = _small(2)
    nan_unary = unaries[1].clone()
    nan_unary[0, 0, 0] = float("nan")
    cases = [
        (dict(learn=("weights", "theta")), ValueError, "learn: expected names among"),
        (dict(learn=()), ValueError, "learn: expected a non-empty subset"),
        (dict(unaries=unaries[:1]), ValueError, "unaries: expected one per image (2), got 1"),
        (dict(unaries=[unaries[0], unaries[1][:, :-1]]), ValueError, "unaries[1]: expected the image's size"),
        (dict(unaries=[unaries[0], nan_unary]), ValueError, "unaries[1]: expected finite values"),
        (dict(labels=[labels[0], labels[1][:-1]]), ValueError, "labels[1]: expected the image's size"),
        (dict(labels=[labels[0], torch.full_like(labels[1], 9)]), ValueError, "labels[1]: expected class ids 0..5"),
        (dict(labels=[labels[0], torch.full_like(labels[1], 255)]), ValueError, "labels[1]: every pixel is ignore"),
        (dict(labels=[labels[0], labels[1].float()]), TypeError, "labels[1]: expected integer class ids"),
        (dict(iterations=0), ValueError, "iterations: expected an integer >= 1"),
        (dict(params={"theta_alpha": 3}), TypeError, "params: expected a CRFParams"),
        (dict(val=(images, unaries)), TypeError, "val: expected None or a tuple"),
        (dict(progress="yes"), TypeError, "progress: expected True, False or a callable"),
        (dict(monitor="acc"), ValueError, "monitor: expected one of"),
    ]
    for change, error, message in cases:
        kwargs = dict(images=images, unaries=unaries, labels=labels, steps=1, progress=False) | change
        with pytest.raises(error) as info:
            fit_crf(kwargs.pop("images"), kwargs.pop("unaries"), kwargs.pop("labels"), **kwargs)
        assert message in str(info.value), (change, str(info.value))
    with lab.data_checks(False):
        nan_start = CRFParams(w_bilateral=torch.tensor(float("nan")))
    with pytest.raises(ValueError, match=r"params\.w_bilateral: expected finite values"):
        fit_crf(images, unaries, labels, params=nan_start, progress=False)


def test_a_callable_unary_and_one_image_alone():
    image, u, y, _ = scene(0, 24, sample=False)
    result = fit_crf(image, lambda im: (u[None], ("names",)), y, learn="weights", steps=1, progress=False)
    assert result.num_train == 1 and len(result.loss) == 1
    as_tensor = torch.from_numpy(image).permute(2, 0, 1)
    again = fit_crf(as_tensor, u, y, learn="weights", steps=1, progress=False)
    assert again.loss == result.loss


def test_a_loss_that_becomes_nan_rolls_back(monkeypatch):
    import lab.fit.fitting as fitting

    images, unaries, labels = _small(1)
    real, calls = fitting._scores, []

    def flaky(ex, params, iterations, kernels):
        calls.append(1)
        out = real(ex, params, iterations, kernels)
        return out * float("nan") if len(calls) > 4 else out

    monkeypatch.setattr(fitting, "_scores", flaky)
    result = fit_crf(images, unaries, labels, learn="weights", steps=10, progress=False)
    assert result.stopped == "non-finite" and "rolled back" in result.notes[-1]
    assert all(math.isfinite(v) for v in (result.params.w_bilateral, result.params.w_spatial))
