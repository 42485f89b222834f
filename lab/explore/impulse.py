"""The approximation made visible: one bright pixel filtered by the exact, window and lattice Gaussians.

Filtering a unit impulse at pixel i gives the kernel's column k(f_j, f_i) for every pixel j: what pixel i
sends to each other pixel in one message-passing step. :func:`impulse_responses` computes it with the three
filters the CRF can use, unnormalised (``normalize="none"``, so the numbers are the Gaussian sums
themselves): the exact Gaussian exp(−½ |f_j − f_i|²), the k × k window (the same, cut off outside the
window) and the permutohedral lattice (splat, blur, slice; divided by its kernel scale, see
``docs/lattice.md``). :func:`impulse_figure` draws them side by side on one colour scale, with the
differences from the exact one and a cross-section through the pixel's row.
"""

from __future__ import annotations

import numpy as np
import torch

from lab._checks import check_choice
from lab.crf.kernels import CRFKernels
from lab.crf.params import CRFParams
from lab.explore.inspector import check_image_pixel

__all__ = ["FILTERS", "KERNELS", "impulse_figure", "impulse_responses"]

FILTERS = ("exact", "window", "lattice")
KERNELS = ("bilateral", "spatial")


def impulse_responses(
    image: torch.Tensor, params: CRFParams, y: int, x: int, kernel: str = "bilateral"
) -> dict[str, np.ndarray]:
    """Each filter's response to a unit impulse at pixel (y, x) of a photo, unnormalised.

    The exact filter is evaluated as the kernel's column directly (O(N), not the O(N²) oracle); the window
    and lattice responses are those filters' own outputs.

    Args:
        image: (1, 3, H, W) RGB guide, 0..255.
        params: θα, θβ (bilateral), θγ (spatial) and ``window_size`` for the window filter.
        y: the pixel's row.
        x: the pixel's column.
        kernel: "bilateral" or "spatial".

    Returns:
        {"exact", "window", "lattice"} → (H, W) float64 responses (the exact one is 1 at the pixel).
    """
    check_choice(kernel, "kernel", KERNELS)
    height, width = check_image_pixel(image, y, x)
    m = KERNELS.index(kernel)
    impulse = torch.zeros(height * width, 1, dtype=torch.float64)
    impulse[y * width + x] = 1.0
    out = {}
    for name in ("window", "lattice"):
        kernels = CRFKernels(image, params, message_passing=name, dtype=torch.float64)
        response = kernels.filters[m].filter_points(impulse, "none")
        out[name] = response.reshape(height, width).numpy()
        if name == "window":
            features = kernels.filters[m].features[0].detach()  # (d, H, W), divided by the bandwidths
            d2 = (features - features[:, y : y + 1, x : x + 1]).square().sum(0)
            out["exact"] = torch.exp(-0.5 * d2).numpy()
    return {name: out[name] for name in FILTERS}


def impulse_figure(responses: dict[str, np.ndarray], y: int, x: int, kernel: str = "bilateral"):
    """The three responses on one colour scale, their differences from the exact one, and row ``y``'s profile.

    Args:
        responses: from :func:`impulse_responses`.
        y: the impulse's row.
        x: the impulse's column.
        kernel: the kernel's name, for the title.

    Returns:
        A matplotlib Figure (2 × 3 panels).
    """
    from matplotlib.figure import Figure

    missing = [name for name in FILTERS if name not in responses]
    if missing:
        raise ValueError(f"responses: expected the keys {list(FILTERS)}, missing {missing}")
    exact = responses["exact"]
    high = max(float(r.max()) for r in responses.values())
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    axes = fig.subplots(2, 3)
    for ax, name in zip(axes[0], FILTERS, strict=True):
        im = ax.imshow(responses[name], cmap="viridis", vmin=0, vmax=high, interpolation="nearest")
        ax.plot([x], [y], marker="+", color="red", markersize=10)
        ax.set_title(f"{name}: Σ = {responses[name].sum():.1f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0, 2], shrink=0.8, label="k(f_j, f_i), unnormalised")
    diffs = {name: responses[name] - exact for name in ("window", "lattice")}
    spread = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0
    for ax, (name, diff) in zip(axes[1][:2], diffs.items(), strict=True):
        im = ax.imshow(diff, cmap="RdBu_r", vmin=-spread, vmax=spread, interpolation="nearest")
        ax.set_title(f"{name} − exact: max |Δ| = {np.abs(diff).max():.3f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1, 1], shrink=0.8, label="difference")
    profile = axes[1][2]
    for name, style in zip(FILTERS, ("-", "--", ":"), strict=True):
        profile.plot(responses[name][y], style, label=name)
    profile.axvline(x, color="red", alpha=0.4)
    profile.set_xlabel("column j (row of the impulse)")
    profile.set_title("cross-section through the pixel", fontsize=10)
    profile.legend(fontsize=8)
    fig.suptitle(f"One bright pixel at (x={x}, y={y}) through the {kernel} kernel: exact, window, lattice")
    return fig
