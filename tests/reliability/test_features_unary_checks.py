"""Feature images and unaries: graphs kept, bad input refused by name, never NaN/Inf.

A θ that requires grad keeps its graph (it is never turned into a float); a θ too small for the dtype is
refused rather than giving NaN (0/0 at pixel (0, 0)) or Inf; ``unary_from_softmax`` refuses a clip outside
(0, 1/L) or one that rounds to 0, and logits or a permuted layout in place of probabilities; None/str/bool
arguments get messages that name the argument.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.unary import unary_from_labels, unary_from_softmax

G = torch.Generator().manual_seed(0)
IMG = (torch.rand(2, 3, 5, 7, generator=G) * 255).double()


def _np_bilateral(img, theta_alpha, theta_beta):
    """(B, 5, H, W) float64 by the definition: x/θα, y/θα (x = column), colour/θβ."""
    img = np.asarray(img, dtype=np.float64)
    b, _, h, w = img.shape
    y, x = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    xy = np.broadcast_to(np.stack([x, y]) / theta_alpha, (b, 2, h, w))
    return np.concatenate([xy, img / theta_beta], 1)


# --- the graph through θ


def test_bilateral_features_keep_the_graph_of_tensor_bandwidths():
    ta = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
    f = lab.bilateral_features(IMG, ta, tb, dtype=torch.float64)
    assert f.requires_grad
    ga, gb = torch.autograd.grad(f.sum(), (ta, tb))
    # ∂/∂θ Σ u/θ = −Σ u/θ², with u the positions (pixels) and colours (0..255), summed by numpy
    want = _np_bilateral(IMG.numpy(), 1.0, 1.0)
    assert math.isclose(float(ga), -want[:, :2].sum() / 3.0**2, rel_tol=1e-12)
    assert math.isclose(float(gb), -want[:, 2:].sum() / 20.0**2, rel_tol=1e-12)


def test_feature_gradcheck_in_the_bandwidths():
    ta = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(11.0, dtype=torch.float64, requires_grad=True)
    tg = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    img = IMG[:1, :, :3, :4]
    assert torch.autograd.gradcheck(lambda a, b: lab.bilateral_features(img, a, b, dtype=torch.float64), (ta, tb))
    assert torch.autograd.gradcheck(lambda g: lab.spatial_features(1, 3, 4, g, dtype=torch.float64), (tg,))


def test_tensor_and_number_bandwidths_give_the_same_features():
    ta, tb = torch.tensor(80.0, requires_grad=True), torch.tensor(13.0)
    assert torch.equal(lab.bilateral_features(IMG, ta, tb), lab.bilateral_features(IMG, 80.0, 13.0))
    assert torch.equal(lab.spatial_features(IMG, theta_gamma=torch.tensor(3)), lab.spatial_features(IMG, theta_gamma=3))


def test_inputs_that_require_grad_pass_the_checks_quietly_and_get_gradients():
    """The range checks read detached values: no "requires_grad to a scalar" warning, the graph intact."""
    img = IMG.clone().requires_grad_()
    prob = torch.softmax(torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(3)), 1).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (g_img,) = torch.autograd.grad(lab.bilateral_features(img, 3.0, 20.0, dtype=torch.float64).sum(), img)
        (g_prob,) = torch.autograd.grad(unary_from_softmax(prob, clip=None).sum(), prob)
    torch.testing.assert_close(g_img, torch.full_like(IMG, 1 / 20.0), atol=1e-15, rtol=0)  # ∂(c/θβ)/∂c
    torch.testing.assert_close(g_prob, 1 / prob.detach(), atol=0, rtol=1e-6)  # ∂ log p / ∂p


# --- values: the definition, rounded once


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_features_are_the_float64_definition_rounded_once(dtype):
    """Wide enough that float16 cannot hold every column index (> 2048): positions are made in float64."""
    img = (torch.rand(1, 3, 2, 3000, generator=torch.Generator().manual_seed(1)) * 255).round().to(torch.uint8)
    want = _np_bilateral(img.numpy(), 3.0, 7.0)
    assert torch.equal(lab.bilateral_features(img, 3.0, 7.0, dtype=dtype), torch.from_numpy(want).to(dtype))
    spatial = lab.spatial_features(1, 2, 3000, theta_gamma=3.0, dtype=dtype)
    assert torch.equal(spatial, torch.from_numpy(np.ascontiguousarray(want[:, :2])).to(dtype))


def test_a_bandwidth_too_small_for_the_dtype_is_refused_not_nan():
    with pytest.raises(ValueError, match=r"theta_alpha: 1e-40 is too small for torch\.float32"):
        lab.bilateral_features(IMG, 1e-40, 13.0)  # unchecked: 0/0 = NaN at pixel (0, 0), Inf elsewhere
    with pytest.raises(ValueError, match=r"theta_beta: 0\.001 is too small for torch\.float16"):
        lab.bilateral_features(IMG, 80.0, 1e-3, dtype=torch.float16)  # 255 / 1e-3 > 65504
    with pytest.raises(ValueError, match="theta_gamma"):
        lab.spatial_features(1, 5, 5, theta_gamma=1e-320, dtype=torch.float64)
    # the same θ is fine where the features fit: a 1×1 image has position 0 only
    assert torch.equal(lab.spatial_features(1, 1, 1, theta_gamma=1e-40), torch.zeros(1, 2, 1, 1))


# --- bad input: refused with the argument's name

IMG_F = torch.rand(1, 3, 4, 4) * 255
NAN_IMG = IMG_F.clone()
NAN_IMG[0, 0, 1, 1] = float("nan")
INF_IMG = IMG_F.clone()
INF_IMG[0, 2, 0, 3] = float("inf")


def bil(img=IMG_F, ta=5.0, tb=10.0, **kw):
    return lambda: lab.bilateral_features(img, ta, tb, **kw)


FEATURE_CASES = [
    ("θα None", bil(ta=None), TypeError, "theta_alpha"),
    ("θα ndarray", bil(ta=np.array([5.0])), TypeError, "theta_alpha"),
    ("θα 0-d ndarray", bil(ta=np.array(5.0)), TypeError, "theta_alpha"),
    ("θα str", bil(ta="5"), TypeError, "theta_alpha"),
    ("θα bool", bil(ta=True), TypeError, "theta_alpha"),
    ("θα 0", bil(ta=0.0), ValueError, "theta_alpha"),
    ("θα negative", bil(ta=-1), ValueError, "theta_alpha"),
    ("θα NaN", bil(ta=float("nan")), ValueError, "theta_alpha"),
    ("θα Inf", bil(ta=float("inf")), ValueError, "theta_alpha"),
    ("θβ tensor shape", bil(tb=torch.ones(1)), ValueError, "theta_beta"),
    ("θβ tensor NaN", bil(tb=torch.tensor(float("nan"))), ValueError, "theta_beta"),
    ("θβ tensor ≤ 0", bil(tb=torch.tensor(-2.0, requires_grad=True)), ValueError, "theta_beta"),
    ("θβ complex tensor", bil(tb=torch.tensor(1 + 1j)), TypeError, "theta_beta"),
    ("θβ bool tensor", bil(tb=torch.tensor(True)), TypeError, "theta_beta"),
    ("image ndarray", bil(img=np.zeros((1, 3, 4, 4))), TypeError, "image"),
    ("image rank 2", bil(img=torch.zeros(4, 4)), ValueError, "image"),  # (B, C, W) is a 1-D guide
    ("image 0 channels", bil(img=torch.zeros(1, 0, 4, 4)), ValueError, "image"),  # C = 1 is a grayscale guide
    ("image channels last", bil(img=torch.zeros(1, 8, 8, 3)), ValueError, "image"),
    ("image empty", bil(img=torch.zeros(1, 3, 0, 4)), ValueError, "image"),
    ("image bool", bil(img=torch.zeros(1, 3, 4, 4, dtype=torch.bool)), TypeError, "image"),
    ("image complex", bil(img=torch.zeros(1, 3, 4, 4, dtype=torch.complex64)), TypeError, "image"),
    ("image NaN", bil(img=NAN_IMG), ValueError, "image"),
    ("image Inf", bil(img=INF_IMG), ValueError, "image"),
    ("image > 255", bil(img=IMG_F + 300), ValueError, "image"),
    ("image < 0", bil(img=IMG_F - 300), ValueError, "image"),
    ("image int16 > 255", bil(img=torch.full((1, 3, 2, 2), 1000, dtype=torch.int16)), ValueError, "image"),
    ("dtype int", bil(dtype=torch.int64), TypeError, "dtype"),
    ("dtype str", bil(dtype="float32"), TypeError, "dtype"),
    ("spatial batch None", lambda: lab.spatial_features(None, 4, 4), TypeError, "batch"),
    ("spatial batch bool", lambda: lab.spatial_features(True, 4, 4), TypeError, "batch"),
    ("spatial batch 0", lambda: lab.spatial_features(0, 4, 4), ValueError, "batch"),
    ("spatial batch 2.5", lambda: lab.spatial_features(2.5, 4, 4), ValueError, "batch"),
    ("spatial batch ndarray", lambda: lab.spatial_features(np.zeros((1, 3, 4, 4)), 4, 4), TypeError, "batch"),
    ("spatial batch rank 2", lambda: lab.spatial_features(torch.zeros(4, 4)), ValueError, "batch"),
    ("spatial empty image", lambda: lab.spatial_features(torch.zeros(1, 3, 0, 4)), ValueError, "height"),
    ("spatial height str", lambda: lab.spatial_features(1, "4", 4), TypeError, "height"),
    ("spatial width bool", lambda: lab.spatial_features(1, 4, True), TypeError, "width"),
    ("spatial width NaN", lambda: lab.spatial_features(1, 4, float("nan")), ValueError, "width"),
    ("spatial width missing", lambda: lab.spatial_features(1, 4), ValueError, "height/width"),
    ("spatial sizes with image", lambda: lab.spatial_features(IMG_F, 4, 4), ValueError, "height/width"),
    ("spatial θγ None", lambda: lab.spatial_features(1, 4, 4, None), TypeError, "theta_gamma"),
    ("spatial θγ ndarray", lambda: lab.spatial_features(1, 4, 4, np.ones(2)), TypeError, "theta_gamma"),
    ("spatial θγ 0", lambda: lab.spatial_features(1, 4, 4, 0), ValueError, "theta_gamma"),
    ("spatial θγ tensor Inf", lambda: lab.spatial_features(1, 4, 4, torch.tensor(math.inf)), ValueError, "theta_gamma"),
    ("spatial dtype", lambda: lab.spatial_features(1, 4, 4, dtype=torch.uint8), TypeError, "dtype"),
]


@pytest.mark.parametrize(("call", "exc", "name"), [c[1:] for c in FEATURE_CASES], ids=[c[0] for c in FEATURE_CASES])
def test_feature_bad_input_is_refused_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(f"{name}:"), info.value


def test_accepted_variants():
    """numpy scalars, integer images, integer 0-d tensors, integral floats as sizes: the same features."""
    want = lab.bilateral_features(IMG_F.round(), 5.0, 10.0)
    assert torch.equal(lab.bilateral_features(IMG_F.round().to(torch.int32), np.float64(5.0), np.int64(10)), want)
    assert torch.equal(lab.spatial_features(np.int64(1), 4.0, 4, torch.tensor(2)), lab.spatial_features(1, 4, 4, 2.0))


# --- property: finite or a clear ValueError, never NaN/Inf

BANDWIDTH = st.floats(-330.0, 310.0).map(lambda e: 10.0**e if e < 308.2 else 1e308)  # 0 (underflow) .. 1e308


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.integers(1, 2),
    st.integers(1, 6),
    st.integers(1, 6),
    BANDWIDTH,
    BANDWIDTH,
    st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_bilateral_features_are_finite_or_refused(b, h, w, ta, tb, dtype, as_uint8, seed):
    img = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 255
    img = img.round().to(torch.uint8) if as_uint8 else img
    try:
        f = lab.bilateral_features(img, ta, tb, dtype=dtype)
    except ValueError as err:
        assert str(err).startswith(("theta_alpha:", "theta_beta:")), err
        return
    assert f.shape == (b, 5, h, w) and f.dtype == dtype
    assert bool(torch.isfinite(f).all())


# --- unaries from probabilities


def _softmax(b=1, n_labels=3, h=4, w=5, seed=0, dtype=torch.float32):
    return torch.softmax(torch.randn(b, n_labels, h, w, generator=torch.Generator().manual_seed(seed)) * 3, 1).to(dtype)


@pytest.mark.parametrize(("scale", "clip"), [(None, 1e-5), (0.7, 1e-3), (None, None), (1.0, 0.2)])
def test_unary_from_softmax_is_the_log_of_the_definition(scale, clip):
    p = _softmax().double()
    q = p.numpy() if scale is None else scale * p.numpy() + (1 - scale) / 3
    want = np.log(q if clip is None else np.clip(q, clip, 1.0))
    np.testing.assert_allclose(unary_from_softmax(p, scale=scale, clip=clip).numpy(), want, rtol=0, atol=1e-14)


def test_rounding_just_outside_zero_and_one_gives_no_nan():
    p = torch.tensor([-1e-7, 0.25, 0.75 + 1e-7]).view(1, 3, 1, 1)  # rounding noise: log of a negative is NaN unclamped
    u = unary_from_softmax(p, clip=None)
    assert torch.equal(u, torch.log(torch.tensor([0.0, 0.25, 0.75 + 1e-7]).clamp(0, 1)).view(1, 3, 1, 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_softmax_is_accepted(dtype):
    p = _softmax(n_labels=21, dtype=dtype)  # 21 labels rounded to half: sums off by up to eps/2
    u = unary_from_softmax(p)
    assert u.dtype == dtype and bool(torch.isfinite(u).all())


def test_clip_that_rounds_to_zero_is_refused():
    p = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    with pytest.raises(ValueError, match=r"clip: 1e-50 rounds to 0 in torch\.float32"):
        unary_from_softmax(p, clip=1e-50)  # unchecked: log 0 = -inf
    assert math.isclose(float(unary_from_softmax(p.double(), clip=1e-50)[0, 0]), math.log(1e-50))


P3 = _softmax()
LOGITS = torch.randn(1, 3, 4, 5)
NAN_P = P3.clone()
NAN_P[0, 1, 2, 3] = float("nan")
SOFTMAX_CASES = [
    ("clip 2", lambda: unary_from_softmax(P3, clip=2), ValueError, "clip"),  # unchecked: U = 0 everywhere
    ("clip 1", lambda: unary_from_softmax(P3, clip=1.0), ValueError, "clip"),
    ("clip 1/L", lambda: unary_from_softmax(P3, clip=1 / 3), ValueError, "clip"),
    ("clip 0", lambda: unary_from_softmax(P3, clip=0.0), ValueError, "clip"),
    ("clip negative", lambda: unary_from_softmax(P3, clip=-1e-5), ValueError, "clip"),
    ("clip NaN", lambda: unary_from_softmax(P3, clip=float("nan")), ValueError, "clip"),
    ("clip str", lambda: unary_from_softmax(P3, clip="1e-5"), TypeError, "clip"),
    ("clip bool", lambda: unary_from_softmax(P3, clip=True), TypeError, "clip"),
    ("clip tensor", lambda: unary_from_softmax(P3, clip=torch.tensor(1e-5)), TypeError, "clip"),
    ("scale 0", lambda: unary_from_softmax(P3, scale=0.0), ValueError, "scale"),
    ("scale > 1", lambda: unary_from_softmax(P3, scale=1.5), ValueError, "scale"),
    ("scale NaN", lambda: unary_from_softmax(P3, scale=float("nan")), ValueError, "scale"),
    ("scale str", lambda: unary_from_softmax(P3, scale="0.5"), TypeError, "scale"),
    ("prob ndarray", lambda: unary_from_softmax(P3.numpy()), TypeError, "prob"),
    ("prob rank 3", lambda: unary_from_softmax(P3[0]), ValueError, "prob"),
    ("prob int", lambda: unary_from_softmax(torch.ones(1, 1, 2, 2, dtype=torch.long)), TypeError, "prob"),
    ("prob NaN", lambda: unary_from_softmax(NAN_P), ValueError, "prob"),
    ("prob Inf", lambda: unary_from_softmax(torch.full((1, 2, 1, 1), math.inf)), ValueError, "prob"),
    ("prob logits", lambda: unary_from_softmax(LOGITS), ValueError, "prob"),
    ("prob > 1", lambda: unary_from_softmax(torch.tensor([1.5, -0.5]).view(1, 2, 1, 1)), ValueError, "prob"),
    ("prob not summing to 1", lambda: unary_from_softmax(torch.full((1, 3, 2, 2), 0.2)), ValueError, "prob"),
    ("prob (B, H, W, L) layout", lambda: unary_from_softmax(P3.permute(0, 2, 3, 1)), ValueError, "prob"),
]


@pytest.mark.parametrize(("call", "exc", "name"), [c[1:] for c in SOFTMAX_CASES], ids=[c[0] for c in SOFTMAX_CASES])
def test_softmax_bad_input_is_refused_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(f"{name}:"), info.value


# --- unaries from labels


@pytest.mark.parametrize("zero_unsure", [True, False])
def test_unary_from_labels_is_the_log_of_the_definition(zero_unsure):
    n, gt = 4, 0.55
    labels = torch.randint(0, n + 1 if zero_unsure else n, (2, 3, 5), generator=torch.Generator().manual_seed(2))
    want = np.empty((2, n, 3, 5))
    for idx in np.ndindex(2, 3, 5):
        lab_ = int(labels[idx])
        cls = lab_ - 1 if zero_unsure else lab_
        p = np.full(n, 1 / n) if zero_unsure and lab_ == 0 else np.where(np.arange(n) == cls, gt, (1 - gt) / (n - 1))
        want[idx[0], :, idx[1], idx[2]] = np.log(p)
    got = unary_from_labels(labels.to(torch.uint8), np.int64(n), gt_prob=gt, zero_unsure=zero_unsure)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)  # float32 result


L2 = torch.zeros(1, 2, 2, dtype=torch.long)
LABEL_CASES = [
    ("labels ndarray", lambda: unary_from_labels(np.zeros((1, 2, 2), int), 2), TypeError, "labels"),
    ("labels bool", lambda: unary_from_labels(L2.bool(), 2), TypeError, "labels"),
    ("labels float", lambda: unary_from_labels(L2.float(), 2), TypeError, "labels"),
    ("labels rank 2", lambda: unary_from_labels(L2[0], 2), ValueError, "labels"),
    ("labels negative", lambda: unary_from_labels(L2 - 1, 2), ValueError, "labels"),
    ("labels too large", lambda: unary_from_labels(L2 + 3, 2), ValueError, "labels"),
    ("labels L with zero_unsure off", lambda: unary_from_labels(L2 + 2, 2, zero_unsure=False), ValueError, "labels"),
    ("n_labels None", lambda: unary_from_labels(L2, None), TypeError, "n_labels"),
    ("n_labels str", lambda: unary_from_labels(L2, "3"), TypeError, "n_labels"),
    ("n_labels bool", lambda: unary_from_labels(L2, True), TypeError, "n_labels"),
    ("n_labels 1", lambda: unary_from_labels(L2, 1), ValueError, "n_labels"),
    ("n_labels 2.5", lambda: unary_from_labels(L2, 2.5), ValueError, "n_labels"),
    ("n_labels NaN", lambda: unary_from_labels(L2, float("nan")), ValueError, "n_labels"),
    ("gt_prob None", lambda: unary_from_labels(L2, 2, gt_prob=None), TypeError, "gt_prob"),
    ("gt_prob str", lambda: unary_from_labels(L2, 2, gt_prob="0.5"), TypeError, "gt_prob"),
    ("gt_prob 0", lambda: unary_from_labels(L2, 2, gt_prob=0.0), ValueError, "gt_prob"),
    ("gt_prob NaN", lambda: unary_from_labels(L2, 2, gt_prob=float("nan")), ValueError, "gt_prob"),
    ("zero_unsure str", lambda: unary_from_labels(L2, 2, zero_unsure="no"), TypeError, "zero_unsure"),
    ("zero_unsure int", lambda: unary_from_labels(L2, 2, zero_unsure=0), TypeError, "zero_unsure"),
]


@pytest.mark.parametrize(("call", "exc", "name"), [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_labels_bad_input_is_refused_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(f"{name}:"), info.value
