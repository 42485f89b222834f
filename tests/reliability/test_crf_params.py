"""Every CRF parameter is checked for type, finiteness and range; mean field never returns NaN silently.

NaN, Inf or overflowing weights and µ, non-integer window sizes, out-of-range integer images and prebuilt
``kernels=`` for other θ are refused by name; Q is never returned non-finite. Hypothesis fuzzes parameter
sets: the result is a finite Q whose rows sum to 1, or an error that names a parameter.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lab
from lab.crf import CRFKernels, CRFParams, mean_field

IMG = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0)) * 255
U = torch.randn(1, 3, 6, 7, generator=torch.Generator().manual_seed(1))

NAMES = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "compat", "window_size", "params")


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"w_bilateral": float("nan")}, ValueError, "w_bilateral"),
        ({"w_spatial": float("inf")}, ValueError, "w_spatial"),
        ({"w_bilateral": 1e30}, ValueError, "w_bilateral"),
        ({"w_spatial": torch.tensor([1.0, float("nan"), 2.0])}, ValueError, "w_spatial"),
        ({"w_bilateral": torch.tensor([1, 2, 3])}, ValueError, "w_bilateral"),
        ({"compat": torch.full((3, 3), float("nan"))}, ValueError, "compat"),
        ({"compat": torch.full((3, 3), 1e20)}, ValueError, "compat"),
        ({"compat": torch.ones(3, 3, dtype=torch.long)}, ValueError, "compat"),
        ({"window_size": 11.0}, TypeError, "window_size"),
        ({"window_size": True}, TypeError, "window_size"),
        ({"window_size": 4}, ValueError, "window_size"),
        ({"theta_alpha": None}, TypeError, "theta_alpha"),
        ({"theta_beta": np.ones(2)}, TypeError, "theta_beta"),
        ({"theta_gamma": "3"}, TypeError, "theta_gamma"),
        ({"theta_gamma": float("nan")}, ValueError, "theta_gamma"),
        ({"w_spatial": None}, TypeError, "w_spatial"),
    ],
)
def test_bad_parameters_are_refused_by_name(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        CRFParams(**kwargs)


def test_params_as_a_dict_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="params: expected a CRFParams"):
        mean_field(U, IMG, {"theta_alpha": 10.0})
    with pytest.raises(TypeError, match="params"):
        lab.CRFRNN(3, params={"theta_alpha": 10.0})


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_integer_images_are_range_checked(dtype):
    with pytest.raises(ValueError, match=r"image: expected colours in 0\.\.255"):
        mean_field(U, (IMG * 4).to(dtype))
    mean_field(U, IMG.to(dtype))  # in range: accepted


def test_bool_image_is_refused():
    with pytest.raises(TypeError, match="image"):
        mean_field(U, IMG > 100)


def test_crfrnn_checks_its_arguments_up_front():
    with pytest.raises(ValueError, match="iterations"):
        lab.CRFRNN(3, iterations=-1)
    with pytest.raises(TypeError, match="iterations"):
        lab.CRFRNN(3, iterations=2.5)
    with pytest.raises(TypeError, match="num_classes"):
        lab.CRFRNN(3.0)
    crf = lab.CRFRNN(3, iterations=1)
    with pytest.raises(TypeError, match="unary"):
        crf(U.numpy(), IMG)
    with pytest.raises(TypeError, match="image"):
        crf(U, IMG.numpy())
    with pytest.raises(ValueError, match="iterations"):
        crf(U, IMG, iterations=-2)


def test_kernels_built_for_other_parameters_are_refused():
    kernels = CRFKernels(IMG, CRFParams(theta_alpha=20.0))
    with pytest.raises(ValueError, match=r"kernels: built for other parameters.*theta_alpha 20"):
        mean_field(U, IMG, CRFParams(theta_alpha=30.0), kernels=kernels)
    with pytest.raises(ValueError, match="normalize"):
        mean_field(U, IMG, CRFParams(theta_alpha=20.0, normalize="symmetric"), kernels=kernels)
    with pytest.raises(ValueError, match="message_passing"):
        mean_field(U, IMG, CRFParams(theta_alpha=20.0), message_passing="exact", kernels=kernels)
    same = mean_field(U, IMG, CRFParams(theta_alpha=20.0, w_spatial=1.0), kernels=kernels)  # weights may differ
    assert torch.isfinite(same.q).all()


def test_window_mode_takes_the_window_size_it_was_given():
    q = mean_field(U, IMG, CRFParams(window_size=3), message_passing="window", iterations=2).q
    assert torch.isfinite(q).all()


def test_a_non_finite_q_is_an_error_naming_the_parameters(monkeypatch):
    """The last guard: whatever made Q non-finite, mean field raises instead of returning it."""
    import importlib

    mf = importlib.import_module("lab.crf.steps")

    real = mf.normalization

    def poisoned(logits, dim=1):
        q = real(logits, dim)
        return q.index_fill(0, torch.tensor([0]), float("nan"))

    monkeypatch.setattr(mf, "normalization", poisoned)
    with pytest.raises(FloatingPointError, match=r"w_bilateral=10.*w_spatial=3.*compat potts"):
        mean_field(U, IMG, CRFParams(), iterations=2, keep="steps")


def _finite_or_named(call):
    try:
        trace = call()
    except (ValueError, TypeError, FloatingPointError) as err:
        assert any(n in str(err) for n in (*NAMES, "unary", "iterations")), str(err)
        return
    q = trace.q
    assert torch.isfinite(q).all(), "mean field returned NaN/Inf without an error"
    torch.testing.assert_close(q.sum(1), torch.ones_like(q.sum(1)), atol=1e-4, rtol=0)


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e8, 1e8),
    st.sampled_from([0.0, 1e-30, 1e-12, 1e6, 1e7, -1e6]),
)
positive = st.one_of(st.floats(1e-30, 1e30), st.sampled_from([float("nan"), float("inf"), 0.0, -1.0, 1e-300]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ta=positive,
    tb=positive,
    tg=positive,
    wb=floats,
    ws=floats,
    mu=st.one_of(st.just("potts"), st.lists(floats, min_size=9, max_size=9)),
    normalize=st.sampled_from(["after", "symmetric", "none"]),
    mode=st.sampled_from(["lattice", "lattice", "lattice", "window", "exact"]),
    t=st.integers(0, 4),
)
def test_fuzzed_parameters_give_finite_q_or_a_named_error(ta, tb, tg, wb, ws, mu, normalize, mode, t):
    def call():
        compat = mu if mu == "potts" else torch.tensor(mu, dtype=torch.float32).view(3, 3)
        params = CRFParams(
            theta_alpha=ta,
            theta_beta=tb,
            theta_gamma=tg,
            w_bilateral=wb,
            w_spatial=ws,
            compat=compat,
            normalize=normalize,
            window_size=3,
        )
        return mean_field(U, IMG, params, iterations=t, message_passing=mode)

    _finite_or_named(call)


def test_default_parameters_are_untouched_by_the_checks():
    q = mean_field(U, IMG, CRFParams(), iterations=3).q
    assert torch.isfinite(q).all()
    assert math.isclose(float(q.sum()), 42.0, rel_tol=1e-5)
