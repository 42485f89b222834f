"""lab.train: metrics, grid search against direct evaluation, checkpoint resume, two processes, --quick end to end."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from lab.crf import CRFRNN, CRFParams, mean_field
from lab.data import SyntheticShapes
from lab.models import FCN
from lab.train import SegmentationCRFRNN, Split, confusion_matrix, grid_search, mean_iou, stages, train_model
from lab.train.__main__ import main
from lab.train.distributed import Context
from lab.train.experiment import METHODS
from lab.train.metrics import boundary_band, trimap_accuracy, trimap_counts
from lab.train.report import ordering

NUM_CLASSES = SyntheticShapes.num_classes
# Same batches, same order, same float ops: resumed and uninterrupted runs agree to the last bit on CPU.
RESUME_ATOL = 0.0
# mean field on one batch of 6 vs the split's batches of 4 and 2: the lattice never mixes batch elements,
# so the mIoUs agree up to float32 summation order (measured max difference 0 on this CPU).
GRID_ATOL = 1e-9


def _data(split: str = "train", size: int = 8, image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return SyntheticShapes(split, size=size, image_size=image_size, seed=0).tensors()


def _model(seed: int = 0, crf: bool = True) -> SegmentationCRFRNN:
    torch.manual_seed(seed)
    return SegmentationCRFRNN(FCN(NUM_CLASSES, width=4), CRFRNN(NUM_CLASSES, iterations=2) if crf else None)


def _groups(model: SegmentationCRFRNN) -> list[dict]:
    return [{"params": model.unary_net.parameters(), "lr": 1e-3}, {"params": model.crf.parameters(), "lr": 1e-2}]


# ------------------------------------------------------------------------------------------------ metrics
def test_confusion_and_miou_by_hand():
    pred = torch.tensor([[[0, 1, 2, 2]]])
    target = torch.tensor([[[0, 1, 1, 255]]])  # 255: void, ignored
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    # IoU: class 0 1/1, class 1 1/2, class 2 0/1
    assert mean_iou(cm) == pytest.approx((1 + 0.5 + 0) / 3)


def test_trimap_band_and_accuracy_by_hand():
    # A 2 × 2 square of class 1 at rows 1-2, columns 1-2 of a 5 × 5 background, one void pixel (255) at (4, 4).
    target = torch.zeros(1, 5, 5, dtype=torch.int64)
    target[0, 1:3, 1:3] = 1
    target[0, 4, 4] = 255
    # boundary pixels (a 4-neighbour differs): the square's 4 pixels, its 8 outer 4-neighbours, and the void
    # pixel with its 2 neighbours (3, 4) and (4, 3)
    edge = [
        [0, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
        [0, 1, 1, 0, 1],
        [0, 0, 0, 1, 1],
    ]
    assert boundary_band(target, 0).int()[0].tolist() == edge
    # radius 1: every pixel within one step (8-neighbourhood) of an edge pixel: all 25 here
    assert bool(boundary_band(target, 1).all())
    # the prediction grows the square one column to the right: (1, 3) and (2, 3) wrong
    pred = target.clone()
    pred[0, 4, 4] = 0
    pred[0, 1:3, 3] = 1
    # radius 0: 15 edge pixels, 1 void among them -> 14 counted, 2 of them wrong
    assert trimap_counts(pred, target, 2, 0).tolist() == [12, 14]
    # radius 1: 25 pixels, 1 void -> 24 counted, the same 2 wrong
    assert trimap_counts(pred, target, 2, 1).tolist() == [22, 24]
    assert trimap_accuracy(torch.tensor([22, 24])) == pytest.approx(22 / 24)
    assert torch.isnan(torch.tensor(trimap_accuracy(torch.tensor([0, 0]))))


def test_trimap_band_excludes_far_pixels_and_checks_radius():
    target = torch.zeros(1, 1, 9, dtype=torch.int64)
    target[0, 0, 4:] = 1  # one boundary between columns 3 and 4
    assert boundary_band(target, 2).int()[0, 0].tolist() == [0, 1, 1, 1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="radius: expected an integer >= 0"):
        boundary_band(target, -1)


def test_ordering_verdict_uses_the_standard_error_of_the_paired_differences():
    def result(diffs):
        return {"seeds": {s: {"test_miou": {"a": 0.5, "b": 0.5 + d}} for s, d in enumerate(diffs)}}

    # diffs 0.01, 0.02, 0.03: mean 0.02, sample std 0.01, SE 0.01/√3 = 0.0058 -> 0.02 > 0.0115: beyond
    o = ordering(result([0.01, 0.02, 0.03]), "a", "b")
    assert o["diff_mean"] == pytest.approx(0.02) and o["diff_std"] == pytest.approx(0.01)
    assert o["diff_se"] == pytest.approx(0.01 / 3**0.5) and o["beyond_noise"] is True
    # diffs 0.02, -0.01, 0.02: mean 0.01, std 0.0173, SE 0.01: 0.01 < 0.02: within (above one SE, not two)
    o = ordering(result([0.02, -0.01, 0.02]), "a", "b")
    assert o["diff_se"] == pytest.approx(0.01) and o["beyond_noise"] is False
    assert ordering(result([0.05]), "a", "b")["beyond_noise"] is None


def test_confusion_shape_mismatch_raises():
    with pytest.raises(ValueError, match="target: expected shape"):
        confusion_matrix(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), 2)


# ------------------------------------------------------------------------------------------- grid search
class _NoisyOracle(nn.Module):
    """Logits = one-hot(truth) blurred into noise: a unary the CRF can improve, and that settings rank."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        onehot = nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
        self.table = {
            img.sum().item(): 2 * onehot[i] + 1.5 * torch.randn(onehot[i].shape, generator=g)
            for i, img in enumerate(images)
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[img.sum().item()] for img in images])


