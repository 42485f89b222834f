"""lab.crf.trained: a CRF-RNN read back from a training checkpoint gives the trained layer's θ, weights, µ, output."""

from __future__ import annotations

import pytest
import torch

from lab.crf import CRFParams, TrainedCRFUnavailable, find_trained_crfs, load_trained_crf
from lab.models import FCN
from lab.train import SegmentationCRFRNN
from lab.train.experiment import _make_crf

L = 4


def _trained(variant: str) -> SegmentationCRFRNN:
    """A network whose CRF has moved away from its initial values, as training leaves it."""
    torch.manual_seed(0)
    params = CRFParams(theta_alpha=9.0, theta_beta=11.0, theta_gamma=2.5, w_bilateral=6.0, w_spatial=2.0)
    crf = _make_crf(variant, params, L, iterations=3)
    with torch.no_grad():
        for p in crf.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return SegmentationCRFRNN(FCN(L, width=4), crf)


def _save(path, model: SegmentationCRFRNN, stage: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"stage": stage, "grid": {"fcn": {"data": {"image_size": 64}}}}  # nested as lab.train writes it
    torch.save({"config": config, "epoch": 5, "model": model.state_dict()}, path)


@pytest.mark.parametrize("variant", ["free", "per-class", "symmetric", "learned-theta"])
def test_loaded_crf_equals_the_trained_layer(tmp_path, variant):
    model = _trained(variant)
    _save(tmp_path / "run" / "seed0" / f"crf-rnn-{variant}.pt", model, f"crf-rnn-{variant}")
    (found,) = find_trained_crfs(tmp_path)
    trained = load_trained_crf(found)
    crf = model.crf
    assert trained.method == f"crf-rnn-{variant}" and trained.epoch == 5 and trained.num_classes == L
    assert trained.image_size == 64
    assert trained.learned_bandwidths == (variant == "learned-theta")
    assert trained.per_class_weights == (variant == "per-class")
    for name, value in crf.bandwidths.items():
        assert trained.params.bandwidth_values()[name] == pytest.approx(value, rel=1e-6), name
    if variant == "learned-theta":
        assert trained.params.theta_alpha != 9.0  # the learned value, not the initial one
    torch.testing.assert_close(trained.params.compat, crf.compat.detach())
    torch.testing.assert_close(torch.as_tensor(trained.params.w_bilateral), crf.w_bilateral.detach())
    unary, image = torch.randn(2, L, 12, 12), torch.rand(2, 3, 12, 12) * 255
    with torch.no_grad():
        torch.testing.assert_close(trained.module(iterations=3)(unary, image), crf(unary, image))
    assert f"crf-rnn-{variant}" in trained.describe() and "seed0" in trained.describe()


def test_bad_checkpoints_say_what_is_wrong(tmp_path):
    garbage = tmp_path / "crf-rnn.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainedCRFUnavailable, match=r"crf-rnn\.pt: not a readable training checkpoint"):
        load_trained_crf(garbage)
    fcn_only = tmp_path / "fcn.pt"
    torch.save({"model": SegmentationCRFRNN(FCN(L, width=4)).state_dict()}, fcn_only)
    with pytest.raises(TrainedCRFUnavailable, match=r"no CRF-RNN in this checkpoint \(missing crf.w_bilateral"):
        load_trained_crf(fcn_only)
    with pytest.raises(TrainedCRFUnavailable, match="not a readable"):
        load_trained_crf(tmp_path / "missing.pt")
    assert find_trained_crfs(tmp_path / "nowhere") == []
