"""The value checks' switch: on by default (clear errors), off on request (no host reads), restored after."""

from __future__ import annotations

import pytest
import torch

import lab
from lab._checks import data_checks, data_checks_enabled, set_data_checks


def _nan_unary() -> tuple[torch.Tensor, torch.Tensor]:
    unary = torch.zeros(1, 2, 4, 5)
    unary[0, 0, 1, 1] = float("nan")
    return unary, torch.full((1, 3, 4, 5), 100.0)


def test_value_checks_on_by_default():
    assert data_checks_enabled()
    unary, image = _nan_unary()
    with pytest.raises(ValueError, match="unary: expected finite values, got 1 NaN/Inf entries"):
        lab.mean_field(unary, image)


def test_value_checks_off_skip_the_reads_and_come_back():
    unary, image = _nan_unary()
    with data_checks(False):
        assert not data_checks_enabled()
        q = lab.mean_field(unary, image, iterations=1).q  # no error: the caller vouched for the values
        assert torch.isnan(q).any()
        lab.mean_field(torch.zeros(1, 2, 4, 5), torch.full((1, 3, 4, 5), 300.0), iterations=1)  # range not read
    assert data_checks_enabled()
    with pytest.raises(ValueError, match=r"image: expected colours in 0\.\.255"):
        lab.mean_field(torch.zeros(1, 2, 4, 5), torch.full((1, 3, 4, 5), 300.0))


def test_shape_checks_stay_on():
    """Only value checks are switchable: shapes and types cost no device read and are always checked."""
    try:
        set_data_checks(False)
        with pytest.raises(ValueError, match=r"unary: expected shape \(B, L, H, W\)"):
            lab.mean_field(torch.zeros(2, 4, 5), torch.zeros(1, 3, 4, 5))
    finally:
        set_data_checks(True)


def test_environment_variable_turns_them_off():
    import subprocess
    import sys

    code = "import lab._checks as c; print(c.data_checks_enabled())"
    env = {"LAB_DATA_CHECKS": "0", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-1000:]
