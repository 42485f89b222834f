"""``crf-lab refine`` refines at the working size and writes its outputs at the input's size (--output-size)."""

import json

import numpy as np
import pytest
import torch
from inputs import cli_main, synthetic_photo
from PIL import Image

import lab.cli.resize
from lab.cli.resize import bilinear_weights, upscale_labels, upscale_q
from lab.crf import mean_field
from lab.explore.defaults import DEFAULT_PARAMS

SIZES = [
    ((3, 7, 11), (23, 17)),  # up in height, up in width, non-aligned
    ((4, 16, 9), (16, 40)),  # one axis kept
    ((2, 5, 5), (3, 12)),  # down in height: the same formula
    ((2, 1, 1), (4, 6)),  # one pixel
]


@pytest.mark.parametrize(("shape", "size"), SIZES)
def test_upscale_q_is_torch_bilinear(shape, size, monkeypatch):
    monkeypatch.setattr(lab.cli.resize, "BAND_VALUES", 2 * shape[0] * size[1] + 1)  # several bands of 2 rows
    q = torch.softmax(torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0)
    want = torch.nn.functional.interpolate(q[None], size=size, mode="bilinear", align_corners=False)[0]
    got = upscale_q(q.numpy(), size)
    assert got.dtype == np.float32 and got.shape == (shape[0], *size)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)  # float32 rounding of values in [0, 1]
    np.testing.assert_allclose(got.sum(0), 1, atol=1e-6)
    assert np.array_equal(upscale_labels(q.numpy(), size), got.argmax(0))


def test_bilinear_weights_and_bad_sizes():
    i0, _, f = bilinear_weights(3, 3)  # same size: each pixel itself
    assert i0.tolist() == [0, 1, 2] and f.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="n_in, n_out >= 1"):
        bilinear_weights(0, 3)
    with pytest.raises(ValueError, match=r"q: expected a non-empty \(L, H, W\)"):
        upscale_labels(np.zeros((3, 4)), (5, 5))


@pytest.fixture
def big(tmp_path):
    """A 150 × 110 photo, refined at 48 px."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(110, 150, seed=3)).save(d / "big.png")
    return d / "big.png"


def _nearest(labels, size):
    rows = np.floor((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(int)
    cols = np.floor((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(int)
    return labels[rows][:, cols], rows, cols


def test_outputs_at_the_inputs_size(big, tmp_path, capsys):
    full, small = tmp_path / "full", tmp_path / "small"
    common = ("--working-size", "48", "--iterations", "3", "--save-q", "--overlay")
    rc, err = cli_main(capsys, "refine", big, "--out", full, *common)
    assert rc == 0, err
    rc, err = cli_main(capsys, "refine", big, "--out", small, *common, "--output-size", "working")
    assert rc == 0, err
    labels = np.asarray(Image.open(full / "big_labels.png"))
    q = np.load(full / "big_q.npy")
    assert labels.shape == (110, 150) and q.shape == (4, 110, 150)
    assert Image.open(full / "big_overlay.png").size[1] == 110  # the legend widens it, never shrinks it
    assert np.array_equal(labels, q.argmax(0))
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    work = np.asarray(Image.open(small / "big_labels.png"))
    q_work = np.load(small / "big_q.npy")
    assert work.shape == (35, 48) and q_work.shape == (4, 35, 48)
    np.testing.assert_allclose(q, upscale_q(q_work, (110, 150)), atol=1e-6)
    # against nearest-neighbour upscaling of the working-size labels: the same except beside a label change
    near, rows, cols = _nearest(work, (110, 150))
    padded = np.pad(work, 1, mode="edge")
    window = np.stack([padded[1 + dr : 36 + dr, 1 + dc : 49 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
    boundary = (window != work).any(0)  # working pixels with another label among their 8 neighbours
    differ = labels != near
    assert not (differ & ~boundary[rows][:, cols]).any()
    assert 0 < differ.mean() < 0.05, differ.mean()  # the 150 / 48 px steps are smoothed along the edges only
    doc = json.loads((full / "summary.json").read_text())
    assert doc["images"][0]["size"] == "150x110" and doc["images"][0]["working_size"] == "48x35"


def test_an_image_within_the_working_size_is_refined_as_it_is(big, tmp_path, capsys):
    rc, err = cli_main(capsys, "refine", big, "--out", tmp_path / "out", "--iterations", "1")
    assert rc == 0, err
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["images"][0]
    assert entry["size"] == entry["working_size"] == "150x110"


def test_labels_at_the_working_size_match_the_librarys_mean_field(big, tmp_path, capsys):
    """--output-size working: the label map is mean field's arg-max on the downscaled image, from the library."""
    from lab.explore import fit_image, to_tensor
    from lab.unary import coarse_colour_clusters

    out = tmp_path / "out"
    rc, err = cli_main(
        capsys, "refine", big, "--out", out, "--working-size", "48", "--output-size", "working", "--iterations", "2"
    )
    assert rc == 0, err
    image = fit_image(np.asarray(Image.open(big)), 48)
    unary, _ = coarse_colour_clusters(image, n_labels=4, block=16, confidence=0.6)
    with torch.no_grad():
        q = mean_field(unary, to_tensor(image), DEFAULT_PARAMS, iterations=2, keep=None).q[0]
    assert np.array_equal(np.asarray(Image.open(out / "big_labels.png")), q.argmax(0).numpy())
