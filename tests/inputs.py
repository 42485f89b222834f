"""Inputs shared by the tests: scikit-image photo crops, a synthetic photo, smooth synthetic unaries.

Imported by module name, ``from inputs import photo`` (tests/ holds no packages; pytest puts this folder,
where the root ``conftest.py`` lives, on sys.path).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import data

PHOTOS = {
    # name: (loader, rows, cols) crops with edges and texture, small enough for a fast suite
    "astronaut": (data.astronaut, slice(40, 136), slice(160, 288)),
    "chelsea": (data.chelsea, slice(60, 156), slice(120, 248)),
}


def photo(name: str, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
    """(H, W, 3) uint8 C-contiguous crop of a scikit-image photo."""
    loader, r, c = PHOTOS[name]
    img = loader()[rows or r, cols or c]
    return np.ascontiguousarray(img[..., :3])


def synthetic_photo(h: int = 24, w: int = 30, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a yellow right half and a red block on black, with ±10 noise (two clear edges)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2 :] = (210, 200, 40)
    img[h // 4 : 3 * h // 4, w // 5 : w // 2] = (200, 30, 30)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def image_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) uint8."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def synthetic_unary(num_labels: int, height: int, width: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(1, L, H, W) log-probabilities: smooth random regions (bilinear from a coarse grid) plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_labels, height // 16 + 2, width // 16 + 2, generator=g, dtype=torch.float64) * 2
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noisy = smooth + 0.7 * torch.randn(1, num_labels, height, width, generator=g, dtype=torch.float64)
    return torch.log_softmax(noisy, 1).to(dtype)


def small_problem(height: int = 10, width: int = 12, num_labels: int = 3, seed: int = 1):
    """(unary (1, L, H, W) float64, image (1, 3, H, W) uint8): a crop of chelsea."""
    img = photo("chelsea", slice(100, 100 + height), slice(150, 150 + width))
    return synthetic_unary(num_labels, height, width, seed=seed, dtype=torch.float64), image_tensor(img)


def cli_main(capsys, *argv):
    """``crf-lab`` (``lab.cli.main(argv)``) in this process: (exit code, stderr)."""
    from lab.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse and usage errors
        rc = exc.code
    return rc, capsys.readouterr().err
