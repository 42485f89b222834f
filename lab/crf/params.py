"""The dense-CRF parameters: kernel bandwidths, kernel weights, label compatibility, normalisation.

| here          | paper     | pydensecrf                          | crfasrnn_pytorch (Caffe prototxt)   |
|---------------|-----------|-------------------------------------|-------------------------------------|
| theta_alpha   | θα        | addPairwiseBilateral(sxy=…)         | alpha (theta_alpha), 160            |
| theta_beta    | θβ        | addPairwiseBilateral(srgb=…)        | beta (theta_beta), 3                |
| theta_gamma   | θγ        | addPairwiseGaussian(sxy=…)          | gamma (theta_gamma), 3              |
| w_bilateral   | w(1)      | addPairwiseBilateral(compat=…)      | bilateral_ker_weight, 5             |
| w_spatial     | w(2)      | addPairwiseGaussian(compat=…)       | spatial_ker_weight, 3               |
| compat        | µ(l, l')  | PottsCompatibility / MatrixCompat.  | compatibility matrix (−Potts init)  |
| normalize     | —         | NORMALIZE_SYMMETRIC (default)       | "after" (divide by K·1)             |
| window_size   | —         | —                                   | — (ConvCRF: filter_size)            |

The bandwidths may be 0-d tensors (e.g. ``exp`` of a learnable log θ, as ``CRFRNN(learnable_bandwidths=True)``):
mean field then builds the features differentiably and the lattice returns their gradient.

Beyond RGB photos (``docs/crf.md``, "Volumes and other guides"): for a guide (B, C, *spatial) with 1–3 spatial
axes, θα and θγ may be one value per spatial axis (in the tensor's axis order, e.g. (θ_z, θ_y, θ_x) for
(D, H, W)) and θβ one per channel (in the channel's own units: Hounsfield units for CT, say), as tuples or
1-d tensors; ``spacing`` gives the voxel size per axis, and θα, θγ are then in those physical units.

Sign conventions: pydensecrf's unary is an *energy* −log p = −U; its Potts ``compat=w`` adds +w·Q̃ to the
logits, while ``compat="potts"`` here (µ = [l ≠ l'], weight w) subtracts w·(Σ_l' Q̃_l' − Q̃_l). The two differ
by a per-pixel constant that cancels in the softmax, so the same θ and w give the same Q.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lab._checks import check_choice, check_int, check_number, check_positive, check_shape, data_checks_enabled
from lab.lattice.normalize import NORMALIZATIONS

__all__ = [
    "BANDWIDTHS",
    "MAX_WEIGHT",
    "MESSAGE_PASSING",
    "Bandwidth",
    "CRFParams",
    "bandwidths_close",
    "format_bandwidth",
    "potts_compat",
]

BANDWIDTHS = ("theta_alpha", "theta_beta", "theta_gamma")

MESSAGE_PASSING = ("lattice", "exact", "window")

# A bandwidth: one number (or 0-d tensor) for every axis / channel, or one per axis / channel
Bandwidth = float | torch.Tensor | Sequence[float]


def potts_compat(num_labels: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The Potts compatibility µ(l, l') = [l ≠ l'].

    Args:
        num_labels: L.
        dtype: float dtype of the result.
        device: device of the result.

    Returns:
        (L, L) matrix with zeros on the diagonal and ones elsewhere.

    Example:
        >>> potts_compat(3)
        tensor([[0., 1., 1.],
                [1., 0., 1.],
                [1., 1., 0.]])
    """
    return 1 - torch.eye(num_labels, dtype=dtype, device=device)


# Largest |w| and |µ| accepted: beyond, w·µ·Q̌ approaches float32's range in the compatibility transform
# (sums over L labels of products), and no image needs weights this large (pydensecrf's defaults are 3–10).
MAX_WEIGHT = 1e6


