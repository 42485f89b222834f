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
# # 02 · The permutohedral lattice, opened up
#
# Step 1 of mean field (notebook 01) filters every label map with a Gaussian over **5-D features**
# $(x/\theta_\alpha, y/\theta_\alpha, r/\theta_\beta, g/\theta_\beta, b/\theta_\beta)$:
#
# $$\tilde v_i = \sum_{j=1}^{N} \exp\big(-\tfrac12 |\mathbf{f}_i - \mathbf{f}_j|^2\big)\, v_j .$$
#
# Done directly that is $N^2$ terms: 6·10¹⁰ for a 500×500 image, per label, per iteration. A regular grid over
# the feature space (the bilateral grid) would need a number of cells exponential in $d$. The
# **permutohedral lattice** (Adams, Baek & Davis, 2010) needs only the $d+1$ corners of one simplex per point:
#
# 1. **splat**: each point spreads its value onto the $d+1$ corners of the lattice simplex that encloses
#    it, with barycentric weights;
# 2. **blur**: the lattice values are blurred with $[\frac14, \frac12, \frac14]$ along each of the $d+1$
#    lattice directions in turn (a Gaussian-like bump, by repeated small convolutions);
# 3. **slice**: each point reads the value back from its $d+1$ corners with the same weights.
#
# Each point touches $d+1$ vertices, and each of the at most $(d+1)N$ vertices is blurred along $d+1$ axes:
# at most **O(N·d²)** operations per channel instead of O(N²·d) (building the lattice adds one sort of the
# N·(d+1) corners, done once per image and θ).
#
# **Contents** 1. the lattice in 2-D · 2. splat, blur and slice on a 1-D signal · 3. the kernel the lattice
# computes, in 2-D · 4. accuracy against the exact Gaussian as θ and d vary · 5. O(N) vs O(N²) ·
# 6. bilateral filtering of a photo

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection

import lab
from lab.data import sample_images
from lab.explore import fit_image, to_tensor
from lab.viz.lattice_plot import (
    blur_steps,
    draw_blur_steps,
    draw_lattice_2d,
    impulse_response,
    lattice_geometry,
    lattice_mesh_2d,
    pair_response,
)

torch.set_num_threads(1)  # shared machine: one thread
plt.rcParams.update({"figure.dpi": 80})

# %% [markdown]
# ## 1. The lattice in 2-D
#
# The lattice of dimension $d$ lives on the hyperplane $\sum_k e_k = 0$ of $\mathbb{R}^{d+1}$: its points are
# the integer vectors whose coordinates all have the same remainder modulo $d+1$. For $d = 2$ that plane is
# tiled by **equilateral triangles**. A point is first *elevated* onto the plane (a fixed linear map, scaled
# so that the final blur has σ = 1), then its enclosing simplex is found by rounding to the nearest
# "remainder-0" point and sorting the leftover coordinates (`docs/lattice.md`, steps 1–3). Below, the lattice
# is drawn back in the feature plane, for six random points. Left: grey = the tiling, orange = the vertices
# the points touch, blue = the triangle that encloses each point, green = one point's triangle with its three
# **barycentric weights** (the thicker the line, the larger the weight). Right: the blur's three axes, the
# directions along which it mixes each vertex with its two neighbours.

# %%
gen = torch.Generator().manual_seed(0)
points = torch.rand(6, 2, generator=gen, dtype=torch.float64) * torch.tensor([4.0, 3.0])  # features, units of σ
geo = lattice_geometry(points)
p = int(np.argmax(geo.barycentric.min(1)))  # the point farthest from its triangle's edges: three clear weights

fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]}, constrained_layout=True)
draw_lattice_2d(axes[0], points, highlight=p, shade=range(len(points)))
axes[0].legend(loc="lower right", fontsize=9)
axes[0].set_title(f"{len(points)} points, the triangle around each, the weights of point {p}")
_, edges = lattice_mesh_2d((-2.0, -2.0), (2.0, 2.0))
axes[1].add_collection(LineCollection(edges, colors="0.82", linewidths=0.8, zorder=0))
steps = draw_blur_steps(axes[1], (0.0, 0.0))
neighbours = np.concatenate([steps, -steps])
axes[1].scatter(*np.concatenate([neighbours, [[0.0, 0.0]]]).T, s=28, c="tab:orange", edgecolors="k", zorder=6)
for q in neighbours:
    axes[1].annotate("¼", q, textcoords="offset points", xytext=(0, -15), ha="center", fontsize=11)
