"""crf_changes and flip_map on hand-made label maps; every expected number is counted by hand in the comments."""

import math

import numpy as np
import pytest
import torch

from lab.explore.changes import ERASED_FRACTION, ERASED_MIN_PIXELS, ChangeReport, crf_changes, flip_map

NAMES = ["background", "cat", "dog"]


def _maps():
    """A 4 × 5 case: before, after, truth (255 = void)."""
    before = np.array(
        [
            [0, 0, 1, 1, 2],
            [0, 0, 1, 1, 2],
            [0, 0, 0, 1, 2],
            [0, 0, 0, 0, 0],
        ]
    )
    after = np.array(
        [
            [0, 0, 0, 1, 1],  # (0,2) cat→bg, (0,4) dog→cat
            [0, 1, 1, 1, 2],  # (1,1) bg→cat
            [0, 0, 0, 1, 0],  # (2,4) dog→bg
            [0, 0, 0, 0, 0],
        ]
    )
    truth = np.array(
        [
            [0, 0, 1, 1, 2],
            [0, 1, 1, 1, 2],
            [0, 0, 0, 1, 2],
            [255, 255, 0, 0, 0],  # two void pixels
        ]
    )
    return before, after, truth


def test_counts_gained_lost_and_flips():
    before, after, _ = _maps()
    r = crf_changes(before, after, NAMES)
    assert isinstance(r, ChangeReport)
    assert r.pixels == 20
    # before: bg 12, cat 5, dog 3; after: bg 13, cat 6, dog 1
    assert r.before == (12, 5, 3) and r.after == (13, 6, 1)
    # bg gains (0,2) and (2,4), loses (1,1); cat gains (1,1), (0,4), loses (0,2); dog loses two
    assert r.gained == (2, 2, 0) and r.lost == (1, 1, 2)
    assert r.flips == {(0, 1): 1, (1, 0): 1, (2, 0): 1, (2, 1): 1}
    assert r.changed == 4
    assert r.truth is None and r.miou_before is None and r.accuracy_after is None
    assert r.erased == ()  # dog lost 2 of 3, but 3 < ERASED_MIN_PIXELS


def test_flips_are_sorted_by_count():
    before = np.array([[0, 0, 0, 1, 1, 2]])
    after = np.array([[1, 1, 1, 0, 2, 0]])  # 0→1 three times, then 1→0, 1→2, 2→0 once each
    r = crf_changes(before, after)
    assert list(r.flips.items()) == [((0, 1), 3), ((1, 0), 1), ((1, 2), 1), ((2, 0), 1)]
    assert r.class_names == ("0", "1", "2")


def test_iou_miou_and_accuracy_against_a_truth_with_void():
    before, after, truth = _maps()
    r = crf_changes(before, after, NAMES, truth=truth)
    # truth, 18 pixels not void: bg 9, cat 6, dog 3
    assert r.truth == (9, 6, 3)
    # before vs truth on the 18: wrong only at (1,1) (truth cat, said bg).
    #   bg: TP 9, predicted on valid pixels 10 (12 minus the two void), truth 9 → union 10
    #   cat: TP 5, predicted 5, truth 6 → union 6; dog: TP 3, predicted 3, truth 3 → union 3
    iou_before = (9 / 10, 5 / 6, 1.0)
    # after vs truth: wrong at (0,2) (cat→bg), (0,4) (dog→cat), (2,4) (dog→bg)
    #   bg: TP 9, pred bg valid 11 (13 minus two void) → union 11; cat: TP 5 ((0,2) lost), pred 6, truth 6 → 7
    #   dog: TP 1, pred 1, truth 3 → 3
    iou_after = (9 / 11, 5 / 7, 1 / 3)
    assert r.iou_before == pytest.approx(iou_before)
    assert r.iou_after == pytest.approx(iou_after)
    assert r.miou_before == pytest.approx(sum(iou_before) / 3)
    assert r.miou_after == pytest.approx(sum(iou_after) / 3)
    assert r.accuracy_before == pytest.approx(17 / 18)
    assert r.accuracy_after == pytest.approx(15 / 18)


