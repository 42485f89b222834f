"""A split as fixed batches on the device, each with its CRF kernels built once and reused every epoch.

The bilateral kernel's permutohedral lattice depends only on the images and the (fixed) bandwidths, not on
anything trained, so a batch's lattice is the same in every epoch. Keeping the batches fixed (their order
is shuffled each epoch, not their content) lets training build each batch's lattice once per run instead of
once per step: end-to-end CRF-RNN training then costs the mean-field iterations only.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from lab.crf import CRFKernels, CRFParams

__all__ = ["Split"]


class Split(Dataset):
    """Images and labels cut into fixed batches; item i is batch i (for a ``DistributedSampler``).

    Args:
        images: (N, 3, H, W) float in 0..255.
        labels: (N, H, W) int64 class ids.
        batch_size: images per batch (the last batch may be smaller).
        device: where the batches live.

    Example:
        >>> split = Split(torch.rand(5, 3, 8, 8) * 255, torch.zeros(5, 8, 8, dtype=torch.int64), batch_size=2)
        >>> len(split), split[2][0].shape
        (3, torch.Size([1, 3, 8, 8]))
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device | str = "cpu"
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"labels: expected {images.shape[0]} label maps like images, got {labels.shape[0]}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.images = tuple(b.to(device) for b in images.split(int(batch_size)))
        self.labels = tuple(b.to(device) for b in labels.split(int(batch_size)))
        self.num_images = int(images.shape[0])
        self._kernels: dict[tuple, CRFKernels] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index``: images (b, 3, H, W) and labels (b, H, W)."""
        return self.images[index], self.labels[index]

    def kernels(self, index: int, params: CRFParams, message_passing: str = "lattice") -> CRFKernels:
        """The CRF kernels of batch ``index`` for the bandwidths and normalisation of ``params`` (cached).

        Raises:
            ValueError: a bandwidth is a tensor (learned θ): such kernels change every step and carry a
                gradient, so they are not cached; let the model build them (pass ``kernels=None``).
        """
        thetas = (params.theta_alpha, params.theta_beta, params.theta_gamma)
        if any(isinstance(t, torch.Tensor) for t in thetas):
            raise ValueError(
                "params: expected fixed (float) bandwidths to cache kernels for; learned θ are tensors that change "
                "every step, so build their kernels per call (kernels=None)"
            )
        key = (index, *params.kernel_key(message_passing))
        if key not in self._kernels:
            self._kernels[key] = CRFKernels(self.images[index], params, message_passing)
        return self._kernels[key]