axes[1].annotate("½", (0, 0), textcoords="offset points", xytext=(8, -15), fontsize=11)
axes[1].set(xlim=(-1.6, 1.6), ylim=(-1.4, 1.4), aspect="equal", xlabel="feature 1 (units of σ)")
axes[1].set_title("the blur: [¼, ½, ¼] along axis 0, then 1, then 2")
plt.show()

b = geo.barycentric[p]
print(f"point {p} at {geo.points[p].round(3)}: corners {geo.corners[p].round(2).tolist()}")
print(f"barycentric weights {b.round(4)}: sum = {b.sum():.15f}, smallest = {b.min():.4f}")
assert abs(b.sum() - 1) < 1e-12 and (b >= 0).all()  # a point's weights: non-negative, summing to 1
recon = (b[:, None] * geo.corner_keys[p]).sum(0)  # Σ_k b_k · corner_k on the plane Σ = 0
print("on the plane Σ = 0:  Σ_k b_k·corner_k =", recon.round(4), "  elevated point =", geo.elevated[p].round(4))
assert np.allclose(recon, geo.elevated[p], atol=1e-9)
assert np.allclose((b[:, None] * geo.corners[p]).sum(0), geo.points[p], atol=1e-9)  # the same in feature units
print("blur steps (feature units):", steps.round(3).tolist(), "  lengths:", np.linalg.norm(steps, axis=1).round(3))
lat2 = lab.PermutohedralLattice(points)
print(f"{lat2.num_points} points touch {lat2.num_vertices} lattice vertices (at most (d+1)·N = {3 * lat2.num_points})")

# %% [markdown]
# The weights are the point's coordinates *inside* its triangle: they are non-negative, sum to 1, and the
# corners weighted by them give back the point (checked above, both on the plane Σ = 0 and in feature units).
# Points in neighbouring triangles share vertices; the blur moves mass between vertices along the three axes,
# and so between points. The triangles' sides, and the blur steps, are 1 σ long: a Gaussian of σ = 1 spans
# only a few vertices. That coarseness is the lattice's approximation; section 3 measures it.
#
# ## 2. Splat, blur and slice on a signal
#
# Take a 1-D signal (d = 1: the lattice is a row of vertices) and filter it with a Gaussian of σ = 6 samples.
# `lab.PermutohedralLattice` exposes the three stages. To *see* vertex values we also splat a constant 1:
# the ratio (splatted value / splatted weight) is the average value that landed on each vertex.

# %%
n, sigma = 160, 6.0
x = torch.arange(n, dtype=torch.float64)
signal = (x > 60).double() - 0.6 * (x > 115).double() + 0.15 * torch.randn(n, generator=gen, dtype=torch.float64)
features = (x / sigma)[:, None]  # (N, 1): positions in units of σ
lat1 = lab.PermutohedralLattice(features)
vertex_x = lattice_geometry(features).vertices[:, 0] * sigma  # vertex positions, in samples

values = torch.stack([signal, torch.ones(n, dtype=torch.float64)], 1)  # (N, 2): [v, 1] (homogeneous)
splatted = lat1.splat(values)  # (V, 2)
blurred = lat1.blur(splatted)  # (V, 2)
sliced = lat1.slice(blurred)  # (N, 2)
smoothed = sliced[:, 0] / sliced[:, 1]  # normalise: (K v) / (K 1)
exact = lab.exact_gaussian_filter(signal[:, None], features)[:, 0]
assert torch.allclose(smoothed, lat1.filter(signal[:, None])[:, 0])  # the three stages = .filter(normalize="after")

order = np.argsort(vertex_x)
fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
axes[0].plot(x, signal, ".", ms=4, color="0.5", label="signal v (160 samples)")
axes[0].stem(vertex_x[order], (splatted[:, 0] / splatted[:, 1]).numpy()[order], linefmt="C1-", markerfmt="C1o",
             basefmt=" ", label=f"after splat: {lat1.num_vertices} vertices (value / weight)")
