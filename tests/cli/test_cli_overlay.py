"""The overlay: labels over the image with a legend of the classes present, and --before-after."""

import numpy as np
from inputs import cli_main, synthetic_photo
from PIL import Image

from lab.cli.legend import overlay_figure, present_labels
from lab.unary import VOC_CLASS_NAMES
from lab.viz import overlay
from lab.viz.palette import colorize


def _scene(h=60, w=80):
    image = synthetic_photo(h, w)
    labels = np.zeros((h, w), np.int64)
    labels[:, w // 2 :] = 8
    labels[10:30, 5:20] = 15
    return image, labels


def _has_colour(region, colour):
    return bool((region.reshape(-1, 3) == colour).all(1).any())


def test_the_legend_names_only_the_classes_present(drawn):
    image, labels = _scene()
    fig = overlay_figure(image, labels, VOC_CLASS_NAMES)
    assert fig.shape[0] == 60 and fig.shape[1] > 80
    assert np.array_equal(fig[:, :80], overlay(image, labels))  # the picture itself, unchanged
    assert drawn == ["background", "cat", "person"]
    legend = fig[:, 80:]
    for present in (0, 8, 15):
        assert _has_colour(legend, colorize(np.array(present)))
    assert not _has_colour(legend, colorize(np.array(3)))  # bird is absent


def test_without_names_the_legend_shows_label_numbers(drawn):
    image, labels = _scene()
    overlay_figure(image, labels)
    assert drawn == ["0", "8", "15"]
    drawn.clear()
    overlay_figure(image, labels, ["a", "b"])  # a list too short for label 8: numbers where names are missing
    assert drawn == ["a", "8", "15"]


def test_before_after_panels(drawn):
    image, labels = _scene()
    before = labels.copy()
    before[:20] = 3
    fig = overlay_figure(image, labels, VOC_CLASS_NAMES, before=before, titles=("unary (arg-max)", "CRF, T = 5"))
    title = fig.shape[0] - 60
    assert title > 0
    assert np.array_equal(fig[title:, :80], overlay(image, before))
    gap = next(x for x in range(80, fig.shape[1]) if np.array_equal(fig[title:, x : x + 80], overlay(image, labels)))
    assert 80 <= gap < 100  # the CRF panel follows, after a small gap
    assert drawn == ["unary (arg-max)", "CRF, T = 5", "background", "bird", "cat", "person"]  # both panels' classes


def test_many_classes_wrap_into_columns():
    labels = np.arange(40).repeat(2)[None].repeat(30, 0)  # 40 classes in a 30-pixel-high image
    fig = overlay_figure(np.zeros((30, 80, 3), np.uint8), labels)
    assert fig.shape[0] == 30
    legend = fig[:, 80:]
    assert all(_has_colour(legend, colorize(np.array(i))) for i in present_labels(labels) if i)


def test_cli_before_after_at_the_inputs_size(tmp_path, capsys):
    d, probs = tmp_path / "in", tmp_path / "probs"
    d.mkdir()
    probs.mkdir()
    image = synthetic_photo(50, 70, seed=2)
    Image.fromarray(image).save(d / "a.png")
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=(50, 70)).astype(np.float32)
    np.save(probs / "a.npy", p)
    out = tmp_path / "out"
    rc, err = cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", out, "--before-after", "--iterations", "2")
    assert rc == 0, err
    fig = np.asarray(Image.open(out / "a_overlay.png").convert("RGB"))
    labels = np.asarray(Image.open(out / "a_labels.png"))
    title = fig.shape[0] - 50
    assert np.array_equal(fig[title:, :70], overlay(image, p.argmax(-1)))  # the unary the user gave, arg-max
    assert any(np.array_equal(fig[title:, x : x + 70], overlay(image, labels)) for x in range(70, fig.shape[1] - 69))


def test_cli_no_legend_is_the_plain_overlay(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    image = synthetic_photo(40, 50)
    Image.fromarray(image).save(d / "a.png")
    out = tmp_path / "out"
    rc, err = cli_main(capsys, "refine", d, "--out", out, "--overlay", "--no-legend", "--iterations", "1")
    assert rc == 0, err
    labels = np.asarray(Image.open(out / "a_labels.png"))
    assert np.array_equal(np.asarray(Image.open(out / "a_overlay.png").convert("RGB")), overlay(image, labels))


def test_before_after_is_refused_for_volumes(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((4, 5, 6), np.float32))
    rc, err = cli_main(capsys, "refine", tmp_path / "v.npy", "--volume", "--before-after", "--out", tmp_path / "o")
    assert rc == 2 and "--before-after: not for --volume" in err
