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


def _npz(compressed=True, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _corrupt_member(data: bytes) -> bytes:
    """The .npz with bytes flipped inside its first member's compressed data (the zip directory stays intact)."""
    import struct
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        offset = z.infolist()[0].header_offset
    name_len, extra_len = struct.unpack("<HH", data[offset + 26 : offset + 30])  # the local header's own lengths
    start = offset + 30 + name_len + extra_len
    bad = bytearray(data)
    for i in range(start + 8, start + 16):
        bad[i] ^= 0xFF
    return bytes(bad)


def _pickled_npy():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


PROB = np.full((3, 4, 5), 1 / 3)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_npy(PROB)[:-7], "not a readable .npy/.npz file"),  # truncated .npy
        (b"", r"empty: 0 bytes"),
        (_corrupt_member(_npz(prob=PROB)), r"array 'prob' of the \.npz is not readable"),
        (_npz(prob=PROB)[:-30], "not a readable"),  # truncated zip
        (_npz(), "an .npz with no arrays"),
        (_npz(a=PROB, b=PROB), "several arrays"),
        (_pickled_npy(), "pickled Python objects"),
        (_npz(compressed=False, prob=np.array([{"a": 1}], dtype=object)), "pickled Python objects"),
        (_npy(PROB.astype(np.complex64)), "integers or floats, got dtype complex64"),
        (_npy(PROB.astype(bool)), "integers or floats, got dtype bool"),
        (_npy(np.array(["a"] * 60).reshape(3, 4, 5)), "integers or floats, got dtype <U1"),
        (_npy(np.zeros((0, 4, 5))), "non-empty"),
        (_npy(np.full((3, 4, 5), 1e300)), "finite"),
        (_npy(np.full((3, 4, 5), np.inf)), "finite"),
        (_npy(np.ones((4, 5, 300), np.float32)), "300 labels .* 256-label limit"),
    ],
    ids=[
        "truncated npy",
        "empty",
        "corrupt npz member",
        "truncated npz",
        "empty npz",
        "ambiguous npz",
        "pickled npy",
        "pickled npz",
        "complex",
        "bool",
        "strings",
        "empty axis",
        "float32 overflow",
        "inf",
        "300 labels",
    ],
)
def test_corrupt_probability_maps_name_the_file(data, match):
    with pytest.raises(ValueError, match=match) as info:
        load_probability_map(data, (4, 5), name="net/probs.npz")
    assert str(info.value).startswith("net/probs.npz: ")


def test_many_labels_allowed_when_asked():
    unary, _ = load_probability_map(_npy(np.ones((4, 5, 300), np.float32)), (4, 5), max_labels=None)
    assert unary.shape == (1, 300, 4, 5)


def test_paths_are_named_by_default(tmp_path):
    path = tmp_path / "cut.npy"
    path.write_bytes(_npy(PROB)[:-7])
    with pytest.raises(ValueError, match=rf"^{path}: not a readable"):
        load_probability_map(path, (4, 5))
    with pytest.raises(ValueError, match=rf"^{path}: not a readable"):
        load_compat(str(path), 3)
    with pytest.raises(FileNotFoundError, match=r"absent\.npy: no such file"):
        load_probability_map(tmp_path / "absent.npy", (4, 5))
    with pytest.raises(ValueError, match="a folder"):
        load_probability_map(tmp_path, (4, 5))
    with pytest.raises(ValueError, match=r"^the uploaded bytes: "):
        load_compat(b"junk", 3)
    with pytest.raises(TypeError, match="source: expected a path or bytes"):
        load_probability_map(PROB, (4, 5))


def test_compat_refuses_complex_and_pickles():
    with pytest.raises(ValueError, match=r"^mu\.npy: .*complex128"):
        load_compat(_npy(np.eye(3, dtype=complex)), 3, name="mu.npy")
    with pytest.raises(ValueError, match=r"^mu\.npy: .*pickled"):
        load_compat(_pickled_npy(), 2, name="mu.npy")
    with pytest.raises(ValueError, match=r"^mu\.npz: array 'mu' .*not readable"):
        load_compat(_corrupt_member(_npz(mu=np.eye(3))), 3, name="mu.npz")


def _many_colours(n):
    """An annotation with ``n`` distinct non-black colours, one pixel each."""
    codes = np.arange(1, n + 1)
    rgb = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], 1).astype(np.uint8)
    return rgb.reshape(1, n, 3)


def test_annotation_with_more_than_256_colours_is_refused_by_name():
    unary, colours = unary_from_annotation(_many_colours(256))
    assert unary.shape[1] == 256 and len(colours) == 256
    with pytest.raises(ValueError, match=r"^ann/x\.png: 257 colours besides black, more than the 256-label limit"):
        unary_from_annotation(_many_colours(257), name="ann/x.png")
    assert unary_from_annotation(_many_colours(257), max_labels=None)[0].shape[1] == 257


def test_annotation_dtype_and_name():
    with pytest.raises(ValueError, match=r"^a\.png: expected uint8 colours"):
        unary_from_annotation(np.full((2, 2, 3), 0.5), name="a.png")
    with pytest.raises(ValueError, match=r"^a\.png: expected at least two label colours"):
        unary_from_annotation(np.zeros((2, 2, 3), np.uint8), name="a.png")
