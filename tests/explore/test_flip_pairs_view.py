"""lab.explore.voc_view.flip_pairs_view: one colour per old → new pair, counts as crf_changes counts them."""

import numpy as np
import pytest
import torch

from lab.explore import crf_changes
from lab.explore.voc_view import OTHER_FLIPS_COLOUR, PAIR_COLOURS, flip_pairs_view, flip_view


def _case():
    """A 3 × 4 case; flips counted by hand: bg→cat 3, cat→bg 2, dog→bg 1, dog→cat 1."""
    before = np.array(
        [
            [0, 0, 0, 1],
            [1, 1, 2, 2],
            [0, 0, 0, 0],
        ]
    )
    after = np.array(
        [
            [1, 1, 1, 1],  # three bg→cat
            [0, 0, 0, 1],  # two cat→bg, dog→bg, dog→cat
            [0, 0, 0, 0],
        ]
    )
    image = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return image, before, after


def test_pairs_in_order_of_pixels_with_their_colours():
    image, before, after = _case()
    view, legend = flip_pairs_view(image, before, after, 3, top=3)
    assert [(pair, n) for pair, n, _ in legend] == [((0, 1), 3), ((1, 0), 2), ((2, 0), 1), ((-1, -1), 1)]
    # the same pairs and counts as the change report's flips
    flips = crf_changes(before, after, ["bg", "cat", "dog"]).flips
    assert [(pair, n) for pair, n, _ in legend[:3]] == list(flips.items())[:3]
    for (old, new), _, colour in legend[:3]:
        mask = (before == old) & (after == new)
        assert (view[mask] == colour).all()
    assert [c.tolist() for _, _, c in legend[:3]] == PAIR_COLOURS[:3].tolist()
    assert (view[1, 3] == OTHER_FLIPS_COLOUR).all()  # dog→cat, the fourth pair
    # unchanged pixels are flip_view's faded grey
    same = before == after
    assert (view[same] == flip_view(image, before, after, 3)[same]).all()


def test_every_pair_coloured_when_top_covers_them_and_none_when_zero():
    image, before, after = _case()
    _, legend = flip_pairs_view(image, before, after, 3, top=len(PAIR_COLOURS))
    assert len(legend) == 4 and all(pair != (-1, -1) for pair, _, _ in legend)
    view, legend = flip_pairs_view(image, before, after, 3, top=0)
    assert [(pair, n) for pair, n, _ in legend] == [((-1, -1), 7)]
    assert (view[before != after] == OTHER_FLIPS_COLOUR).all()


def test_no_flips_empty_legend_and_tensors_accepted():
    image, before, _ = _case()
    view, legend = flip_pairs_view(image, torch.from_numpy(before), torch.from_numpy(before), 3)
    assert legend == []
    assert (view == flip_view(image, before, before, 3)).all()


@pytest.mark.parametrize("top", [-1, len(PAIR_COLOURS) + 1, 2.0, True])
def test_bad_top_is_refused(top):
    image, before, after = _case()
    with pytest.raises(ValueError, match="top"):
        flip_pairs_view(image, before, after, 3, top=top)


def test_shape_mismatch_is_refused():
    image, before, after = _case()
    with pytest.raises(ValueError, match="before"):
        flip_pairs_view(image, before[:2], after[:2], 3)
