"""Every public entry point refuses bad input with a clear error that names the argument: the one table.

One row per case: an id, the call, the exception type, and how the message begins (the argument's name, a
colon, what was expected; ``lab/_checks.py``'s one format). Below the table: what is refused outside it
(memory, devices) and input variants that are accepted with the same answer as the plain input.
"""

import numpy as np
import pytest
import torch
from inputs import small_problem

import lab
from lab.explore import fit_image, params_from_json
from lab.unary import coarse_colour_clusters, load_probability_map
from lab.viz import class_heatmap, colorize, overlay

IMG = torch.rand(1, 3, 6, 7) * 255
U = torch.randn(1, 3, 6, 7)
F2 = torch.rand(10, 2)
V2 = torch.rand(10, 3)
nan_u = U.clone()
nan_u[0, 0, 0, 0] = float("nan")
inf_img = IMG.clone()
inf_img[0, 1, 2, 3] = float("inf")
# (1, 3, 10, 12) float64 unary and uint8 image: a crop of chelsea
UNARY, IMAGE = small_problem()


def lat(*shape):
    """A lattice over all-zero features of this shape (for the rows that call its methods)."""
    return lab.PermutohedralLattice(torch.zeros(*shape))


CASES = [
    # --- the lattice and filters
    ("lattice rank 1", lambda: lab.PermutohedralLattice(torch.rand(4)), ValueError, "features: expected shape"),
    # (B, d, W) and (B, d, D, H, W) are feature volumes now; four spatial axes are not
    (
        "lattice rank 6",
        lambda: lab.PermutohedralLattice(torch.zeros(1, 2, 2, 2, 2, 2)),
        ValueError,
        "features: expected shape",
    ),
    (
        "lattice empty",
        lambda: lab.PermutohedralLattice(torch.rand(0, 2)),
        ValueError,
        "features: expected at least one point and one dimension, got (0, 2)",
    ),
    (
        "lattice zero dims",
        lambda: lab.PermutohedralLattice(torch.rand(5, 0)),
        ValueError,
        "features: expected at least one point and one dimension, got (5, 0)",
    ),
    (
        "lattice int features",
        lambda: lab.PermutohedralLattice(torch.ones(5, 2, dtype=torch.int32)),
        TypeError,
        "features: expected a floating-point tensor, got torch.int32",
    ),
    (
        "lattice long features",
        lambda: lab.PermutohedralLattice(torch.zeros(4, 2, dtype=torch.long)),
        TypeError,
        "features: expected a floating-point tensor, got torch.int64",
    ),
    (
        "lattice NaN features",
        lambda: lab.PermutohedralLattice(torch.tensor([[0.0, float("nan")]])),
        ValueError,
        "features: expected finite values",
    ),
    (
        "lattice Inf features",
        lambda: lab.PermutohedralLattice(torch.tensor([[float("inf"), 0.0]])),
        ValueError,
        "features: expected finite values",
    ),
    (
        "lattice not a tensor",
        lambda: lab.PermutohedralLattice(np.zeros((4, 2))),
        TypeError,
        "features: expected a torch.Tensor, got ndarray",
    ),
    (
        "lattice bad backend",
        lambda: lab.PermutohedralLattice(F2, backend="gpu"),
        ValueError,
        "backend: expected one of",
    ),
    (
        "lattice backend a device",
        lambda: lab.PermutohedralLattice(torch.zeros(4, 2), backend="cuda"),
        ValueError,
        "backend: expected one of ['auto', 'torch', 'triton'], got 'cuda'",
    ),
    (
        "lattice filter wrong N",
        lambda: lat(4, 2).filter(torch.zeros(5, 1)),
        ValueError,
        "values: expected shape (4, C)",
    ),
    (
        "lattice filter normalize",
        lambda: lat(4, 2).filter(torch.zeros(4, 1), "l2"),
        ValueError,
        "normalize: expected one of",
    ),
    (
        "lattice filter int values",
        lambda: lat(4, 2).filter(torch.zeros(4, 1, dtype=torch.long)),
        TypeError,
        "values: expected a floating-point tensor",
    ),
    (
        "lattice filter image size",
        lambda: lat(1, 2, 3, 3).filter(torch.zeros(1, 1, 3, 4)),
        ValueError,
        "values: expected shape (1, C, 3, 3), got (1, 1, 3, 4)",
    ),
    ("lattice blur size", lambda: lat(4, 2).blur(torch.zeros(99, 1)), ValueError, "x: expected shape"),
    ("filter wrong N", lambda: lab.gaussian_filter(torch.rand(9, 3), F2), ValueError, "values: expected shape (10, C)"),
    (
        "filter int values",
        lambda: lab.gaussian_filter(torch.ones(10, 3, dtype=torch.long), F2),
        TypeError,
        "values: expected a floating-point tensor, got torch.int64",
    ),
    (
        "filter bad normalize",
        lambda: lab.gaussian_filter(V2, F2, normalize="l1"),
        ValueError,
        "normalize: expected one of ['none', 'after', 'symmetric'], got 'l1'",
    ),
    (
        "filter image size",
        lambda: lab.gaussian_filter(torch.rand(1, 2, 6, 8), lab.spatial_features(1, 6, 7)),
        ValueError,
        "values: expected shape (1, C, 6, 7), got (1, 2, 6, 8)",
    ),
    (
        "exact mismatch",
        lambda: lab.exact_gaussian_filter(torch.rand(9, 3), F2),
        ValueError,
        "values: expected the shape of features (10, 2) but C, got (9, 3)",
    ),
    (
        "params θ tensor shape",
        lambda: lab.CRFParams(theta_alpha=torch.ones(2, 2)),  # (n,): one per axis, accepted
        ValueError,
        "theta_alpha: expected a number, a 0-d float tensor or a (n,) float tensor",
    ),
    (
        "params θ tensor ≤ 0",
        lambda: lab.CRFParams(theta_gamma=torch.tensor(-1.0)),
        ValueError,
        "theta_gamma: expected a finite number > 0",
    ),
    (
        "bilateral channels",
        lambda: lab.bilateral_features(torch.rand(1, 0, 5, 5), 1.0, 1.0),  # any C ≥ 1 is a guide
        ValueError,
        "image: expected at least one channel and one pixel, got shape (1, 0, 5, 5)",
    ),
    (
        "bilateral θα ≤ 0",
        lambda: lab.bilateral_features(IMG, 0.0, 13.0),
        ValueError,
        "theta_alpha: expected a finite number > 0, got 0.0",
    ),
    (
        "bilateral θβ < 0",
        lambda: lab.bilateral_features(IMG, 80.0, -1.0),
        ValueError,
        "theta_beta: expected a finite number > 0, got -1.0",
    ),
    (
        "spatial θγ inf",
        lambda: lab.spatial_features(1, 5, 5, theta_gamma=float("inf")),
        ValueError,
        "theta_gamma: expected a finite number > 0, got inf",
    ),
    (
        "spatial empty",
        lambda: lab.spatial_features(1, 0, 5),
        ValueError,
        "height: expected a positive integer, got 0",
    ),
    # --- parameters
    ("params θα", lambda: lab.CRFParams(theta_alpha=-1.0), ValueError, "theta_alpha: expected a finite number > 0"),
    ("params θβ", lambda: lab.CRFParams(theta_beta=0.0), ValueError, "theta_beta: expected a finite number > 0"),
    (
        "params θγ",
        lambda: lab.CRFParams(theta_gamma=float("nan")),
        ValueError,
        "theta_gamma: expected a finite number > 0, got nan",
    ),
    ("params normalize", lambda: lab.CRFParams(normalize="l2"), ValueError, "normalize: expected one of"),
    ("params normalize before", lambda: lab.CRFParams(normalize="before"), ValueError, "normalize: expected one of"),
    (
        "params compat shape",
        lambda: lab.CRFParams(compat=torch.ones(2, 3)),
        ValueError,
        "compat: expected a square (L, L) float matrix",
    ),
    ("params compat name", lambda: lab.CRFParams(compat="ising"), ValueError, "compat: expected one of ['potts']"),
    (
        "params window even",
        lambda: lab.CRFParams(window_size=4),
        ValueError,
        "window_size: expected an odd integer >= 1, got 4",
    ),
    (
        "params weight NaN",
        lambda: lab.CRFParams(w_bilateral=float("nan")),
        ValueError,
        "w_bilateral: expected finite numbers",
    ),
    (
        "params spatial weight NaN",
        lambda: lab.CRFParams(w_spatial=float("nan")),
        ValueError,
        "w_spatial: expected finite numbers",
    ),
    (
        "params weight matrix",
        lambda: lab.CRFParams(w_bilateral=torch.rand(2, 2)),
        ValueError,
        "w_bilateral: expected a number, a 0-d float tensor or a (L,)",
    ),
    # --- mean field
    ("mf unary rank", lambda: lab.mean_field(torch.randn(3, 6, 7), IMG), ValueError, "unary: expected shape"),
    (
        "mf unary rank 3",
        lambda: lab.mean_field(UNARY[0], IMAGE),
        ValueError,
        "unary: expected shape (B, L, H, W), got (3, 10, 12)",
    ),
    (
        "mf image 3-D, unary 2-D",
        lambda: lab.mean_field(U, torch.rand(1, 3, 1, 6, 7)),
        ValueError,
        "unary: expected shape (B, L, D, H, W), got (1, 3, 6, 7) (the image is 3-D: (B, C, D, H, W))",
    ),
    (
        "mf image 4 spatial axes",
        lambda: lab.mean_field(UNARY, IMAGE[:, :, None, None]),
        ValueError,
        "image: expected shape (B, C, W), (B, C, H, W) or (B, C, D, H, W), got (1, 3, 1, 1, 10, 12)",
    ),
    (
        "mf size mismatch",
        lambda: lab.mean_field(U, torch.rand(1, 3, 6, 8) * 255),
        ValueError,
        "image: expected shape (1, 3, 6, 7) to match unary, got (1, 3, 6, 8)",
    ),
    (
        "mf image narrower",
        lambda: lab.mean_field(UNARY, IMAGE[..., :5]),
        ValueError,
        "image: expected shape (1, 3, 10, 12) to match unary, got (1, 3, 10, 5)",
    ),
    (
        "mf batch mismatch",
        lambda: lab.mean_field(U, torch.rand(2, 3, 6, 7) * 255),
        ValueError,
        "image: expected shape (1, 3, 6, 7) to match unary, got (2, 3, 6, 7)",
    ),
    (
        "mf one label",
        lambda: lab.mean_field(torch.randn(1, 1, 6, 7), IMG),
        ValueError,
        "unary: expected at least two labels",
    ),
    ("mf T < 0", lambda: lab.mean_field(U, IMG, iterations=-1), ValueError, "iterations: expected an integer >= 0"),
    (
        "mf T float",
        lambda: lab.mean_field(U, IMG, iterations=2.5),
        TypeError,
        "iterations: expected an integer >= 0, got float 2.5",
    ),
    ("mf NaN unary", lambda: lab.mean_field(nan_u, IMG), ValueError, "unary: expected finite values, got 1 NaN/Inf"),
    (
        "mf all-NaN unary",
        lambda: lab.mean_field(UNARY * float("nan"), IMAGE),
        ValueError,
        "unary: expected finite values",
    ),
    ("mf Inf image", lambda: lab.mean_field(U, inf_img), ValueError, "image: expected finite values, got 1 NaN/Inf"),
    (
        "mf non-finite image",
        lambda: lab.mean_field(UNARY, IMAGE.float() * float("inf")),
        ValueError,
        "image: expected finite values",
    ),
    ("mf image > 255", lambda: lab.mean_field(U, IMG + 300), ValueError, "image: expected colours in 0..255, got"),
    ("mf image < 0", lambda: lab.mean_field(U, IMG - 300), ValueError, "image: expected colours in 0..255, got"),
    (
        "mf image 0..1000",
        lambda: lab.mean_field(UNARY, IMAGE.float() * 0 + torch.tensor([0.0, 1000.0]).repeat(60).view(1, 1, 10, 12)),
        ValueError,
        "image: expected colours in 0..255, got values in 0..1000",
    ),
    (
        "mf int unary",
        lambda: lab.mean_field(torch.ones(1, 3, 6, 7, dtype=torch.long), IMG),
        TypeError,
        "unary: expected a floating-point tensor, got torch.int64",
    ),
    (
        "mf empty image",
        lambda: lab.mean_field(torch.randn(1, 3, 0, 7), torch.rand(1, 3, 0, 7)),
        ValueError,
        "unary: expected at least two labels and one pixel, got (1, 3, 0, 7)",
    ),
    ("mf keep", lambda: lab.mean_field(U, IMG, keep="all"), ValueError, "keep: expected one of [None, 'q', 'steps']"),
    (
        "mf message passing",
        lambda: lab.mean_field(U, IMG, message_passing="fft"),
        ValueError,
        "message_passing: expected one of ['lattice', 'exact', 'window'], got 'fft'",
    ),
    (
        "mf message passing fast",
        lambda: lab.mean_field(UNARY, IMAGE, message_passing="fast"),
        ValueError,
        "message_passing: expected one of",
    ),
    (
        "mf compat size",
        lambda: lab.mean_field(U, IMG, lab.CRFParams(compat=torch.ones(4, 4))),
        ValueError,
        "compat: expected a (3, 3) matrix for L = 3",
    ),
    (
        "mf per-class weights",
        lambda: lab.mean_field(U, IMG, lab.CRFParams(w_bilateral=torch.ones(5))),
        ValueError,
        "w_bilateral: expected one weight per class (L = 3)",
    ),
    (
        "mf per-class weights 4",
        lambda: lab.mean_field(UNARY, IMAGE, lab.CRFParams(w_bilateral=torch.rand(4))),
        ValueError,
        "w_bilateral: expected one weight per class (L = 3), got shape (4,)",
    ),
    # --- the module and unaries
    ("crfrnn classes", lambda: lab.CRFRNN(1), ValueError, "num_classes: expected an integer >= 2, got 1"),
    (
        "crfrnn labels mismatch",
        lambda: lab.CRFRNN(4).double()(UNARY, IMAGE),
        ValueError,
        "unary: expected 4 classes, got 3",
    ),
    ("crfrnn labels mismatch float32", lambda: lab.CRFRNN(4)(U, IMG), ValueError, "unary: expected 4 classes, got 3"),
    ("softmax rank", lambda: lab.unary_from_softmax(torch.rand(3, 4)), ValueError, "prob: expected shape"),
    (
        "labels float",
        lambda: lab.unary_from_labels(torch.rand(1, 4, 4), 2),
        TypeError,
        "labels: expected an integer tensor",
    ),
    (
        "labels float zeros",
        lambda: lab.unary_from_labels(torch.zeros(1, 2, 2), 2),
        TypeError,
        "labels: expected an integer tensor, got torch.float32",
    ),
    (
        "labels range",
        lambda: lab.unary_from_labels(torch.full((1, 2, 2), 5), 2),
        ValueError,
        "labels: expected values in 0..2",
    ),
    (
        "labels range 3",
        lambda: lab.unary_from_labels(torch.tensor([[[3]]]), 2),
        ValueError,
        "labels: expected values in 0..2",
    ),
    (
        "labels gt_prob",
        lambda: lab.unary_from_labels(torch.zeros(1, 2, 2, dtype=torch.long), 2, gt_prob=1.0),
        ValueError,
        "gt_prob: expected a number in (0, 1), got 1.0",
    ),
    # --- sources, figures, exports
    (
        "clusters image",
        lambda: coarse_colour_clusters(np.zeros((5, 5)), 2),
        ValueError,
        "image: expected an (H, W, 3) RGB array",
    ),
    (
        "prob map garbage",
        lambda: load_probability_map(b"xx", (4, 4), name="p.npy"),
        ValueError,
        "p.npy: not a readable .npy/.npz file",
    ),
    ("colorize range", lambda: colorize(np.array([[300]])), ValueError, "labels: expected class ids in 0..255"),
    (
        "overlay alpha",
        lambda: overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), int), alpha=2),
        ValueError,
        "alpha: expected a number in 0..1, got 2",
    ),
    ("heatmap class", lambda: class_heatmap(np.zeros((2, 3, 3)), 2), ValueError, "label: expected a class id in 0..1"),
    ("fit size", lambda: fit_image(np.zeros((9, 9, 3), np.uint8), 3), ValueError, "max_side: expected an integer >= 8"),
    ("params json", lambda: params_from_json("[1, 2]"), ValueError, "params: expected a JSON object, got list"),
]


