"""Memory stays flat over repeated lattice builds and mean-field calls (RSS measured, not assumed).

Each lattice build used to leak its sparse × sparse product workspace (about 13 MiB per lattice at 0.25 MP,
150 MiB per 0.25 MP mean-field call with both kernels): RSS grew without bound. The bound below is the
growth measured here with the leak fixed at 192 × 192 (see the assertion), with a margin; the leak gave
~16 MiB per call there.
"""

import gc

import torch

import lab


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_repeated_mean_field_holds_rss_flat():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 192, 192, generator=g) * 255
    unary = torch.randn(1, 21, 192, 192, generator=g)
    params = lab.CRFParams(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=5.0, w_spatial=3.0)
    for _ in range(5):  # warm-up: allocator pools, caches, compiled kernels
        lab.mean_field(unary, image, params, iterations=2)
    gc.collect()
    start = _rss_mib()
    peak = start
    for _ in range(25):
        lab.mean_field(unary, image, params, iterations=2)
        peak = max(peak, _rss_mib())
    gc.collect()
    growth = _rss_mib() - start
    assert growth < 120, f"RSS grew by {growth:.0f} MiB over 25 mean-field calls (peak {peak:.0f} MiB)"
