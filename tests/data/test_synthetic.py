import math
import time

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.draw import disk, polygon

from lab.data import CLASS_NAMES, SyntheticShapes, render_scene


def _independent_mask(shape, h: int, w: int) -> np.ndarray:
    """The shape's region rasterised with skimage.draw from the module docstring's definitions."""
    mask = np.zeros((h, w), bool)
    s, c, t = shape.size, math.cos(shape.angle), math.sin(shape.angle)
    if shape.name in ("disc", "ring"):
        mask[disk((shape.cy, shape.cx), s, shape=(h, w))] = True
        if shape.name == "ring":
            mask[disk((shape.cy, shape.cx), shape.aux * s, shape=(h, w))] = False
        return mask
    if shape.name == "square":
        rects = [(0.8 * s, 0.8 * s)]
    elif shape.name == "cross":
        rects = [(s, shape.aux * s), (shape.aux * s, s)]  # two bars: (half-length along u, along v)
    else:  # triangle
        phi = np.deg2rad([-90.0, 30.0, 150.0])
        u, v = s * np.cos(phi), s * np.sin(phi)
        mask[polygon(shape.cy + u * t + v * c, shape.cx + u * c - v * t, (h, w))] = True
        return mask
    for hu, hv in rects:
        u = np.array([-hu, hu, hu, -hu])
        v = np.array([-hv, -hv, hv, hv])
        mask[polygon(shape.cy + u * t + v * c, shape.cx + u * c - v * t, (h, w))] = True
    return mask


@pytest.fixture(scope="module")
def scenes():
    return [render_scene([7, 0, i], (48, 64)) for i in range(40)]


class TestRenderScene:
    def test_dtypes_shapes_ranges(self, scenes):
        for scene in scenes:
            assert scene.image.shape == (48, 64, 3) and scene.image.dtype == np.uint8
            assert scene.label.shape == scene.instance.shape == (48, 64)
            assert scene.label.max() < len(CLASS_NAMES)
            assert 2 <= len(scene.shapes) <= 4
            assert scene.instance.max() <= len(scene.shapes)

    def test_labels_follow_instances(self, scenes):
        for scene in scenes:
            classes = np.array([0] + [s.label for s in scene.shapes])
            np.testing.assert_array_equal(scene.label, classes[scene.instance])

    def test_labels_match_independent_rasterisation(self):
        # Labels come from signed distances at pixel centres; skimage.draw uses its own rules on the
        # boundary, so the two may differ by one pixel there, and nowhere else. Large images (sizes scale
        # with the image, s ≈ 21..45 px) make a 5 % geometry error exceed that pixel.
        one_px = np.ones((3, 3), bool)
        h, w = 144, 192
        for i in range(12):
            scene = render_scene([11, 0, i], (h, w))
            masks = [_independent_mask(s, h, w) for s in scene.shapes]
            for k, mask in enumerate(masks, start=1):
                mine = scene.instance == k
                assert not (mine & ~ndimage.binary_dilation(mask, one_px)).any(), (k, scene.shapes[k - 1])
                covered_later = np.zeros_like(mask)
                for later in masks[k:]:
                    covered_later |= ndimage.binary_dilation(later, one_px)
                core = ndimage.binary_erosion(mask, one_px) & ~covered_later
                assert mine[core].all(), (k, scene.shapes[k - 1])

    def test_every_class_appears(self, scenes):
        present = set()
        for scene in scenes:
            present |= set(np.unique(scene.label).tolist())
        assert present == set(range(len(CLASS_NAMES)))

    def test_objects_touch_or_overlap(self, scenes):
        def touching(instance):
            a, b = instance[:, 1:], instance[:, :-1]
            c, d = instance[1:], instance[:-1]
            return ((a != b) & (a > 0) & (b > 0)).any() or ((c != d) & (c > 0) & (d > 0)).any()

        assert sum(touching(s.instance) for s in scenes) >= len(scenes) // 4

    def test_colour_does_not_decide_the_class(self, scenes):
        # Nearest class-mean colour of each object, class means fitted on the first half: about chance (1/5).
        feats, classes = [], []
        for scene in scenes:
            for k, shape in enumerate(scene.shapes, start=1):
                pixels = scene.image[scene.instance == k]
                if len(pixels) >= 20:
                    feats.append(pixels.mean(0))
                    classes.append(shape.label)
        feats, classes = np.array(feats), np.array(classes)
        half = len(feats) // 2
        means = np.array([feats[:half][classes[:half] == c].mean(0) for c in range(1, 6)])
        guess = 1 + np.argmin(((feats[half:, None] - means[None]) ** 2).sum(-1), 1)
        assert (guess == classes[half:]).mean() < 0.45

    def test_flat_interiors_are_noisy(self, scenes):
        # Noise: the interior of a disc varies even when its paint is flat.
        for scene in scenes[:10]:
            interior = ndimage.binary_erosion(scene.instance == 1, np.ones((5, 5), bool))
            if interior.sum() > 10:
                assert scene.image[interior].std(0).max() > 2

    def test_same_seed_same_scene_different_seed_differs(self):
        a, b, c = render_scene(3, 32), render_scene(3, 32), render_scene(4, 32)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.shapes == b.shapes
        assert not np.array_equal(a.image, c.image)

    def test_small_image_size_rejected(self):
        with pytest.raises(ValueError, match="image_size: expected at least 16 pixels"):
            render_scene(0, 8)


