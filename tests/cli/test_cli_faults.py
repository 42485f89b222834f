"""``crf-lab refine`` under faults: corrupt companions, name clashes, full disks, signals, bad options.

Each test checks the exit code, the message (it names the file or the option) and what is left on disk.
Most run ``main()`` in this process (fast); the signal tests run ``python -m lab`` as a user would.
"""

import errno
import io
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

from lab.cli import EXACT_MAX_PIXELS, batch, writing

ITER = ["--iterations", "1"]


def save_photos(folder: Path, names, h=24, w=30):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.fromarray(synthetic_photo(h, w, seed=i)).save(folder / n)
    return folder


run = cli_main  # (exit code, stderr) of crf-lab in this process


def listing(folder: Path) -> list[str]:
    """The files in ``folder`` but the run's record (summary.json / .csv, tested in test_cli_summary.py)."""
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return [n for n in names if n not in ("summary.json", "summary.csv")]


def no_partials(folder: Path) -> None:
    leftovers = [n for n in listing(folder) if n.endswith(".part") or n.startswith(".")]
    assert not leftovers, f"temporary files left: {leftovers}"
    for p in folder.iterdir():
        assert p.stat().st_size > 0, f"empty output {p.name}"


def complete_sets(folder: Path, suffixes=("_labels.png", "_q.npy", "_overlay.png")) -> set[str]:
    """The stems with a complete, loadable set of outputs; fails on any partial set."""
    names = listing(folder)
    stems = {n.removesuffix(s) for n in names for s in suffixes if n.endswith(s)}
    for stem in stems:
        for s in suffixes:
            assert f"{stem}{s}" in names, f"partial set for {stem}: {[n for n in names if n.startswith(stem)]}"
        if "_q.npy" in suffixes:
            np.load(folder / f"{stem}_q.npy")  # complete files load
        Image.open(folder / f"{stem}_labels.png").load()
    return stems


# --- 5: corrupt companion files


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _corrupt_member(data: bytes) -> bytes:
    import struct
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        offset = z.infolist()[0].header_offset
    name_len, extra_len = struct.unpack("<HH", data[offset + 26 : offset + 30])
    start = offset + 30 + name_len + extra_len
    bad = bytearray(data)
    for i in range(start + 8, start + 16):
        bad[i] ^= 0xFF
    return bytes(bad)


