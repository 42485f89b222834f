"""Features of any size: the lattice is built, correct, or refused with a message; never a crash or garbage.

Large elevated features (tiny θ, large coordinates) must neither make the compiled build write out of
bounds nor give negative barycentric weights in float32, nor an internal IndexError. The crash cases
run in a child process so that a segfault fails the test instead of killing the suite.
"""

import subprocess
import sys

import pytest
import torch

import lab
from lab.lattice.build import build_lattice
from lab.lattice.limits import prepare_features

CRASHERS = {
    "coordinates 1e19": "lab.gaussian_filter(torch.rand(30, 3), torch.rand(30, 2) * 1e19)",
    "theta_alpha 1e-20": (
        "lab.mean_field(torch.randn(1, 3, 12, 12), torch.rand(1, 3, 12, 12) * 255, lab.CRFParams(theta_alpha=1e-20))"
    ),
    "theta_beta 1e-12": (
        "lab.mean_field(torch.randn(1, 3, 12, 12), torch.rand(1, 3, 12, 12) * 255, lab.CRFParams(theta_beta=1e-12))"
    ),
    "float64 coordinates 1e300": "lab.gaussian_filter(torch.rand(30, 3).double(), torch.rand(30, 2).double() * 1e300)",
}


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_unrepresentable_features_are_refused_in_a_child_process(case):
    code = (
        "import torch, lab\n"
        f"try:\n    {CRASHERS[case]}\n"
        "except ValueError as e:\n    print('REFUSED', e)\n"
        "else:\n    print('BUILT')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith("REFUSED"), done.stdout
    assert "bandwidths (θ)" in done.stdout


@pytest.mark.parametrize("builder", ["numba", "torch"])
@pytest.mark.parametrize("offset", [2.0**24, 2.0**30, 1e9])
def test_float32_features_far_from_the_origin_filter_correctly(builder, offset):
    """Beyond 2²³ float32 cannot hold the elevation; the filter must still match the exact one."""
    g = torch.Generator().manual_seed(0)
    f = torch.rand(300, 2, generator=g) * 3
    v = torch.rand(300, 2, generator=g)
    near = lab.PermutohedralLattice(f, builder=builder).filter(v)
    far = lab.PermutohedralLattice(f + offset, builder=builder).filter(v)  # float32: rounded positions
    exact = lab.exact_gaussian_filter(v.double(), (f + offset).double())  # the same rounded float32 positions
    assert (far.double() - exact).abs().max() < 0.15  # the lattice's own error at d = 2 (see test_lattice)
    assert (far - near).abs().max() < 0.2
    s = build_lattice(f + offset, builder=builder)
    assert bool((s.barycentric >= -1e-6).all())


def test_both_builders_agree_on_wide_float32_features():
    f = torch.rand(500, 3, generator=torch.Generator().manual_seed(1)) * 3 + torch.tensor([1e8, -3e7, 5e5])
    a, b = build_lattice(f, builder="numba"), build_lattice(f, builder="torch")
    assert torch.equal(a.vertex_index, b.vertex_index)
    assert torch.equal(a.barycentric, b.barycentric)


def test_wide_spread_promotes_the_build_to_float64():
    """A spread float32 cannot build in is built in float64; the result stays float32 for the caller."""
    f = torch.rand(200, 2, generator=torch.Generator().manual_seed(2)) * torch.tensor([1e5, 1.0])
    assert prepare_features(f).dtype == torch.float64
    s = build_lattice(f)
    assert s.barycentric.dtype == torch.float32
    assert torch.allclose(s.barycentric.sum(1), torch.ones(200), atol=1e-6)
    assert bool((s.barycentric >= 0).all())


def test_translation_by_a_lattice_period_gives_the_same_lattice():
    """The lattice is periodic: c_k = f_k·scale_k shifted by a multiple of d+1 gives the same structure."""
    from lab.lattice.elevation import elevation_scale

    f = torch.rand(400, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4
    period = 6 / elevation_scale(5, torch.float64)  # (d+1) / scale_k
    a, b = build_lattice(f), build_lattice(f + torch.tensor([300, -20, 7, 1000, 3]) * period)
    assert a.num_vertices == b.num_vertices
    assert torch.equal(a.vertex_index, b.vertex_index)
    assert torch.allclose(a.barycentric, b.barycentric, atol=1e-9)


def test_batch_elements_far_apart_are_centred_separately():
    """Two clusters 1e8 apart, as one point set and as a batch: each filters as the exact oracle says."""
    g = torch.Generator().manual_seed(4)
    f = torch.rand(2, 100, 2, generator=g, dtype=torch.float64) * 3
    f[1] += 1e8
    v = torch.rand(200, 3, generator=g, dtype=torch.float64)
    out = lab.PermutohedralLattice(f.reshape(200, 2)).filter(v)  # one point set spanning 0 .. 1e8
    for b in range(2):
        exact = lab.exact_gaussian_filter(v[100 * b : 100 * (b + 1)], f[b])
        assert (out[100 * b : 100 * (b + 1)] - exact).abs().max() < 0.15
    batched = build_lattice(f.reshape(200, 2), batch_size=2)
    assert batched.batch_num_vertices.tolist() == [build_lattice(f[0]).num_vertices, build_lattice(f[1]).num_vertices]


def test_cli_batch_with_tiny_theta_reports_each_image_and_exits_1(tmp_path):
    """A refine batch with θα = 1e-20 reports each image and exits 1 (a crash would exit 139, no message)."""
    import numpy as np
    from PIL import Image

    from lab.crf import CRFParams
    from lab.explore import params_to_json

    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((12, 14, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"img{i}.png"
        )
    params = tmp_path / "p.json"
    params.write_text(params_to_json(CRFParams(theta_alpha=1e-20), iterations=2))
    images = [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")]
    done = subprocess.run(
        [sys.executable, "-m", "lab", "refine", *images, "--params", str(params), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    out = done.stdout + done.stderr
    assert out.count("theta_alpha=1e-20") == 2, out
    assert "Traceback" not in out


def test_features_at_the_usual_bandwidths_are_built_as_given():
    """No shift where none is needed: the lattice stays bit for bit the one pydensecrf builds."""
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(5)) * 255
    f = lab.bilateral_features(image, 80.0, 13.0).permute(0, 2, 3, 1).reshape(-1, 5)
    g = prepare_features(f)
    assert g.data_ptr() == f.data_ptr() and g.dtype == f.dtype  # the same memory: not shifted, not cast