def test_ignore_index_none_counts_every_truth_pixel():
    before = np.array([[0, 1]])
    r = crf_changes(before, before, truth=np.array([[0, 0]]), ignore_index=None)
    assert r.accuracy_before == 0.5
    # bg: TP 1, union 2; cat: TP 0, union 1
    assert r.iou_before == pytest.approx((0.5, 0.0))


def test_ignore_index_inside_the_class_range_is_skipped():
    before = np.array([[0, 1, 1]])
    r = crf_changes(before, before, truth=np.array([[0, 0, 1]]), ignore_index=0)  # truth 0 = void here
    assert r.accuracy_before == 1.0  # only (0,2) is scored, and right
    assert r.truth == (0, 1)


def test_a_class_missing_from_one_prediction_leaves_that_mean():
    before = np.array([[0, 0, 1]])
    after = np.array([[0, 0, 0]])  # the CRF removes a wrong "cat"
    truth = np.array([[0, 0, 0]])
    r = crf_changes(before, after, truth=truth)
    assert r.iou_before == pytest.approx((2 / 3, 0.0))
    assert r.iou_after[0] == 1.0 and math.isnan(r.iou_after[1])
    assert r.miou_before == pytest.approx(1 / 3) and r.miou_after == 1.0


def test_a_small_object_erased_is_reported():
    before = np.zeros((20, 20), np.int64)
    before[5:15, 5:15] = 1  # 100 pixels of cat
    after = np.zeros_like(before)
    after[9:11, 9:11] = 1  # 4 left: 96 % lost
    r = crf_changes(before, after, NAMES[:2])
    assert r.erased == (1,)
    notes = r.notes()
    assert any("'cat' lost 96 % of its 100 pixels (to background: 96)" in n and "erased" in n for n in notes)
    assert "erased" in str(r)


def test_erased_needs_both_the_fraction_and_the_size():
    n = ERASED_MIN_PIXELS
    lose = math.ceil(ERASED_FRACTION * n)  # the fewest pixels lost that reach the fraction
    before = np.ones((1, n), np.int64)
    after = before.copy()
    after[0, :lose] = 0
    assert crf_changes(before, after).erased == (1,)
    after[0, 0] = 1  # one pixel fewer lost: below the fraction
    assert crf_changes(before, after).erased == ()
    small = np.ones((1, n - 1), np.int64)  # too few pixels before, though all lost
    assert crf_changes(small, np.zeros_like(small)).erased == ()


def test_batches_are_summed_and_tensors_accepted():
    before = torch.tensor([[[0, 1]], [[1, 1]]])  # (B, H, W) = (2, 1, 2)
    after = torch.tensor([[[0, 0]], [[1, 0]]])
    r = crf_changes(before, after)
    assert r.pixels == 4 and r.before == (1, 3) and r.after == (3, 1)
    assert r.flips == {(1, 0): 2}


def test_table_lists_the_classes_present_and_str_is_markdown():
    before, after, truth = _maps()
    r = crf_changes(before, after, [*NAMES, "bird"], truth=truth)  # no bird anywhere: not listed
    rows = r.table()
    assert [row["class"] for row in rows] == NAMES
    assert rows[1] == {
        "id": 1,
        "class": "cat",
        "before": 5,
        "after": 6,
        "gained": 2,
        "lost": 1,
        "truth": 6,
        "iou_before": pytest.approx(5 / 6),
        "iou_after": pytest.approx(5 / 7),
    }
    text = str(r)
    assert text.splitlines()[0] == "| id | class | before | after | gained | lost | truth | iou_before | iou_after |"
    assert "| 1 | cat | 5 | 6 | 2 | 1 | 6 | 0.833 | 0.714 |" in text
    assert "changed 4 of 20 pixels" in text and "mIoU" in text


