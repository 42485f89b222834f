import pytest
import torch

from lab.data.synthetic import render_scene
from lab.models import FCN
from lab.unary.fcn_source import FCNUnavailable, fcn_unary, find_fcn_checkpoint, load_fcn


def save_like_training(path, model, width=16):
    """The layout lab.train writes: the FCN's weights under unary_net., and the config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {f"unary_net.{k}": v for k, v in model.state_dict().items()}
    torch.save({"config": {"width": width, "stage": "fcn"}, "model": weights}, path)


def test_roundtrip_gives_the_same_unary(tmp_path):
    torch.manual_seed(0)
    model = FCN(6, width=8).eval()
    save_like_training(tmp_path / "run" / "seed0" / "fcn.pt", model, width=8)
    found = find_fcn_checkpoint(tmp_path)
    loaded, num_classes = load_fcn(found)
    assert num_classes == 6
    image = render_scene(3, 48).image
    u = fcn_unary(image, loaded)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        torch.testing.assert_close(u, torch.log_softmax(model(x), 1))
    torch.testing.assert_close(u.exp().sum(1), torch.ones(1, 48, 48))


def test_missing_and_broken_checkpoints(tmp_path):
    with pytest.raises(FCNUnavailable, match=r"python -m lab\.train --quick"):
        find_fcn_checkpoint(tmp_path)
    bad = tmp_path / "fcn.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FCNUnavailable, match="not a readable FCN checkpoint"):
        load_fcn(bad)
