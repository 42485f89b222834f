"""The memory estimates hold for any θ and every stage refuses before it allocates.

The estimates must bound any θ: V reaches (d+1)·M (6 per point at d = 5) for tiny θ, and mean field's
buffers and trace are estimated too. Peak RSS is measured in a fresh process (ru_maxrss) and compared with the
estimate; the refusals are checked by pretending little memory is free.
"""

import subprocess
import sys

import pytest
import torch

import lab
import lab.lattice.limits as limits_module
from lab.lattice.build import build_lattice
from lab.lattice.limits import estimate_build_bytes

PEAK = """
import resource, sys, torch, lab
m, d, spread = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
f = torch.rand(m, d, generator=torch.Generator().manual_seed(0)) * spread
lab.PermutohedralLattice(torch.rand(64, d)).filter_points(torch.rand(64, 1))  # load the compiled kernels first
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
lat = lab.PermutohedralLattice(f)
lat.filter_points(torch.rand(m, 1))
print(lat.num_vertices, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


@pytest.mark.parametrize(("d", "spread"), [(2, 300.0), (5, 1000.0), (5, 4.0)])
def test_build_estimate_bounds_the_measured_peak(d, spread):
    """Spread 300 / 1000: V/M near its bound d+1 (tiny θ); spread 4: a few vertices (large θ)."""
    m = 150_000
    done = subprocess.run([sys.executable, "-c", PEAK, str(m), str(d), str(spread)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    vertices, peak = map(int, done.stdout.split())
    assert peak <= estimate_build_bytes(m, d, vertices) <= estimate_build_bytes(m, d)
    assert vertices <= (d + 1) * m


def test_build_refuses_before_the_corner_pass(monkeypatch):
    monkeypatch.setattr(limits_module, "available_memory", lambda device: 1 << 20)
    with pytest.raises(MemoryError, match=r"features: a lattice over 100000 points in 5 dimensions needs about"):
        lab.PermutohedralLattice(torch.rand(100_000, 5))


@pytest.mark.parametrize("builder", ["numba", "torch"])
def test_build_refuses_once_the_vertex_count_is_known(monkeypatch, builder):
    """Enough memory for the corner pass, not for a lattice of (d+1)·M vertices: refused at that stage."""
    m, d = 20_000, 5
    monkeypatch.setattr(limits_module, "available_memory", lambda device: 400 * (d + 1) * m)
    with pytest.raises(MemoryError, match=r"a lattice of \d+ vertices over 20000 points"):
        build_lattice(torch.rand(m, d) * 1e4, builder=builder)
    build_lattice(torch.rand(m, d) * 2, builder=builder)  # few vertices: fits


def test_mean_field_refuses_what_its_buffers_would_not_fit(monkeypatch):
    import importlib

    mf = importlib.import_module("lab.crf.mean_field")
    image, unary = torch.rand(1, 3, 64, 64) * 255, torch.randn(1, 21, 64, 64)
    kernels = mf.CRFKernels(image, lab.CRFParams())
    need = mf.estimate_mean_field_bytes(kernels, 21, 50, "steps", torch.float32, False)
    assert need > 50 * 6 * 64 * 64 * 21 * 4  # six maps per kept step
    monkeypatch.setattr(limits_module, "available_memory", lambda device: need - 1)
    with pytest.raises(MemoryError, match=r"mean field: 50 iterations over 4096 points × 21 labels \(keep='steps'\)"):
        mf.mean_field(unary, image, iterations=50, keep="steps", kernels=kernels)
    mf.mean_field(unary, image, iterations=50, keep=None, kernels=kernels)  # without the trace it fits
