"""CRF-RNN Lab — watch mean-field inference refine a segmentation while you move the knobs.

Widgets and layout only: loading, unaries, inference and pictures come from ``lab`` (``lab.explore``,
``lab.unary``, ``lab.viz``, ``lab.data``), where they are unit-tested and shared with the notebooks.
Run with ``make app`` (or ``streamlit run app/streamlit_app.py``).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from lab.crf import CRFParams, TrainedCRF, TrainedCRFUnavailable, find_trained_crfs, load_trained_crf
from lab.data import load_image, sample_images
from lab.data.synthetic import CLASS_NAMES, render_scene
from lab.explore import build_kernels, fit_image, label_png, params_to_json, q_npy, run_crf, to_tensor
from lab.unary import coarse_colour_clusters, load_compat, load_probability_map, unary_from_annotation
from lab.unary.fcn_source import FCNUnavailable, fcn_unary, find_fcn_checkpoint, load_fcn
from lab.unary.mediapipe_source import SelfieSegmenter, SourceUnavailable, selfie_status
from lab.viz import changed_mask, class_heatmap, colorize, entropy_map, kl_figure, overlay
from lab.viz.palette import PALETTE

EXACT_MAX_PIXELS = 96 * 96  # O(N²) message passing: about a second per iteration at this size on 2 cores
# the CRF knobs' ranges (a trained CRF's values outside them are clamped, and the app says so)
KNOB_RANGES = {
    "theta_alpha": (1.0, 200.0),
    "theta_beta": (1.0, 50.0),
    "theta_gamma": (0.5, 10.0),
    "w_bilateral": (-10.0, 50.0),
    "w_spatial": (-10.0, 50.0),
}
NO_TRAINED = "none: set the knobs by hand"
TRAINED_MU = "Trained CRF-RNN's µ"

st.set_page_config(page_title="CRF-RNN Lab", layout="wide")


@st.cache_data(max_entries=4, show_spinner=False)
def bundled_photos() -> dict[str, np.ndarray]:
    """The photos that ship with installed packages, and three synthetic scenes, loaded once."""
    photos = sample_images()
    for seed in (1, 2, 3):
        photos[f"synthetic scene {seed}"] = render_scene([7, seed], 160).image
    return photos


@st.cache_resource(
    max_entries=8,
    show_spinner="Building the lattices (once per image and θ; the first build on a machine also compiles the CPU "
    "kernels, about 20 s)…",
)
def kernels_for(image: np.ndarray, theta_alpha, theta_beta, theta_gamma, normalize, message_passing, backend):
    """The image's kernels, built once per (image, θ, normalisation, message passing, backend)."""
    params = CRFParams(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma, normalize=normalize)
    return build_kernels(to_tensor(image), params, message_passing=message_passing, backend=backend)


@st.cache_data(max_entries=4, show_spinner=False)
def selfie_available() -> tuple[bool, str]:
    """Whether MediaPipe and its model file are here, and why not."""
    return selfie_status()


@st.cache_resource(max_entries=1, show_spinner="Loading the selfie segmenter…")
def selfie_model() -> SelfieSegmenter:
    """The MediaPipe segmenter, loaded once per server."""
    return SelfieSegmenter()


@st.cache_data(max_entries=8, show_spinner="Running the selfie segmenter…")
def selfie_unary(image: np.ndarray):
    """U (1, 2, H, W): background, person."""
    return selfie_model().unary(image)


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


@st.cache_data(max_entries=16, show_spinner=False)
def clusters_for(image: np.ndarray, n_labels: int, block: int, confidence: float):
    """The built-in unary, cached per image and settings."""
    return coarse_colour_clusters(image, n_labels=n_labels, block=block, confidence=confidence)


def error_box(where: str, exc: Exception) -> None:
    """Show what went wrong without stopping the app."""
    st.error(f"{where}: {exc}", icon="⚠️")


# ------------------------------------------------------------------------------------------ sidebar
sb = st.sidebar
sb.title("CRF-RNN Lab")
sb.header("Image")
photos = bundled_photos()
image_source = sb.radio("Image source", ["Bundled photo", "Upload"], key="image_source", horizontal=True)
photo_name = sb.selectbox("Bundled photo", list(photos), key="photo", disabled=image_source != "Bundled photo")
upload = None
if image_source == "Upload":
    upload = sb.file_uploader(
        "Your image (PNG, JPEG, WebP, TIFF)", type=["png", "jpg", "jpeg", "webp", "tif", "tiff"], key="image_upload"
    )
