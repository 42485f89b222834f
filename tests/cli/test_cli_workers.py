"""``crf-lab refine --workers N``: the same outputs and record as one process; failures and Ctrl-C recorded."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from inputs import cli_main, synthetic_photo
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_photo(30 + 4 * i, 44, seed=i)).save(d / f"p{i}.png")
    (d / "broken.png").write_text("not a PNG")
    return d


def _record(out):
    doc = json.loads((out / "summary.json").read_text())
    for e in doc["images"]:
        e.pop("ms", None)
        e["outputs"] = [Path(o).name for o in e.get("outputs", [])]
    return doc


def test_workers_give_the_same_outputs_and_record(folder, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("--iterations", "2", "--save-q", "--overlay", "--working-size", "32")
    rc1, _ = cli_main(capsys, "refine", folder, "--out", one, *common)
    rc2, err2 = cli_main(capsys, "refine", folder, "--out", two, *common, "--workers", "2")
    assert rc1 == rc2 == 1, err2
    assert "broken.png: FAILED" in err2 and "4 of 5 images refined" in err2
    a, b = _record(one), _record(two)
    assert a["images"] == b["images"] and a["parameters"] == b["parameters"] and a["counts"] == b["counts"]
    assert [e["input"] for e in b["images"]] == sorted(str(p) for p in folder.iterdir())  # the inputs' order
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    for name in names:
        if name.endswith(".png"):
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
        elif name.endswith(".npy"):
            assert np.array_equal(np.load(one / name), np.load(two / name)), name


def test_workers_refuse_bad_counts(folder, tmp_path, capsys):
    rc, err = cli_main(capsys, "refine", folder, "--out", tmp_path / "o", "--workers", "0")
    assert rc == 2 and "--workers: expected a number of processes >= 1, got 0" in err


def test_workers_keep_existing_outputs(folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0_labels.png").write_bytes(b"mine")  # a non-empty output: complete for --skip-existing
    rc, _ = cli_main(capsys, "refine", folder, "--out", out, "--iterations", "1", "--workers", "2", "--skip-existing")
    assert rc == 1
    assert (out / "p0_labels.png").read_bytes() == b"mine"
    statuses = {Path(e["input"]).name: e["status"] for e in json.loads((out / "summary.json").read_text())["images"]}
    assert statuses == {"broken.png": "failed", "p0.png": "existing", "p1.png": "ok", "p2.png": "ok", "p3.png": "ok"}


def test_ctrl_c_with_workers_records_the_run_and_leaves_nothing_partial(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(8):
        Image.fromarray(synthetic_photo(60, 80, seed=i)).save(d / f"p{i}.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "lab", "refine", str(d), "--out", str(out), "--workers", "2", "--iterations", "3"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # the first image done: then Ctrl-C, as a terminal sends it, to the whole group
        lines.append(line)
        if ": ok," in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    doc = json.loads((out / "summary.json").read_text())
    statuses = [e["status"] for e in doc["images"]]
    assert len(statuses) == 8 and statuses.count("ok") >= 1 and "not reached" in statuses
    assert set(statuses) <= {"ok", "not reached"}
    for e in doc["images"]:  # every ok image's files complete; nothing else, no temporary file
        if e["status"] == "ok":
            assert all(Image.open(o).size == (80, 60) for o in e["outputs"])
    ok = {Path(e["input"]).stem for e in doc["images"] if e["status"] == "ok"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"{s}_labels.png" for s in ok), "summary.csv", "summary.json"]
    )
