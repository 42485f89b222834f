"""The CRF-RNN layer: mean field with learnable kernel weights, compatibility and (optionally) bandwidths."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from lab._checks import check_choice, check_int, check_positive, check_tensor
from lab.crf.mean_field import MeanFieldTrace, mean_field
from lab.crf.params import BANDWIDTHS, MESSAGE_PASSING, CRFParams, format_bandwidth

__all__ = ["CRFRNN"]


class CRFRNN(nn.Module):
    """CRF as RNN (Zheng et al. 2015): T mean-field iterations as a differentiable layer.

    Learnable (``nn.Parameter`` when ``learnable``, else buffers): the kernel weights w(bilateral), w(spatial)
    (scalars, or one per class with ``per_class_weights``: the paper's diagonal weights) and the (L, L)
    compatibility µ, initialised from ``params`` (Potts: [l ≠ l']) and free to become asymmetric. The
    bandwidths θα, θβ, θγ stay fixed as in the paper (set them with :meth:`set_bandwidths`; they are saved
    in the state dict), unless ``learnable_bandwidths``: then they are parameters ``log_theta_alpha``,
    ``log_theta_beta``, ``log_theta_gamma`` (log θ, so θ = exp(·) stays positive), the features are
    computed from them differentiably and the lattices are rebuilt from the current θ once per forward
    (shared by all T iterations). Their gradient is the analytic Gaussian gradient evaluated with the
    lattice filter (``docs/feature_gradients.md``); read the current values with :attr:`bandwidths`.

    The same layer runs on volumes and other guides (:func:`lab.mean_field`: unary (B, L, *spatial), guide
    (B, C, *spatial), 1–3 spatial axes). A bandwidth given in ``params`` per spatial axis (θα, θγ) or per
    channel (θβ), as a tuple, is learned per axis / channel: ``log_theta_alpha`` then has shape (n,); a
    number stays one learnable value shared by all axes / channels.

    Args:
        num_classes: L ≥ 2.
        iterations: T used by :meth:`forward` (can be changed, or overridden per call, e.g. more at test time).
        params: initial weights, compatibility, bandwidths and normalisation (default :class:`CRFParams`()).
        per_class_weights: one weight per class and kernel instead of one per kernel.
        learnable: weights and µ as parameters (True) or fixed buffers (False).
        learnable_bandwidths: θα, θβ, θγ as parameters (through log θ) instead of fixed values (one per axis
            / channel where ``params`` gives one per axis / channel).
        checkpoint: recompute each iteration in the backward pass (less memory for large images).
        message_passing: "lattice", "exact" or "window".
        backend: "auto", "torch" or "triton".

    Example:
        >>> crf = CRFRNN(3, iterations=2)
        >>> logits = crf(torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8) * 255)
        >>> logits.shape, sorted(n for n, _ in crf.named_parameters())
        (torch.Size([2, 3, 8, 8]), ['compat', 'w_bilateral', 'w_spatial'])
        >>> crf = CRFRNN(3, learnable_bandwidths=True, params=CRFParams(theta_alpha=20.0))
        >>> round(crf.bandwidths["theta_alpha"], 4), crf.log_theta_alpha.requires_grad
        (20.0, True)
        >>> volume = CRFParams(theta_alpha=(2.0, 8.0, 8.0), theta_beta=(30.0, 10.0), spacing=(3.0, 1.0, 1.0))
        >>> crf = CRFRNN(2, iterations=1, learnable_bandwidths=True, params=volume)  # per-axis, per-channel θ
        >>> crf(torch.randn(1, 2, 4, 5, 6), torch.rand(1, 2, 4, 5, 6) * 100).shape, crf.log_theta_alpha.shape
        (torch.Size([1, 2, 4, 5, 6]), torch.Size([3]))
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        params: CRFParams | None = None,
        per_class_weights: bool = False,
        learnable: bool = True,
        *,
        learnable_bandwidths: bool = False,
        checkpoint: bool = False,
        message_passing: str = "lattice",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", 2)
        check_int(iterations, "iterations", 0)
        check_choice(message_passing, "message_passing", MESSAGE_PASSING)
        params = CRFParams() if params is None else params
        if not isinstance(params, CRFParams):
            raise TypeError(f"params: expected a CRFParams, got {type(params).__name__} (lab.CRFParams(**values))")
        self.num_classes = int(num_classes)
        self.iterations = int(iterations)
        self.checkpoint = checkpoint
        self.message_passing = message_passing
        self.backend = backend
        self._params = params
        weights = params.weights(self.num_classes)  # (2, L)
        tensors = {
            "w_bilateral": weights[0].clone() if per_class_weights else weights[0, 0].clone(),
            "w_spatial": weights[1].clone() if per_class_weights else weights[1, 0].clone(),
            "compat": params.compat_matrix(self.num_classes).detach().to(torch.float32).clone(),
        }
        for name, value in tensors.items():
            if learnable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.learnable_bandwidths = learnable_bandwidths
        if learnable_bandwidths:
            for name, theta in params.bandwidth_values().items():
                log = [math.log(t) for t in theta] if isinstance(theta, tuple) else math.log(theta)
                self.register_parameter(f"log_{name}", nn.Parameter(torch.tensor(log)))

    @property
    def params(self) -> CRFParams:
        """The current parameters as a :class:`CRFParams` (tensor fields share the module's tensors)."""
        thetas = {n: getattr(self, f"log_{n}").exp() for n in BANDWIDTHS} if self.learnable_bandwidths else {}
        return dataclasses.replace(
            self._params, w_bilateral=self.w_bilateral, w_spatial=self.w_spatial, compat=self.compat, **thetas
        )

    @property
    def bandwidths(self) -> dict[str, float | tuple[float, ...]]:
        """The current θα, θβ (0..255 units), θγ (pixels) as numbers (learned ones included; tuples per axis)."""
        if self.learnable_bandwidths:
            values = {n: getattr(self, f"log_{n}").detach().double().exp() for n in BANDWIDTHS}
            return {n: float(v) if v.dim() == 0 else tuple(v.tolist()) for n, v in values.items()}
        return self._params.bandwidth_values()

    def set_bandwidths(
        self,
        theta_alpha: float | tuple[float, ...] | None = None,
        theta_beta: float | tuple[float, ...] | None = None,
        theta_gamma: float | tuple[float, ...] | None = None,
    ) -> None:
        """Change the bandwidths θα, θβ (0..255 units), θγ (pixels); None keeps the current value.

        A tuple sets one value per axis / channel. With ``learnable_bandwidths`` this overwrites the parameters
        (log θ) in place, e.g. to start training from grid-searched values: a number fills every entry of a
        per-axis parameter; a tuple must match its length (a shared one cannot take a tuple).
        """
        changes: dict[str, float | tuple[float, ...]] = {}
        for name, value in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta), ("theta_gamma", theta_gamma)):
            if value is None:
                continue
            if isinstance(value, (tuple, list)):
                for i, v in enumerate(value):
                    check_positive(v, f"{name}[{i}]")
                changes[name] = tuple(float(v) for v in value)
            else:
                check_positive(value, name)
                changes[name] = float(value)
            if self.learnable_bandwidths:
                shape = tuple(getattr(self, f"log_{name}").shape)
                if isinstance(changes[name], tuple) and shape != (len(changes[name]),):
                    raise ValueError(
                        f"{name}: the learnable log θ has shape {shape}, got {len(changes[name])} values "
                        "(give per-axis / per-channel θ in params when building the CRFRNN)"
                    )
        if self.learnable_bandwidths:
            with torch.no_grad():
                for name, value in changes.items():
                    log = torch.tensor([math.log(v) for v in value] if isinstance(value, tuple) else math.log(value))
                    getattr(self, f"log_{name}").copy_(log)
        self._params = dataclasses.replace(self._params, **changes)

    def trace(
        self, unary: torch.Tensor, image: torch.Tensor, iterations: int | None = None, keep: str | None = "q"
    ) -> MeanFieldTrace:
        """Run mean field and return the whole :class:`~lab.crf.mean_field.MeanFieldTrace`.

        Args:
            unary: (B, L, H, W) U (CNN logits or log-probabilities); (B, L, *spatial) for other guides.
            image: (B, 3, H, W) in 0..255, or a guide (B, C, *spatial) (:func:`lab.mean_field`).
            iterations: T for this call (default :attr:`iterations`).
            keep: None, "q" or "steps" (see :func:`lab.mean_field`).

        Returns:
            The trace.
        """
        check_int(self.iterations, "iterations", 0)
        t = self.iterations if iterations is None else check_int(iterations, "iterations", 0)
        return mean_field(
            unary,
            image,
            self.params,
            iterations=t,
            keep=keep,
            message_passing=self.message_passing,
            backend=self.backend,
            checkpoint=self.checkpoint,
        )

    def forward(self, unary: torch.Tensor, image: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        """The CRF's final scores U − Q̂ (for a cross-entropy loss; softmax gives Q).

        Args:
            unary: (B, L, H, W) U (CNN logits or log-probabilities), L = ``num_classes``; (B, L, *spatial)
                for other guides.
            image: (B, 3, H, W) in 0..255, uint8 or float; or a guide (B, C, *spatial), 1–3 spatial axes.
            iterations: T for this call (default :attr:`iterations`).

        Returns:
            (B, L, *spatial) logits.
        """
        check_tensor(unary, "unary")
        check_tensor(image, "image")
        if unary.dim() >= 3 and unary.shape[1] != self.num_classes:
            raise ValueError(f"unary: expected {self.num_classes} classes, got {unary.shape[1]}")
        return self.trace(unary, image, iterations, keep=None).logits

    def get_extra_state(self) -> dict:
        """Bandwidths (current values, learned ones too), normalisation, window size and spacing (when given).

        Saved in the state dict.
        """
        p = self._params
        state = {**self.bandwidths, "normalize": p.normalize, "window_size": p.window_size}
        return state if p.spacing is None else {**state, "spacing": p.spacing}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved (learned bandwidths come from their parameters)."""
        if self.learnable_bandwidths:
            state = {k: v for k, v in state.items() if k not in BANDWIDTHS}
        self._params = dataclasses.replace(self._params, **state)

    def extra_repr(self) -> str:
        """One line for ``print(module)``."""
        p, t = self._params, self.bandwidths
        return (
            f"num_classes={self.num_classes}, iterations={self.iterations}, "
            + "".join(f"{n}={format_bandwidth(t[n], '.4g')}, " for n in BANDWIDTHS)
            + (f"spacing={p.spacing}, " if p.spacing is not None else "")
            + f"normalize={p.normalize!r}, message_passing={self.message_passing!r}, "
            f"learnable_bandwidths={self.learnable_bandwidths}"
        )