axes[0].set_title("1 · splat: each sample spreads onto its 2 enclosing vertices")
axes[1].stem(vertex_x[order], (blurred[:, 0] / blurred[:, 1]).numpy()[order], linefmt="C2-", markerfmt="C2o",
             basefmt=" ", label="after blur (value / weight)")
axes[1].plot(x, signal, ".", ms=4, color="0.8")
axes[1].set_title("2 · blur: [¼, ½, ¼] between neighbouring vertices, along both lattice axes")
axes[2].plot(x, signal, ".", ms=4, color="0.75", label="signal")
axes[2].plot(x, exact, "k-", lw=2, label="exact Gaussian filter")
axes[2].plot(x, smoothed, "C3--", lw=2, label="lattice: slice, then divide by the sliced weight")
axes[2].set_title("3 · slice: every sample reads back from its 2 vertices")
axes[2].set_xlabel("sample position")
for ax in axes:
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(alpha=0.3)
fig.suptitle(f"Splat → blur → slice with σ = {sigma:g} samples: {n} samples, only {lat1.num_vertices} lattice vertices")
plt.show()

spacing = np.diff(vertex_x[order])
print(f"vertex spacing: {spacing.min():.2f}–{spacing.max():.2f} samples = {spacing.mean() / sigma:.3f} σ "
      f"(|blur step| for d = 1: {np.linalg.norm(blur_steps(1)[0]):.3f} σ)")
