"""Lattice accuracy: the permutohedral filter against the exact Gaussian filter, and mean field on top of it.

    python benchmarks/lattice_accuracy.py    # about a minute on 2 cores

Three tables, all float64, the exact side from ``lab.exact_gaussian_filter`` (O(N²)):

1. One filtering of a random 4-label softmax map with the bilateral and spatial kernels on 48×48 photo
   crops (every other pixel of a 96×96 region of scikit-image's astronaut and chelsea): the relative L2
   error ‖K̃v − Kv‖ / ‖Kv‖ for each normalisation, and for "after" / "symmetric" the error of the label
   differences (the per-pixel mean over labels removed), which is what decides a mean-field update.
2. Random unit-variance features, 600 points, d = 1..5, 4 channels of Gaussian noise: the same error.
3. Mean field, T = 5, lattice against exact message passing, 24×32 crops (the crops of
   ``tests/crf/test_mean_field.py``), L = 4: argmax agreement and mean |ΔQ|.
"""

from __future__ import annotations

import numpy as np
import torch
from machine import describe
from skimage import data

import lab
from lab.crf import CRFParams, mean_field

NORMALIZATIONS = ("none", "after", "symmetric")
PHOTOS = {"astronaut": (data.astronaut, 100, 150), "chelsea": (data.chelsea, 60, 120)}  # loader, top, left
KERNELS = [("bilateral", 80.0, 13.0), ("bilateral", 8.0, 13.0), ("bilateral", 20.0, 20.0), ("spatial", 3.0, None)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of a against b."""
    return float((a - b).norm() / b.norm())


def diff_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of the label differences (channel mean removed), channels in dim 1."""
    return rel(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True))


def crop(name: str, size: int = 48) -> torch.Tensor:
    """(1, 3, size, size) float64 in 0..255: every other pixel of a 2·size square of the photo."""
    loader, top, left = PHOTOS[name]
    img = loader()[top : top + 2 * size : 2, left : left + 2 * size : 2, :3].astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


def softmax_map(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(1, C, H, W) float64 random probabilities (softmax of 2·N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g, dtype=torch.float64).mul(2).softmax(1)


def filter_table() -> list[str]:
    """Table 1: one filtering on photo crops."""
    rows = [
        "| photo | kernel | vertices/point | none | after | symmetric | after, label diff | symmetric, label diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in PHOTOS:
        img = crop(name)
        _, _, h, w = img.shape
        q = softmax_map(4, h, w)
        for kind, a, b in KERNELS:
            if kind == "bilateral":
                f = lab.bilateral_features(img, a, b, dtype=torch.float64)
                label = f"bilateral θα={a:g} θβ={b:g}"
            else:
                f = lab.spatial_features(1, h, w, a, dtype=torch.float64)
                label = f"spatial θγ={a:g}"
            lattice = lab.PermutohedralLattice(f)
            err, dif = {}, {}
            for normalize in NORMALIZATIONS:
                got = lattice.filter(q, normalize)
                want = lab.exact_gaussian_filter(q, f, normalize)
                err[normalize], dif[normalize] = rel(got, want), diff_rel(got, want)
            rows.append(
                f"| {name} | {label} | {lattice.num_vertices / (h * w):.3f} | {err['none']:.3f} | "
                f"{err['after']:.3f} | {err['symmetric']:.3f} | {dif['after']:.3f} | {dif['symmetric']:.3f} |"
            )
    return rows


def random_table() -> list[str]:
    """Table 2: random features."""
    rows = ["| d | none | after | symmetric |", "|---:|---:|---:|---:|"]
    for d in range(1, 6):
        g = torch.Generator().manual_seed(d)
        f = torch.randn(600, d, generator=g, dtype=torch.float64)
        v = torch.randn(600, 4, generator=g, dtype=torch.float64)
        errs = [rel(lab.gaussian_filter(v, f, n), lab.exact_gaussian_filter(v, f, n)) for n in NORMALIZATIONS]
        rows.append(f"| {d} | " + " | ".join(f"{e:.3f}" for e in errs) + " |")
    return rows


def mean_field_table() -> list[str]:
    """Table 3: mean field, lattice vs exact."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from inputs import image_tensor, photo, synthetic_unary

    crops = {"chelsea": (slice(100, 124), slice(150, 182)), "astronaut": (slice(60, 84), slice(200, 232))}
    rows = [
        "| crop | normalize | w (bilateral, spatial) | argmax agreement | mean abs ΔQ |",
        "|---|---|---|---:|---:|",
    ]
    for name, (r, c) in crops.items():
        img = photo(name, r, c)
        h, w = img.shape[:2]
        unary = synthetic_unary(4, h, w, seed=5, dtype=torch.float64)
        image = image_tensor(img)
        for normalize in ("symmetric", "after"):
            for wb, ws in ((5.0, 3.0), (10.0, 3.0)):
                p = CRFParams(
                    theta_alpha=8.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=wb, w_spatial=ws, normalize=normalize
                )
                exact = mean_field(unary, image, p, 5, message_passing="exact").q
                approx = mean_field(unary, image, p, 5, message_passing="lattice").q
                agreement = (exact.argmax(1) == approx.argmax(1)).double().mean().item()
                rows.append(
                    f"| {name} {h}×{w} | {normalize} | {wb:g}, {ws:g} | {agreement:.3f} | "
                    f"{(exact - approx).abs().mean().item():.4f} |"
                )
    return rows


def main() -> None:
    """Print the three tables with the machine line."""
    print(describe(f"lab {getattr(lab, '__version__', '?')}"))
    print("\nOne filtering, 48×48 photo crops, 4-label softmax map, relative L2 error against the exact filter\n")
    print("\n".join(filter_table()))
    print("\nRandom unit-variance features, 600 points, 4 channels, relative L2 error\n")
    print("\n".join(random_table()))
    print("\nMean field T = 5, lattice vs exact message passing, θα=8 θβ=13 θγ=3, L = 4\n")
    print("\n".join(mean_field_table()))


if __name__ == "__main__":
    main()
