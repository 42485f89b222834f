import io

import numpy as np
import pytest
import torch

from lab.unary import coarse_colour_clusters, load_compat, load_probability_map, unary_from_annotation


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_clusters_follow_the_tiles_and_are_ordered_dark_to_bright():
    img = np.zeros((40, 48, 3), np.uint8)
    img[:, 24:] = 250  # bright right half, tile edges at multiples of 8
    img[20:, :24] = 120  # mid-grey bottom-left quarter
    unary, labels = coarse_colour_clusters(img, n_labels=3, block=8, confidence=0.8)
    assert unary.shape == (1, 3, 40, 48)
    assert labels[0, 0] == 0 and labels[39, 0] == 1 and labels[0, 47] == 2
    p = unary.exp()
    torch.testing.assert_close(p.sum(1), torch.ones(1, 40, 48))
    assert float(p[0, labels[5, 30], 5, 30]) == pytest.approx(0.8)


def test_clusters_are_blocky_and_deterministic():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (33, 37, 3), dtype=np.uint8)
    _, a = coarse_colour_clusters(img, n_labels=4, block=8, seed=3)
    _, b = coarse_colour_clusters(img, n_labels=4, block=8, seed=3)
    assert np.array_equal(a, b)
    tiles = a[:32:8, :32:8].repeat(8, 0).repeat(8, 1)
    assert np.array_equal(a[:32, :32], tiles)  # constant on every 8 × 8 tile


def test_annotation_black_is_unknown():
    ann = np.zeros((4, 5, 3), np.uint8)
    ann[0, 0] = (255, 0, 0)
    ann[3, 4] = (0, 255, 0)
    unary, colours = unary_from_annotation(ann, confidence=0.9)
    p = unary.exp()[0]
    assert colours.tolist() == [[0, 255, 0], [255, 0, 0]]
    assert p[:, 0, 0].tolist() == pytest.approx([0.1, 0.9])
    assert p[:, 3, 4].tolist() == pytest.approx([0.9, 0.1])
    assert p[:, 1, 1].tolist() == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize(("layout", "probs"), [("hwl", True), ("lhw", True), ("hwl", False)])
def test_probability_map_layouts_and_interpretation(layout, probs):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(6, 10, 14)).astype(np.float32)
    p = np.exp(scores) / np.exp(scores).sum(0)
    arr = p if probs else scores
    arr = np.moveaxis(arr, 0, 2) if layout == "hwl" else arr
    unary, notes = load_probability_map(_npy(arr), (10, 14))
    want = np.log(np.clip(p, 1e-5, None)) if probs else scores
    np.testing.assert_allclose(unary[0].numpy(), want, rtol=1e-5, atol=1e-5)
    assert any(("probabilities" in n) == probs for n in notes)


def test_probability_map_is_resized_with_a_note():
    arr = np.full((5, 7, 2), 0.5, np.float32)
    unary, notes = load_probability_map(_npy(arr), (10, 14))
    assert unary.shape == (1, 2, 10, 14)
    assert any("resized" in n for n in notes)


def test_npz_with_a_named_array():
    buf = io.BytesIO()
    np.savez(buf, other=np.zeros(3), prob=np.full((3, 4, 5), 1 / 3))
    unary, _ = load_probability_map(buf.getvalue(), (4, 5))
    assert unary.shape == (1, 3, 4, 5)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"this is not numpy", "not a readable"),
        (_npy(np.zeros((4, 5))), "3-D"),
        (_npy(np.full((4, 5, 1), 1.0)), "at least 2 labels"),
        (_npy(np.full((2, 4, 5), np.nan)), "finite"),
    ],
)
def test_bad_probability_maps(data, match):
    with pytest.raises(ValueError, match=match):
        load_probability_map(data, (4, 5), name="upload.npy")


def test_compat_shape_is_checked():
    assert torch.equal(load_compat(_npy(1 - np.eye(3)), 3), torch.from_numpy(1 - np.eye(3)).float())
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        load_compat(_npy(np.eye(3)), 4)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: coarse_colour_clusters(np.zeros((4, 4)), 2), "image"),
        (lambda: coarse_colour_clusters(np.zeros((4, 4, 3), np.uint8), 1), "n_labels"),
        (lambda: coarse_colour_clusters(np.zeros((4, 4, 3), np.uint8), 4, confidence=0.2), "confidence"),
        (lambda: unary_from_annotation(np.zeros((4, 4, 3), np.uint8)), "annotation"),
        (lambda: unary_from_annotation(np.zeros((4, 4, 3), np.uint8), shape=(5, 5)), "annotation"),
    ],
)
def test_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_coarse_labels_unary_is_the_tile_average():
    from lab.unary import unary_from_coarse_labels

    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, :, 6:] = 1  # a vertical edge inside the first 8-wide tile column
    p = unary_from_coarse_labels(labels, 2, stride=8, confidence=1.0).exp()[0]
    # at the image edges the probabilities are the tile's label fractions: 6/8 of tile 0 is class 0
    assert float(p[0, 0, 0]) == pytest.approx(0.75, abs=1e-5)
    assert float(p[1, 0, 15]) == pytest.approx(1.0, abs=1e-4)
    # bilinear (align_corners=False) between the tile centres: x = 5 sits at 3/16 of the way to tile 1
    assert float(p[0, 0, 5]) == pytest.approx(0.75 * (1 - 3 / 16), abs=1e-5)
    torch.testing.assert_close(p.sum(0), torch.ones(16, 16))
    with pytest.raises(ValueError, match="labels"):
        unary_from_coarse_labels(torch.zeros(16, 16), 2)
