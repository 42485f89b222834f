"""CRFRNN (the module), CRFParams and the unary helpers."""

import dataclasses
import math

import pytest
import torch
from inputs import small_problem

from lab.crf import CRFRNN, CRFParams, potts_compat
from lab.unary import unary_from_labels, unary_from_softmax


class TestCRFRNN:
    def test_parameters_and_buffers(self):
        crf = CRFRNN(4, per_class_weights=True)
        params = dict(crf.named_parameters())
        assert set(params) == {"w_bilateral", "w_spatial", "compat"}
        assert params["w_bilateral"].shape == (4,) and params["compat"].shape == (4, 4)
        torch.testing.assert_close(params["compat"].detach(), potts_compat(4))
        fixed = CRFRNN(4, learnable=False)
        assert list(fixed.parameters()) == []
        assert set(dict(fixed.named_buffers())) == {"w_bilateral", "w_spatial", "compat"}
        assert fixed.double().compat.dtype == torch.float64  # buffers follow .to()

    def test_iterations_can_change_at_test_time(self):
        unary, image = small_problem()
        crf = CRFRNN(3, iterations=2).double()
        torch.testing.assert_close(crf(unary, image, iterations=5), CRFRNN(3, iterations=5).double()(unary, image))
        assert not torch.allclose(crf(unary, image, iterations=5), crf(unary, image))

    def test_training_step_learns_weights_and_asymmetric_compat(self):
        unary, image = small_problem()
        target = torch.zeros(1, 10, 12, dtype=torch.long)
        target[..., 6:] = 2
        crf = CRFRNN(3, iterations=2, per_class_weights=True).double()
        opt = torch.optim.Adam(crf.parameters(), lr=0.05)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(crf(unary, image), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crf.parameters())
        assert not torch.allclose(crf.compat, crf.compat.T)  # free to become asymmetric

    def test_checkpoint_module(self):
        unary, image = small_problem()
        grads = []
        for ckpt in (False, True):
            crf = CRFRNN(3, iterations=3, checkpoint=ckpt).double()
            crf(unary, image).square().sum().backward()
            grads.append([p.grad for p in crf.parameters()])
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)

    def test_bandwidths_settable_and_saved(self):
        crf = CRFRNN(3)
        crf.set_bandwidths(theta_alpha=40.0, theta_gamma=5.0)
        assert (crf.params.theta_alpha, crf.params.theta_beta, crf.params.theta_gamma) == (40.0, 13.0, 5.0)
        other = CRFRNN(3)
        other.load_state_dict(crf.state_dict())
        assert other.params.theta_alpha == 40.0 and other.params.theta_gamma == 5.0
        with pytest.raises(ValueError, match="theta_beta: expected a finite number > 0"):
            crf.set_bandwidths(theta_beta=0.0)


class TestParams:
    def test_weights_and_compat(self):
        p = CRFParams(w_bilateral=torch.tensor([1.0, 2.0]), w_spatial=3.0)
        torch.testing.assert_close(p.weights(2), torch.tensor([[1.0, 2.0], [3.0, 3.0]]))
        assert not p.scalar_weights and p.is_potts
        assert CRFParams().scalar_weights

    def test_frozen(self):
        with pytest.raises(dataclasses.FrozenInstanceError):
            CRFParams().theta_alpha = 1.0  # type: ignore[misc]


class TestUnary:
    def test_from_softmax(self):
        prob = torch.tensor([0.0, 0.25, 0.75]).view(1, 3, 1, 1)
        u = unary_from_softmax(prob)
        torch.testing.assert_close(u.flatten(), torch.tensor([math.log(1e-5), math.log(0.25), math.log(0.75)]))
        torch.testing.assert_close(torch.softmax(unary_from_softmax(prob, clip=None), 1), prob)
        u = unary_from_softmax(prob, scale=0.5)  # p ← ½p + ½·⅓
        torch.testing.assert_close(u.exp().flatten(), 0.5 * prob.flatten() + 0.5 / 3)

    def test_from_labels(self):
        labels = torch.tensor([[[0, 1, 3]]])
        u = unary_from_labels(labels, 3, gt_prob=0.6)
        p = u.exp()[0, :, 0].T  # (pixels, L)
        torch.testing.assert_close(p[0], torch.full((3,), 1 / 3))
        torch.testing.assert_close(p[1], torch.tensor([0.6, 0.2, 0.2]))
        torch.testing.assert_close(p[2], torch.tensor([0.2, 0.2, 0.6]))
        u = unary_from_labels(torch.tensor([[[0, 2]]]), 3, gt_prob=0.6, zero_unsure=False)
        torch.testing.assert_close(u.exp()[0, :, 0].T[0], torch.tensor([0.6, 0.2, 0.2]))
