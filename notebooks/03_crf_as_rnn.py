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
# # 03 · CRF as RNN: unrolled, differentiated, trained
#
# Notebook 01 ran mean field as a fixed procedure with hand-set parameters. The point of CRF-RNN (Zheng et
# al., ICCV 2015) is that every step of an iteration is **differentiable**, so the whole inference can be a
# layer of the network and its parameters (the kernel weights $w$ and the compatibility $\mu$) can be
# **learned** by back-propagation, together with the CNN below it.
#
# **Contents** 1. one iteration as an RNN cell · 2. gradients flow to the unaries · 3. the synthetic data
# and a coarse unary · 4. training the CRF-RNN · 5. the learned compatibility matrix (the paper's Fig. 5)
# · 6. T in training vs T at test · 7. gradients reach the CNN

# %% [markdown]
# ## 1. One iteration as an RNN cell
#
# Write one mean-field iteration (steps 1–5 of Algorithm 1) as a function $f_\theta$. Then
#
# $$Q_0 = \mathrm{softmax}(U), \qquad Q_{t} = f_\theta(U, I, Q_{t-1}), \quad t = 1..T,$$
#
# is a **recurrent network**: the hidden state is $Q_t$, the inputs $U$ (the CNN's scores) and $I$ (the
# image) enter at every step, and the parameters $\theta = (w^{(1)}, w^{(2)}, \mu)$ are **shared** by all
# steps. Unrolled:
#
# ```
#  U ─► softmax ─► Q0 ─► [ f_θ ] ─► Q1 ─► [ f_θ ] ─► Q2 ─► … ─► [ f_θ ] ─► Q_T ─► cross-entropy(labels)
#  U, I ─────────────────┴─────────────────┴────────────────────┘
# ```
#
# Back-propagation through time needs the derivative of each step: softmax (steps 0 and 5), sums (2, 4),
# a matrix product (3), and the Gaussian filter (1). The filter is **linear** in $Q$,
# $\tilde Q = K Q$, so its backward is $K^\top$ applied to the incoming gradient: for the lattice,
# splat → blur → slice run again with the blur axes in reverse order. No new machinery, same cost as the
# forward pass. The bandwidths θα, θβ, θγ stay fixed (the paper does not learn them either).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from lab.crf import CRFRNN, CRFParams, mean_field
from lab.data import CLASS_NAMES, SyntheticShapes, sample_images
from lab.explore import fit_image, to_tensor
from lab.models import FCN
from lab.train.metrics import confusion_matrix, mean_iou
from lab.unary import coarse_colour_clusters, unary_from_coarse_labels
from lab.viz import PALETTE, colorize

torch.set_num_threads(1)  # shared machine: one thread
torch.manual_seed(0)
plt.rcParams.update({"figure.dpi": 80, "image.interpolation": "nearest"})

# %% [markdown]
# **The backward pass is exact.** `torch.autograd.gradcheck` compares the analytic gradient with finite
# differences (in float64) for the unary, the weights and µ, through two iterations on a tiny image:

