"""A trained CRF-RNN read back from a ``python -m lab.train`` checkpoint: its θ, weights and µ.

Training writes ``artifacts/train/<run>/seed<k>/<method>.pt``; the CRF-RNN rows (``crf-rnn``,
``crf-rnn-potts``, ``crf-rnn-learned-theta``, ...) hold the whole network's state dict, the CRF's under
``crf.``. This module finds them and turns one into :class:`CRFParams` (and a :class:`CRFRNN`), so the app
and the notebooks can show and use what training learned, learned bandwidths included.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import torch

from lab._paths import train_artifacts
from lab.crf.module import CRFRNN
from lab.crf.params import BANDWIDTHS, CRFParams
from lab.errors import Unavailable

__all__ = ["TrainedCRF", "TrainedCRFUnavailable", "find_trained_crfs", "load_trained_crf"]

_PREFIX = "crf."


class TrainedCRFUnavailable(Unavailable, ValueError):
    """The file is not a readable CRF-RNN training checkpoint (the message says why)."""


@dataclasses.dataclass(frozen=True)
class TrainedCRF:
    """What a CRF-RNN checkpoint holds.

    Attributes:
        path: the checkpoint file.
        method: the training stage that wrote it (e.g. ``"crf-rnn-learned-theta"``; the file name if unknown).
        epoch: epochs completed.
        num_classes: L.
        params: θα, θβ (0..255), θγ as numbers (the learned values where learned), the weights (numbers, or
            (L,) tensors with per-class weights), µ as an (L, L) tensor and the normalisation.
        learned_bandwidths: whether θ were trained (``learnable_bandwidths``) rather than fixed.
        image_size: side of the (square) training images in pixels, if the checkpoint says (θα and θγ are
            in those pixels: on a larger image the same reach is proportionally more pixels).
    """

    path: Path
    method: str
    epoch: int
    num_classes: int
    params: CRFParams
    learned_bandwidths: bool
    image_size: int | None = None

    @property
    def per_class_weights(self) -> bool:
        """Whether the kernel weights are one per class."""
        return not self.params.scalar_weights

    def module(self, iterations: int = 5) -> CRFRNN:
        """The trained CRF as a :class:`CRFRNN` (fixed parameters: for inference; θ fixed at the learned values)."""
        return CRFRNN(
            self.num_classes, iterations, self.params, per_class_weights=self.per_class_weights, learnable=False
        )

    def summary(self) -> dict[str, float]:
        """θα, θβ, θγ and the weights as numbers (per-class weights: their mean), for tables and sliders."""
        p = self.params
        return {
            **p.bandwidth_values(),
            "w_bilateral": float(torch.as_tensor(p.w_bilateral).float().mean()),
            "w_spatial": float(torch.as_tensor(p.w_spatial).float().mean()),
        }

    def describe(self) -> str:
        """One line: where it comes from and its θ and weights."""
        s = self.summary()
        kind = "learned" if self.learned_bandwidths else "fixed, grid-searched"
        mean = " (means of per-class weights)" if self.per_class_weights else ""
        size = f", {self.image_size}-px images" if self.image_size else ""
        return (
            f"{self.method} ({self.path.parent.name}, {self.epoch} epochs{size}, L = {self.num_classes}): "
            f"θα = {s['theta_alpha']:.3g} px, θβ = {s['theta_beta']:.3g}, θγ = {s['theta_gamma']:.3g} px ({kind}); "
            f"w bilateral = {s['w_bilateral']:.3g}, w spatial = {s['w_spatial']:.3g}{mean}"
        )


def find_trained_crfs(search: str | os.PathLike | None = None) -> list[Path]:
    """The CRF-RNN checkpoints (``crf-rnn*.pt``) under ``search`` (default: ``$LAB_TRAIN_DIR`` or artifacts/train).

    Sorted by run, seed and method; empty if there are none (train some with
    :func:`lab._paths.quick_training_command`, which writes where this looks).
    """
    root = train_artifacts(search)
    return sorted(root.glob("**/crf-rnn*.pt")) if root.is_dir() else []


def load_trained_crf(path: str | os.PathLike) -> TrainedCRF:
    """Read the CRF-RNN of a training checkpoint.

    Args:
        path: a ``lab.train`` checkpoint of a CRF-RNN stage (or a file holding a ``CRFRNN`` state dict
            under ``"model"``, its keys prefixed ``crf.``).

    Raises:
        TrainedCRFUnavailable: unreadable, or no CRF-RNN in it (the message names the file and what is missing).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        weights = state["model"]
        crf = {k[len(_PREFIX) :]: v for k, v in weights.items() if k.startswith(_PREFIX)}
    except (OSError, KeyError, TypeError, RuntimeError, AttributeError, EOFError, pickle.UnpicklingError) as exc:
        raise TrainedCRFUnavailable(
            f"{path}: not a readable training checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    compat = crf.get("compat")
    if compat is None and "parametrizations.compat.original" in crf:  # the symmetric-µ ablation
        raw = crf["parametrizations.compat.original"]
        compat = 0.5 * (raw + raw.T)
    missing = [k for k, v in (("w_bilateral", crf.get("w_bilateral")), ("compat", compat)) if v is None]
    if "_extra_state" not in crf:
        missing.append("_extra_state (bandwidths)")
    if missing:
        raise TrainedCRFUnavailable(f"{path}: no CRF-RNN in this checkpoint (missing crf.{', crf.'.join(missing)})")
    extra = crf["_extra_state"]
    learned = all(f"log_{n}" in crf for n in BANDWIDTHS)
    thetas = {n: float(crf[f"log_{n}"].exp()) if learned else float(extra[n]) for n in BANDWIDTHS}

    def weight(t: torch.Tensor) -> float | torch.Tensor:
        t = t.detach().float()
        return float(t) if t.dim() == 0 else t.clone()

    try:
        params = CRFParams(
            **thetas,
            w_bilateral=weight(crf["w_bilateral"]),
            w_spatial=weight(crf["w_spatial"]),
            compat=compat.detach().float().clone(),
            normalize=extra.get("normalize", "after"),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise TrainedCRFUnavailable(f"{path}: the CRF's parameters are not valid ({exc})") from None
    config = state.get("config") or {}
    return TrainedCRF(
        path=path,
        method=str(config.get("stage") or path.stem),
        epoch=int(state.get("epoch", 0)),
        num_classes=int(compat.shape[0]),
        params=params,
        learned_bandwidths=learned,
        image_size=_image_size(config),
    )


def _image_size(config: object) -> int | None:
    """``data.image_size`` wherever it is nested in a stage's config (lab.train nests the stages it builds on)."""
    if not isinstance(config, dict):
        return None
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("image_size"), int):
        return data["image_size"]
    return next((size for v in config.values() if (size := _image_size(v)) is not None), None)
