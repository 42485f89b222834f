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
# # 04 · Playground
#
# Turn the knobs and watch mean field work. Pick a photo and where its unary comes from: weak colour
# clusters (roughly right, wrong boundaries: the CRF has a lot to do) or the bundled PASCAL VOC network
# (`lab.unary.voc_unary`: a real 21-class unary, softened by its temperature). Set the bandwidths θα, θβ,
# θγ, the two kernel weights and the number of iterations T; scrub through the iterations t = 0..T and pick
# the label whose probability you want to see (with the VOC network: one of the classes it finds in the
# photo). The top row shows labels (the legend names the classes on screen), the bottom row the chosen
# label's probability under the unary and under $Q_t$, the entropy of $Q_t$, and the mean-field objective.
#
# **What is cached.** The lattices depend only on the image and θ (notebook 02), so they are built once per
# (image, θα, θβ, θγ) with `lab.explore.build_kernels`; moving a weight, T, t, the label or the unary
# reuses them.
# A whole run is cached too, so scrubbing t costs only the drawing.
#
# **How it is drawn.** The figure is a PNG in an image widget (`lab.explore.playground.LiveFigure`), redrawn
# on every change of a control; if a setting makes the drawing fail, the error is written under the image.
# The figure's title writes each knob with the same format as its slider's readout, so the two agree. The
# widgets need a live kernel: run the notebook in JupyterLab, `make lab`. Without one (a rendered copy), the
# section *Without widgets* shows the same figure for fixed settings as ordinary output.

# %%
import functools

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lab.crf import CRFParams
from lab.data import sample_images
from lab.explore import build_kernels, fit_image, run_crf, to_tensor
from lab.explore.playground import LiveFigure, figure_png, on_grid, readout, theta_sweep
from lab.explore.voc_view import present_classes
from lab.unary import coarse_colour_clusters, voc_status, voc_unary
from lab.viz import PALETTE, changed_mask, entropy_map, overlay

torch.set_num_threads(1)  # shared machine: one thread
plt.rcParams.update({"figure.dpi": 80, "image.interpolation": "nearest"})

SIZE = 112  # working size in pixels (longer side)
N_LABELS = 4
PHOTOS = {name: fit_image(img, SIZE) for name, img in
          sample_images(["astronaut", "chelsea", "coffee", "rocket", "grace_hopper"]).items()}
CLUSTERS, VOC = "colour clusters", "VOC network"
voc_ok, voc_reason = voc_status()  # (False, why) where mediapipe or the bundled model is missing
SOURCES = [CLUSTERS, VOC] if voc_ok else [CLUSTERS]
if not voc_ok:
    print(f"The VOC network cannot run here, so the playground offers colour clusters only: {voc_reason}")
# The knobs: their symbol in the figure's title and the format of their readout (the sliders use the same)
KNOBS = {"theta_alpha": ("θα", ".1f"), "theta_beta": ("θβ", ".1f"), "theta_gamma": ("θγ", ".2f"),
         "w_bilateral": ("w(1)", ".1f"), "w_spatial": ("w(2)", ".1f"), "iterations": ("T", "d")}
# The CRF's starting settings, each on its slider's steps (θ on powers of 2 in quarter steps)
DEFAULTS = {"theta_alpha": 32.0, "theta_beta": 16.0, "theta_gamma": 2.0, "w_bilateral": 5.0, "w_spatial": 3.0,
            "iterations": 5}


@functools.cache
def inputs(name, source=CLUSTERS, temperature=1.0):
    """The image tensor (1, 3, H, W), its unary U (1, L, H, W) and the L class names, once per setting.

    Colour clusters: a weak unary of N_LABELS labels. The VOC network: log_softmax(logits / temperature),
    21 classes."""
    if source == VOC:
        unary, names = voc_unary(PHOTOS[name], temperature)
    else:
        unary, _ = coarse_colour_clusters(PHOTOS[name], n_labels=N_LABELS, block=14, confidence=0.55)
        names = tuple(f"label {l}" for l in range(N_LABELS))
    return to_tensor(PHOTOS[name]), unary, names


