"""unary_report on constructed unaries whose kind, counts and statistics are known by construction."""

import math

import pytest
import torch

from lab.unary.convert import unary_from_labels, unary_from_softmax
from lab.unary.sanity import ENTROPY_BINS, NEAR_ONE_HOT_P, NEAR_ONE_HOT_WARN, UnaryReport, unary_report

SHAPES = [
    (1, 2, 1, 1),  # the smallest unary mean field accepts
    (2, 21, 17, 23),  # VOC's 21 labels, non-aligned sizes, a batch
]


def _logits(shape, scale=3.0, seed=0):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_is_log_probabilities_without_messages(shape):
    r = unary_report(torch.log_softmax(_logits(shape), 1))
    assert isinstance(r, UnaryReport)
    assert r.kind == "log-probabilities" and r.shape == shape
    assert r.row_sum_error < 1e-5 and r.nan_count == r.inf_count == 0
    assert r.messages == ()
    assert "no problems found" in str(r)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_is_probabilities_and_the_message_says_take_the_log(shape):
    r = unary_report(torch.softmax(_logits(shape), 1))
    assert r.kind == "probabilities"
    assert r.row_sum_error < 1e-5
    assert any("not log-probabilities" in m and "torch.log(p)" in m for m in r.messages)
    assert "probabilities" in str(r)


def test_probabilities_of_unary_from_softmax_read_back_as_log_probabilities():
    p = torch.softmax(_logits((1, 5, 6, 7)), 1)
    assert unary_report(unary_from_softmax(p)).kind == "log-probabilities"


def test_raw_logits_are_logits_and_need_no_message():
    r = unary_report(_logits((1, 4, 9, 11)))
    assert r.kind == "logits"
    assert r.messages == ()


def test_rows_in_unit_interval_not_summing_to_one_are_probability_like():
    u = torch.full((1, 3, 2, 2), 0.5)  # sums 1.5 over the labels
    r = unary_report(u)
    assert r.kind == "probability-like"
    assert r.row_sum_error == pytest.approx(0.5)
    assert any("do not sum to 1" in m for m in r.messages)


def test_pydensecrf_energies_are_caught_and_the_message_says_negate():
    r = unary_report(-torch.log_softmax(_logits((1, 4, 5, 5)), 1))  # −log p, pydensecrf's sign
    assert r.kind == "energies"
    assert any("pass -U" in m for m in r.messages)


def test_large_non_negative_scores_get_a_sign_hint():
    r = unary_report(torch.tensor([5.0, 30.0]).view(1, 2, 1, 1))  # not −log p (Σ exp(−U) ≠ 1), but ≥ 0
    assert r.kind == "logits"
    assert any("pass their negative" in m for m in r.messages)


def test_one_hot_is_near_one_hot_everywhere_with_the_message():
    labels = torch.randint(0, 3, (1, 8, 9), generator=torch.Generator().manual_seed(1))
    u = unary_from_labels(labels, n_labels=3, gt_prob=0.9999, zero_unsure=False)
    r = unary_report(u)
    assert r.kind == "log-probabilities"
    assert r.near_one_hot_fraction == 1.0
    assert r.entropy_counts[0] == 8 * 9  # all in the lowest entropy bin
    assert any("near one-hot" in m and "temperature" in m for m in r.messages)


def test_near_one_hot_fraction_counts_pixels_above_the_threshold():
    u = torch.zeros(1, 2, 1, 4)
    margin = math.log(NEAR_ONE_HOT_P / (1 - NEAR_ONE_HOT_P))  # p_top = NEAR_ONE_HOT_P exactly
    u[0, 0, 0, :3] = torch.tensor([margin + 0.01, margin + 1, 0.0])  # two of four pixels above
    r = unary_report(u)
    assert r.near_one_hot_fraction == 0.5
    assert (r.near_one_hot_fraction >= NEAR_ONE_HOT_WARN) == any("near one-hot" in m for m in r.messages)


def test_nan_and_inf_are_counted_and_their_pixels_left_out():
    u = torch.log_softmax(_logits((1, 3, 4, 5)), 1)
    u[0, 0, 0, 0] = float("nan")
    u[0, 1, 1, 1] = float("inf")
    u[0, 2, 2, 2] = -float("inf")  # log 0: the pixel is still read
    r = unary_report(u)
    assert r.nan_count == 1 and r.inf_count == 2
    assert sum(r.entropy_counts) == 4 * 5 - 2
    assert any("1 NaN value" in m for m in r.messages)
    assert any("2 infinite values" in m for m in r.messages)
    assert any("2 pixels" in m and "left out" in m for m in r.messages)


def test_all_nan_is_non_finite():
    r = unary_report(torch.full((1, 2, 2, 2), float("nan")))
    assert r.kind == "non-finite" and r.nan_count == 8
    assert math.isnan(r.entropy_mean) and sum(r.entropy_counts) == 0


def test_entropy_of_uniform_and_one_hot_ends_in_the_extreme_bins():
    n_labels = 5
    u = torch.zeros(1, n_labels, 1, 2)
    u[0, 0, 0, 1] = 50.0  # pixel 1: one-hot; pixel 0: uniform
    r = unary_report(u)
    assert r.entropy_max == pytest.approx(math.log(n_labels))
    assert r.entropy_mean == pytest.approx(math.log(n_labels) / 2, abs=1e-9)
    assert r.entropy_counts == (1,) + (0,) * (ENTROPY_BINS - 2) + (1,)
    assert len(r.entropy_edges) == ENTROPY_BINS + 1
    assert r.entropy_edges[0] == 0 and r.entropy_edges[-1] == pytest.approx(math.log(n_labels))


def test_a_uniform_unary_is_flagged():
    r = unary_report(torch.zeros(1, 3, 4, 4))  # all zeros: uniform logits, not "probability-like"
    assert r.kind == "logits"
    assert any("nearly uniform" in m for m in r.messages)


def test_the_input_is_not_changed():
    u = torch.log_softmax(_logits((1, 3, 4, 4)), 1)
    u[0, 0, 0, 0] = float("nan")
    before = u.clone()
    unary_report(u)
    assert torch.equal(u.isnan(), before.isnan()) and torch.equal(u.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_float_dtypes(dtype):
    u = torch.log_softmax(_logits((1, 4, 5, 6)), 1).to(dtype)
    assert unary_report(u).kind == "log-probabilities"


@pytest.mark.parametrize(
    ("unary", "error", "match"),
    [
        (torch.zeros(2, 3, 4), ValueError, r"unary: expected shape \(B, L, H, W\)"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.int64), TypeError, "unary: expected a floating-point tensor"),
        (torch.zeros(1, 1, 4, 4), ValueError, "unary: expected at least two labels"),
        (torch.zeros(1, 3, 0, 4), ValueError, "unary: expected at least two labels and one pixel"),
        ([[0.0]], TypeError, "unary: expected a torch.Tensor"),
    ],
)
def test_bad_inputs_name_the_argument(unary, error, match):
    with pytest.raises(error, match=match):
        unary_report(unary)