def _check_weight(w: float | torch.Tensor, name: str) -> None:
    """A finite number, 0-d tensor or (L,) tensor, within ±MAX_WEIGHT."""
    if isinstance(w, torch.Tensor):
        if w.dim() > 1 or not w.is_floating_point():
            raise ValueError(
                f"{name}: expected a number, a 0-d float tensor or a (L,) per-class float tensor, "
                f"got {w.dtype} {tuple(w.shape)}"
            )
        values = w.detach()
        if values.numel() == 0:
            raise ValueError(f"{name}: expected a number or one weight per class, got an empty tensor")
        if not data_checks_enabled():  # a tensor's values are read only while value checks are on
            return
    else:
        values = torch.tensor(check_number(w, name), dtype=torch.float64)
    if not bool(torch.isfinite(values).all()) or float(values.abs().max()) > MAX_WEIGHT:
        raise ValueError(f"{name}: expected finite numbers within ±{MAX_WEIGHT:g}, got {w!r}")


def _check_bandwidth(theta: Bandwidth, name: str) -> Bandwidth:
    """A finite number > 0, a 0-d or non-empty 1-d floating tensor of them, or a non-empty tuple / list of them.

    Returns the value to store: a list becomes a tuple of floats (hashable, immutable).
    """
    if isinstance(theta, torch.Tensor):
        if theta.dim() > 1 or not theta.is_floating_point() or theta.numel() == 0:
            raise ValueError(
                f"{name}: expected a number, a 0-d float tensor or a (n,) float tensor (one per axis or channel), "
                f"got {theta.dtype} {tuple(theta.shape)}"
            )
        if data_checks_enabled():
            for v in theta.detach().reshape(-1).tolist():
                check_positive(v, name)
        return theta
    if isinstance(theta, (tuple, list)):
        if not theta:
            raise ValueError(
                f"{name}: expected a number or one value per axis or channel, got an empty {type(theta).__name__}"
            )
        for i, v in enumerate(theta):
            check_positive(v, f"{name}[{i}]")
        return tuple(float(v) for v in theta)
    check_positive(theta, name)
    return theta


def _check_spacing(spacing: object) -> float | tuple[float, ...] | None:
    """None, a number > 0 or a non-empty tuple / list of them (stored as a tuple of floats)."""
    if spacing is None:
        return None
    if isinstance(spacing, (tuple, list)):
        if not spacing:
            raise ValueError("spacing: expected None, a number or one number per spatial axis, got an empty sequence")
        for i, v in enumerate(spacing):
            check_positive(v, f"spacing[{i}]")
        return tuple(float(v) for v in spacing)
    check_positive(spacing, "spacing")
    return float(spacing)


def format_bandwidth(value: float | tuple[float, ...], spec: str = ".3g") -> str:
    """A bandwidth value (a number, or one per axis / channel) as text, e.g. ``80`` or ``(2, 8, 8)``.

    Example:
        >>> format_bandwidth(80.0), format_bandwidth((2.5, 8.0, 8.0))
        ('80', '(2.5, 8, 8)')
    """
    if isinstance(value, tuple):
        return "(" + ", ".join(format(v, spec) for v in value) + ")"
    return format(value, spec)


def bandwidths_close(a: float | tuple[float, ...], b: float | tuple[float, ...]) -> bool:
    """Whether two bandwidth values are equal to rounding (a number equals a tuple of that number)."""
    xs = a if isinstance(a, tuple) else (a,)
    ys = b if isinstance(b, tuple) else (b,)
    if len(xs) != len(ys) and 1 not in (len(xs), len(ys)):
        return False
    n = max(len(xs), len(ys))
    xs, ys = (xs * n if len(xs) == 1 else xs), (ys * n if len(ys) == 1 else ys)
    return all(math.isclose(x, y) for x, y in zip(xs, ys, strict=True))