def test_flip_map_encodes_old_and_new():
    before, after, _ = _maps()
    ids = flip_map(before, after, num_classes=3)
    assert ids.shape == (4, 5) and ids.dtype == np.int64
    assert (ids == -1).sum() == 16
    assert ids[0, 2] == 1 * 3 + 0 and ids[0, 4] == 2 * 3 + 1 and ids[1, 1] == 0 * 3 + 1 and ids[2, 4] == 2 * 3 + 0
    assert divmod(int(ids[0, 4]), 3) == (2, 1)
    assert flip_map(before, after)[0, 4] == 7  # L inferred = 3
    assert flip_map(torch.tensor([[[0, 1]]]), torch.tensor([[[1, 1]]])).shape == (1, 1, 2)


def test_inputs_are_not_changed():
    before, after, truth = _maps()
    copies = [x.copy() for x in (before, after, truth)]
    crf_changes(before, after, NAMES, truth=truth)
    flip_map(before, after)
    assert all(np.array_equal(x, c) for x, c in zip((before, after, truth), copies, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(after=np.zeros((2, 4), np.int64)), ValueError, r"after: expected shape \(2, 3\) like before"),
        (dict(truth=np.zeros((3, 2), np.int64)), ValueError, r"truth: expected shape \(2, 3\) like before"),
        (dict(before=-np.ones((2, 3), np.int64)), ValueError, "before: expected class ids >= 0"),
        (dict(truth=np.full((2, 3), -1)), ValueError, "truth: expected class ids >= 0"),
        (dict(before=np.zeros((2, 3))), TypeError, "before: expected integer class ids, got dtype float64"),
        (dict(after=torch.zeros(2, 3)), TypeError, "after: expected integer class ids, got dtype torch.float32"),
        (dict(after=np.zeros((2, 3), bool)), TypeError, "after: expected integer class ids"),
        (dict(before=[[0, 1, 2]]), TypeError, "before: expected a numpy array or a torch.Tensor"),
        (dict(before=np.zeros(6, np.int64)), ValueError, r"before: expected shape \(H, W\) or \(B, H, W\)"),
        (dict(class_names=["a"]), ValueError, r"after: expected class ids below len\(class_names\) = 1"),
        (dict(class_names="ab"), TypeError, "class_names: expected a sequence of names"),
        (dict(before=np.full((2, 3), 300)), ValueError, "before: expected class ids below 256"),
        (dict(ignore_index=1.5), TypeError, "ignore_index: expected an int or None"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, error, match):
    args = dict(
        before=np.zeros((2, 3), np.int64),
        after=np.ones((2, 3), np.int64),
        truth=np.zeros((2, 3), np.int64),
    )
    args.update(kwargs)
    with pytest.raises(error, match=match):
        crf_changes(**args)


def test_flip_map_bad_inputs():
    z = np.zeros((2, 2), np.int64)
    with pytest.raises(ValueError, match=r"num_classes: expected at least 3"):
        flip_map(z, z + 2, num_classes=2)
    with pytest.raises(TypeError, match="num_classes: expected an int"):
        flip_map(z, z, num_classes=2.0)
    with pytest.raises(ValueError, match="after: expected shape"):
        flip_map(z, z[None])


def test_flip_backs_counts_the_two_cycle_of_parallel_mean_field():
    from lab.explore import flip_backs

    a, b = np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64)
    mixed = a.copy()
    mixed[0, 0] = 1
    assert flip_backs([a]) == [] and flip_backs([a, b]) == []
    assert flip_backs([a, b, a, b]) == [6, 6]  # every pixel a → b → a → b
    assert flip_backs([a, mixed, a, a]) == [1, 0]  # one pixel went and came back, then nothing moved
    assert flip_backs([a, b, b]) == [0]  # a change that stays is not a cycle
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        flip_backs([a, b[:1]])
    with pytest.raises(TypeError, match=r"labels\[0\]"):
        flip_backs([a.astype(float), b])