@pytest.mark.parametrize(("call", "exc", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(message), f"expected a message beginning {message!r}, got: {info.value}"


def test_ids_are_distinct():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


def test_memory_estimate_refuses_what_would_not_fit(monkeypatch):
    import lab.lattice.limits as limits_module

    monkeypatch.setattr(limits_module, "available_memory", lambda device: 1 << 20)  # pretend 1 MiB is free
    with pytest.raises(MemoryError, match=r"features: .* needs about .* GiB"):
        lab.PermutohedralLattice(torch.rand(100_000, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_is_refused():
    with pytest.raises(ValueError, match="image"):
        lab.mean_field(U.cuda(), IMG)


# --- accepted variants: the same answer as the plain input (non-contiguous inputs: tests/test_api.py)


def test_uint8_image_equals_float_image():
    img = (torch.rand(1, 3, 9, 11) * 255).round()
    u = torch.randn(1, 3, 9, 11)
    torch.testing.assert_close(
        lab.mean_field(u, img.to(torch.uint8), iterations=2).q, lab.mean_field(u, img, iterations=2).q
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_unaries_are_accepted(dtype):
    img = torch.rand(1, 3, 8, 9) * 255
    u = torch.randn(1, 3, 8, 9)
    got = lab.mean_field(u.to(dtype), img, iterations=2).q
    want = lab.mean_field(u.to(dtype).float(), img, iterations=2).q
    torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=0)  # half has ~3 decimal digits
