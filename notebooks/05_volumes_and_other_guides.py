# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Beyond photos: volumes, grayscale guides, point clouds
#
# Nothing in mean field (notebook 01) or the lattice (notebook 02) needs a photo. The bilateral kernel is a
# Gaussian over **features**: for a photo $(x/\theta_\alpha, y/\theta_\alpha, r/\theta_\beta, g/\theta_\beta,
# b/\theta_\beta)$, d = 5. For a volume of C channels the positions gain an axis and the colours become the
# channels:
#
# $$\mathbf f_i = \Big(\tfrac{x_i s_x}{\theta_{\alpha,x}}, \tfrac{y_i s_y}{\theta_{\alpha,y}}, \tfrac{z_i s_z}{\theta_{\alpha,z}},
# \tfrac{I_{i,1}}{\theta_{\beta,1}}, \dots, \tfrac{I_{i,C}}{\theta_{\beta,C}}\Big), \qquad d = 3 + C,$$
#
# where $s$ is the voxel spacing (so θα is in millimetres, however anisotropic the voxels) and θβ is in the
# guide's own units. The spatial kernel is over positions only (d = 3). This notebook runs the CRF on a real
# MRI volume, shows what a 3-D CRF does that a slice-by-slice one cannot, checks an identity about units, and
# filters a point cloud.

# %%
import os
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

import lab
from lab.data.volumes import load_volume
from lab.unary.volumes import intensity_clusters
from lab.viz import orthogonal_slices

try:
    import nibabel

    MRI = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
except ImportError:  # the volumes extra (nibabel) is missing: the same steps on a synthetic volume
    nibabel, MRI = None, None
print("nibabel:", nibabel.__version__ if nibabel else "not installed (pip install 'crf-rnn-lab[volumes]')")

# %% [markdown]
# ## A real volume
#
# nibabel's wheel ships a small structural MRI, `anatomical.nii`: 33 × 41 × 25 voxels of 2 mm, int16, in
# arbitrary scanner units. `load_volume` returns the guide as (C, *spatial) float32 with the spacing from the
# header. (Without nibabel the notebook uses a synthetic volume of the same size instead.)

# %%
if MRI:
    vol = load_volume(MRI)
    guide_np, spacing = vol.data, vol.spacing
else:
    rng = np.random.default_rng(0)
    i, j, k = np.meshgrid(*(np.arange(s) for s in (33, 41, 25)), indexing="ij")
    r = np.sqrt(((i - 16) / 14) ** 2 + ((j - 20) / 18) ** 2 + ((k - 12) / 11) ** 2)
    guide_np = (np.where(r < 0.6, 12000, np.where(r < 1, 8000, 1000)) + rng.normal(0, 800, r.shape))[None]
    guide_np, spacing = guide_np.astype(np.float32), (2.0, 2.0, 2.0)
lo, hi = np.percentile(guide_np, [1, 99])
print("shape (C, X, Y, Z):", guide_np.shape, " spacing (mm):", spacing)
print(f"intensities: 1 % {lo:.0f}, median {np.median(guide_np):.0f}, 99 % {hi:.0f} (arbitrary units)")
plt.figure(figsize=(9, 3))
plt.imshow(orthogonal_slices(guide_np, spacing=spacing, min_height=200))
plt.title("the three planes through the centre (axes as stored: normal to x, to y, to z)")
plt.axis("off");

# %% [markdown]
# ## A unary, and the CRF in 3-D
#
# The unary here is deliberately crude: k-means on 4 × 4 × 4-voxel block averages into three intensity
# classes (dark: outside and fluid, middle, bright), each voxel given its block's class with probability 0.6.
# Its edges are the blocks' edges; mean field should move them onto the anatomy's.
#
# θβ is in the guide's units. These intensities span about 11 500 units, so θβ = 13 (the photo default, in
# 0..255) would make every voxel its own colour. A tenth of the 1–99 % range is the default `crf-lab refine
# --volume` uses; θα = 10 mm and θγ = 3 mm are physical, so they mean the same for any voxel size.

