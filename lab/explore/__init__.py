"""Plain functions behind the app and the playground notebook: prepare an image, build once, run, export.

The app stays thin (widgets and layout); everything it computes comes from here, so it is unit-tested and
shared with the notebooks.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lab.crf import CRFKernels, CRFParams, MeanFieldTrace, mean_field
from lab.explore.changes import ChangeReport, crf_changes, flip_backs, flip_map
from lab.explore.memory import (
    CACHE_BUDGET_BYTES,
    CACHE_BUDGET_ENV,
    ByteBudgetCache,
    app_cache,
    array_key,
    cache_budget,
    heap_limit,
    on_worker,
    rss_bytes,
    tensor_nbytes,
    trim_heap,
    trim_heap_above,
)
from lab.lattice.backend import BACKENDS, resolve_backend
from lab.unary.sources import MAX_LABELS  # 256: a palette colour (and a uint8 label value) per class id
from lab.viz.palette import PALETTE

__all__ = [
    "CACHE_BUDGET_BYTES",
    "CACHE_BUDGET_ENV",
    "MAX_LABELS",
    "ByteBudgetCache",
    "ChangeReport",
    "LabelMaps",
    "RunResult",
    "annotation_label_count",
    "app_cache",
    "array_key",
    "backend_options",
    "build_kernels",
    "cache_budget",
    "check_num_labels",
    "crf_changes",
    "fit_image",
    "flip_backs",
    "flip_map",
    "heap_limit",
    "label_png",
    "on_worker",
    "params_from_json",
    "params_key",
    "params_to_json",
    "q_npy",
    "rss_bytes",
    "run_crf",
    "tensor_nbytes",
    "to_tensor",
    "trim_heap",
    "trim_heap_above",
]


def fit_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (anti-aliased) so that the longer side is at most ``max_side``; smaller images are kept.

    Args:
        image: (H, W, 3) uint8.
        max_side: the working size in pixels, ≥ 8.

    Returns:
        (H', W', 3) uint8.

    Example:
        >>> fit_image(np.zeros((100, 50, 3), np.uint8), 40).shape
        (40, 20, 3)
    """
    if int(max_side) != max_side or max_side < 8:
        raise ValueError(f"max_side: expected an integer >= 8, got {max_side!r}")
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float32 in 0..255."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]  # a copy: inputs stay untouched


def build_kernels(
    image: torch.Tensor, params: CRFParams, message_passing: str = "lattice", backend: str = "auto"
) -> tuple[CRFKernels, float]:
    """The image's two kernels (lattices built once per image and θ), and the build time in ms."""
    t0 = time.perf_counter()
    kernels = CRFKernels(image, params, message_passing=message_passing, backend=backend)
    return kernels, 1e3 * (time.perf_counter() - t0)


@dataclass
class RunResult:
    """One inference: the trace and what it cost."""

    trace: MeanFieldTrace
    inference_ms: float
    build_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    @functools.cached_property
    def labels(self) -> LabelMaps:
        """Arg-max label maps (H, W) of Q_0 .. Q_T (batch element 0), each computed when first read, then kept."""
        return LabelMaps(self.trace.history)


class LabelMaps(Sequence):
    """The arg-max label maps of a run's Q_0 … Q_T, a sequence computed lazily: a map is made when first read.

    A view reads a few of them (t = 0, t − 1, t and the last three for the oscillation check), and one arg-max
    over L classes costs ≈ 8 ms at 512² × 21; a run of T = 10 has 11.

    Example:
        >>> maps = LabelMaps([torch.tensor([[[[0.2]], [[0.8]]]])])
        >>> len(maps), maps[-1].tolist()
        (1, [[1]])
    """

    def __init__(self, history: Sequence[torch.Tensor]) -> None:
        self._history = history
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._history)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"labels: index {index} out of range for {len(self)} maps")
        i %= len(self)
        if i not in self._maps:
            self._maps[i] = self._history[i][0].argmax(0).numpy()
        return self._maps[i]


def run_crf(
    unary: torch.Tensor,
    image: torch.Tensor,
    params: CRFParams,
    iterations: int,
    kernels: CRFKernels,
    *,
    steps: bool = False,
) -> RunResult:
    """Mean field with a prebuilt kernel pair, keeping every Q (and every step when ``steps``).

    Args:
        unary: (1, L, H, W) U.
        image: (1, 3, H, W) 0..255.
        params: weights and compatibility (the bandwidths must be those ``kernels`` were built with).
        iterations: T ≥ 0.
        kernels: from :func:`build_kernels`.
        steps: also keep the Algorithm-1 intermediates of every iteration.

    Returns:
        A :class:`RunResult`.
    """
    t0 = time.perf_counter()
    with torch.no_grad():
        trace = mean_field(
            unary,
            image,
            params,
            iterations=iterations,
            keep="steps" if steps else "q",
            message_passing=kernels.message_passing,
            kernels=kernels,
        )
    return RunResult(trace=trace, inference_ms=1e3 * (time.perf_counter() - t0))


