"""docs/volume_example.png: nibabel's MRI test volume, its block-cluster unary, the 3-D CRF and a 2-D one per slice.

Run: ``.venv/bin/python scripts/volume_example.py`` (needs nibabel, the volumes extra). Prints the label
changes between neighbouring voxels through-plane and in-plane for both CRFs (notebook 05 explains them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import lab
from lab.data.volumes import load_volume
from lab.unary.volumes import intensity_clusters
from lab.viz import orthogonal_slices

OUT = Path(__file__).resolve().parents[1] / "docs" / "volume_example.png"


def main() -> None:
    """Compute the three label volumes, print their label changes, write the figure."""
    import nibabel

    vol = load_volume(os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii"))
    unary, blocky = intensity_clusters(vol.data, n_labels=3, block=4, confidence=0.6)
    lo, hi = np.percentile(vol.data, [1, 99])
    theta = {"theta_alpha": 10.0, "theta_beta": 0.1 * (hi - lo), "theta_gamma": 3.0}
    guide = torch.from_numpy(vol.data)[None]
    crf3 = lab.mean_field(unary, guide, lab.CRFParams(**theta, spacing=vol.spacing)).q[0].argmax(0).numpy()
    per_slice = lab.CRFParams(**theta, spacing=vol.spacing[:2])
    crf2 = np.stack(
        [
            lab.mean_field(unary[..., k].contiguous(), guide[..., k].contiguous(), per_slice).q[0].argmax(0).numpy()
            for k in range(guide.shape[-1])
        ],
        -1,
    )
    rows = []
    for name, labels in (("unary: block clusters", blocky), ("3-D CRF", crf3), ("2-D CRF, slice by slice", crf2)):
        through = (labels[..., 1:] != labels[..., :-1]).mean()
        in_plane = ((labels[1:] != labels[:-1]).mean() + (labels[:, 1:] != labels[:, :-1]).mean()) / 2
        print(f"{name:26s} through-plane {through:6.1%}  in-plane {in_plane:6.1%}")
        page = orthogonal_slices(vol.data, labels, spacing=vol.spacing, min_height=160)
        title = np.full((18, page.shape[1], 3), 255, np.uint8)
        canvas = Image.fromarray(title)
        ImageDraw.Draw(canvas).text((2, 3), name, fill=(0, 0, 0))
        rows.append(np.concatenate([np.asarray(canvas), page]))
    Image.fromarray(np.concatenate(rows)).save(OUT, optimize=True)
    print(f"wrote {OUT.relative_to(OUT.parents[1])}")


if __name__ == "__main__":
    main()