work_size = sb.slider(
    "Working size (longer side, px)",
    64,
    1024,
    256,
    step=32,
    key="work_size",
    help="Large images are downscaled to this size before inference; the original size is shown.",
)

original = photos[photo_name]
image_label = photo_name
if upload is not None:
    try:
        original = load_image(upload.getvalue())
        image_label = upload.name
    except (ValueError, TypeError) as exc:
        error_box(f"Image {upload.name!r} could not be read", exc)
        st.info(f"Showing the bundled photo {photo_name!r} instead.")
image = fit_image(original, work_size)
h, w = image.shape[:2]

sb.header("Unary")
unary_source = sb.radio(
    "Unary source",
    [
        "Colour clusters (built-in)",
        "Person vs background (MediaPipe)",
        "Small FCN (synthetic shapes)",
        "Annotation image",
        "Probability map (.npy/.npz)",
    ],
    key="unary_source",
    help="Where U = log p comes from. Colour clusters need no model: k-means on tiles, upsampled blocky.",
)
unary, notes, class_colours = None, [], None
if unary_source == "Colour clusters (built-in)":
    n_clusters = sb.slider("Labels L", 2, 8, 4, key="n_clusters")
    block = sb.slider("Tile size (px)", 4, 64, 16, step=4, key="block", help="Larger tiles, blockier unary.")
    confidence = sb.slider("Confidence of the tile's label", 0.3, 0.95, 0.6, step=0.05, key="cluster_confidence")
    confidence = max(confidence, 1.0 / n_clusters + 0.01)
    unary, _ = clusters_for(image, n_clusters, block, confidence)
elif unary_source == "Person vs background (MediaPipe)":
    ok, reason = selfie_available()
    if ok:
        try:
            unary = selfie_unary(image)
            notes = ["MediaPipe selfie segmenter: class 1 = person"]
        except SourceUnavailable as exc:
            error_box("MediaPipe selfie segmenter", exc)
    else:
        st.warning(f"The MediaPipe selfie segmenter is unavailable here: {reason}", icon="ℹ️")
elif unary_source == "Small FCN (synthetic shapes)":
    try:
        checkpoint = find_fcn_checkpoint()
        model, _ = fcn_model(str(checkpoint), checkpoint.stat().st_mtime)
        unary = fcn_unary(image, model)
        notes = [f"FCN {checkpoint.parent.name}: {', '.join(CLASS_NAMES)}"]
        if not image_label.startswith("synthetic"):
            st.info("The FCN was trained on synthetic shapes: pick a 'synthetic scene' photo to see it at its best.")
    except FCNUnavailable as exc:
        st.warning(f"The small FCN is unavailable: {exc}", icon="ℹ️")
elif unary_source == "Annotation image":
    ann = sb.file_uploader(
        "Annotation (colours = labels, black = unknown)", type=["png", "bmp", "tif", "tiff"], key="annotation_upload"
    )
    ann_conf = sb.slider("Confidence of annotated labels", 0.5, 0.99, 0.7, step=0.01, key="annotation_confidence")
    if ann is not None:
        try:
            ann_img = load_image(ann.getvalue())
            if ann_img.shape[:2] != original.shape[:2] and ann_img.shape[:2] != image.shape[:2]:
                raise ValueError(
                    f"size {ann_img.shape[1]}×{ann_img.shape[0]} differs from the image's "
                    f"{original.shape[1]}×{original.shape[0]}"
                )
            if ann_img.shape[:2] != image.shape[:2]:
                from PIL import Image

                ann_img = np.asarray(Image.fromarray(ann_img).resize((w, h), Image.Resampling.NEAREST))
            unary, class_colours = unary_from_annotation(ann_img, ann_conf, shape=(h, w))
        except (ValueError, TypeError) as exc:
            error_box(f"Annotation {ann.name!r}", exc)
else:
    prob = sb.file_uploader("Probability or score map, (H, W, L) or (L, H, W)", type=["npy", "npz"], key="prob_upload")
    if prob is not None:
        try:
            unary, notes = load_probability_map(prob.getvalue(), (h, w), name=prob.name)
        except (ValueError, TypeError) as exc:
            error_box(f"Probability map {prob.name!r}", exc)