mid = order[len(order) // 2]  # a vertex in the middle of the row
one_hot = torch.zeros(lat1.num_vertices, 1, dtype=torch.float64)
one_hot[mid] = 1.0
spread = lat1.blur(one_hot)[:, 0].numpy()[order[len(order) // 2 - 3 : len(order) // 2 + 4]]
print("blur of a single vertex, its neighbours left to right, × 16:", (16 * spread).round(6))
ones = torch.ones(n, 1, dtype=torch.float64)
k1_lat = lat1.filter(ones, normalize="none")[:, 0]  # K̃·1 / c: what the normalisation divides by
k1_exact = lab.exact_gaussian_filter(ones, features, normalize="none")[:, 0]
print(f"filtered ones K·1 at the first / middle / last sample: lattice {k1_lat[0]:.2f} / {k1_lat[n // 2]:.2f} / "
      f"{k1_lat[-1]:.2f}, exact {k1_exact[0]:.2f} / {k1_exact[n // 2]:.2f} / {k1_exact[-1]:.2f}")
rel = float((smoothed - exact).norm() / (exact - exact.mean()).norm())
print(f"relative L2 error of the lattice (against the exact filter, mean removed): {rel:.3f}")

# %% [markdown]
# The vertices are fewer than the samples: one every 0.87 σ in 1-D (5.2 samples here). In 1-D the lattice's
# two axes point along the same line in opposite directions (step₀ = −step₁), so the blur is the
# $[\frac14, \frac12, \frac14]$ stencil twice: the binomial $[1, 4, 6, 4, 1]/16$ printed above, five vertices
# wide. The filtered ones K·1 is about half as large at the two ends as in the middle (fewer samples
# contribute there); dividing by it (`normalize="after"`, as CRF-RNN) makes each output a weighted mean, so
# the ends are not pulled towards 0, and the lattice follows the exact filter to the printed error.
#
# ## 3. The kernel the lattice computes, in 2-D
#
# The filter is linear, so its **kernel** is its response to one impulse: splat the value 1 at one point,
# blur, slice at a dense grid of positions around it (`impulse_response`, with `normalize="none"`: divided by
# the lattice's kernel scale, so that it approximates $\exp(-|\Delta|^2/2)$ itself). The grid of positions
# makes every vertex around the impulse exist, so this is the kernel of a densely filled lattice.
#
# A lattice only has the vertices its points touch, and the blur drops mass it would move to any other vertex.
# So the kernel between **two points with nothing around them** (`pair_response`: each pair on a lattice of
# its own) is another one: orange dots on the right, 600 random pairs.

# %%
center = torch.tensor([0.37, 0.21], dtype=torch.float64)  # the impulse, somewhere inside a triangle
step = 0.06
axis = torch.arange(-4.5, 4.5 + step / 2, step, dtype=torch.float64)
gx, gy = torch.meshgrid(axis, axis, indexing="xy")
offsets = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)  # (P, 2) Δ = position − center
kernel = impulse_response(center, center + offsets).reshape(gx.shape)  # splat at center → blur → slice at the grid
gauss = np.exp(-0.5 * (gx**2 + gy**2).numpy())
dist = np.hypot(gx.numpy(), gy.numpy())
error = kernel - gauss

n_pairs = 600
r_pair = torch.rand(n_pairs, generator=gen, dtype=torch.float64) * 4
angle = torch.rand(n_pairs, generator=gen, dtype=torch.float64) * 2 * np.pi
a_pair = torch.rand(n_pairs, 2, generator=gen, dtype=torch.float64) * 3
b_pair = a_pair + r_pair[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
cross, own = pair_response(a_pair, b_pair)  # what b gets from an impulse at a; what a keeps
r_pair = r_pair.numpy()

extent = (float(axis[0]), float(axis[-1]), float(axis[0]), float(axis[-1]))
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
im = axes[0].imshow(kernel, origin="lower", extent=extent, cmap="viridis", vmin=0, vmax=1)
levels = [0.05, 0.25, 0.5, 0.75]
axes[0].contour(gx, gy, kernel, levels, colors="w", linewidths=1.2)
axes[0].contour(gx, gy, gauss, levels, colors="r", linestyles="--", linewidths=1)
c = center.numpy()
_, edges = lattice_mesh_2d(tuple(c - 4), tuple(c + 4))
axes[0].add_collection(LineCollection(edges - c, colors="0.6", linewidths=0.4, alpha=0.6))
axes[0].set_title("lattice kernel (white) and exp(−|Δ|²/2) (red, dashed)\ncontours 0.05, 0.25, 0.5, 0.75")
fig.colorbar(im, ax=axes[0], shrink=0.8)
worst = float(np.abs(error).max())
im = axes[1].imshow(error, origin="lower", extent=extent, cmap="RdBu_r", vmin=-worst, vmax=worst)
axes[1].set_title(f"lattice − Gaussian (max |error| {worst:.3f})")
fig.colorbar(im, ax=axes[1], shrink=0.8)
for ax in axes[:2]:
    ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), xlabel="Δ₁ (units of σ)", ylabel="Δ₂ (units of σ)")
axes[2].plot(dist.ravel(), kernel.ravel(), ",", color="C0", alpha=0.3)
axes[2].plot([], [], ".", color="C0", label="lattice, every vertex present (the maps)")
axes[2].plot(r_pair, cross, ".", ms=3, color="C1", label="lattice, a lone pair of points")
rr = np.linspace(0, 4, 200)
axes[2].plot(rr, np.exp(-(rr**2) / 2), "k-", lw=2, label="exp(−|Δ|²/2)")
axes[2].set(xlim=(0, 4), xlabel="|Δ| (units of σ)", title="the kernel against the distance")
axes[2].legend(fontsize=9)
axes[2].grid(alpha=0.3)
plt.show()

at = dist.flat[np.abs(error).argmax()]
print(f"max |lattice − Gaussian| = {worst:.3f}, at |Δ| = {at:.2f} σ; the kernel is 0 beyond |Δ| = "
      f"{dist[kernel > 0].max():.2f} σ; its integral / 2π = {kernel.sum() * step**2 / (2 * np.pi):.4f}")
print(f"a lone pair: each point keeps {own.min():.2f}–{own.max():.2f} of its own impulse (exact: 1)")
print("|Δ| (σ)   Gaussian   dense lattice (min–max)   lone pair: b's weight / a's own (mean)")
for r0 in (1.0, 1.5, 2.0, 2.5, 3.0):
    ring, near = np.abs(dist - r0) < 0.05, np.abs(r_pair - r0) < 0.1
    print(f"  {r0:3.1f}     {np.exp(-r0**2 / 2):6.3f}        {kernel[ring].min():.3f}–{kernel[ring].max():.3f}"
          f"                  {(cross / own)[near].mean():.3f}")

# %% [markdown]
# * With every vertex present, the kernel has the Gaussian's width but not its shape: its contours are
#   rounded hexagons, the peak is off by the printed maximum error, and it is exactly zero beyond about 3.8 σ
#   (the blur moves mass at most one step per axis, and splat and slice add one triangle each). Its integral
#   is the Gaussian's, 2π (splat, blur and slice conserve mass).
# * Between two lone points it is much shorter: the blur can only carry mass through vertices that exist, and
#   a lone pair has just its two triangles' corners. In the normalised filter what matters is the neighbour's
#   weight relative to the point's own (right-hand column of the table): close to the Gaussian up to 1.5 σ,
#   about two thirds of it at 2 σ, almost nothing at 2.5 σ, and zero at 3 σ, where the Gaussian still gives
#   0.011.
#
# ## 4. How accurate is it? Error against the exact Gaussian, as θ and d vary
#
# 500 random points in a $d$-dimensional box of side 10 (in pixels, say), a random value per point, the
# features divided by a bandwidth θ. We compare the normalised lattice filter with the exact one
# (`lab.exact_gaussian_filter`, O(N²), float64): the error ‖lattice − exact‖ relative to the size of the
# input's variation ‖v − mean(v)‖. θ is given as a multiple of the points' median nearest-neighbour distance:
# at θ = ½ ×, a typical point's nearest neighbour is 2 σ away.

# %%
n_points = 500
dims = [1, 2, 3, 5]
ratios = 2.0 ** np.arange(-6, 4)  # θ / (median nearest-neighbour distance)
errors = np.zeros((len(dims), len(ratios)))
for a, d in enumerate(dims):
    pos = torch.rand(n_points, d, generator=gen, dtype=torch.float64) * 10.0
    vals = torch.rand(n_points, 3, generator=gen, dtype=torch.float64)
    scale = (vals - vals.mean(0)).norm()  # the size of the signal's variation
    gaps = torch.cdist(pos, pos).fill_diagonal_(float("inf")).min(1).values  # each point's nearest neighbour
    nearest = float(gaps.median())
    for b, ratio in enumerate(ratios):
        f = pos / (ratio * nearest)
        ex = lab.exact_gaussian_filter(vals, f)
        ap = lab.PermutohedralLattice(f).filter(vals)
        errors[a, b] = float((ap - ex).norm() / scale)

fig, ax = plt.subplots(figsize=(7.5, 4.2))
for a, d in enumerate(dims):
    ax.plot(ratios, errors[a], marker="o", label=f"d = {d}")
ax.set_xscale("log", base=2)
ax.set_xlabel("θ / median nearest-neighbour distance")
ax.set_ylabel("‖lattice − exact‖ / ‖v − v̄‖")
ax.set_title(f"Lattice vs exact Gaussian, {n_points} random points, normalised filter")
ax.legend()
ax.grid(alpha=0.3)
plt.show()
for a, d in enumerate(dims):
    top = int(errors[a].argmax())
    print(f"d = {d}: peak {errors[a, top]:.3f} at θ = {ratios[top]:g} × nearest-neighbour distance; "
          f"{errors[a, 0]:.3f} at θ = 1/64 ×, {errors[a, -1]:.3f} at θ = 8 ×")

# %% [markdown]
# * Every curve has one peak (printed), at θ = ½–1 × the median nearest-neighbour distance. There a
#   typical point's nearest neighbour is 1–2 σ away and its other neighbours farther out, where section 3's
#   lone-pair kernel falls short of the Gaussian: two thirds of its weight at 2 σ, nothing from 2.5 σ on.
#   The exact filter mixes those neighbours in; the lattice, whose vertices between such sparse points
#   mostly do not exist, mixes in less.
# * When θ is much **smaller** than the gaps, a typical neighbour lies many σ away, where the exact weight is
#   negligible and the lattice's is zero: both filters return the input, and the error falls towards 0
#   (printed at θ = 1/64 ×). Random points have some pairs much closer than the median, most of all in 1-D,
#   so the d = 1 curve falls slowly.
# * When θ is much **larger**, every point has many neighbours within 1 σ, the vertices around them exist
#   (the dense kernel of section 3, whose errors have both signs), and the error falls again.
# * The peak grows with $d$. pydensecrf builds the same lattice (`docs/lattice.md`), so it makes the same
#   errors. A photo's features are dense: neighbouring pixels are 1/θα apart in position and usually close
#   in colour, which puts them on the right-hand, accurate side of the plot.
#
# ## 5. O(N) against O(N²)
#
# Bilateral filtering (d = 5) of the same photo at growing sizes. The lattice time includes building it.

# %%
photo = sample_images(["chelsea"])["chelsea"]


def best_of(fn, repeats=2):
    """The fastest of a few runs, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


sizes = [16, 24, 32, 48, 64, 96, 128, 256]
rows = []
for side in sizes:
    img = to_tensor(fit_image(photo, side))
    feat = lab.bilateral_features(img, theta_alpha=side / 8, theta_beta=20.0)
    n_pix = img.shape[2] * img.shape[3]
    t_lat = best_of(lambda: lab.gaussian_filter(img, feat))  # noqa: B023 (timed immediately)
    t_exact = best_of(lambda: lab.exact_gaussian_filter(img, feat), 1) if side <= 48 else np.nan  # noqa: B023
    rows.append((n_pix, t_lat, t_exact))
    print(f"{side:4d} px wide  N = {n_pix:6d}   lattice {1e3 * t_lat:8.1f} ms   exact "
          + (f"{1e3 * t_exact:8.1f} ms" if side <= 48 else "   (skipped)"))
rows = np.array(rows)

fig, ax = plt.subplots(figsize=(7.5, 4.5))
ax.loglog(rows[:, 0], rows[:, 1], "o-", label="permutohedral lattice (build + filter)")
ok = ~np.isnan(rows[:, 2])
ax.loglog(rows[ok, 0], rows[ok, 2], "s-", label="exact filter")
ref_n = rows[:, 0]
ax.loglog(ref_n, rows[-1, 1] * ref_n / ref_n[-1], "C0:", label="∝ N")
last = np.flatnonzero(ok)[-1]
ax.loglog(ref_n, rows[last, 2] * (ref_n / rows[last, 0]) ** 2, "C1:", label="∝ N²")
ax.set_xlabel("pixels N")
ax.set_ylabel("seconds")
ax.set_ylim(rows[:, 1].min() / 3, 10)
ax.set_title("Bilateral filter (d = 5, 3 channels) on one CPU thread")
ax.legend()
ax.grid(alpha=0.3, which="both")
plt.show()
hours = rows[last, 2] * (500 * 500 / rows[last, 0]) ** 2 / 3600
print(f"the exact filter's N² line, extended to a 500×500 image: {hours:.1f} hours per filtering")

# %% [markdown]
# The exact filter follows the N² line (extended to a 500×500 image it gives the printed hours per
# filtering); the lattice follows N, with a fixed overhead on tiny images. (Timings taken while other
# programs run scatter: then rerun the cell on an idle machine.) For mean field the lattice is
# built **once** per image and bandwidth, then reused in every iteration (and, transposed, in the backward
# pass).
#
# ## 6. Bilateral filtering of a photo
#
# The same filter on the colours of a photo is the classic edge-preserving smoother: a pixel averages with
# pixels that are near **and** of similar colour. Compare with a plain spatial Gaussian of the same reach.

# %%
cat = fit_image(photo, 160)
img = to_tensor(cat)
theta_a = 5.0
spatial = lab.gaussian_filter(img, lab.spatial_features(img, theta_gamma=theta_a))
panels = [("original", img), (f"spatial Gaussian, θ = {theta_a:g} px", spatial)]
for theta_b in (12.0, 40.0):
    panels.append((f"bilateral, θα = {theta_a:g} px, θβ = {theta_b:g}",
                   lab.gaussian_filter(img, lab.bilateral_features(img, theta_a, theta_b))))
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
for ax, (title, im) in zip(axes, panels):
    ax.imshow(im[0].permute(1, 2, 0).clamp(0, 255).byte().numpy())
    ax.set_title(title, fontsize=10)
    ax.axis("off")
fig.suptitle("The lattice as an image filter: blur within regions, keep the edges (θβ sets what counts as an edge)")
plt.show()

# %% [markdown]
# **Take-aways.** The lattice turns an N² sum into splat → blur → slice over at most (d+1)·N vertices. Its
# kernel has the Gaussian's width but not its shape, and between sparse points it is cut short where
# vertices are missing; the error this makes peaks when θ is about the distance between neighbouring points,
# and it is larger in higher d. It is built once per image and θ and reused. In the CRF the filtered "image" is
# the Q map of each label, and the features are the photo's positions and colours: the bilateral message of
# notebook 01 is this filter (with notebook 01's bandwidths), applied to probabilities.
