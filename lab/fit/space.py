"""The CRF's parameters in the spaces the fit moves them in: log θ, bounded weights, a free µ.

=============  ==========================  ==========================================================
parameter      moved as                    range
=============  ==========================  ==========================================================
θα, θβ, θγ     log θ (Adam on log θ)       :data:`THETA_BOUNDS`, projected after each step
w(1), w(2)     z, w = W_MAX · sigmoid(z)   (0, :data:`W_MAX`): positive (attractive kernels), capped
µ              µ itself, its own (lower)   unbounded; starts from the start params' µ (Potts: [l ≠ l'])
               learning rate
=============  ==========================  ==========================================================

Why these spaces: a bandwidth is a scale, so equal steps in log θ are equal relative changes and θ can
never reach 0 (where the lattice would need a vertex per pixel and the kernel stops smoothing). A kernel
weight is a scale too, but one whose growth without a cap only sharpens Q (cross-entropy rewards confidence),
so it lives on a sigmoid: near 0 it moves like log w, near :data:`W_MAX` it saturates. Weights stay positive:
a negative weight turns the kernel into a repulsion between similar pixels, which µ (whose entries may take
either sign) already expresses per label pair without making the whole kernel unstable. µ is a matrix of
penalties whose scale trades against the weights (w·µ is what the update sees), so it moves more slowly.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from lab.crf.params import BANDWIDTHS, CRFParams

__all__ = ["LEARNABLE", "THETA_BOUNDS", "W_MAX", "NaturalParams"]

# what ``learn`` may name
LEARNABLE = ("weights", "compat", "bandwidths")
# the kernel weights' cap: pydensecrf's usual weights are 3–10 and CRFParams' defaults 10 and 3, so 100
# leaves an order of magnitude of room while the product w·µ·Q̌ stays far from float32's range
W_MAX = 100.0
# the smallest weight a start is moved up to (sigmoid(z) = 0 would be z = −∞): w = W_MAX · 1e-4 = 0.01
_W_FLOOR = 1e-4
# θ ranges (pixels for θα, θγ; 0..255 colour units for θβ): below 0.5 px a kernel covers one pixel and the
# lattice holds about one vertex per pixel per kernel; above 1000 px the spatial factor is flat at any size
# the lab computes at; θβ of 1 separates colours one grey level apart, 1000 makes the bilateral kernel spatial
THETA_BOUNDS = {"theta_alpha": (0.5, 1000.0), "theta_beta": (1.0, 1000.0), "theta_gamma": (0.5, 1000.0)}


def _weight_logit(w: torch.Tensor) -> torch.Tensor:
    """The z with W_MAX · sigmoid(z) = w, after moving w into [W_MAX·1e-4, W_MAX·(1 − 1e-4)]."""
    s = (w.detach().to(torch.float64) / W_MAX).clamp(_W_FLOOR, 1 - _W_FLOOR)
    return torch.logit(s).to(torch.float32)


class NaturalParams(nn.Module):
    """The fitted parameters as ``nn.Parameter`` in their natural spaces; :meth:`params` maps them back.

    Args:
        start: the starting :class:`CRFParams` (its normalisation and window size are kept).
        num_labels: L.
        learn: the subset of :data:`LEARNABLE` that moves; the others are buffers, exactly the start's values.

    Attributes:
        notes: what had to change in the start to enter the ranges (e.g. a weight of 0 moved to 0.01).

    Example:
        >>> space = NaturalParams(CRFParams(), 3, ("weights",))
        >>> sorted(n for n, _ in space.named_parameters())
        ['z_bilateral', 'z_spatial']
        >>> p = space.detached()
        >>> round(p.w_bilateral, 4), p.theta_alpha, p.compat
        (10.0, 80.0, 'potts')
    """

    def __init__(self, start: CRFParams, num_labels: int, learn: tuple[str, ...]) -> None:
        super().__init__()
        self.start, self.learn, self.notes = start, tuple(learn), []
        self.learn_theta = "bandwidths" in learn
        for name, theta in start.bandwidth_values().items():
            lo, hi = THETA_BOUNDS[name]
            if self.learn_theta and not lo <= theta <= hi:
                self.notes.append(f"{name} {theta:g} moved into the fit's range [{lo:g}, {hi:g}]")
            value = torch.tensor(math.log(min(max(theta, lo), hi)) if self.learn_theta else math.log(theta))
            self._add(f"log_{name}", value, self.learn_theta)
        self.per_class = not start.scalar_weights
        for name in ("w_bilateral", "w_spatial"):
            w = getattr(start, name)
            w = w.detach().to(torch.float32) if isinstance(w, torch.Tensor) else torch.tensor(float(w))
            if self.per_class:
                w = w.expand(num_labels).clone() if w.dim() == 0 else w.clone()
            if "weights" in learn:
                lo, hi = W_MAX * _W_FLOOR, W_MAX * (1 - _W_FLOOR)
                if float(w.min()) < lo or float(w.max()) > hi:
                    self.notes.append(f"{name} {w.tolist()} moved into the fit's range [{lo:g}, {hi:g}]")
                self._add(f"z_{name[2:]}", _weight_logit(w), True)
            else:
                self._add(f"fixed_{name}", w, False)
        self.learn_compat = "compat" in learn
        mu = start.compat_matrix(num_labels).detach().to(torch.float32).clone()  # (L, L), Potts = 1 − I
        self._add("compat", mu, self.learn_compat)

    def _add(self, name: str, value: torch.Tensor, trainable: bool) -> None:
        if trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def groups(self, lr: float, compat_lr: float) -> list[dict]:
        """Adam's parameter groups: θ and weights at ``lr``, µ at ``compat_lr``."""
        main = [p for n, p in self.named_parameters() if n != "compat"]
        out = [{"params": main, "lr": lr}] if main else []
        if self.learn_compat:
            out.append({"params": [self.compat], "lr": compat_lr})
        return out

    def _weight(self, name: str) -> torch.Tensor:
        if "weights" in self.learn:
            return W_MAX * torch.sigmoid(getattr(self, f"z_{name[2:]}"))
        return getattr(self, f"fixed_{name}")

    def params(self) -> CRFParams:
        """The current parameters, differentiable in what is learned (θ as 0-d tensors only when learned)."""
        thetas = {n: getattr(self, f"log_{n}").exp() for n in BANDWIDTHS} if self.learn_theta else {}
        return self._replace(
            thetas,
            self._weight("w_bilateral"),
            self._weight("w_spatial"),
            self.compat if self.learn_compat else self.start.compat,
        )

    def detached(self) -> CRFParams:
        """The current parameters as plain values: θ and scalar weights floats, µ a detached tensor or "potts"."""
        with torch.no_grad():
            thetas = {}
            if self.learn_theta:  # exp of a float32 log θ at a bound can overshoot it by a rounding
                for n, (lo, hi) in THETA_BOUNDS.items():
                    thetas[n] = min(max(math.exp(float(getattr(self, f"log_{n}"))), lo), hi)
            weights = [self._weight(n).detach().clone() for n in ("w_bilateral", "w_spatial")]
            if not self.per_class:
                weights = [float(w) for w in weights]
            compat = self.compat.detach().clone() if self.learn_compat else self.start.compat
        return self._replace(thetas, *weights, compat)

    def _replace(self, thetas: dict, w_bilateral, w_spatial, compat) -> CRFParams:
        return dataclasses.replace(self.start, w_bilateral=w_bilateral, w_spatial=w_spatial, compat=compat, **thetas)

    @torch.no_grad()
    def project(self) -> None:
        """Clamp log θ into :data:`THETA_BOUNDS` (after each optimiser step)."""
        if self.learn_theta:
            for name, (lo, hi) in THETA_BOUNDS.items():
                getattr(self, f"log_{name}").clamp_(math.log(lo), math.log(hi))

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every tensor (to roll back to)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def finite(self) -> bool:
        """Whether every parameter is finite."""
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())
