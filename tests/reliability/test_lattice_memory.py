"""Memory stays flat over repeated lattice builds and mean-field calls (RSS measured, not assumed).

A leak in the lattice build shows as growth over these 25 calls at 192 × 192: torch's CPU sparse × sparse
product leaks ~13 MiB per lattice at 0.25 MP, and a build whose paired blur used it grew by 279 MiB of live
memory here (the build forms those stencils from the neighbour tables instead). RSS is read after a
collection and glibc's malloc_trim (live memory: raw RSS swings by ±200 MiB with the allocator's retained
pages, seen here); the bound below is a margin over the flat trimmed RSS of the build as it is (0 MiB of
growth over 200 calls at 512 × 512, ``benchmarks/memory.py``).
"""

import gc

import torch

import lab
from lab.explore import trim_heap


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _live_mib() -> float:
    gc.collect()
    trim_heap()
    return _rss_mib()


def test_repeated_mean_field_holds_rss_flat():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 192, 192, generator=g) * 255
    unary = torch.randn(1, 21, 192, 192, generator=g)
    params = lab.CRFParams(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=5.0, w_spatial=3.0)
    for _ in range(5):  # warm-up: allocator pools, caches, compiled kernels
        lab.mean_field(unary, image, params, iterations=2)
    trims = trim_heap()
    start = _live_mib()
    for _ in range(25):
        lab.mean_field(unary, image, params, iterations=2)
    growth = _live_mib() - start
    limit = 60 if trims else 300  # without malloc_trim (not glibc) the allocator's pages stay in RSS
    assert growth < limit, f"live RSS grew by {growth:.0f} MiB over 25 mean-field calls (limit {limit} MiB)"