def label_choices(name, source):
    """The label dropdown's (text, id) options and its default: every cluster label, or the VOC classes in
    the network's arg-max (the temperature does not change it), defaulting to the largest non-background one."""
    if source != VOC:
        return [(f"label {l}", l) for l in range(N_LABELS)], 1
    _, unary, names = inputs(name, VOC, 1.0)
    argmax = unary[0].argmax(0)
    present = present_classes(argmax)
    objects = [c for c in present if c != 0]
    default = max(objects, key=lambda c: int((argmax == c).sum())) if objects else present[0]
    return [(names[c], c) for c in present], default


@functools.lru_cache(maxsize=16)
def kernels_for(name, theta_alpha, theta_beta, theta_gamma):
    """Both lattices of one (image, θ): built once, then reused by every weight, T and t."""
    params = CRFParams(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma)
    return build_kernels(inputs(name)[0], params)  # (CRFKernels, build time in ms): the same for every unary


@functools.lru_cache(maxsize=32)
def run(name, theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations, source=CLUSTERS,
        temperature=1.0):
    """Mean field for one setting, keeping Q_0..Q_T: scrubbing t only redraws."""
    image, unary, _ = inputs(name, source, temperature)
    kernels, build_ms = kernels_for(name, theta_alpha, theta_beta, theta_gamma)
    params = CRFParams(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma,
                       w_bilateral=w_bilateral, w_spatial=w_spatial)
    result = run_crf(unary, image, params, iterations, kernels)
    result.build_ms = build_ms
    return result


def knob_text(values):
    """The CRF's settings written as the sliders' readouts write them (the formats of KNOBS)."""
    return "  ".join(f"{symbol}={format(values[key], fmt)}" for key, (symbol, fmt) in KNOBS.items())


def show(fig):
    """Display a figure as an ordinary PNG output (what a rendered copy of the notebook keeps)."""
    display(Image(figure_png(fig)))


def draw(name, theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations, t, label, source=CLUSTERS,
         temperature=1.0):
    """The playground's figure for one setting (a matplotlib Figure; nothing is displayed)."""
    t = min(t, iterations)
    photo = PHOTOS[name]
    if source != VOC:
        temperature = 1.0  # the clusters have no temperature: one cache entry, whatever the slider says
    names = inputs(name, source, temperature)[2]
    label = label if 0 <= label < len(names) else 0  # a label of the other source, mid-update of the dropdown
    result = run(name, theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations, source, temperature)
    history = result.trace.history
    q0, qt = history[0][0], history[t][0]
    labels0, labels_t = result.labels[0], result.labels[t]
    kl = result.trace.kl[0].numpy()

    fig = Figure(figsize=(15, 7.2), dpi=80, layout="constrained")
    axes = fig.subplots(2, 4)
    axes[0, 0].imshow(photo)
    axes[0, 0].set_title(f"{name} ({photo.shape[1]}×{photo.shape[0]})")
    axes[0, 1].imshow(overlay(photo, labels0, 0.65))
    axes[0, 1].set_title("unary labels (t = 0)")
    axes[0, 2].imshow(overlay(photo, labels_t, 0.65))
    axes[0, 2].set_title(f"labels of Q_t, t = {t}")
    flipped = changed_mask(labels0, labels_t)
    axes[0, 3].imshow(photo)
    axes[0, 3].imshow(np.ma.masked_where(~flipped, flipped), cmap="autumn", alpha=0.9, vmin=0, vmax=1)
    axes[0, 3].set_title(f"changed since the unary: {100 * flipped.mean():.1f} %")
    for ax, q, title in ((axes[1, 0], q0, "unary"), (axes[1, 1], qt, f"Q_t, t = {t}")):
        im = ax.imshow(q[label].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"P({names[label]}): {title}")
        for spine in ax.spines.values():
            spine.set_edgecolor(PALETTE[label] / 255)
            spine.set_linewidth(4)
        fig.colorbar(im, ax=ax, shrink=0.8)
    im = axes[1, 2].imshow(entropy_map(qt), cmap="magma", vmin=0, vmax=np.log(len(names)))
    axes[1, 2].set_title(f"entropy of Q_t (nats), t = {t}")
    fig.colorbar(im, ax=axes[1, 2], shrink=0.8)
    for ax in axes.flat[:7]:
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[1, 3]
    ax.plot(range(len(kl)), kl, marker="o")
    ax.plot([t], [kl[t]], marker="o", ms=11, color="crimson")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("KL(Q_t ‖ P) + log Z")
    ax.set_title("mean-field objective")
    ax.grid(alpha=0.3)
    unary_name = f"VOC network, temperature {temperature:.2f}" if source == VOC else CLUSTERS
    knobs = knob_text({"theta_alpha": theta_alpha, "theta_beta": theta_beta, "theta_gamma": theta_gamma,
                       "w_bilateral": w_bilateral, "w_spatial": w_spatial, "iterations": iterations})
    fig.suptitle(f"unary: {unary_name}   ·   {knobs}\nlattices built once per image and θ in "
                 f"{result.build_ms:.0f} ms, inference {result.inference_ms:.0f} ms")
    handles = [Patch(facecolor=PALETTE[c] / 255, edgecolor="grey", label=names[c])
               for c in present_classes(labels0, labels_t)]  # only the classes on screen
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), frameon=False)
    return fig