def test_grid_search_picks_the_best_val_setting():
    images, labels = _data("val", size=6)
    oracle = _NoisyOracle(images, labels)
    grid = {"theta_alpha": (3.0, 12.0), "theta_beta": (10.0, 40.0), "w_bilateral": (0.0, 8.0)}
    best, rows = grid_search(oracle, Split(images, labels, batch_size=4), Context(), NUM_CLASSES, grid, iterations=3)
    assert len(rows) == 8
    direct = []
    for row in rows:
        params = CRFParams(**{k: row[k] for k in grid})
        q = mean_field(oracle(images), images, params, iterations=3, keep=None).logits
        direct.append(mean_iou(confusion_matrix(q.argmax(1), labels, NUM_CLASSES)))
        assert row["miou"] == pytest.approx(direct[-1], abs=GRID_ATOL)
    winner = rows[max(range(len(direct)), key=lambda i: (direct[i], -i))]
    assert {k: getattr(best, k) for k in grid} == {k: winner[k] for k in grid}
    assert len({round(d, 6) for d in direct}) > 1  # the settings do differ: the choice means something


# ---------------------------------------------------------------------------------------- learned bandwidths
def test_training_moves_learned_bandwidths_and_caches_only_fixed_kernels():
    images, labels = _data(size=4)
    split = Split(images, labels, batch_size=2)
    torch.manual_seed(0)
    crf = CRFRNN(NUM_CLASSES, iterations=2, learnable_bandwidths=True)
    model = SegmentationCRFRNN(FCN(NUM_CLASSES, width=4), crf)
    start = crf.bandwidths
    thetas = [p for n, p in crf.named_parameters() if n.startswith("log_theta")]
    train_model(model, [{"params": thetas, "lr": 0.1}], split, epochs=1, ctx=Context(), seed=0, desc="theta")
    moved = crf.bandwidths
    assert all(moved[k] != start[k] for k in ("theta_alpha", "theta_beta")), (start, moved)
    assert split._kernels == {}  # learned θ: the kernels were built per step, none cached
    with pytest.raises(ValueError, match="params: expected fixed"):
        split.kernels(0, crf.params)
    stages.evaluate(_model(), split, Context(), NUM_CLASSES)  # fixed θ: one cached entry per batch
    assert len(split._kernels) == len(split)


