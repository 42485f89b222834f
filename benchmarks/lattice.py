"""Lattice benchmark: build and filter times against image size, and the implementation options measured.

    python benchmarks/lattice.py            # 0.06, 0.25, 1, 4 MP (a few minutes on 2 cores)
    python benchmarks/lattice.py --quick    # 0.06 and 0.25 MP

Prints a table per kernel (d=5 bilateral θα=80 θβ=13; d=2 spatial θγ=3), C=21 channels, on
scikit-image's astronaut resized, and the exact O(N²) filter's time where it fits, so O(N) vs O(N²) shows.
The build is timed both ways: "numba" (the compiled CPU build, the default where Numba is installed) and
"torch" (the vectorised PyTorch build); they give the same lattice. Then the options for each stage (CSR
sparse product vs gather / index_add_) at 0.25 MP.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import describe
from skimage import data, transform

import lab

SIZES_MP = {0.0025: 50, 0.01: 100, 0.06: 250, 0.25: 500, 1.0: 1000, 4.0: 2000}
C = 21


def timeit(fn, repeat: int = 3) -> float:
    """Median wall time of fn() in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def photo(side: int) -> torch.Tensor:
    """The astronaut at side x side, (1, 3, H, W) float32 in 0..255."""
    img = transform.resize(data.astronaut(), (side, side), preserve_range=True, anti_aliasing=True)
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].contiguous()


def bench_sizes(sizes: list[float], exact_max_mp: float) -> None:
    from lab.lattice import numba_kernels

    builders = ["numba", "torch"] if numba_kernels.available() else ["torch"]
    print(f"\n## Build and filter (C={C}, float32, normalize='after', backend='torch')\n")
    cols = " | ".join(f"build ms ({b})" for b in builders)
    print(f"| kernel | MP | pixels | {cols} | filter ms | vertices/pixel | exact filter ms |")
    print("|---|---|---" + "|---" * len(builders) + "|---|---|---|")
    for kernel in ("bilateral d=5 (θα=80, θβ=13)", "spatial d=2 (θγ=3)"):
        for mp in sizes:
            side = SIZES_MP[mp]
            img = photo(side)
            if kernel.startswith("bilateral"):
                feats = lab.bilateral_features(img, 80.0, 13.0)
            else:
                feats = lab.spatial_features(img, theta_gamma=3.0)
            q = torch.rand(1, C, side, side).softmax(1)
            builds = [
                timeit(lambda f=feats, b=b: lab.PermutohedralLattice(f, backend="torch", builder=b), repeat=3)
                for b in builders
            ]
            lat = lab.PermutohedralLattice(feats, backend="torch")
            pts = lat.to_points(q).contiguous()
            filt = timeit(lambda lat=lat, pts=pts: lat.filter_points(pts), repeat=3)
            exact = "—"
            if mp <= exact_max_mp:
                t0 = time.perf_counter()
                lab.exact_gaussian_filter(q, feats)
                exact = f"{1e3 * (time.perf_counter() - t0):.0f}"
            print(
                f"| {kernel} | {mp} | {side * side} | {' | '.join(f'{1e3 * b:.0f}' for b in builds)} | "
                f"{1e3 * filt:.1f} | "
                f"{lat.num_vertices / lat.num_points:.3f} | {exact} |"
            )


def bench_options() -> None:
    """Each stage two ways at 0.25 MP, d=5 bilateral, C=21: what the lattice uses vs the alternative."""
    side = SIZES_MP[0.25]
    feats = lab.bilateral_features(photo(side), 80.0, 13.0)
    lat = lab.PermutohedralLattice(feats, backend="torch")
    s = lat.structure
    x = torch.rand(lat.num_points, C)
    z = torch.rand(lat.num_vertices, C)
    idx, w = s.vertex_index, s.barycentric
    flat_idx = idx.reshape(-1)

    def splat_index_add():
        out = torch.zeros(lat.num_vertices, C)
        return out.index_add_(0, flat_idx, (x[:, None, :] * w[..., None]).reshape(-1, C))

    def slice_gather():
        return (z[idx] * w[..., None]).sum(1)

    nb = []
    for b in s.blur_matrices:  # neighbour indices of each vertex along each axis, V = missing (zero row)
        coo = b.to_sparse_coo().coalesce()
        r, c = coo.indices()
        off = r != c
        nbr = torch.full((lat.num_vertices, 2), lat.num_vertices)
        lo = c[off] < r[off]
        nbr[r[off][lo], 0] = c[off][lo]
        nbr[r[off][~lo], 1] = c[off][~lo]
        nb.append(nbr)

    def blur_gather():
        y = z
        for nbr in nb:
            yp = torch.cat([y, y.new_zeros(1, C)])
            y = 0.5 * y + 0.25 * (yp[nbr[:, 0]] + yp[nbr[:, 1]])
        return y

    rows = [
        ("splat", "CSR sparse @ dense (used)", lambda: lat._splat(x)),
        ("splat", "index_add_ (atomics-free on CPU, not deterministic on GPU)", splat_index_add),
        ("blur (all d+1 axes)", "CSR sparse @ dense (used)", lambda: lat._blur(z, False)),
        ("blur (all d+1 axes)", "gather with a zero row", blur_gather),
        ("slice", "CSR sparse @ dense (used)", lambda: lat._slice(z)),
        ("slice", "gather (N, d+1, C) then sum", slice_gather),
    ]
    print(f"\n## Stage options at 0.25 MP, d=5, C={C} (V = {lat.num_vertices})\n")
    print("| stage | implementation | ms |")
    print("|---|---|---|")
    for stage, name, fn in rows:
        print(f"| {stage} | {name} | {1e3 * timeit(fn, repeat=5):.1f} |")
    torch.testing.assert_close(lat._splat(x), splat_index_add(), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(lat._slice(z), slice_gather(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lat._blur(z, False), blur_gather(), atol=1e-4, rtol=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only 0.06 and 0.25 MP")
    args = parser.parse_args()
    print(f"# Lattice benchmark, {time.strftime('%Y-%m-%d')}\n\n{describe()}")
    sizes = [0.0025, 0.01, 0.06, 0.25] if args.quick else [0.0025, 0.01, 0.06, 0.25, 1.0, 4.0]
    bench_sizes(sizes, exact_max_mp=0.01)
    bench_options()


if __name__ == "__main__":
    main()