# %%
g = torch.Generator().manual_seed(0)
tiny_image = torch.rand(1, 3, 6, 7, generator=g, dtype=torch.float64) * 255
tiny_unary = torch.randn(1, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
w_bil = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
w_spa = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
mu = (1 - torch.eye(3, dtype=torch.float64)).requires_grad_()


def tiny_crf(unary, w_bilateral, w_spatial, compat):
    params = CRFParams(theta_alpha=3.0, theta_beta=30.0, theta_gamma=1.0, w_bilateral=w_bilateral,
                       w_spatial=w_spatial, compat=compat)
    return mean_field(unary, tiny_image, params, iterations=2, keep=None).q


assert torch.autograd.gradcheck(tiny_crf, (tiny_unary, w_bil, w_spa, mu))
print("gradcheck passed: ∂Q_T/∂U, ∂Q_T/∂w and ∂Q_T/∂µ match finite differences")

# %% [markdown]
# ## 2. Gradients flow to the unaries — further with every iteration
#
# Take a photo and a unary, and ask: *if I want pixel i to be labelled differently after T iterations,
# which unaries should change?* That is $\partial \mathcal{L} / \partial U$ for a loss at one pixel. Without
# the CRF ($T = 0$) only pixel $i$'s own unary matters. Each iteration passes messages along the kernels,
# so the gradient spreads along the image's colour regions, one "hop" per iteration.

# %%
photo = fit_image(sample_images(["astronaut"])["astronaut"], 64)
image = to_tensor(photo)
unary, _ = coarse_colour_clusters(photo, n_labels=3, block=8, confidence=0.5)
params = CRFParams(theta_alpha=16.0, theta_beta=20.0, theta_gamma=3.0, w_bilateral=5.0, w_spatial=3.0)
py, px = 14, 30  # a pixel on the face
target = 1  # a label the face pixel does not have (the suit's): a large loss, a large gradient

fig, axes = plt.subplots(1, 5, figsize=(15, 3.4), constrained_layout=True)
axes[0].imshow(photo)
axes[0].plot(px, py, "c+", ms=14, mew=2)
axes[0].set_title(f"loss = −log Q_T(label {target}) at the +")
for ax, T in zip(axes[1:], (0, 1, 3, 10)):
    u = unary.clone().requires_grad_()
    q = mean_field(u, image, params, iterations=T, keep=None).q
    (-torch.log(q[0, target, py, px])).backward()
    grad = u.grad[0].abs().sum(0)  # Σ_l |∂L/∂U_l| per pixel
    im = ax.imshow(np.log10(grad.numpy() / float(grad.max()) + 1e-12), cmap="inferno", vmin=-5, vmax=0)
    ax.plot(px, py, "c+", ms=14, mew=2)
    ax.set_title(f"T = {T}" + (": pixel i only" if T == 0 else "") + f" (max {float(grad.max()):.2g})", fontsize=10)
fig.colorbar(im, ax=axes[1:].tolist(), shrink=0.85)
for ax in axes:
    ax.axis("off")
fig.suptitle("Where the gradient of one pixel's loss lands in U: log10 of Σ_l |∂L/∂U_l| relative to its maximum")
plt.show()

# %% [markdown]
# At $T = 0$ the gradient is a single pixel; after one iteration it covers the pixels that are close *and*
# alike (the bilateral kernel) plus a small blob (the spatial kernel); after ten it has spread over the
# whole face and beyond (each panel is scaled to its own maximum, written in its title).
# In training, this is how the CRF tells the CNN: "your score at *these* pixels caused the mistake over
# *there*".
#
# ## 3. Data: synthetic shapes, and a coarse unary
#
# `lab.data.SyntheticShapes` renders images of shapes (disc, square, triangle, ring, cross) on cluttered,
# textured backgrounds, with exact labels. The class of an object is its **shape**, not its colour.

# %%
t0 = time.perf_counter()
train = SyntheticShapes("train", size=256, image_size=48, seed=0)
val = SyntheticShapes("val", size=64, image_size=48, seed=0)
x_train, y_train = train.tensors()  # (B, 3, H, W) float 0..255, (B, H, W) int64
x_val, y_val = val.tensors()
L = train.num_classes
print(f"{len(train)} training + {len(val)} validation images of 48 × 48, {L} classes, "
      f"rendered in {time.perf_counter() - t0:.1f} s")


# %% [markdown]
# The CRF-RNN sits on top of a CNN's scores. Training our stride-8 FCN (`lab.models.FCN`) from scratch
# takes minutes on a CPU (`python -m lab.train` does it), too long for a notebook; so here the unary is a
# **stand-in with the same defect**: the truth seen at 1/8 resolution (average-pooled 8×8, as a stride-8
# network sees it), upsampled bilinearly, with its confidence capped at 80 %. The blobs are right, the
# boundaries are blurred and misplaced: exactly what a dense CRF exists to fix. The three lines below are
# data preparation, not part of the CRF.

# %%
def coarse_unary(labels):
    """The stride-8 stand-in unary of lab.unary (see its docstring)."""
    return unary_from_coarse_labels(labels, L, stride=8, confidence=0.8)


u_train, u_val = coarse_unary(y_train), coarse_unary(y_val)


def miou(logits, labels):
    """Mean IoU (0..1) of the arg-max of (B, L, H, W) scores."""
    return mean_iou(confusion_matrix(logits.argmax(1), labels, L))


fig, axes = plt.subplots(3, 6, figsize=(13, 6.8), constrained_layout=True)
for col in range(6):
    axes[0, col].imshow(train.scenes[col].image)
    axes[1, col].imshow(colorize(y_train[col]))
    axes[2, col].imshow(colorize(u_train[col].argmax(0)))
for row, name in enumerate(("image", "truth", "coarse unary (arg-max)")):
    axes[row, 0].set_ylabel(name)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[l] / 255) for l in range(L)]
fig.legend(handles, CLASS_NAMES, loc="lower center", ncol=L, bbox_to_anchor=(0.5, -0.05))
fig.suptitle(f"Synthetic shapes; the stand-in unary has validation mIoU {miou(u_val, y_val):.3f}")
plt.show()