@pytest.mark.parametrize("message_passing", ["window", "exact"])
def test_training_caches_the_kernels_of_the_crfs_own_message_passing(message_passing):
    images, labels = _data(size=4)
    split = Split(images, labels, batch_size=2)
    torch.manual_seed(0)
    model = SegmentationCRFRNN(
        FCN(NUM_CLASSES, width=4), CRFRNN(NUM_CLASSES, iterations=1, message_passing=message_passing)
    )
    train_model(model, _groups(model), split, epochs=1, ctx=Context(), seed=0, desc=message_passing)
    assert {k.message_passing for k in split._kernels.values()} == {message_passing}


# ------------------------------------------------------------------------------------------------ resume
def _train(tmp: Path, resume: bool, epochs: int = 2) -> SegmentationCRFRNN:
    images, labels = _data(size=4)
    model = _model()
    train_model(
        model,
        _groups(model),
        Split(images, labels, batch_size=2),
        epochs=epochs,
        ctx=Context(),
        seed=3,
        desc="test",
        checkpoint=tmp / "ck.pt",
        config={"run": "test"},
        resume=resume,
    )
    return model


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    straight = _train(tmp_path / "a", resume=False)

    real_save, calls = stages.save_checkpoint, []

    def crash_after_first_save(path, state):
        real_save(path, state)
        calls.append(state["epoch"])
        raise KeyboardInterrupt("killed after epoch 1")

    monkeypatch.setattr(stages, "save_checkpoint", crash_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", resume=False)
    monkeypatch.setattr(stages, "save_checkpoint", real_save)
    assert calls == [1]
    assert torch.load(tmp_path / "b" / "ck.pt", weights_only=False)["epoch"] == 1

    resumed = _train(tmp_path / "b", resume=True)
    state = torch.load(tmp_path / "b" / "ck.pt", weights_only=False)
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 4  # 2 epochs × 2 batches, none lost
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        if isinstance(a, torch.Tensor):  # (the CRF's extra state, bandwidths, is a dict)
            torch.testing.assert_close(b, a, atol=RESUME_ATOL, rtol=0, msg=name)


def test_resume_ignores_a_checkpoint_of_another_config(tmp_path):
    _train(tmp_path, resume=False, epochs=1)
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert stages.load_checkpoint(tmp_path / "ck.pt", {"run": "other"}, torch.device("cpu")) is None
    assert stages.load_checkpoint(tmp_path / "ck.pt", ck["config"], torch.device("cpu"))["epoch"] == 1


# ------------------------------------------------------------------------------------------ two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from lab.train import distributed

    ctx = distributed.init("cpu")
    try:
        images, labels = _data(size=8)
        model = _model(seed=rank)  # different initial weights per rank: DDP must broadcast rank 0's
        hist = train_model(
            model, _groups(model), Split(images, labels, batch_size=2), epochs=1, ctx=ctx, seed=0, desc="ddp"
        )
        torch.save(
            {"model": model.state_dict(), "loss": hist["loss"], "world": ctx.world_size}, Path(out) / f"rank{rank}.pt"
        )
    except BaseException:
        distributed.shutdown(ctx)
        raise
    distributed.shutdown(ctx, synchronize=True)


def test_two_processes_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert len(r0["loss"]) == 2  # 4 batches shared out: 2 steps per rank
    assert r0["loss"] == r1["loss"]  # the logged loss is averaged over the ranks
    start = _model(seed=0).state_dict()
    tensors = [n for n, w in start.items() if isinstance(w, torch.Tensor)]
    for name in tensors:
        assert torch.equal(r0["model"][name], r1["model"][name]), name
    assert any(not torch.equal(r0["model"][n], start[n]) for n in tensors)  # and they did train


# ------------------------------------------------------------------------------------------ end to end
def test_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["--quick", "--out", str(out), "--checkpoints", str(tmp_path / "ck")]) == 0
    for name in ("paper_table.md", "paper_table.json", "training_curves.png", "compat_matrix.png", "examples.png"):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "paper_table.json").read_text())
    methods = [row["method"] for row in doc["rows"]]
    assert methods[:3] == ["fcn", "fcn+crf", "crf-rnn"]
    assert set(methods) == set(METHODS)
    for row in doc["rows"]:
        assert set(row) >= {"method", "miou_mean", "miou_std", "seeds", "trimap_mean", "trimap_std"}
        assert 0.0 <= row["trimap_mean"] <= 1.0
        assert isinstance(row["miou_mean"], float) and 0.0 <= row["miou_mean"] <= 1.0
        assert isinstance(row["miou_std"], float) and 0.0 <= row["miou_std"] <= 1.0
        assert row["seeds"] == 1
    md = (out / "paper_table.md").read_text()
    assert "| FCN (unary only) (`fcn`)" in md and "69.6" in md
    learned, grid = doc["learned_bandwidths"]["0"], doc["grid"]["0"]
    assert learned["theta_alpha"] != grid["theta_alpha"] and learned["theta_beta"] != grid["theta_beta"]
    assert "Bandwidths learned end to end" in md
    assert "fcn epoch 2/2" in capsys.readouterr().err  # progress on rank 0
    # a second run with --resume trains nothing again and reports the same numbers
    assert main(["--quick", "--out", str(out), "--checkpoints", str(tmp_path / "ck"), "--resume"]) == 0
    assert "resumed" in capsys.readouterr().err
    again = json.loads((out / "paper_table.json").read_text())
    assert [r["miou_mean"] for r in again["rows"]] == [r["miou_mean"] for r in doc["rows"]]
    assert (
        "of the" in (out / "paper_table.md").read_text()
        and "resumed from checkpoints" in (out / "paper_table.md").read_text()
    )
    assert "resumed from checkpoints" not in md  # the first run trained everything itself