# %%
L = 3
unary, blocky = intensity_clusters(guide_np, n_labels=L, block=4, confidence=0.6)
theta_beta = 0.1 * (hi - lo)
params = lab.CRFParams(theta_alpha=10.0, theta_beta=theta_beta, theta_gamma=3.0, spacing=spacing)
guide = torch.from_numpy(guide_np)[None]  # (1, C, X, Y, Z)
q3 = lab.mean_field(unary, guide, params, iterations=5).q[0]  # (L, X, Y, Z)
crf3 = q3.argmax(0).numpy()
print(f"θβ = {theta_beta:.0f}; unary {tuple(unary.shape)}, Q {tuple(q3.shape)}")
print(f"voxels the CRF relabelled: {(crf3 != blocky).mean():.1%}")
fig, axes = plt.subplots(2, 1, figsize=(9, 6))
views = ((blocky, "unary (block clusters)"), (crf3, "after 5 mean-field iterations, 3-D"))
for ax, (labels, title) in zip(axes, views):
    ax.imshow(orthogonal_slices(guide_np, labels, spacing=spacing, min_height=200))
    ax.set_title(title)
    ax.axis("off")

# %% [markdown]
# ## What 3-D adds: slices that agree with each other
#
# A common shortcut is to run a 2-D CRF on each slice. Each slice then ignores its neighbours, so labels can
# jump from one slice to the next. Below, the same CRF (same θ in mm, same weights) runs slice by slice along
# z, and we count label changes between neighbouring voxels: **through-plane** (along z) and **in-plane**
# (along x and y). The voxels are isotropic (2 mm), so a CRF that treats space alike should give about as many
# changes along z as across.

# %%
params2 = lab.CRFParams(theta_alpha=10.0, theta_beta=theta_beta, theta_gamma=3.0, spacing=spacing[:2])
crf2 = np.zeros_like(crf3)
for k in range(guide.shape[-1]):
    qk = lab.mean_field(unary[..., k].contiguous(), guide[..., k].contiguous(), params2, iterations=5).q[0]
    crf2[..., k] = qk.argmax(0).numpy()


def changes(labels):
    through = (labels[..., 1:] != labels[..., :-1]).mean()
    in_plane = ((labels[1:] != labels[:-1]).mean() + (labels[:, 1:] != labels[:, :-1]).mean()) / 2
    return through, in_plane


rows = {"3-D CRF": changes(crf3), "2-D CRF, slice by slice": changes(crf2)}
print(f"{'':26s} through-plane  in-plane  ratio")
for name, (t, p) in rows.items():
    print(f"{name:26s} {t:12.1%}  {p:8.1%}  {t / p:5.2f}")
print(f"the two agree on {(crf3 == crf2).mean():.1%} of voxels")

# %% [markdown]
# The slice-by-slice CRF changes label along z noticeably more often than within a slice: its labels
# jump between slices, an artefact of processing, not of the anatomy. The 3-D CRF's ratio is near 1, as the
# isotropic voxels warrant. (These are counts on one small volume with a crude unary; they show the
# mechanism, not an accuracy: there is no ground truth here.)
#
# Five slices along z, 3-D above, slice by slice below. The counts above are the measure; the picture shows
# where the two runs part: follow one region's outline from slice to slice in each row.

# %%
ks = range(8, 17, 2)
fig, axes = plt.subplots(2, len(ks), figsize=(11, 4.6))
for col, k in enumerate(ks):
    for row, labels in enumerate((crf3, crf2)):
        axes[row, col].imshow(lab.viz.colorize(labels[:, :, k].T), origin="lower", interpolation="nearest")
        axes[row, col].set_title(f"z = {k}" if row == 0 else "")
        axes[row, col].axis("off")
axes[0, 0].text(-4, 20, "3-D", rotation=90, va="center")
axes[1, 0].text(-4, 20, "2-D", rotation=90, va="center")
plt.tight_layout()

# %% [markdown]
# ## Units: θβ belongs to the guide
#
# The features divide intensities by θβ, so rescaling the intensities by any factor and θβ by the same
# factor leaves every feature, hence every message and Q, unchanged. MRI intensities have no fixed scale
# (they change between scanners), which is why θβ must be chosen relative to the data's spread, never copied
# from photos. An identity to check:

