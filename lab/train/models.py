"""FCN + CRF-RNN as one network, and the symmetric-compatibility parametrisation of the ablation."""

from __future__ import annotations

import torch
from torch import nn

from lab.crf import CRFRNN, CRFKernels, mean_field

__all__ = ["SegmentationCRFRNN", "SymmetricCompat"]


class SymmetricCompat(nn.Module):
    """µ ↦ (µ + µᵀ)/2: with ``torch.nn.utils.parametrize``, keeps a learned compatibility symmetric.

    Example:
        >>> SymmetricCompat()(torch.tensor([[0.0, 2.0], [0.0, 0.0]])).tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """

    def forward(self, compat: torch.Tensor) -> torch.Tensor:
        """(L, L) → (L, L) symmetric."""
        return 0.5 * (compat + compat.T)


class SegmentationCRFRNN(nn.Module):
    """A unary network (e.g. :class:`~lab.models.FCN`) with a :class:`~lab.crf.CRFRNN` on its logits.

    The FCN's logits are the CRF's unary U (as in the paper, where the CRF-RNN sits on FCN-8s' scores).

    Args:
        unary_net: (B, 3, H, W) 0..255 → (B, L, H, W) logits.
        crf: the CRF-RNN layer, or None for the unary network alone.

    Example:
        >>> from lab.models import FCN
        >>> net = SegmentationCRFRNN(FCN(3), CRFRNN(3, iterations=2))
        >>> net(torch.rand(1, 3, 16, 16) * 255).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, unary_net: nn.Module, crf: CRFRNN | None = None) -> None:
        super().__init__()
        self.unary_net = unary_net
        self.crf = crf

    def forward(
        self, image: torch.Tensor, kernels: CRFKernels | None = None, iterations: int | None = None
    ) -> torch.Tensor:
        """Scores for a cross-entropy loss.

        Args:
            image: (B, 3, H, W) in 0..255.
            kernels: the batch's prebuilt CRF kernels (must match the CRF's bandwidths), or None to build them.
            iterations: T for this call (default: the CRF's own).

        Returns:
            (B, L, H, W) logits: U − Q̂ after T mean-field iterations (U alone without a CRF).
        """
        unary = self.unary_net(image)
        if self.crf is None:
            return unary
        t = self.crf.iterations if iterations is None else iterations
        trace = mean_field(
            unary,
            image,
            self.crf.params,
            iterations=t,
            keep=None,
            message_passing=self.crf.message_passing,
            backend=self.crf.backend,
            kernels=kernels,
        )
        return trace.logits
