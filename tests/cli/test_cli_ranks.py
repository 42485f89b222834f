"""``crf-lab refine`` under torchrun: the inputs split by rank, each refined once, one merged record."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from inputs import synthetic_photo
from PIL import Image

from lab.cli.args import UsageError
from lab.cli.ranks import Shard, shard_files, shard_from_env

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        Image.fromarray(synthetic_photo(30, 40, seed=i)).save(d / f"p{i}.png")
    (d / "broken.png").write_text("not a PNG")
    return d


def test_shards_cover_every_input_once():
    files = [Path(f"f{i:02d}.png") for i in (7, 3, 11, 0, 5, 9, 1)]
    for world in (1, 2, 3, 7, 9):
        parts = [shard_files(files, Shard(rank, world)) for rank in range(world)]
        flat = [p for part in parts for p in part]
        assert sorted(flat) == sorted(files) and len(flat) == len(files)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK: expected 0..1 (WORLD_SIZE is 2), got 2"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK: expected an integer >= 0"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE: expected an integer >= 1"),
    ],
)
def test_bad_rank_variables(env, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shard_from_env(env)


def _by_rank(rank, world, folder, out, run="run-1"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RANK": str(rank), "WORLD_SIZE": str(world)}
    env["TORCHELASTIC_RUN_ID"] = run
    cmd = [sys.executable, "-m", "lab", "refine", str(folder), "--out", str(out), "--iterations", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _check_complete(doc, folder, out):
    inputs = sorted(str(p) for p in folder.iterdir())
    assert [e["input"] for e in doc["images"]] == inputs  # each input once
    assert {Path(e["input"]).name: e["status"] for e in doc["images"]} == {
        **{f"p{i}.png": "ok" for i in range(5)},
        "broken.png": "failed",
    }
    assert doc["counts"] == {"ok": 5, "failed": 1} and doc["ranks"]["missing"] == []
    labels = sorted(p.name for p in out.glob("*_labels.png"))
    assert labels == [f"p{i}_labels.png" for i in range(5)]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not in this environment")
def test_torchrun_two_processes(folder, tmp_path):
    # rank 0 (broken.png, p1, p3) ends with a failure well before rank 1 (p0, p2 and a large p4) ends
    Image.fromarray(synthetic_photo(600, 800, seed=4)).save(folder / "p4.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [str(TORCHRUN), "--nproc_per_node=2", "--standalone", "-m", "lab.cli", "refine", str(folder)]
    res = subprocess.run(
        [*cmd, "--out", str(out), "--iterations", "1"], capture_output=True, text=True, env=env, timeout=400
    )
    assert "rank 0/2:" in res.stderr and "rank 1/2:" in res.stderr, res.stderr
    assert "interrupted" not in res.stderr, res.stderr  # torchrun stops every rank once one exits with an error
    assert "rank 0/2: waiting for rank 1 to end" in res.stderr, res.stderr
    assert res.returncode == 1, res.stderr  # broken.png failed
    doc = json.loads((out / "summary.json").read_text())
    _check_complete(doc, folder, out)
    parts = [json.loads((out / f"summary.rank{k}.json").read_text()) for k in (0, 1)]
    mine = [{Path(e["input"]).name for e in part["images"]} for part in parts]
    assert mine[0].isdisjoint(mine[1]) and len(mine[0] | mine[1]) == 6
    assert mine[1] == {"p0.png", "p2.png", "p4.png"}  # sorted: broken, p0, p1, p2, p3, p4 → rank 1 every second


def test_a_rank_that_never_ran_is_named_then_completed(folder, tmp_path):
    out = tmp_path / "out"
    res = _by_rank(1, 2, folder, out)
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "summary.json").read_text())
    missing = [e for e in doc["images"] if e["status"] == "not reached"]
    assert doc["ranks"]["missing"] == [0] and len(missing) == 3
    assert all("rank 0 of 2 wrote no record" in e["error"] for e in missing)
    stale = json.loads((out / "summary.rank1.json").read_text())
    shutil.copy(out / "summary.rank1.json", tmp_path / "rank1.json")
    res = _by_rank(0, 2, folder, out)  # the failed rank rerun: the record is complete
    assert res.returncode == 1, res.stderr  # broken.png is rank 0's
    _check_complete(json.loads((out / "summary.json").read_text()), folder, out)
    assert stale["run_id"] == "run-1"
    # a part of another run is never merged: rank 0 of a new run sees rank 1's part as missing
    res = _by_rank(0, 2, folder, out, run="run-2")
    doc = json.loads((out / "summary.json").read_text())
    assert doc["ranks"]["missing"] == [1]


def test_wait_for_peers_returns_once_every_other_part_of_this_run_is_there(tmp_path, capsys):
    import threading

    from lab.cli.ranks import part_name, under_agent, wait_for_peers

    assert not under_agent({"RANK": "0", "WORLD_SIZE": "3"}) and under_agent({"TORCHELASTIC_MAX_RESTARTS": "0"})
    shard = Shard(0, 3, "run-x")

    def part(k, run="run-x"):
        doc = {"images": [], "run_id": run, "world_size": 3}
        (tmp_path / part_name(k)).write_text(json.dumps(doc))

    part(1)
    part(2, run="run-old")  # another run's part does not count
    timer = threading.Timer(0.5, part, args=(2,))
    timer.start()
    wait_for_peers(tmp_path, shard, poll=0.05)
    assert json.loads((tmp_path / part_name(2)).read_text())["run_id"] == "run-x"  # read before the timer is joined
    timer.join()
    assert "rank 0/3: waiting for rank 2 to end" in capsys.readouterr().err