@dataclass(frozen=True)
class CRFParams:
    """Parameters of the fully connected CRF of Krähenbühl & Koltun, as unrolled by CRF-RNN.

    The pairwise potential is µ(x_i, x_j)·[w_bilateral·k_α(f_i, f_j) + w_spatial·k_γ(p_i, p_j)] with
    k_α = exp(−|p_i − p_j|²/2θα² − |I_i − I_j|²/2θβ²) and k_γ = exp(−|p_i − p_j|²/2θγ²); p in pixels (x = column),
    I in 0..255 for photos. For volumes and other guides, p is in voxels (or ``spacing`` units) and I in the
    guide's units, with θ per axis / channel where given: |p_i − p_j|²/θα² becomes Σ_a (p_ia − p_ja)²/θα_a²
    and |I_i − I_j|²/θβ² becomes Σ_c (I_ic − I_jc)²/θβ_c². See the module docstring for the mapping to
    pydensecrf's and crfasrnn's names.

    Attributes:
        theta_alpha: θα, bilateral kernel spatial bandwidth in pixels (> 0); a number or a 0-d tensor
            (a tensor that requires grad is differentiated through the features), or one per spatial axis
            (a tuple or a (n,) tensor, the tensor's axis order).
        theta_beta: θβ, bilateral kernel colour bandwidth in 0..255 units (> 0), or in the guide's own units;
            number or 0-d tensor, or one per channel (a tuple or a (C,) tensor).
        theta_gamma: θγ, spatial (smoothness) kernel bandwidth in pixels (> 0); number or 0-d tensor, or one
            per spatial axis.
        w_bilateral: w(1): a number, or a (L,) tensor of per-class weights (the paper's diagonal weights).
        w_spatial: w(2): a number or a (L,) tensor.
        compat: "potts" (µ = [l ≠ l']) or an (L, L) tensor µ (row l: the penalty of l against each l').
        normalize: kernel normalisation: "after" (K v / K 1, CRF-RNN), "symmetric" (D^−½ K D^−½ v,
            pydensecrf's default) or "none".
        window_size: k of the k × k window of ``message_passing="window"`` (odd, ≥ 1).
        spacing: the voxel size per spatial axis (the tensor's axis order; a number: the same for all), in the
            physical units θα and θγ are then given in; None: 1 pixel / voxel (photos, pydensecrf).

    Example:
        >>> p = CRFParams(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0)
        >>> p.compat_matrix(2)
        tensor([[0., 1.],
                [1., 0.]])
    """

    theta_alpha: Bandwidth = 80.0
    theta_beta: Bandwidth = 13.0
    theta_gamma: Bandwidth = 3.0
    w_bilateral: float | torch.Tensor = 10.0
    w_spatial: float | torch.Tensor = 3.0
    compat: str | torch.Tensor = "potts"
    normalize: str = "after"
    window_size: int = 11
    spacing: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in BANDWIDTHS:
            object.__setattr__(self, name, _check_bandwidth(getattr(self, name), name))  # a list becomes a tuple
        object.__setattr__(self, "spacing", _check_spacing(self.spacing))
        _check_weight(self.w_bilateral, "w_bilateral")
        _check_weight(self.w_spatial, "w_spatial")
        check_choice(self.normalize, "normalize", NORMALIZATIONS)
        if isinstance(self.compat, str):
            check_choice(self.compat, "compat", ("potts",))
        elif isinstance(self.compat, torch.Tensor):
            check_shape(self.compat, "compat", ["L", "L"])
            if self.compat.shape[0] != self.compat.shape[1] or not self.compat.is_floating_point():
                raise ValueError(
                    f"compat: expected a square (L, L) float matrix, got {self.compat.dtype} {tuple(self.compat.shape)}"
                )
            mu = self.compat.detach()
            bad = mu.numel() and data_checks_enabled()
            if bad and (not bool(torch.isfinite(mu).all()) or float(mu.abs().max()) > MAX_WEIGHT):
                raise ValueError(
                    f"compat: expected finite entries within ±{MAX_WEIGHT:g}, got {mu.abs().max().item()!r}"
                )
        else:
            raise TypeError(f"compat: expected 'potts' or an (L, L) tensor, got {type(self.compat).__name__}")
        check_int(self.window_size, "window_size", 1)
        if self.window_size % 2 == 0:
            raise ValueError(f"window_size: expected an odd integer >= 1, got {self.window_size!r}")

    def bandwidth_values(self) -> dict[str, float | tuple[float, ...]]:
        """The bandwidths as plain numbers, ``{"theta_alpha": …, "theta_beta": …, "theta_gamma": …}``.

        A bandwidth given per axis or channel (a tuple or a 1-d tensor) is a tuple of floats.

        Example:
            >>> CRFParams(theta_alpha=torch.tensor(5.0)).bandwidth_values()["theta_alpha"]
            5.0
            >>> CRFParams(theta_alpha=[2.0, 8.0, 8.0]).bandwidth_values()["theta_alpha"]
            (2.0, 8.0, 8.0)
        """
        out: dict[str, float | tuple[float, ...]] = {}
        for n in BANDWIDTHS:
            t = getattr(self, n)
            if isinstance(t, torch.Tensor):
                out[n] = float(t.detach()) if t.dim() == 0 else tuple(t.detach().double().tolist())
            else:
                out[n] = t if isinstance(t, tuple) else float(t)
        return out

    def kernel_key(self, message_passing: str = "lattice") -> tuple:
        """What the CRF's kernels depend on, as a hashable key: bandwidths, normalisation, message passing, spacing.

        Every cache of :class:`~lab.crf.kernels.CRFKernels` is keyed on it (plus the image): weights and µ are
        not in it (they do not change the kernels); the window size is, for "window".

        Example:
            >>> CRFParams(w_bilateral=3.0).kernel_key() == CRFParams().kernel_key()
            True
            >>> CRFParams(theta_alpha=40.0).kernel_key() == CRFParams().kernel_key()
            False
        """
        t = self.bandwidth_values()
        window = self.window_size if message_passing == "window" else None
        key = (t["theta_alpha"], t["theta_beta"], t["theta_gamma"], self.normalize, message_passing, window)
        return key if self.spacing is None else (*key, self.spacing)

    @property
    def is_potts(self) -> bool:
        """Whether µ is the Potts model (given as "potts")."""
        return isinstance(self.compat, str)

    def compat_matrix(self, num_labels: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """µ as an (L, L) tensor (the given tensor, or Potts).

        Args:
            num_labels: L; must match a given tensor.
            dtype: float dtype of a Potts result (a given tensor keeps its dtype and graph).
            device: device of a Potts result.

        Returns:
            (L, L) compatibility matrix.
        """
        if isinstance(self.compat, str):
            return potts_compat(num_labels, dtype=dtype, device=device)
        if self.compat.shape[0] != num_labels:
            raise ValueError(
                f"compat: expected a ({num_labels}, {num_labels}) matrix for L = {num_labels} labels, got "
                f"{tuple(self.compat.shape)}"
            )
        return self.compat

    def weights(self, num_labels: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The kernel weights as a (K, L) tensor, row 0 bilateral, row 1 spatial (numbers broadcast).

        Args:
            num_labels: L.
            dtype: float dtype (a tensor weight keeps its graph).
            device: device of the result.

        Returns:
            (2, L) weights w(m)_l.
        """
        rows = []
        for name, w in (("w_bilateral", self.w_bilateral), ("w_spatial", self.w_spatial)):
            if isinstance(w, torch.Tensor):
                if w.dim() == 1 and w.shape[0] != num_labels:
                    raise ValueError(
                        f"{name}: expected one weight per class (L = {num_labels}), got shape {tuple(w.shape)}"
                    )
                rows.append(w.to(dtype=dtype, device=device).expand(num_labels))
            else:
                rows.append(torch.full((num_labels,), float(w), dtype=dtype, device=device))
        return torch.stack(rows)

    @property
    def scalar_weights(self) -> bool:
        """Whether both weights are numbers or 0-d tensors (not per class)."""
        return all(not isinstance(w, torch.Tensor) or w.dim() == 0 for w in (self.w_bilateral, self.w_spatial))