# %% [markdown]
# ## The controls
#
# Things to try: set w(1) = 0 and raise w(2) (pure smoothing, edges ignored); lower θβ until the labels
# follow texture; raise θα to the image size (colour groups across the whole image); scrub t to see that
# most changes happen in the first two or three iterations. Then switch the unary to the VOC network: a
# real, confident unary, where the CRF mostly moves boundaries and makes Q certain; raise its temperature to
# give the CRF more say, and watch small or unsure objects (the "bottle" on the coffee photo) shrink or vanish.
#
# Every slider starts on one of its steps, and the button further down rounds the trained values to the
# steps too: a browser slider shows (and may send back) the value of its nearest step, so a value between
# steps would read differently on the slider and in the figure's title.

# %%
style = {"description_width": "initial"}  # each description at its full width: none is clipped
layout = widgets.Layout(width="380px")


def slider(kind, key, description, **kwargs):
    """A slider for one of KNOBS, with its readout format, starting at its DEFAULTS value."""
    return kind(value=DEFAULTS[key], description=description, readout_format=KNOBS[key][1], style=style,
                layout=layout, **kwargs)


controls = {
    "name": widgets.Dropdown(options=list(PHOTOS), value="astronaut", description="image", style=style),
    "source": widgets.Dropdown(options=SOURCES, value=CLUSTERS, description="unary", style=style),
    "temperature": widgets.FloatLogSlider(value=2.0, base=2, min=-1, max=3, step=0.25, description="temperature",
                                          readout_format=".2f", style=style, layout=layout, disabled=True),
    "theta_alpha": slider(widgets.FloatLogSlider, "theta_alpha", "θα (px)", base=2, min=1, max=8, step=0.25),
    "theta_beta": slider(widgets.FloatLogSlider, "theta_beta", "θβ (0..255)", base=2, min=1, max=7, step=0.25),
    "theta_gamma": slider(widgets.FloatLogSlider, "theta_gamma", "θγ (px)", base=2, min=-1, max=4, step=0.25),
    "w_bilateral": slider(widgets.FloatSlider, "w_bilateral", "w(1) bilateral", min=0, max=20, step=0.5),
    "w_spatial": slider(widgets.FloatSlider, "w_spatial", "w(2) spatial", min=0, max=20, step=0.5),
    "iterations": slider(widgets.IntSlider, "iterations", "T (iterations)", min=0, max=15),
    "t": widgets.IntSlider(value=DEFAULTS["iterations"], min=0, max=DEFAULTS["iterations"], description="iteration t",
                           style=style, layout=layout),
    "label": widgets.Dropdown(options=[(f"label {l}", l) for l in range(N_LABELS)], value=1, description="label",
                              style=style),
}
assert all(on_grid(controls[k], v) == v for k, v in DEFAULTS.items()), "a default is off its slider's steps"


def _follow_T(change):
    """Keep the scrubber within 0..T, and jump to the last iteration when T changes."""
    controls["t"].max = change["new"]
    controls["t"].value = change["new"]


def _follow_source(change=None):
    """Offer the labels of the chosen unary (the VOC classes the network finds in the photo); the temperature
    slider only acts on the VOC network."""
    options, default = label_choices(controls["name"].value, controls["source"].value)
    if [tuple(o) for o in controls["label"].options] != options:
        keep = controls["label"].value
        controls["label"].options = options  # resets the value to the first option
        controls["label"].value = keep if keep in [c for _, c in options] else default
    controls["temperature"].disabled = controls["source"].value != VOC


