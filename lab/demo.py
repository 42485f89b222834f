"""A first look without the app: bilateral and spatial lattice filtering of a bundled photo, as a figure.

Run ``python -m lab.demo --out demo.png``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import lab


def main(argv: list[str] | None = None) -> int:
    """Filter scikit-image's astronaut with both dense-CRF kernels and save a figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo.png", help="where to write the figure (PNG)")
    parser.add_argument("--size", type=int, default=256, help="working size in pixels (square)")
    parser.add_argument("--theta-alpha", type=float, default=20.0, help="bilateral θα, pixels")
    parser.add_argument("--theta-beta", type=float, default=20.0, help="bilateral θβ, 0..255 units")
    parser.add_argument("--theta-gamma", type=float, default=3.0, help="spatial θγ, pixels")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage import data, transform

    photo = transform.resize(data.astronaut(), (args.size, args.size), preserve_range=True, anti_aliasing=True)
    image = torch.from_numpy(photo.astype(np.float32)).permute(2, 0, 1)[None]  # (1, 3, H, W), 0..255
    t0 = time.perf_counter()
    bil = lab.PermutohedralLattice(lab.bilateral_features(image, args.theta_alpha, args.theta_beta))
    spa = lab.PermutohedralLattice(lab.spatial_features(image, theta_gamma=args.theta_gamma))
    t1 = time.perf_counter()
    smooth_bil = bil.filter(image)
    smooth_spa = spa.filter(image)
    t2 = time.perf_counter()

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    panels = [
        (image, "input"),
        (smooth_bil, f"bilateral lattice (θα={args.theta_alpha:g}, θβ={args.theta_beta:g})"),
        (smooth_spa, f"spatial lattice (θγ={args.theta_gamma:g})"),
    ]
    for ax, (im, title) in zip(axes, panels, strict=True):
        ax.imshow(im[0].permute(1, 2, 0).clamp(0, 255).byte().numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(
        f"Permutohedral lattice: build {1e3 * (t1 - t0):.0f} ms, two filterings {1e3 * (t2 - t1):.0f} ms "
        f"({bil.num_vertices} + {spa.num_vertices} vertices for {args.size}² pixels)"
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