# %%
scaled = lab.CRFParams(theta_alpha=10.0, theta_beta=theta_beta * 100, theta_gamma=3.0, spacing=spacing)
q_scaled = lab.mean_field(unary, guide * 100, scaled, iterations=5).q[0]
gap = (q_scaled - q3).abs().max().item()
print(f"max |ΔQ| after scaling intensities and θβ by 100: {gap:.1e}")
assert gap < 1e-4

# %% [markdown]
# ## The same on the command line
#
# `crf-lab refine --volume` does all of the above for NIfTI and `.npy` files: the label volume comes back as
# NIfTI in the input's space (affine, voxel size), with Q as `.npy` and the orthogonal slices as a PNG.

# %%
if MRI:
    out = tempfile.mkdtemp()
    run = subprocess.run(
        [sys.executable, "-m", "lab", "refine", MRI, "--volume", "--labels", "3", "--overlay", "--out", out],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    print(run.stderr)
    seg = nibabel.load(os.path.join(out, "anatomical_labels.nii"))
    print("written:", sorted(os.listdir(out)), seg.shape, seg.header.get_zooms())
    assert np.allclose(seg.affine, nibabel.load(MRI).affine)

# %% [markdown]
# ## Point clouds: no grid at all
#
# `lab.gaussian_filter` takes any (N, d) features. Here 3 000 points on two interleaved spirals in 3-D, each
# labelled by its spiral with 30 % of the labels flipped. Filtering the one-hot labels with a Gaussian of
# 0.3 units in space averages each point's label over its neighbours along its own spiral; the lattice's
# result is compared with the exact O(N²) filter.

# %%
rng = np.random.default_rng(0)
n = 1500
t = rng.uniform(0, 4 * np.pi, n)
spirals = [np.stack([np.cos(t + s), np.sin(t + s), t / 4], 1) for s in (0.0, np.pi)]
xyz = torch.tensor(np.concatenate(spirals) + rng.normal(0, 0.05, (2 * n, 3)), dtype=torch.float32)
truth = torch.cat([torch.zeros(n), torch.ones(n)]).long()
noisy = torch.where(torch.rand(2 * n, generator=torch.Generator().manual_seed(0)) < 0.3, 1 - truth, truth)
onehot = torch.nn.functional.one_hot(noisy, 2).float()
features = xyz / 0.3
smoothed = lab.gaussian_filter(onehot, features)
exact = lab.exact_gaussian_filter(onehot, features)
rel = ((smoothed - exact).norm() / exact.norm()).item()
right = {name: (x == truth).float().mean().item() for name, x in
         (("noisy", noisy), ("lattice", smoothed.argmax(1)), ("exact", exact.argmax(1)))}  # fmt: skip
print(f"labels right: noisy {right['noisy']:.1%}, after filtering {right['lattice']:.1%} "
      f"(exact filter {right['exact']:.1%}); lattice vs exact: {rel:.1%} relative L2")  # fmt: skip
ax = plt.figure(figsize=(8, 4)).add_subplot(1, 2, 1, projection="3d")
ax.scatter(*xyz.T, c=noisy, s=2, cmap="coolwarm")
ax.set_title("noisy labels")
ax = plt.gcf().add_subplot(1, 2, 2, projection="3d")
ax.scatter(*xyz.T, c=smoothed.argmax(1), s=2, cmap="coolwarm")
ax.set_title("after one Gaussian filtering");

# %% [markdown]
# ## Summary
#
# * Guides are (B, C, *spatial) with 1–3 spatial axes and any C; θα, θγ per axis and θβ per channel;
#   `spacing` puts positions in physical units. `docs/crf.md` ("Volumes and other guides") has the conventions
#   per modality (CT in Hounsfield units, MRI normalised first).
# * A 3-D CRF couples neighbouring slices; slice by slice it cannot, and its labels jump along z.
# * θβ is in the guide's units: scale one and you must scale the other (the identity above).
# * Point clouds need no grid: the lattice filters any (N, d) features in O(N).