# One redraw per change, after the follow-ups (the scrubber's range, the label options) have set the controls
live = LiveFigure(draw, controls, follow={"iterations": _follow_T, "source": _follow_source, "name": _follow_source})
ui = widgets.HBox([
    widgets.VBox([controls[k] for k in ("name", "source", "temperature", "label", "iterations", "t")]),
    widgets.VBox([controls[k] for k in ("theta_alpha", "theta_beta", "theta_gamma")]),
    widgets.VBox([controls[k] for k in ("w_bilateral", "w_spatial")]),
])
display(ui, live.widget)

# %% [markdown]
# ## θα × θβ: how far and how alike
#
# The two bandwidths of the bilateral kernel side by side: $Q_T$'s labels on the cat photo with the
# colour-cluster unary, θα (how far apart two pixels may be, in pixels) growing across, θβ (how different
# their colours may be, 0..255) growing down; θγ, the weights and T as the sliders' defaults. Under each
# panel, the share of pixels whose label differs from the unary's (left).

# %%
ALPHAS, BETAS = [8.0, 32.0, 128.0], [4.0, 16.0, 64.0]  # on the sliders' steps: try any panel above
image, unary, _ = inputs("chelsea")
others = CRFParams(theta_gamma=DEFAULTS["theta_gamma"], w_bilateral=DEFAULTS["w_bilateral"],
                   w_spatial=DEFAULTS["w_spatial"])
sweep = theta_sweep(unary, image, others, ALPHAS, BETAS, DEFAULTS["iterations"],
                    kernels_for=lambda p: kernels_for("chelsea", p.theta_alpha, p.theta_beta, p.theta_gamma)[0])

fig = Figure(figsize=(13, 7.6), dpi=80, layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[1, 3])
ax = left.subplots()
ax.imshow(overlay(PHOTOS["chelsea"], sweep.unary_labels, 0.65))
ax.set_title("unary labels")
ax.set_xticks([])
ax.set_yticks([])
grid = right.subplots(len(BETAS), len(ALPHAS))
for row, beta in enumerate(BETAS):
    for col, alpha in enumerate(ALPHAS):
        ax = grid[row, col]
        ax.imshow(overlay(PHOTOS["chelsea"], sweep.labels[row, col], 0.65))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"changed {100 * sweep.changed[row, col]:.1f} %")
        if row == 0:
            ax.set_title(f"θα = {alpha:g} px")
        if col == 0:
            ax.set_ylabel(f"θβ = {beta:g}", fontsize=12)
fig.suptitle(f"arg-max of Q_T, T = {DEFAULTS['iterations']}, θγ = {DEFAULTS['theta_gamma']:g} px, "
             f"w(1) = {DEFAULTS['w_bilateral']:g}, w(2) = {DEFAULTS['w_spatial']:g}, colour-cluster unary")
show(fig)
print("share of pixels changed vs the unary (%), θβ down, θα across")
print("θβ \\ θα | " + " | ".join(f"{a:g}" for a in ALPHAS))
for beta, shares in zip(BETAS, sweep.changed):
    print(f"{beta:>7g} | " + " | ".join(f"{100 * s:.1f}" for s in shares))

# %% [markdown]
# **What it shows.** The share of changed pixels grows along both axes: across each row with θα and down
# each column with θβ (the table under the figure). At θα = 8 px the unary's square blocks still show in every
# row; from θα = 32 px the label boundaries follow the photo's edges (the eyes, the nose). Down a column,
# pixels of more different colour may share a label: at θβ = 64 and θα ≥ 32 px the eyes and the nose lose
# most of the dark label to the red one.

# %% [markdown]
# ## A trained model's θ
#
# The knobs above are set by hand, as the paper sets its bandwidths (by grid search). A CRF-RNN built with
# `learnable_bandwidths=True` learns θα, θβ, θγ by gradient descent like its other parameters: the gradient
# reaches θ through the lattice's features (`docs/feature_gradients.md`). `make train` (`python -m lab.train`)
# trains such a model end to end on the synthetic shapes, starting from the θ the grid search chose for
# post-processing (the `crf-rnn-learned-theta` row of `results/paper_table.md`), and records what it learned in
# `results/paper_table.json`. The next cell reads a checkpoint of that model where one exists on this machine
# (`lab.crf.load_trained_crf`), else the recorded values. (Notebook 03 trains a CRF-RNN end to end in front of
# you.)