def test_corrupt_npz_companions_fail_alone(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["a.png", "b.png", "c.png", "d.png"])
    probs = tmp_path / "probs"
    probs.mkdir()
    good = _npz_bytes(prob=np.full((24, 30, 3), 1 / 3))
    (probs / "a.npz").write_bytes(good)
    (probs / "b.npz").write_bytes(_corrupt_member(good))  # the member is read (and fails) after np.load
    (probs / "c.npz").write_bytes(good[: len(good) // 2])
    (probs / "d.npz").write_bytes(_npz_bytes(prob=np.array([{"pickled": 1}], dtype=object)))
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--prob-dir", probs, "--out", out, *ITER)
    assert rc == 1 and "Traceback" not in err
    assert f"b.png: FAILED: {probs / 'b.npz'}: array 'prob' of the .npz is not readable" in err
    assert f"c.png: FAILED: {probs / 'c.npz'}: not a readable" in err
    assert f"d.png: FAILED: {probs / 'd.npz'}: " in err and "pickled" in err
    assert "1 of 4 images refined" in err
    assert listing(out) == ["a_labels.png"]


def test_corrupt_annotation_fails_alone(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["a.png", "b.png"])
    ann = tmp_path / "ann"
    ann.mkdir()
    a = np.zeros((24, 30, 3), np.uint8)
    a[:5, :5] = (255, 0, 0)
    a[-5:, -5:] = (0, 0, 255)
    Image.fromarray(a).save(ann / "a.png")
    data = (ann / "a.png").read_bytes()
    (ann / "b.png").write_bytes(data[: len(data) // 2])
    rc, err = run(capsys, "refine", d, "--annotation-dir", ann, "--out", tmp_path / "out", *ITER)
    assert rc == 1 and f"b.png: FAILED: {ann / 'b.png'}: could not decode" in err
    assert listing(tmp_path / "out") == ["a_labels.png"]


# --- 6: output name collisions


@pytest.mark.parametrize("layout", ["two folders", "two suffixes"])
def test_colliding_output_names_are_a_usage_error(tmp_path, capsys, layout):
    if layout == "two folders":
        inputs = [save_photos(tmp_path / "a", ["x.png"]), save_photos(tmp_path / "b", ["x.png"])]
        named = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    else:
        inputs = [save_photos(tmp_path / "in", ["x.png", "x.jpg", "y.png"])]
        named = [str(tmp_path / "in" / "x.jpg"), str(tmp_path / "in" / "x.png")]
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", *inputs, "--out", out, *ITER)
    assert rc == 2 and "Traceback" not in err
    assert "would overwrite each other's outputs" in err and "x_labels.png" in err
    for n in named:
        assert n in err
    assert listing(out) == []  # refused before anything was written


# --- 7: atomic writes, full disk, signals, --skip-existing, own outputs


def _fail_writes_of(monkeypatch, suffix: str, err: int):
    """Make the write of any output ending in ``suffix`` fail half-way with ``OSError(err)``."""
    real = writing._write_bytes

    def write(f, data):
        if Path(f.name).name.startswith(f".{suffix}."):  # the temporary file of that output
            f.write(data[: len(data) // 2])  # some bytes land, as on a real full disk
            raise OSError(err, os.strerror(err))
        real(f, data)

    monkeypatch.setattr(writing, "_write_bytes", write)


def test_full_disk_stops_the_batch_and_leaves_nothing_partial(tmp_path, capsys, monkeypatch):
    d = save_photos(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _fail_writes_of(monkeypatch, "b_q.npy", errno.ENOSPC)
    rc, err = run(capsys, "refine", d, "--out", out, "--save-q", "--overlay", *ITER)
    assert rc == 1 and "Traceback" not in err
    assert f"STOPPED: {out / 'b_q.npy'}: No space left on device" in err
    assert "rerun with --skip-existing" in err
    assert "c.png" not in err  # never started
    no_partials(out)
    assert complete_sets(out) == {"a"}
    record = json.loads((out / "summary.json").read_text())
    assert [e["status"] for e in record["images"]] == ["ok", "failed", "not reached"]
    assert "No space left on device" in record["images"][1]["error"]
    before = {n: (out / n).stat().st_mtime_ns for n in listing(out)}
    monkeypatch.undo()
    rc, err = run(capsys, "refine", d, "--out", out, "--save-q", "--overlay", "--skip-existing", *ITER)
    assert rc == 0 and "a.png: skipped, its outputs exist" in err and "3 of 3 images refined" in err
    assert complete_sets(out) == {"a", "b", "c"}
    assert all((out / n).stat().st_mtime_ns == t for n, t in before.items())  # a's files untouched


def test_other_write_errors_fail_that_image_only(tmp_path, capsys, monkeypatch):
    d = save_photos(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _fail_writes_of(monkeypatch, "b_overlay.png", errno.EIO)
    rc, err = run(capsys, "refine", d, "--out", out, "--save-q", "--overlay", *ITER)
    assert rc == 1 and f"b.png: FAILED: [Errno {errno.EIO}]" in err and "b_overlay.png" in err
    assert "2 of 3 images refined" in err
    no_partials(out)
    assert complete_sets(out) == {"a", "c"}  # b's labels and Q, written before the failure, are gone


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 48 KiB tmpfs, or a skip saying why it could not be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the simulated full disk test covers ENOSPC")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); the simulated full disk test covers ENOSPC")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_disk(tmp_path, capsys, tiny_tmpfs):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(16, 16)).save(d / "a.png")  # its outputs: ~5 KiB
    Image.fromarray(synthetic_photo(64, 128)).save(d / "b.png")  # its Q alone: 128 KiB, more than the disk
    Image.fromarray(synthetic_photo(16, 16)).save(d / "c.png")
    out = tiny_tmpfs / "out"
    rc, err = run(capsys, "refine", d, "--out", out, "--save-q", "--overlay", *ITER)
    assert rc == 1 and "Traceback" not in err
    assert f"STOPPED: {out / 'b_q.npy'}: No space left on device" in err
    no_partials(out)
    assert complete_sets(out) == {"a"}


def test_refining_a_folder_into_itself_skips_its_own_outputs(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["x.png", "y.png"])
    Image.fromarray(synthetic_photo(seed=5)).save(d / "mask_labels.png")  # the user's own file: an input
    assert run(capsys, "refine", d, "--out", d, "--overlay", *ITER)[0] == 0
    rc, err = run(capsys, "refine", d, "--out", d, "--overlay", *ITER)
    assert rc == 0 and "not taken as inputs: 6 PNGs written by crf-lab" in err
    assert "3 of 3 images refined" in err
    names = listing(d)
    assert "x_labels_labels.png" not in names and "x_overlay_labels.png" not in names
    assert "mask_labels_labels.png" in names
    rc, err = run(capsys, "refine", d / "x_labels.png", "--out", d, *ITER)  # named explicitly: still not an input
    assert rc == 2 and "this tool's outputs" in err


def _wait_for(predicate, timeout=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize(
    ("signum", "code", "resume"),
    [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)],  # one resume is enough: each run costs ~8 s
)
def test_signal_mid_batch_leaves_complete_sets_and_resumes(tmp_path, signum, code, resume):
    d = save_photos(tmp_path / "in", [f"p{i}.png" for i in range(6)], h=48, w=64)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lab", "refine", str(d), "--out", str(out), "--save-q", "--overlay"]
    # a child inherits an ignored SIGINT (e.g. from a background job); the CLI keeps ignored signals ignored
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=reset)
    try:
        assert _wait_for(lambda: (out / "p0_labels.png").exists()), "no output appeared"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    no_partials(out)
    done = complete_sets(out)
    assert "p0" in done and len(done) < 6, f"the signal did not stop the batch: {done}"
    if not resume:
        return
    res = subprocess.run([*cmd, "--skip-existing"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("skipped, its outputs exist") == len(done)
    assert complete_sets(out) == {f"p{i}" for i in range(6)}


def test_signal_during_a_write_leaves_no_file(tmp_path, capsys, monkeypatch):
    d = save_photos(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    real = writing._write_bytes

    def write(f, data):
        if Path(f.name).name.startswith(".b_q.npy."):
            f.write(data[:100])
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: mid-write
            time.sleep(0.1)
        real(f, data)

    monkeypatch.setattr(writing, "_write_bytes", write)
    rc, err = run(capsys, "refine", d, "--out", out, "--save-q", *ITER)
    assert rc == 143 and "interrupted by SIGTERM while refining" in err and "b.png" in err
    no_partials(out)
    assert complete_sets(out, ("_labels.png", "_q.npy")) == {"a"}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again


def test_signal_during_the_renames_completes_the_set(tmp_path, capsys, monkeypatch):
    d = save_photos(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if Path(dst).name == "b_labels.png":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)

    monkeypatch.setattr(os, "replace", replace)
    rc, err = run(capsys, "refine", d, "--out", out, "--save-q", *ITER)
    assert rc == 143 and "2 of 3 images are complete" in err
    no_partials(out)
    assert complete_sets(out, ("_labels.png", "_q.npy")) == {"a", "b"}


# --- 8: many labels, SVG, GIF


def test_more_than_256_labels_are_refused_naming_the_file(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["a.png"])
    probs = tmp_path / "probs"
    probs.mkdir()
    np.save(probs / "a.npy", np.random.default_rng(0).normal(size=(24, 30, 300)).astype(np.float32))
    rc, err = run(capsys, "refine", d, "--prob-dir", probs, "--out", tmp_path / "o1", *ITER)
    assert rc == 1 and f"{probs / 'a.npy'}: 300 labels" in err and "256-label limit" in err
    ann = tmp_path / "ann"
    ann.mkdir()
    colours = np.arange(1, 24 * 30 + 1)
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], 1).reshape(24, 30, 3)
    Image.fromarray(rgb.astype(np.uint8)).save(ann / "a.png")
    rc, err = run(capsys, "refine", d, "--annotation-dir", ann, "--out", tmp_path / "o2", *ITER)
    assert rc == 1 and f"{ann / 'a.png'}: 720 colours besides black, more than the 256-label limit" in err
    rc, err = run(capsys, "refine", d, "--labels", "300", "--out", tmp_path / "o3")
    assert rc == 2 and "--labels: expected an integer from 2 to 256" in err


def test_svg_fails_cleanly_and_gif_works(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["a.png"])
    (d / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"></svg>')
    frames = [Image.fromarray(synthetic_photo(seed=s)) for s in (0, 1)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--out", out, *ITER)
    assert rc == 1 and "logo.svg: FAILED: could not decode as an image: an SVG (vector) image" in err
    assert "BytesIO" not in err and "object at 0x" not in err
    assert "anim.gif: ok, 30x24" in err and "2 of 3 images refined" in err
    assert listing(out) == ["a_labels.png", "anim_labels.png"]


# --- 9: parameters JSON and option values


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"iterations": "five"}', '"iterations": expected an integer >= 0, got "five"'),
        ('{"iterations": null}', '"iterations": expected an integer >= 0, got null'),
        ('{"iterations": -2}', '"iterations": expected an integer >= 0'),
        ('{"iterations": 2.5}', '"iterations": expected an integer >= 0'),
        ('{"theta_alpha": "80"}', '"theta_alpha": expected a number > 0, got "80"'),
        ('{"theta_alpha": -1}', "theta_alpha: expected"),
        ('{"w_bilateral": {}}', '"w_bilateral": expected a finite number or a list of finite numbers'),
        ('{"w_bilateral": [1e999]}', '"w_bilateral": expected a finite number or a list'),
        ('{"w_spatial": 1' + "0" * 400 + "}", '"w_spatial": expected a finite number'),
        ('{"theta_gamma": NaN}', '"theta_gamma": expected a number > 0, got NaN'),
        ('{"compat": [[0, 1], [1]]}', '"compat": expected "potts" or an L × L list'),
        ('{"compat": [[0, Infinity], [1, 0]]}', '"compat": expected "potts" or an L × L list'),
        ('{"normalize": ["after"]}', '"normalize": expected one of'),
        ('{"compat": [[0, "a"]]}', '"compat": expected "potts" or an L × L list'),
        ('{"window_size": true}', '"window_size": expected an integer >= 1'),
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "not valid JSON"),
        ("[" * 100_000, "--params"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8 text (byte 0xff at position 0)"),
    ],
)
def test_bad_params_json_is_a_usage_error_naming_the_key(tmp_path, capsys, content, message):
    d = save_photos(tmp_path / "in", ["a.png"])
    pj = tmp_path / "p.json"
    pj.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--params", pj, "--out", out)
    assert rc == 2 and "Traceback" not in err
    assert f"--params {pj}" in err and message in err
    assert not out.exists()


def test_params_json_with_a_bom_and_the_apps_extra_keys(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["a.png"])
    pj = tmp_path / "p.json"
    doc = {"theta_alpha": 40, "iterations": 2, "message_passing": "lattice", "image": "x", "working_size": 320}
    pj.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    rc, err = run(capsys, "refine", d, "--params", pj, "--out", tmp_path / "out")
    assert rc == 0, err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--block", "0"], "--block: expected a tile size in pixels >= 1, got 0"),
        (["--confidence", "1.5"], "--confidence: expected a probability in (0.25, 1) (1/L for --labels 4)"),
        (["--confidence", "0.2"], "--confidence: expected a probability in (0.25, 1)"),
        (["--confidence", "nan"], "--confidence"),
        (["--labels", "1"], "--labels: expected an integer from 2 to 256"),
        (["--iterations", "-1"], "--iterations: expected an integer >= 0"),
        (["--max-side", "3"], "--max-side: expected 0 (keep the size) or a size in pixels >= 8"),
        (["--max-pixels", "-5"], "--max-pixels: expected a positive integer, or 0 / none"),
        (["--max-pixels", "lots"], "--max-pixels: expected a positive integer"),
        (["--theta-beta", "0"], "--theta-beta: expected"),  # the rest of the wording is CRFParams'
        (["--w-spatial", "inf"], "--w-spatial: expected"),
        (["--backend", "triton"], "--backend triton: "),
        (["--prob-dir", "/nonexistent/probs"], "--prob-dir: /nonexistent/probs is not a folder"),
        (["--annotation-dir", "/nonexistent/ann"], "--annotation-dir: /nonexistent/ann is not a folder"),
        (["--message-passing", "fft"], "--message-passing"),
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path, capsys, monkeypatch, option, message):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the CLI computes on the CPU: triton cannot run
    d = save_photos(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--out", out, *option)
    assert rc == 2 and "Traceback" not in err
    assert message in err
    assert not out.exists()


def test_out_that_is_a_file(tmp_path, capsys):
    d = save_photos(tmp_path / "in", ["a.png"])
    (tmp_path / "out").write_text("a file")
    rc, err = run(capsys, "refine", d, "--out", tmp_path / "out")
    assert rc == 2 and "--out:" in err and "is not a folder" in err


# --- 10: exact message passing has a size limit


def test_exact_message_passing_refuses_large_images(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(100, 100)).save(d / "big.png")
    Image.fromarray(synthetic_photo(12, 16)).save(d / "small.png")
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--out", out, "--message-passing", "exact", *ITER)
    assert rc == 1
    assert "big.png: FAILED: 100 × 100 = 10,000 pixels is more than the 9,216 (96 × 96)" in err
    assert "--message-passing lattice" in err and "small.png: ok" in err
    assert EXACT_MAX_PIXELS == 96 * 96
    rc, err = run(
        capsys, "refine", d / "big.png", "--out", out, "--message-passing", "exact", "--max-side", "40", *ITER
    )
    assert rc == 0, err


# --- 12: entries that cannot be read are reported


def test_unreadable_entries_are_reported(tmp_path, capsys, monkeypatch):
    d = save_photos(tmp_path / "in", ["good.png", "locked.png"])
    (d / "loop.png").symlink_to(d / "loop.png")
    (d / "broken.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(d / "pipe.png")  # opening it would block the batch
    (d / "locked.png").chmod(0)
    if os.access(d / "locked.png", os.R_OK):  # root reads anything: pretend the permission holds
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: Path(p).name != "locked.png" and real(p, m, **kw))
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--out", out, *ITER)
    assert rc == 1 and "Traceback" not in err
    assert f"{d / 'loop.png'}: SKIPPED: a symlink loop" in err
    assert f"{d / 'broken.png'}: SKIPPED: a broken symlink (to {tmp_path / 'gone.png'})" in err
    assert f"{d / 'pipe.png'}: SKIPPED: not a regular file" in err
    assert f"{d / 'locked.png'}: SKIPPED: cannot be read (permission denied)" in err
    assert "1 of 5 images refined" in err and "4 failed" in err
    assert listing(out) == ["good_labels.png"]
    rc, err = run(capsys, "refine", d / "loop.png", "--out", out, *ITER)  # named directly
    assert rc == 1 and "SKIPPED: a symlink loop" in err


# --- 4 (CLI part): the pixel cap


def test_max_pixels_refuses_before_decoding(tmp_path, capsys, recwarn):
    import struct
    import zlib

    d = save_photos(tmp_path / "in", ["a.png"])

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 1500) * 12000, 9)
    (d / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    out = tmp_path / "out"
    rc, err = run(capsys, "refine", d, "--out", out, *ITER)
    assert rc == 1
    assert "bomb.png: FAILED: 12000 × 12000 = 144,000,000 pixels, more than --max-pixels 50,000,000" in err
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    rc, err = run(capsys, "refine", d / "a.png", "--out", out, "--max-pixels", "500", *ITER)
    assert rc == 1 and "30 × 24 = 720 pixels, more than --max-pixels 500" in err
    for lifted in ("0", "none"):
        assert run(capsys, "refine", d / "a.png", "--out", out, "--max-pixels", lifted, *ITER)[0] == 0


# --- nothing escapes as a traceback


def test_an_unexpected_error_is_reported_per_file(tmp_path, capsys, monkeypatch):
    d = save_photos(tmp_path / "in", ["a.png", "b.png"])
    real = batch._refine_one

    def flaky(args, path, *rest):
        if path.name == "a.png":
            raise KeyError("surprise")
        return real(args, path, *rest)

    monkeypatch.setattr(batch, "_refine_one", flaky)
    rc, err = run(capsys, "refine", d, "--out", tmp_path / "out", *ITER)
    assert rc == 1 and "a.png: FAILED: KeyError: 'surprise'" in err and "b.png: ok" in err


def test_a_signal_inside_a_compiled_call_stops_the_batch(tmp_path, capsys, monkeypatch):
    """A signal inside a Numba call surfaces as SystemError caused by Interrupted: a stop (130), not a failure."""
    from lab.cli.signals import Interrupted

    src = save_photos(tmp_path / "in", ["a.png", "b.png"])

    def interrupted_inside(*args, **kwargs):
        try:
            raise Interrupted(2)
        except Interrupted as exc:
            raise SystemError("CPUDispatcher(<function finish>) returned a result with an exception set") from exc

    monkeypatch.setattr(batch, "_refine_one", interrupted_inside)
    rc, err = run(capsys, "refine", src, "--out", tmp_path / "out", *ITER)
    assert rc == 130, err
    assert "FAILED" not in err