# %% [markdown]
# ## 4. Training the CRF-RNN
#
# `lab.crf.CRFRNN` is the layer: $T$ mean-field iterations with `w_bilateral`, `w_spatial` and `compat` as
# `nn.Parameter`s (µ starts as Potts and may become any (L, L) matrix, even asymmetric). Its output is the
# final score $U - \hat Q$, fed to a per-pixel cross-entropy. The bandwidths are set by hand for 48-pixel
# images. We train with T = 5 (as the paper) for two epochs; the CNN is not trained here (see section 7).

# %%
crf_params = CRFParams(theta_alpha=10.0, theta_beta=20.0, theta_gamma=3.0, w_bilateral=3.0, w_spatial=1.0)


def train_crf(iterations, epochs=2, batch_size=16, lr=0.1):
    """Train a fresh CRF-RNN on the fixed unaries; returns it and its loss per step."""
    torch.manual_seed(0)
    crf = CRFRNN(L, iterations=iterations, params=crf_params)
    opt = torch.optim.Adam(crf.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        for idx in torch.randperm(len(train)).split(batch_size):
            loss = F.cross_entropy(crf(u_train[idx], x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return crf, losses


with torch.no_grad():
    potts_scores = CRFRNN(L, iterations=5, params=crf_params)(u_val, x_val)
t0 = time.perf_counter()
crf5, losses5 = train_crf(iterations=5)
print(f"trained in {time.perf_counter() - t0:.0f} s")
with torch.no_grad():
    crf5_scores = crf5(u_val, x_val)
results = {"coarse unary": miou(u_val, y_val), "+ CRF, hand-set Potts": miou(potts_scores, y_val),
           "+ CRF-RNN, trained": miou(crf5_scores, y_val)}

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), constrained_layout=True)
axes[0].plot(losses5, color="tab:blue")
axes[0].set_xlabel("step (batch of 16)")
axes[0].set_ylabel("cross-entropy")
axes[0].set_title("Training loss of the CRF-RNN (T = 5)")
axes[0].grid(alpha=0.3)
bars = axes[1].barh(list(results), list(results.values()), color=["0.6", "tab:orange", "tab:green"])
axes[1].bar_label(bars, fmt="%.3f")
axes[1].set_xlim(0, 1)
axes[1].invert_yaxis()
axes[1].set_xlabel("validation mIoU")
axes[1].set_title("Validation mIoU (64 images)")
plt.show()

# %% [markdown]
# The hand-set Potts CRF can even *hurt*: with one weight for every pair of classes it also smooths away
# small objects and thin ring borders. Trained, the same layer learns how much to trust the image's edges
# and which label pairs to penalise, and the mIoU jumps. Here is what that looks like:

# %%
fig, axes = plt.subplots(4, 5, figsize=(11, 9), constrained_layout=True)
titles = ("image", "truth", "coarse unary", "CRF, Potts", "CRF-RNN, trained")
for row in range(4):
    i = row + 4
    maps = [val.scenes[i].image, colorize(y_val[i]), colorize(u_val[i].argmax(0)),
            colorize(potts_scores[i].argmax(0)), colorize(crf5_scores[i].argmax(0))]
    for col, m in enumerate(maps):
        axes[row, col].imshow(m)
        axes[row, col].set_xticks([])
        axes[row, col].set_yticks([])
        if row == 0:
            axes[row, col].set_title(titles[col])
fig.legend(handles, CLASS_NAMES, loc="lower center", ncol=L, bbox_to_anchor=(0.5, -0.03))
fig.suptitle("Validation images: the trained CRF-RNN pulls the blurred boundaries onto the shapes' edges")
plt.show()

# %% [markdown]
# ## 5. The learned compatibility matrix (the paper's Fig. 5)
#
# Row $l$, column $l'$ of µ is the penalty added to label $l$ at pixel $i$ per unit of belief in $l'$ among
# the pixels related to $i$. Potts is 0 on the diagonal and 1 elsewhere. Negative entries are **rewards**.

# %%
mu = crf5.compat.detach()
fig, ax = plt.subplots(figsize=(6.8, 5.6))
v = float(mu.abs().max())
im = ax.imshow(mu, cmap="RdBu_r", vmin=-v, vmax=v)
for i in range(L):
    for j in range(L):
        ax.text(j, i, f"{mu[i, j]:.2f}", ha="center", va="center", fontsize=9)
ax.set_xticks(range(L), CLASS_NAMES, rotation=30)
ax.set_yticks(range(L), CLASS_NAMES)
ax.set_xlabel("label l' of the related pixels")
ax.set_ylabel("label l at pixel i")
ax.set_title("Learned compatibility µ(l, l') (red: penalty, blue: reward)")
fig.colorbar(im, ax=ax, shrink=0.85)
plt.show()
print(f"learned weights: w_bilateral = {crf5.w_bilateral.item():.2f} (from {crf_params.w_bilateral}), "
      f"w_spatial = {crf5.w_spatial.item():.2f} (from {crf_params.w_spatial})")

# %% [markdown]
# As in the paper's figure, µ is no longer Potts. The objects' diagonal entries have become **negative**:
# beyond penalising disagreement, the layer learned to *reward* agreement with related pixels of the same
# label (background's stays near 0: it is the default anyway). The off-diagonal penalties are no longer
# equal, and the matrix is not symmetric: "I am a square, my neighbours are ring" costs more than the
# reverse, because classes differ in how their pixels sit in the image (rings contain background and touch
# other objects). µ and the weights multiply each other (the pairwise term is w(m)·µ), so read the pattern,
# not the scale. Look at the learned w_spatial too: if it went *negative*, the spatial kernel now sharpens
# instead of smoothing (an unsharp mask), a fix for the blurred boundaries of *this* unary. The layer learns
# whatever repairs the defects of the unary it is given.
#
# ## 6. T in training vs T at test
#
# The parameters are learned *for* an unrolled depth. What happens when the test-time T differs? Train a
# second layer with T = 1 and evaluate both at T = 0..10.

# %%
crf1, _ = train_crf(iterations=1)
test_ts = [0, 1, 2, 3, 5, 7, 10]
curves = {}
with torch.no_grad():
    for name, crf in (("trained with T = 5", crf5), ("trained with T = 1", crf1)):
        curves[name] = [miou(crf(u_val, x_val, iterations=t), y_val) for t in test_ts]
fig, ax = plt.subplots(figsize=(7, 4))
for (name, values), marker in zip(curves.items(), ("o", "s")):
    ax.plot(test_ts, values, marker=marker, label=name)
ax.axhline(results["coarse unary"], color="0.5", ls="--", label="coarse unary (T = 0)")
ax.set_xlabel("T at test time")
ax.set_ylabel("validation mIoU")
ax.set_title("Test-time iterations vs training-time iterations")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The layer trained with T = 1 learned strong weights that are right for *one* iteration; run longer, it
# keeps pushing and over-smooths, and its mIoU falls. The layer trained with T = 5 has learned parameters
# for which mean field settles: more iterations at test time change little. This is why the paper trains
# with T = 5 and can test with T = 10: once the unrolled inference converges, T is a cost knob, not a
# different model.
#
# ## 7. Gradients reach the CNN
#
# End to end, the unary comes from a CNN and the same backward pass continues into it. One step with an
# (untrained) `lab.models.FCN` under the trained layer: every convolution receives a gradient *through* the
# CRF. (`python -m lab.train` trains FCN + CRF-RNN jointly this way.)

# %%
fcn = FCN(num_classes=L, width=8)
batch = slice(0, 4)
logits = crf5(F.log_softmax(fcn(x_train[batch]), 1), x_train[batch])  # U = log p from the CNN
F.cross_entropy(logits, y_train[batch]).backward()
names = [n for n, p in fcn.named_parameters() if p.grad is not None and p.dim() == 4]
norms = [float(dict(fcn.named_parameters())[n].grad.norm()) for n in names]
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.bar(range(len(names)), norms, color="tab:purple")
ax.set_xticks(range(len(names)), [n.removesuffix(".weight") for n in names], rotation=45, ha="right", fontsize=8)
ax.set_ylabel("‖∂L/∂W‖")
ax.set_title("Gradient norm of each FCN convolution, back-propagated through 5 CRF iterations")
ax.set_yscale("log")
plt.show()
assert all(n > 0 for n in norms)

# %% [markdown]
# **Take-aways.** Mean field is a recurrent network with hidden state Q and shared parameters (w, µ); every
# step is differentiable (the lattice's backward is the same lattice, transposed), so the CRF trains with
# the CNN by ordinary back-propagation. Learned, µ stops being Potts (a negative diagonal, unequal
# penalties) and the CRF goes from hurting to helping. Parameters are tied to the training T, but a layer
# trained deep enough to converge tolerates more iterations at test. Next: **04**, the playground.
