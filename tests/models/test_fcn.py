import math

import pytest
import torch
import torch.nn.functional as F

from lab.data import SyntheticShapes
from lab.models import FCN

# float32 convolutions reordered by batch size: measured max |difference| 1e-6 on logits of magnitude ~1.
BATCH_ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_batch():
    return SyntheticShapes("train", size=4, image_size=32, seed=0).tensors()


@pytest.mark.parametrize(
    "shape",
    [
        (1, 3, 64, 64),  # the synthetic set's size
        (2, 3, 40, 52),  # multiples of 4, not of 8
        (1, 3, 17, 23),  # odd sizes: the coarse map rounds up
        (1, 3, 8, 8),  # a single coarse cell
    ],
)
def test_output_shapes(shape):
    torch.manual_seed(0)
    net = FCN(num_classes=5)
    image = torch.rand(shape) * 255
    b, _, h, w = shape
    assert net(image).shape == (b, 5, h, w)
    assert net.coarse_logits(image).shape == (b, 5, math.ceil(h / 8), math.ceil(w / 8))


def test_output_is_bilinear_upsampling_of_stride_8_scores():
    torch.manual_seed(0)
    net = FCN(num_classes=3).eval()
    image = torch.rand(1, 3, 32, 48) * 255
    coarse = net.coarse_logits(image)
    assert coarse.shape[-2:] == (4, 6)
    expected = F.interpolate(coarse, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(net(image), expected)


def test_uint8_and_float_inputs_agree():
    torch.manual_seed(0)
    net = FCN(num_classes=4)
    image = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8)
    torch.testing.assert_close(net(image), net(image.float()))


def test_batch_independent_and_mode_independent():
    # GroupNorm: an image's logits do not depend on its batch-mates nor on train/eval mode.
    torch.manual_seed(0)
    net = FCN(num_classes=4)
    images = torch.rand(3, 3, 24, 32) * 255
    together = net(images)
    torch.testing.assert_close(net(images[1:2]), together[1:2], atol=BATCH_ATOL, rtol=0)
    torch.testing.assert_close(net.eval()(images), together, atol=BATCH_ATOL, rtol=0)


def test_float64():
    net = FCN(num_classes=2).double()
    assert net(torch.rand(1, 3, 16, 16, dtype=torch.float64) * 255).dtype == torch.float64


def test_few_steps_lower_the_loss(tiny_batch):
    images, labels = tiny_batch[0][:2], tiny_batch[1][:2]
    torch.manual_seed(0)
    net = FCN(num_classes=6, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):  # measured: 1.80 -> 0.80
        loss = F.cross_entropy(net(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_every_parameter_gets_a_gradient(tiny_batch):
    images, labels = tiny_batch
    net = FCN(num_classes=6, width=8)
    F.cross_entropy(net(images[:1]), labels[:1]).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_normalisation_constants_are_buffers_not_state():
    net = FCN(num_classes=2)
    assert "rgb_mean" in dict(net.named_buffers())
    assert "rgb_mean" not in net.state_dict()
    assert not any(n.startswith("rgb_") for n, _ in net.named_parameters())


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"image: expected shape \(B, 3, H, W\), got \(3, 16, 16\)"):
        FCN(num_classes=2)(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match=r"image: expected shape \(B, 3, H, W\), got \(1, 1, 16, 16\)"):
        FCN(num_classes=2)(torch.zeros(1, 1, 16, 16))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes, width: expected integers ≥ 1"):
        FCN(num_classes=0)