def params_key(params: CRFParams) -> tuple:
    """A hashable key of everything in ``params`` that changes a run (tensor weights and µ by their contents).

    Example:
        >>> a, b = params_key(CRFParams()), params_key(CRFParams(w_spatial=1.0))
        >>> a == params_key(CRFParams()), a == b
        (True, False)
    """

    def plain(v):
        if isinstance(v, torch.Tensor):
            return ("tensor", *array_key(v.detach().cpu().numpy()))
        return v

    return tuple((f.name, plain(getattr(params, f.name))) for f in dataclasses.fields(params))


def label_png(labels: np.ndarray) -> bytes:
    """A palette PNG of a label map (pixel values = class ids, colours = the lab's palette)."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"labels: expected an (H, W) map of class ids 0..255, got shape {labels.shape}")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def q_npy(q: torch.Tensor) -> bytes:
    """Q (L, H, W) as the bytes of an .npy file (float32)."""
    buf = io.BytesIO()
    np.save(buf, q.detach().cpu().numpy().astype(np.float32))
    return buf.getvalue()


_PARAM_FIELDS = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "normalize", "window_size")


def params_to_json(params: CRFParams, **extra: object) -> str:
    """The parameters as JSON (the app's download; the CLI reads it back with :func:`params_from_json`).

    Tensor weights and compatibility matrices are written as nested lists.
    """

    def plain(v):
        return v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else v

    doc = {name: plain(getattr(params, name)) for name in _PARAM_FIELDS}
    doc["compat"] = plain(params.compat)
    doc.update({k: plain(v) for k, v in extra.items()})
    return json.dumps(doc, indent=2, sort_keys=True)


def params_from_json(text: str) -> tuple[CRFParams, dict]:
    """Read :func:`params_to_json`'s output: the :class:`CRFParams` and the other keys (e.g. iterations).

    Example:
        >>> p, extra = params_from_json(params_to_json(CRFParams(theta_alpha=50.0), iterations=7))
        >>> p.theta_alpha, extra
        (50.0, {'iterations': 7})
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"params: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"params: expected a JSON object, got {type(doc).__name__}")
    kwargs = {}
    for name in (*_PARAM_FIELDS, "compat"):
        if name in doc:
            v = doc.pop(name)
            kwargs[name] = torch.tensor(v, dtype=torch.float32) if isinstance(v, list) else v
    return CRFParams(**kwargs), doc


# ------------------------------------------------------------------------------ labels and backends
def check_num_labels(num_labels: int, name: str) -> int:
    """Refuse more labels than the palette has colours (:data:`MAX_LABELS`, 256).

    Args:
        num_labels: L of a unary.
        name: what to call its source in the message (e.g. the uploaded file's name).

    Returns:
        ``num_labels``.

    Raises:
        ValueError: L > 256.

    Example:
        >>> check_num_labels(21, "p.npy")
        21
    """
    if num_labels > MAX_LABELS:
        raise ValueError(
            f"{name}: {num_labels} labels; the app shows at most {MAX_LABELS} (one palette colour per class id 0..255)"
        )
    return num_labels


def annotation_label_count(annotation: np.ndarray) -> int:
    """The labels an annotation image defines: its distinct colours other than black (black = unknown).

    Cheap next to building the unary, so the app can refuse an annotation with too many colours first.

    Args:
        annotation: (H, W, 3) uint8.

    Returns:
        The number of distinct non-black colours.

    Example:
        >>> ann = np.zeros((2, 2, 3), np.uint8); ann[0, 0] = (255, 0, 0); ann[1, 1] = (0, 0, 255)
        >>> annotation_label_count(ann)
        2
    """
    flat = np.asarray(annotation).reshape(-1, 3).astype(np.int64)
    codes = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    return int((codes != 0).sum())


def backend_options(device: torch.device | str = "cpu") -> list[str]:
    """The backends (of ``"auto"``, ``"torch"``, ``"triton"``) that can run on ``device``, in that order.

    ``"triton"`` is offered only where :func:`~lab.lattice.backend.resolve_backend` accepts it: Triton
    installed and CUDA tensors (or ``TRITON_INTERPRET=1``); an explicit "triton" that cannot run raises there.

    Example:
        >>> backend_options("cpu")[:2]
        ['auto', 'torch']
    """
    device = torch.device(device)
    options = []
    for backend in BACKENDS:
        try:
            resolve_backend(backend, device)
        except RuntimeError:
            continue
        options.append(backend)
    return options


# ------------------------------------------------------------------------------ a cache bounded in bytes
