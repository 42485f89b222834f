"""The class palette: no black, a grey background, colour-blind-safe first classes, VOC's map kept for reading."""

import itertools

import numpy as np
import pytest

from lab.viz.palette import PALETTE, VOC_PALETTE, colorize, palette, voc_palette

# Machado, Oliveira & Fernandes (2009), "A physiologically-based model for simulation of color vision deficiency",
# IEEE TVCG 15(6), table of matrices at severity 1.0, applied to linear RGB
MACHADO = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def srgb_to_linear(c):
    c = np.asarray(c, np.float64) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_lab(rgb):
    # sRGB (D65) → XYZ → CIELAB, the published IEC 61966-2-1 and CIE 15 formulas
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = np.clip(rgb, 0, 1) @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def min_delta_e(colours, matrix=None):
    lin = srgb_to_linear(colours)
    if matrix is not None:
        lin = lin @ np.asarray(matrix).T
    lab = linear_to_lab(lin)
    return min(np.linalg.norm(a - b) for a, b in itertools.combinations(lab, 2))


def test_no_class_is_black_and_the_background_is_a_light_grey():
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256
    assert PALETTE.max(1).min() >= 90  # every colour has a bright channel: none is black or near it
    r, g, b = PALETTE[0].tolist()
    assert r == g == b and r >= 180  # light neutral grey
    greys = [c for c in PALETTE[1:].tolist() if c[0] == c[1] == c[2]]
    assert greys == []  # only the background is grey


@pytest.mark.parametrize("deficiency", [None, *MACHADO])
def test_the_first_eight_classes_stay_apart_under_colour_vision_deficiencies(deficiency):
    matrix = MACHADO.get(deficiency)
    # CIE76 ΔE ≈ 2.3 is a just-noticeable difference; 10 is clearly different at a glance
    assert min_delta_e(PALETTE[:8], matrix) > 10
    if deficiency in ("protanopia", "tritanopia"):
        assert min_delta_e(VOC_PALETTE[:8], matrix) < 10  # VOC's map does not: ΔE 3.9 and 7.8 there


def test_the_first_sixteen_are_distinct_for_normal_vision():
    assert min_delta_e(PALETTE[:16]) > 10


def test_voc_palette_is_the_voc_colour_map():
    # PASCAL VOC's published colours for classes 0, 1, 2, 15 (person) and 20 (tv/monitor)
    want = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [192, 128, 128], [0, 64, 128]]
    assert VOC_PALETTE[[0, 1, 2, 15, 20]].tolist() == want
    assert voc_palette(3).tolist() == VOC_PALETTE[:3].tolist()


def test_palette_prefix_and_bad_sizes():
    assert np.array_equal(palette(5), PALETTE[:5]) and palette(0).shape == (0, 3)
    for bad in (-1, 257, 2.5, True):
        with pytest.raises(ValueError, match=r"n: expected an int in 0\.\.256"):
            palette(bad)
    assert colorize(np.array([[0, 7]])).tolist() == [[PALETTE[0].tolist(), PALETTE[7].tolist()]]
