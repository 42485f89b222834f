"""The oracle itself, against a direct double loop."""

import math

import pytest
import torch

import lab

# float64 throughout: the oracle and the loop agree to rounding.
ATOL = 1e-12


def _double_loop(v, f, normalize):
    n = f.shape[0]
    k = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            k[i, j] = math.exp(-0.5 * float(((f[i] - f[j]) ** 2).sum()))
    d = k.sum(1, keepdim=True)
    if normalize == "none":
        return k @ v
    if normalize == "after":
        return (k @ v) / d
    return d.rsqrt() * (k @ (d.rsqrt() * v))


@pytest.mark.parametrize("normalize", ["none", "after", "symmetric"])
@pytest.mark.parametrize("d", [1, 2, 5])
def test_exact_matches_double_loop(normalize, d):
    g = torch.Generator().manual_seed(d)
    f = torch.randn(17, d, generator=g, dtype=torch.float64)
    v = torch.randn(17, 3, generator=g, dtype=torch.float64)
    want = _double_loop(v, f, normalize)
    got = lab.exact_gaussian_filter(v, f, normalize, chunk_size=5)  # several chunks, one ragged
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_exact_image_layout_and_batch():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64)
    got = lab.exact_gaussian_filter(v, f, "after")
    for b in range(2):
        pts_f = f[b].permute(1, 2, 0).reshape(20, 3)
        pts_v = v[b].permute(1, 2, 0).reshape(20, 2)
        want = _double_loop(pts_v, pts_f, "after").reshape(4, 5, 2).permute(2, 0, 1)
        torch.testing.assert_close(got[b], want, atol=ATOL, rtol=0)


def test_exact_is_differentiable_in_features():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: lab.exact_gaussian_filter(a, b, "symmetric"), (v, f))


def test_exact_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="values"):
        lab.exact_gaussian_filter(torch.zeros(5, 2), torch.zeros(6, 2))
    with pytest.raises(ValueError, match="normalize"):
        lab.exact_gaussian_filter(torch.zeros(5, 2), torch.zeros(5, 2), normalize="before")
