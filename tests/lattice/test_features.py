"""Feature images against hand-computed values."""

import pytest
import torch

import lab


def test_bilateral_features_by_hand():
    img = torch.zeros(1, 3, 4, 6, dtype=torch.uint8)
    img[0, :, 2, 5] = torch.tensor([26, 39, 52], dtype=torch.uint8)
    f = lab.bilateral_features(img, theta_alpha=2.0, theta_beta=13.0)
    assert f.shape == (1, 5, 4, 6)
    # pixel (row 2, column 5): x = column / θα, y = row / θα, rgb / θβ (pydensecrf's order)
    assert f[0, :, 2, 5].tolist() == [2.5, 1.0, 2.0, 3.0, 4.0]


def test_spatial_features_from_shape_and_image():
    a = lab.spatial_features(2, 3, 4, theta_gamma=2.0)
    b = lab.spatial_features(torch.zeros(2, 7, 3, 4), theta_gamma=2.0)
    assert a.shape == (2, 2, 3, 4)
    torch.testing.assert_close(a, b)
    assert a[1, :, 2, 3].tolist() == [1.5, 1.0]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: lab.bilateral_features(torch.zeros(1, 4, 2, 2, 2, 2), 1.0, 1.0), "image"),  # 4 spatial axes
        (lambda: lab.bilateral_features(torch.zeros(1, 0, 2, 2), 1.0, 1.0), "image"),  # no channel
        (lambda: lab.bilateral_features(torch.zeros(1, 1, 2, 2, 2), (1.0, 1.0), 1.0), "theta_alpha"),  # 2 for 3 axes
        (lambda: lab.bilateral_features(torch.zeros(1, 7, 2, 2), 1.0, (1.0,) * 6), "theta_beta"),  # 6 for 7 channels
        (lambda: lab.bilateral_features(torch.zeros(1, 1, 2, 2), 1.0, 1.0, spacing=(1.0, 0.0)), "spacing"),
        (lambda: lab.spatial_features(1, size=(2, 2, 2, 2)), "size"),
        (lambda: lab.bilateral_features(torch.zeros(1, 3, 2, 2), 0.0, 1.0), "theta_alpha"),
        (lambda: lab.bilateral_features(torch.zeros(1, 3, 2, 2), 1.0, -2.0), "theta_beta"),
        (lambda: lab.spatial_features(1, 2, 2, theta_gamma=float("nan")), "theta_gamma"),
        (lambda: lab.spatial_features(1, 0, 2), "height"),
        (lambda: lab.spatial_features(1), "height"),
    ],
)
def test_feature_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
