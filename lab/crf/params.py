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

Sign conventions: pydensecrf's unary is an *energy* −log p = −U; its Potts ``compat=w`` adds +w·Q̃ to the
logits, while ``compat="potts"`` here (µ = [l ≠ l'], weight w) subtracts w·(Σ_l' Q̃_l' − Q̃_l). The two differ
by a per-pixel constant that cancels in the softmax, so the same θ and w give the same Q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lab._checks import check_choice, check_int, check_number, check_positive, check_shape, data_checks_enabled
from lab.lattice.normalize import NORMALIZATIONS

__all__ = ["BANDWIDTHS", "MAX_WEIGHT", "MESSAGE_PASSING", "CRFParams", "potts_compat"]

BANDWIDTHS = ("theta_alpha", "theta_beta", "theta_gamma")

MESSAGE_PASSING = ("lattice", "exact", "window")


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


def _check_bandwidth(theta: float | torch.Tensor, name: str) -> None:
    """A finite number > 0, or a 0-d floating tensor holding one."""
    if isinstance(theta, torch.Tensor):
        if theta.dim() != 0 or not theta.is_floating_point():
            raise ValueError(f"{name}: expected a number or a 0-d float tensor, got {theta.dtype} {tuple(theta.shape)}")
        if data_checks_enabled():
            check_positive(float(theta.detach()), name)
    else:
        check_positive(theta, name)


@dataclass(frozen=True)
class CRFParams:
    """Parameters of the fully connected CRF of Krähenbühl & Koltun, as unrolled by CRF-RNN.

    The pairwise potential is µ(x_i, x_j)·[w_bilateral·k_α(f_i, f_j) + w_spatial·k_γ(p_i, p_j)] with
    k_α = exp(−|p_i − p_j|²/2θα² − |I_i − I_j|²/2θβ²) and k_γ = exp(−|p_i − p_j|²/2θγ²); p in pixels (x = column),
    I in 0..255. See the module docstring for the mapping to pydensecrf's and crfasrnn's names.

    Attributes:
        theta_alpha: θα, bilateral kernel spatial bandwidth in pixels (> 0); a number or a 0-d tensor
            (a tensor that requires grad is differentiated through the features).
        theta_beta: θβ, bilateral kernel colour bandwidth in 0..255 units (> 0); number or 0-d tensor.
        theta_gamma: θγ, spatial (smoothness) kernel bandwidth in pixels (> 0); number or 0-d tensor.
        w_bilateral: w(1): a number, or a (L,) tensor of per-class weights (the paper's diagonal weights).
        w_spatial: w(2): a number or a (L,) tensor.
        compat: "potts" (µ = [l ≠ l']) or an (L, L) tensor µ (row l: the penalty of l against each l').
        normalize: kernel normalisation: "after" (K v / K 1, CRF-RNN), "symmetric" (D^−½ K D^−½ v,
            pydensecrf's default) or "none".
        window_size: k of the k × k window of ``message_passing="window"`` (odd, ≥ 1).

    Example:
        >>> p = CRFParams(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0)
        >>> p.compat_matrix(2)
        tensor([[0., 1.],
                [1., 0.]])
    """

    theta_alpha: float | torch.Tensor = 80.0
    theta_beta: float | torch.Tensor = 13.0
    theta_gamma: float | torch.Tensor = 3.0
    w_bilateral: float | torch.Tensor = 10.0
    w_spatial: float | torch.Tensor = 3.0
    compat: str | torch.Tensor = "potts"
    normalize: str = "after"
    window_size: int = 11

    def __post_init__(self) -> None:
        for name in BANDWIDTHS:
            _check_bandwidth(getattr(self, name), name)
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

    def bandwidth_values(self) -> dict[str, float]:
        """The bandwidths as plain numbers, ``{"theta_alpha": …, "theta_beta": …, "theta_gamma": …}``.

        Example:
            >>> CRFParams(theta_alpha=torch.tensor(5.0)).bandwidth_values()["theta_alpha"]
            5.0
        """
        values = {n: getattr(self, n) for n in BANDWIDTHS}
        return {n: float(t.detach()) if isinstance(t, torch.Tensor) else float(t) for n, t in values.items()}

    def kernel_key(self, message_passing: str = "lattice") -> tuple:
        """What the CRF's kernels depend on, as a hashable key: the bandwidths, normalisation and message passing.

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
        return (t["theta_alpha"], t["theta_beta"], t["theta_gamma"], self.normalize, message_passing, window)

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
