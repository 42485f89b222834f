"""A miniature FCN-8s: conv blocks down to 1/8 resolution, a 1×1 classifier, bilinear upsampling.

Like FCN-8s (Long et al., 2015), the one the CRF-RNN paper builds on, its finest prediction is made at output
stride 8 and stretched back to the input size by bilinear interpolation, so object boundaries come out as
smooth blobs: each 8×8 block of output pixels is interpolated from the same few coarse scores. That is the
unary U the CRF sharpens.

Layout for an (H, W) input, width c (default 16)::

    stem      conv3×3 3→c,    conv3×3 c→c                  H × W
    down1     conv3×3/2 c→2c, conv3×3 2c→2c               H/2
    down2     conv3×3/2 2c→4c, conv3×3 4c→4c              H/4
    down3     conv3×3/2 4c→4c, conv3×3 4c→4c, dilated 3×3  H/8   (receptive field 79 px)
    classify  conv1×1 4c→L                                 H/8
    upsample  bilinear to H × W

Every conv is followed by GroupNorm and ReLU. GroupNorm, not BatchNorm: results do not depend on the batch
size or on train/eval mode, and replicas under torch.distributed stay identical without syncing statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lab._checks import check_shape

__all__ = ["FCN"]

# Per-channel RGB mean and std in 0..255 units (the usual ImageNet values), used to normalise inside the model.
_RGB_MEAN = (123.675, 116.28, 103.53)
_RGB_STD = (58.395, 57.12, 57.375)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    groups = 4 if cout % 4 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class FCN(nn.Module):
    """Small fully convolutional network with output stride 8.

    Args:
        num_classes: L, the number of labels including background.
        width: channels c of the first block (the deepest blocks have 4c).

    Shape:
        - Input: (B, 3, H, W) RGB in 0..255, float (normalised inside).
        - Output: (B, L, H, W) logits; ``log_softmax(logits, 1)`` is the CRF unary U = log p of ``lab.crf``.

    Example:
        >>> net = FCN(num_classes=6)
        >>> net(torch.rand(2, 3, 40, 52) * 255).shape
        torch.Size([2, 6, 40, 52])
    """

    output_stride: int = 8

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        if int(num_classes) < 1 or int(width) < 1:
            raise ValueError(f"num_classes, width: expected integers ≥ 1, got {num_classes!r}, {width!r}")
        c = int(width)
        self.num_classes = int(num_classes)
        self.register_buffer("rgb_mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(_RGB_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(_conv(3, c), _conv(c, c))
        self.down1 = nn.Sequential(_conv(c, 2 * c, stride=2), _conv(2 * c, 2 * c))
        self.down2 = nn.Sequential(_conv(2 * c, 4 * c, stride=2), _conv(4 * c, 4 * c))
        self.down3 = nn.Sequential(_conv(4 * c, 4 * c, stride=2), _conv(4 * c, 4 * c), _conv(4 * c, 4 * c, dilation=2))
        self.classifier = nn.Conv2d(4 * c, self.num_classes, 1)

    def coarse_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Scores before upsampling.

        Args:
            image: (B, 3, H, W) RGB in 0..255.

        Returns:
            (B, L, ⌈H/8⌉, ⌈W/8⌉) logits.

        Example:
            >>> FCN(3).coarse_logits(torch.zeros(1, 3, 64, 60)).shape
            torch.Size([1, 3, 8, 8])
        """
        check_shape(image, "image", ["B", 3, "H", "W"])
        x = (image.to(self.rgb_mean.dtype) - self.rgb_mean) / self.rgb_std
        x = self.down3(self.down2(self.down1(self.stem(x))))
        return self.classifier(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits at the input resolution: (B, 3, H, W) 0..255 -> (B, L, H, W)."""
        coarse = self.coarse_logits(image)
        return F.interpolate(coarse, size=image.shape[-2:], mode="bilinear", align_corners=False)