# %%
import json
from pathlib import Path

from lab.crf import find_trained_crfs, load_trained_crf

checkpoints = [p for p in find_trained_crfs() if p.stem == "crf-rnn-learned-theta"]
if checkpoints:  # a model trained by python -m lab.train on this machine
    trained = load_trained_crf(checkpoints[0])
    print(trained.describe())
    learned = trained.summary()
else:  # the bandwidths the repository's training run learned, seed by seed
    record = json.loads((Path("..") / "results" / "paper_table.json").read_text())
    print(f"results/paper_table.json ({record['config']['image_size']}-pixel images), grid value → learned:")
    for seed, theta in record["learned_bandwidths"].items():
        start = record["grid"][seed]
        print(f"  seed {seed}: " + ", ".join(f"{k} {start[k]:g} → {v:.2f}" for k, v in theta.items()))
    learned = dict(record["learned_bandwidths"]["0"])
print("on the knobs: " + ", ".join(f"{k} = {v:.2f}" for k, v in learned.items()))


# %% [markdown]
# In the recorded run θβ, the colour width, doubles from the grid's 10 to 21–25 in every seed and θγ falls
# from 3 to about 2.3 px, while θα stays near the grid's 8 px (7.1–9.1): trained end to end, the layer lets
# pixels of more different colour share a label than the grid search did. The button puts the learned values
# on the knobs above (rounded to their steps and clamped to their ranges; they were learned on 64-pixel
# images, so on the playground's larger photos they reach proportionally less far).

# %%
def use_trained(_=None):
    """Set the playground's knobs to the learned θ and weights: each on its slider's nearest step, in range."""
    with live.hold():  # one redraw, with every knob moved
        for name, value in learned.items():
            controls[name].value = on_grid(controls[name], value)
    live.redraw()


button = widgets.Button(description="Set the knobs to the trained θ", layout=widgets.Layout(width="260px"))
button.on_click(use_trained)
display(button)

# %% [markdown]
# ## Without widgets
#
# The same figure for fixed settings (this is what a headless run or a static rendering shows): the cat
# photo with the colour-cluster unary at the sliders' defaults, after T iterations, and the share of pixels
# that changed label. Then a check that the cache does its job: changing only the weights reuses the
# lattices. Then what the button does: the knobs move to the trained model's θ (and its weights, from a checkpoint; on
# the sliders' steps) and the live figure is redrawn with them, its title written like the readouts. Last, the VOC
# network's unary on the cat photo (where it can run).

# %%
crf = {k: DEFAULTS[k] for k in KNOBS}
show(draw("chelsea", **crf, t=DEFAULTS["iterations"], label=2))
labels = run("chelsea", **crf).labels
print(f"chelsea, colour clusters, {knob_text(crf)}: {100 * changed_mask(labels[0], labels[-1]).mean():.1f} % "
      f"of the pixels change label ({100 * changed_mask(labels[0], labels[1]).mean():.1f} % after the first iteration)")

before = kernels_for.cache_info()
show(draw("chelsea", DEFAULTS["theta_alpha"], DEFAULTS["theta_beta"], DEFAULTS["theta_gamma"], 10.0, 0.0,
          iterations=8, t=8, label=2))
after = kernels_for.cache_info()
print(f"lattice cache: {after.hits - before.hits} hit(s), {after.misses - before.misses} new build(s) "
      "for a new weight setting")
assert after.misses == before.misses

use_trained()  # what the button does
print("learned → knob:", ", ".join(f"{KNOBS[k][0]} {v:.2f} → {readout(controls[k])}" for k, v in learned.items()))
for name, value in learned.items():
    assert controls[name].value == on_grid(controls[name], value), (name, controls[name].value, value)
assert live.drawn == live.values() and not live.error.value, live.error.value
missing = [k for k, (symbol, _) in KNOBS.items() if f"{symbol}={readout(controls[k])}" not in live.title]
assert not missing, (missing, live.title)
show(draw(**live.values()))  # the live figure, as ordinary output

if VOC in SOURCES:  # the VOC network's unary on the same photo, at the playground's first settings
    options, biggest = label_choices("chelsea", VOC)
    print("VOC classes in the network's arg-max on chelsea:", ", ".join(text for text, _ in options))
    show(draw("chelsea", **crf, t=DEFAULTS["iterations"], label=biggest, source=VOC, temperature=2.0))