class TestSyntheticShapes:
    def test_item(self):
        ds = SyntheticShapes("train", size=3, image_size=32, seed=1)
        image, label = ds[2]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert label.shape == (32, 32) and label.dtype == torch.int64
        assert 0 <= image.min() and image.max() <= 255 and torch.equal(image, image.round())
        assert 0 <= label.min() and label.max() < ds.num_classes
        assert ds.num_classes == len(ds.class_names) == 6

    def test_non_square(self):
        image, label = SyntheticShapes("val", size=1, image_size=(24, 40))[0]
        assert image.shape == (3, 24, 40) and label.shape == (24, 40)

    def test_deterministic_and_random_access(self):
        a = SyntheticShapes("train", size=4, image_size=32, seed=5)
        b = SyntheticShapes("train", size=2, image_size=32, seed=5)
        for i in range(2):
            assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])

    @pytest.mark.parametrize("other", [{"seed": 6}, {"split": "val"}, {"split": "test"}])
    def test_seeds_and_splits_differ(self, other):
        base = {"split": "train", "size": 3, "image_size": 32, "seed": 5}
        x, _ = SyntheticShapes(**base).tensors()
        y, _ = SyntheticShapes(**{**base, **other}).tensors()
        assert not torch.equal(x, y)

    def test_tensors_match_items(self):
        ds = SyntheticShapes("test", size=3, image_size=32)
        images, labels = ds.tensors()
        assert images.shape == (3, 3, 32, 32) and labels.shape == (3, 32, 32)
        for i in range(3):
            assert torch.equal(images[i], ds[i][0]) and torch.equal(labels[i], ds[i][1])
        empty_images, empty_labels = SyntheticShapes(size=0, image_size=32).tensors()
        assert empty_images.shape == (0, 3, 32, 32) and empty_labels.shape == (0, 32, 32)

    def test_dataloader(self):
        loader = torch.utils.data.DataLoader(SyntheticShapes(size=5, image_size=32), batch_size=4)
        images, labels = next(iter(loader))
        assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 32, 32)

    def test_bad_split(self):
        with pytest.raises(ValueError, match=r"split: expected one of \['train', 'val', 'test'\], got 'dev'"):
            SyntheticShapes("dev", size=1)

    def test_fast(self):
        # The brief: 200 images of 64×64 well under 10 s on a 2-core CPU (measured ≈1.3 s idle, ≈2 s shared).
        start = time.perf_counter()
        SyntheticShapes("train", size=200, image_size=64, seed=0)
        assert time.perf_counter() - start < 10.0