def test_jobs_children_match_one_thread_in_process(tmp_path, capsys):
    """Two seeds in two 1-thread child processes give the table a 1-thread in-process run gives, bit for bit."""
    common = ["--quick", "--no-ablations", "--seeds", "0", "1"]
    out_a, out_b = tmp_path / "jobs", tmp_path / "inline"
    assert main([*common, "--jobs", "2", "--out", str(out_a), "--checkpoints", str(tmp_path / "ck_a")]) == 0
    err = capsys.readouterr().err
    assert "2 seed(s) in 2 child process(es)" in err
    # finished stages as whole lines, each child's own (no interleaving within a line)
    assert "[seed 0] fcn epoch 2/2" in err and "[seed 1] crf-rnn epoch 1/1" in err
    for line in err.splitlines():
        assert line.count("[seed ") <= 1, line
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*common, "--jobs", "1", "--out", str(out_b), "--checkpoints", str(tmp_path / "ck_b")]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = (json.loads((o / "paper_table.json").read_text()) for o in (out_a, out_b))
    assert a["jobs"] == 2 and b["jobs"] == 1
    assert [r["method"] for r in a["rows"]] == ["fcn", "fcn+crf", "crf-rnn", "crf-rnn-t10"]
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        assert ra["per_seed"] == rb["per_seed"] and ra["trimap_per_seed"] == rb["trimap_per_seed"], ra["method"]
        assert 0.0 <= ra["trimap_mean"] <= 1.0 and ra["seeds"] == 2
    assert "child processes of 1 thread each" in (out_a / "paper_table.md").read_text()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