if unary is None:
    st.info("Waiting for a unary: upload one in the sidebar. Meanwhile the built-in colour clusters are shown.")
    unary, _ = clusters_for(image, 4, 16, 0.6)
num_labels = unary.shape[1]

sb.header("CRF")
trained = None
trained_paths = {f"{p.parent.parent.name}/{p.parent.name}/{p.stem}": p for p in find_trained_crfs()}
if trained_paths:
    pick = sb.selectbox(
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
        sb.caption(trained.describe())
        sb.button("Set the knobs to its θ, weights and µ", key="use_trained", on_click=use_trained, args=(trained,))
        for note in st.session_state.get("trained_clamped", []):
            sb.warning(f"Clamped to the knob's range: {note}", icon="ℹ️")
theta_alpha = sb.slider(
    "θα: bilateral spatial width (px)",
    *KNOB_RANGES["theta_alpha"],
    80.0,
    key="theta_alpha",
    help="How far appearance similarity reaches. DeepLab: 50–95; CRF-RNN release: 160.",
)
theta_beta = sb.slider(
    "θβ: bilateral colour width (0..255)",
    *KNOB_RANGES["theta_beta"],
    13.0,
    key="theta_beta",
    help="How similar colours must be to share a label. DeepLab: 3–10; CRF-RNN release: 3.",
)
theta_gamma = sb.slider(
    "θγ: smoothness width (px)",
    *KNOB_RANGES["theta_gamma"],
    3.0,
    key="theta_gamma",
    help="Reach of the appearance-blind smoothing kernel. Common: 3.",
)
w_bilateral = sb.slider(
    "w bilateral",
    *KNOB_RANGES["w_bilateral"],
    5.0,
    key="w_bilateral",
    help="Weight of the appearance kernel. DeepLab: 3–5; CRF-RNN release: 5. "
    "Negative weights only make sense with a learned µ (training can end there).",
)
w_spatial = sb.slider(
    "w spatial",
    *KNOB_RANGES["w_spatial"],
    3.0,
    key="w_spatial",
    help="Weight of the smoothness kernel. Common: 3.",
)
iterations = sb.slider(
    "Iterations T", 0, 20, 5, key="iterations", help="Mean-field iterations (CRF-RNN trains with 5)."
)
normalize = sb.selectbox(
    "Normalisation",
    ["after", "symmetric", "none"],
    key="normalize",
    help="after: K v / K 1 (CRF-RNN); symmetric: D^-½ K D^-½ (pydensecrf's default).",
)
message_passing = sb.selectbox(
    "Message passing",
    ["lattice", "exact", "window"],
    key="message_passing",
    help="lattice: permutohedral, O(N); exact: O(N²) ground truth (small images); "
    "window: exact Gaussian truncated to 11×11 (ConvCRF).",
)
compat_choice = sb.radio(
    "Compatibility µ", ["Potts", "Upload (L×L .npy)", TRAINED_MU], key="compat_choice", horizontal=True
)
backend = sb.selectbox(
    "Backend", ["auto", "torch", "triton"], key="backend", help="auto: Triton on a CUDA GPU, PyTorch otherwise."
)
compat = "potts"
if compat_choice == TRAINED_MU:
    if trained is None:
        sb.info("Pick a trained CRF-RNN above to use its µ; Potts meanwhile.")
    elif trained.num_classes != num_labels:
        sb.warning(
            f"The trained µ is {trained.num_classes}×{trained.num_classes}, the unary has L = {num_labels}: "
            "Potts meanwhile (the FCN on synthetic shapes has the trained CRF's labels).",
            icon="ℹ️",
        )
    else:
        compat = trained.params.compat
elif compat_choice != "Potts":
    mu_file = sb.file_uploader("µ as an (L, L) .npy", type=["npy", "npz"], key="compat_upload")
    if mu_file is not None:
        try:
            compat = load_compat(mu_file.getvalue(), num_labels, name=mu_file.name)
        except (ValueError, TypeError) as exc:
            error_box(f"Compatibility {mu_file.name!r}", exc)

# ------------------------------------------------------------------------------------------ inference
st.title("Mean field, iteration by iteration")
size_note = f"{image_label}: {original.shape[1]}×{original.shape[0]} px, working at {w}×{h}"
st.caption(" · ".join([size_note, f"L = {num_labels} labels", *notes]))
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
try:
    (kernels, build_ms) = kernels_for(image, theta_alpha, theta_beta, theta_gamma, normalize, message_passing, backend)
    show_steps = st.toggle("Show Algorithm 1 step by step", key="show_steps")
    with st.spinner("Running mean field…"):
        result = run_crf(unary, to_tensor(image), params, iterations, kernels, steps=show_steps)
except (ValueError, TypeError, RuntimeError) as exc:
    error_box("Inference failed", exc)
    st.stop()

labels = result.labels
t = iterations if iterations == 0 else st.slider("Show iteration t", 0, iterations, iterations, key="t_view")
q_t = result.trace.history[t][0]

left, right = st.columns(2)
left.image(overlay(image, labels[0]), caption="Unary argmax (t = 0)", width="stretch")
right.image(overlay(image, labels[t]), caption=f"Q_{t} argmax", width="stretch")

changed_unary = int(changed_mask(labels[0], labels[t]).sum())
changed_prev = int(changed_mask(labels[max(t - 1, 0)], labels[t]).sum())
m1, m2, m3, m4 = st.columns(4)
m1.metric("Pixels changed vs unary", changed_unary)
m2.metric("Pixels changed vs t−1", changed_prev)
m3.metric("Lattice build (ms)", f"{build_ms:.0f}", help="Cached: rebuilt only when the image or θ changes.")
m4.metric(f"{iterations} iterations (ms)", f"{result.inference_ms:.0f}")

legend = " ".join(
    f"<span style='background:rgb{tuple(int(c) for c in PALETTE[i])};padding:2px 10px;margin-right:4px'>"
    f"&nbsp;</span>{i}"
    for i in range(num_labels)
)
st.markdown(f"Classes: {legend}", unsafe_allow_html=True)

st.subheader(f"Iteration {t} up close")
view_class = st.selectbox("Class", list(range(num_labels)), key="class_view")
c1, c2, c3, c4 = st.columns(4)
c1.image(class_heatmap(q_t, view_class), caption=f"Q_{t}(class {view_class})", width="stretch")
ent = entropy_map(q_t)
c2.image(
    (255 * ent / max(np.log(num_labels), 1e-9)).clip(0, 255).astype(np.uint8),
    caption=f"Entropy (white = log L); mean {ent.mean():.3f} nats",
    width="stretch",
)
c3.image(
    colorize(changed_mask(labels[max(t - 1, 0)], labels[t]).astype(np.int64) * 1),
    caption=f"Changed since t−1 ({changed_prev} px)",
    width="stretch",
)
c4.image(
    colorize(changed_mask(labels[0], labels[t]).astype(np.int64) * 1),
    caption=f"Changed since the unary ({changed_unary} px)",
    width="stretch",
)

kl_col, _ = st.columns(2)
kl_col.pyplot(kl_figure(result.trace.kl[0], current=t), width="stretch")

if show_steps and iterations > 0:
    st.subheader(f"Algorithm 1, iteration {max(t, 1)}, class {view_class}")
    step = result.trace.steps[max(t, 1) - 1]
    stages = [
        (step.messages[0], "1. message: bilateral Q̃"),
        (step.messages[1], "1. message: spatial Q̃"),
        (step.weighted, "2. weighting Q̌"),
        (step.transformed, "3. compatibility Q̂"),
        (step.logits, "4. unary addition U − Q̂"),
        (step.q, "5. normalisation Q"),
    ]
    cols = st.columns(len(stages))
    for col, (x, caption) in zip(cols, stages, strict=True):
        v = x[0, view_class].numpy()
        lo, hi = float(v.min()), float(v.max())
        col.image(
            ((v - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8),
            caption=f"{caption} [{lo:.2f}, {hi:.2f}]",
            width="stretch",
        )

st.subheader("Download")
d1, d2, d3 = st.columns(3)
d1.download_button(
    "Label map (PNG)", label_png(labels[t]), file_name=f"labels_t{t}.png", mime="image/png", key="dl_labels"
)
d2.download_button("Q_t (.npy)", q_npy(q_t), file_name=f"q_t{t}.npy", key="dl_q")
d3.download_button(
    "Parameters (JSON)",
    params_to_json(
        params, iterations=iterations, message_passing=message_passing, image=image_label, working_size=work_size
    ),
    file_name="crf_params.json",
    mime="application/json",
    key="dl_params",
)
