"""`crf-lab refine` prints the unary report's verdict under each image's line, for every unary source."""

import numpy as np
import pytest
from inputs import cli_main, synthetic_photo
from PIL import Image

from lab.cli.report import REPORT_PIXELS, unary_summary

H, W = 40, 50
FAST = ("--iterations", "1")


run = cli_main  # (exit code, stderr) of crf-lab in this process


def image_lines(err, name):
    """The image's "ok" line and the indented lines under it."""
    lines = err.splitlines()
    start = next(i for i, s in enumerate(lines) if f"{name}: ok" in s)
    block = [lines[start]]
    for s in lines[start + 1 :]:
        if not s.startswith("    "):
            break
        block.append(s.strip())
    return block


@pytest.fixture
def photo(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(H, W)).save(d / "a.png")
    return d / "a.png"


def refine_with_map(capsys, tmp_path, photo, values):
    probs = tmp_path / "probs"
    probs.mkdir(exist_ok=True)
    np.save(probs / "a.npy", values)
    rc, err = run(capsys, "refine", photo, "--prob-dir", probs, "--out", tmp_path / "out", *FAST)
    assert rc == 0, err
    return image_lines(err, "a.png")


def test_colour_clusters_are_log_probabilities_without_warnings(photo, tmp_path, capsys):
    rc, err = run(capsys, "refine", photo, "--out", tmp_path / "out", *FAST)
    assert rc == 0, err
    _, *rest = image_lines(err, "a.png")
    assert len(rest) == 1 and rest[0].startswith("unary: log-probabilities, values ")
    assert "near one-hot 0 % of pixels" in rest[0] and "of log L = 1.39 nats" in rest[0]  # log 4
    assert "sampled" not in rest[0]  # 40 × 50 pixels: all of them read


def test_probabilities_in_prob_dir_become_log_p_and_pass(photo, tmp_path, capsys):
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=(H, W))  # (H, W, L), rows sum to 1
    ok, *rest = refine_with_map(capsys, tmp_path, photo, p)
    assert "values are probabilities: U = log p" in ok
    assert rest[0].startswith("unary: log-probabilities") and len(rest) == 1


def test_scores_that_are_no_log_probabilities_get_the_warning(photo, tmp_path, capsys):
    # per-class sigmoid scores: in [0, 1] but not summing to 1, so the loader takes them as U as they are
    scores = 1 / (1 + np.exp(-np.random.default_rng(1).normal(size=(H, W, 3))))
    ok, *rest = refine_with_map(capsys, tmp_path, photo, scores)
    assert "taken as logits" in ok
    assert rest[0].startswith("unary: probability-like, values 0.")
    assert any(s.startswith("warning: Values lie in [0, 1] but do not sum to 1") for s in rest[1:])
    assert any("For scores pass their log" in s for s in rest[1:])


def test_energies_get_the_sign_warning(photo, tmp_path, capsys):
    p = np.random.default_rng(2).dirichlet(np.ones(3), size=(H, W))
    _, *rest = refine_with_map(capsys, tmp_path, photo, -np.log(p))  # pydensecrf's -log p
    assert rest[0].startswith("unary: energies")
    assert any(s.startswith("warning: These look like energies -log p") and "pass -U" in s for s in rest[1:])


def test_annotations_are_checked_too(photo, tmp_path, capsys):
    ann = tmp_path / "ann"
    ann.mkdir()
    colours = np.zeros((H, W, 3), np.uint8)
    colours[:, : W // 2] = (255, 0, 0)
    colours[:, W // 2 :] = (0, 0, 255)
    colours[:5] = 0  # black: unknown
    Image.fromarray(colours).save(ann / "a.png")
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", photo, "--annotation-dir", ann, "--out", out, *FAST)
    assert rc == 0, err
    _, *rest = image_lines(err, "a.png")
    # two labels at the default --confidence 0.6: entropy 0.673 of log 2 = 0.693, above the 90 % mark
    assert rest[0].startswith("unary: log-probabilities, values -0.916..-0.511")
    assert rest[1].startswith("warning: The unary is nearly uniform")
    rc, err = run(capsys, "refine", photo, "--annotation-dir", ann, "--confidence", "0.9", "--out", out, *FAST)
    assert rc == 0 and len(image_lines(err, "a.png")) == 2  # the ok line and the unary line: no warning


def test_large_images_are_sampled(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(300, 200)).save(d / "big.png")  # 60,000 pixels > 128 × 128
    rc, err = run(capsys, "refine", d / "big.png", "--out", tmp_path / "out", *FAST)
    assert rc == 0, err
    assert 300 * 200 > REPORT_PIXELS
    _, *rest = image_lines(err, "big.png")
    assert rest[0].endswith("(sampled: 1 pixel in 2 × 2)")  # ⌈√(60,000 / 16,384)⌉ = 2


def test_unary_summary_of_probabilities_given_as_u():
    import torch

    p = torch.softmax(torch.randn(1, 5, 8, 8, generator=torch.Generator().manual_seed(0)), 1)
    head, *warnings = unary_summary(p)
    assert head.startswith("unary: probabilities, ")
    assert warnings[0].startswith("warning: These look like probabilities, not log-probabilities")
    head, *warnings = unary_summary(p.log())
    assert head.startswith("unary: log-probabilities, ") and not warnings


def test_help_describes_the_unary_lines():
    from lab.cli.args import DESCRIPTION

    side = int(REPORT_PIXELS**0.5)
    assert f"at most\n{side} × {side} sampled pixels" in DESCRIPTION and '"warning: ..."' in DESCRIPTION
