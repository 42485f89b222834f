"""lab.explore.display and lab.explore.availability: lossless label images, colours, flips, scales, the hints."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lab.explore.availability import load_uploaded_fcn, training_command, unavailable_backends
from lab.explore.display import (
    change_view,
    class_colours,
    colorbar_png,
    flip_counts,
    label_image,
    legend_items,
    png_bytes,
    scalar_image,
    upscale_nearest,
)
from lab.viz.palette import PALETTE


def test_upscale_is_whole_pixel_blocks_and_adds_no_values():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    big = upscale_nearest(img, side=30)  # k = 30 // 7 = 4
    assert big.shape == (20, 28, 3)
    assert np.array_equal(big[::4, ::4], img) and np.array_equal(big[3::4, 3::4], img)
    assert upscale_nearest(img, side=6) is img  # k would be 0: kept as is
    with pytest.raises(ValueError, match="side"):
        upscale_nearest(img, side=0)
    with pytest.raises(ValueError, match="image"):
        upscale_nearest(np.zeros((0, 3)))


def test_png_is_lossless_even_for_a_two_colour_mask_after_upscaling():
    mask = np.zeros((9, 13, 3), np.uint8)
    mask[:, 6:] = (250, 10, 180)
    mask[:, :6] = (31, 200, 97)
    data = png_bytes(upscale_nearest(mask, 100))
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert {tuple(c) for c in back.reshape(-1, 3).tolist()} == {(250, 10, 180), (31, 200, 97)}
    assert np.array_equal(back, upscale_nearest(mask, 100))
    # what JPEG (Streamlit's default for an RGB array) would have served instead
    buf = io.BytesIO()
    Image.fromarray(upscale_nearest(mask, 100)).save(buf, format="JPEG", quality=90)
    assert len({tuple(c) for c in np.asarray(Image.open(buf)).reshape(-1, 3).tolist()}) > 2
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((2, 2)))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (6, 9, 3), (4, 3, 4), (1, 40, 3), (33, 1, 3)])
def test_png_bytes_decode_to_the_same_pixels_with_pillow(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img.flat[::7] = 255  # neighbours whose difference wraps below 0 and above 255
    img.flat[1::7] = 0
    for level in (0, 1, 9):
        decoded = Image.open(io.BytesIO(png_bytes(img, level)))
        decoded.load()  # a corrupt stream (CRC, deflate, filter bytes) fails here
        assert decoded.mode == ("L" if img.ndim == 2 else {3: "RGB", 4: "RGBA"}[img.shape[2]])
        assert np.array_equal(np.asarray(decoded), img)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="compress_level"):
        png_bytes(photo, 10)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\) uint8"):
        png_bytes(np.zeros((2, 2, 2), np.uint8))


def test_opaque_label_images_use_only_the_colours_of_the_classes_present():
    rng = np.random.default_rng(1)
    labels = rng.choice([1, 4, 6], size=(20, 30))  # an oscillating argmax can be anything: still 3 classes
    colours = class_colours(8)
    out = label_image(labels, colours)
    assert {tuple(c) for c in out.reshape(-1, 3).tolist()} == {tuple(PALETTE[c]) for c in (1, 4, 6)}
    photo = np.full((20, 30, 3), 100, np.uint8)
    half = label_image(labels, colours, photo, alpha=0.5)
    assert np.array_equal(half, np.rint(0.5 * 100 + 0.5 * out.astype(float)).astype(np.uint8))
    assert np.array_equal(label_image(labels, colours, photo, alpha=0.0), photo)
    with pytest.raises(ValueError, match=r"labels: expected class ids in 0\.\.7"):
        label_image(np.array([[8]]), colours)
    with pytest.raises(ValueError, match="alpha"):
        label_image(labels, colours, photo, alpha=2)


def test_class_colours_keep_an_annotations_own_and_refuse_a_wrong_table():
    own = np.array([[250, 10, 180], [31, 200, 97]], np.uint8)
    assert class_colours(2, own).tolist() == own.tolist()
    assert class_colours(3).tolist() == PALETTE[:3].tolist()
    with pytest.raises(ValueError, match="source_colours"):
        class_colours(3, own)
    with pytest.raises(ValueError, match="num_labels"):
        class_colours(0)
    items = legend_items([1], ("a", "b"), own)
    assert items == [(1, "b", (31, 200, 97))]


def test_flip_counts_and_change_view_agree_with_a_brute_force_count():
    rng = np.random.default_rng(2)
    before = rng.integers(0, 4, (15, 17))
    after = np.where(rng.random((15, 17)) < 0.3, rng.integers(0, 4, (15, 17)), before)
    want: dict[tuple[int, int], int] = {}
    for b, a in zip(before.ravel(), after.ravel(), strict=True):
        if b != a:
            want[(int(b), int(a))] = want.get((int(b), int(a)), 0) + 1
    got = flip_counts(before, after, 4)
    assert {(o, n): c for o, n, c in got} == want
    assert [c for *_, c in got] == sorted(want.values(), reverse=True)
    photo = rng.integers(0, 255, (15, 17, 3), dtype=np.uint8)
    colours = class_colours(4)
    view, pairs = change_view(photo, before, after, 4, colours)
    assert pairs == got
    changed = before != after
    assert np.array_equal(view[changed], colours[after[changed]])  # the new class's colour
    grey = photo.astype(np.float32).mean(2)
    assert np.array_equal(view[~changed][:, 0], (255 - ((255 - grey[~changed]) * 0.3).round()).astype(np.uint8))


def test_scalar_images_use_a_fixed_scale_and_colour_bars_are_pngs():
    low = scalar_image(np.full((2, 2), 0.2), 0.0, 1.0)
    same = scalar_image(np.array([[0.2, 1.0], [0.2, 0.0]]), 0.0, 1.0)
    assert np.array_equal(low[0, 0], same[0, 0])  # the value's colour does not depend on the rest of the map
    assert not np.array_equal(same[0, 1], same[1, 1])
    with pytest.raises(ValueError, match="vmax"):
        scalar_image(np.zeros((2, 2)), 1.0, 1.0)
    assert Image.open(io.BytesIO(colorbar_png(0.0, 1.0, "Q"))).format == "PNG"


def test_training_command_and_backends():
    assert (
        training_command("/tmp/x y")
        == "python -m lab.train --quick --out '/tmp/x y/quick' --checkpoints '/tmp/x y/quick'"
    )
    assert "torch" not in unavailable_backends("cpu") and "auto" not in unavailable_backends("cpu")


def test_uploaded_fcn_loads_tensors_only():
    from lab.models import FCN

    buf = io.BytesIO()
    torch.save({"config": {"width": 8}, "model": FCN(3, width=8).state_dict()}, buf)
    model, n = load_uploaded_fcn(buf.getvalue(), "f.pt")
    assert n == 3 and isinstance(model, FCN)
    with pytest.raises(ValueError, match=r"f\.pt: not a checkpoint of plain tensors"):
        load_uploaded_fcn(b"junk", "f.pt")
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1)}}, buf)
    with pytest.raises(ValueError, match=r"f\.pt: no FCN in it"):
        load_uploaded_fcn(buf.getvalue(), "f.pt")


def test_change_view_refuses_what_it_cannot_draw():
    photo = np.zeros((2, 3, 3), np.uint8)
    ok = np.zeros((2, 3), np.int64)
    colours = class_colours(2)
    with pytest.raises(ValueError, match="before, after: expected the image's shape"):
        change_view(photo, ok[:1], ok[:1], 2, colours)
    with pytest.raises(TypeError, match="integer class ids"):
        change_view(photo, ok.astype(float), ok, 2, colours)
    with pytest.raises(ValueError, match=r"class ids in 0\.\.1"):
        change_view(photo, ok, ok + 2, 2, colours)
    with pytest.raises(ValueError, match="colours"):
        change_view(photo, ok, ok, 3, colours)
