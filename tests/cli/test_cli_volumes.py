"""``crf-lab refine --volume`` on NIfTI and .npy volumes: outputs in the input's space, identities, refusals."""

import gzip
import os

import numpy as np
import pytest
import torch
from inputs import cli_main

import lab
from lab.data.volumes import NIFTI_TAG, load_volume, volume_stem


def _nibabel():
    return pytest.importorskip("nibabel", reason="the volumes extra is not installed (nibabel)")


def anatomical_path() -> str:
    """nibabel's bundled MRI test volume (33 × 41 × 25 voxels of 2 mm, int16)."""
    nib = _nibabel()
    return os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")


def blob_volume(shape=(6, 14, 16), seed=0) -> np.ndarray:
    """A bright ball on a dark background with noise (float32): two regions with one clear surface."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    c = [s / 2 for s in shape]
    r2 = ((z - c[0]) / (shape[0] / 2)) ** 2 + ((y - c[1]) / 5) ** 2 + ((x - c[2]) / 6) ** 2
    return (np.where(r2 < 1, 100.0, 10.0) + rng.normal(0, 5, shape)).astype(np.float32)


def noisy_probabilities(vol: np.ndarray, seed=1) -> np.ndarray:
    """(2, *spatial) probabilities of "ball" from thresholding the volume, with a quarter of voxels flipped."""
    rng = np.random.default_rng(seed)
    ball = vol > 55
    flip = rng.random(vol.shape) < 0.25
    p = np.where(ball ^ flip, 0.7, 0.3)
    return np.stack([1 - p, p]).astype(np.float32)


def test_nifti_labels_in_the_input_space(tmp_path, capsys):
    nib = _nibabel()
    src = nib.load(anatomical_path())
    out = tmp_path / "seg"
    rc, err = cli_main(capsys, "refine", anatomical_path(), "--volume", "--out", out, "--save-q", "--overlay")
    assert rc == 0, err
    assert "Traceback" not in err and "33x41x25 (C=1)" in err and "spacing 2 × 2 × 2" in err
    labels = nib.load(out / "anatomical_labels.nii")
    np.testing.assert_array_equal(labels.affine, src.affine)  # the reference: nibabel's reading of the input
    assert labels.header.get_zooms() == src.header.get_zooms()
    assert labels.header.get_xyzt_units() == src.header.get_xyzt_units()
    assert labels.shape == src.shape and labels.get_data_dtype() == np.uint8
    assert bytes(labels.header["descrip"].item()).startswith(NIFTI_TAG.encode())
    q = np.load(out / "anatomical_q.npy")
    assert q.shape == (4, *src.shape)
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), q.argmax(0))
    assert (out / "anatomical_overlay.png").stat().st_size > 0


def test_gzipped_nifti_in_gzipped_nifti_out(tmp_path, capsys):
    nib = _nibabel()
    vol = blob_volume()
    img = nib.Nifti1Image(vol, np.diag([3.0, 0.8, 0.8, 1.0]))
    img.header.set_zooms((3.0, 0.8, 0.8))
    d = tmp_path / "in"
    d.mkdir()
    nib.save(img, d / "ct.nii.gz")
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", d, "--labels", "2", "--iterations", "2")
    assert rc == 0, err
    written = d / "ct_labels.nii.gz"
    gzip.decompress(written.read_bytes())  # a real gzip stream
    back = nib.load(written)
    assert back.shape == vol.shape and back.header.get_zooms() == (3.0, 0.8, 0.8)
    # refined into its own folder: the label volume is recognised as this tool's and not taken as an input
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", d, "--labels", "2", "--iterations", "2")
    assert rc == 0, err
    assert "not taken as inputs: 1" in err and "1 of 1 volumes refined" in err
    assert not (d / "ct_labels_labels.nii.gz").exists()


def test_matches_mean_field_on_the_same_volume(tmp_path, capsys):
    """The CLI's wiring (spacing, θ per axis, the probability layout) against lab.mean_field called directly."""
    vol = blob_volume()
    prob = noisy_probabilities(vol)
    d, probs, out = tmp_path / "in", tmp_path / "probs", tmp_path / "out"
    d.mkdir()
    probs.mkdir()
    np.save(d / "v.npy", vol)
    np.save(probs / "v.npy", np.moveaxis(prob, 0, -1))  # (*spatial, L): recognised by the matching grid
    flags = ["--theta-alpha", "4,3,3", "--theta-beta", "20", "--theta-gamma", "2", "--spacing", "2.5,1,1"]
    rc, err = cli_main(capsys, "refine", d, "--volume", "--prob-dir", probs, "--out", out, "--save-q", *flags)
    assert rc == 0, err
    assert "read as (*spatial, L) with L = 2" in err
    params = lab.CRFParams(theta_alpha=(4.0, 3.0, 3.0), theta_beta=20.0, theta_gamma=2.0, spacing=(2.5, 1.0, 1.0))
    unary = torch.log(torch.from_numpy(prob).clamp_min(1e-5))[None]
    want = lab.mean_field(unary, torch.from_numpy(vol)[None, None], params, iterations=5).q[0].numpy()
    np.testing.assert_allclose(np.load(out / "v_q.npy"), want, atol=1e-6)
    labels = np.load(out / "v_labels.npy")
    assert labels.dtype == np.uint8 and np.array_equal(labels, want.argmax(0))
    # what mean field is for: the flipped quarter of the voxels mostly restored
    truth = vol > 55
    assert (labels == truth).mean() > 0.9 > (prob.argmax(0) == truth).mean()


@pytest.mark.parametrize(("message_passing", "atol"), [("exact", 1e-6), ("lattice", 1e-4)])
def test_huge_spacing_along_z_is_the_slices_one_by_one(tmp_path, capsys, message_passing, atol):
    """An identity: with the slices 1000 units apart the kernels never reach across them.

    Exact message passing keeps it to float32 rounding; the lattice of the volume (d = 4) is not the slices'
    (d = 3), so it holds to the lattices' approximation (measured: 2.1e-5 at most).
    """
    vol = blob_volume((3, 12, 14))
    prob = noisy_probabilities(vol)
    d, probs, out = tmp_path / "in", tmp_path / "probs", tmp_path / "out"
    d.mkdir()
    probs.mkdir()
    np.save(d / "v.npy", vol)
    np.save(probs / "v.npy", prob)
    for k in range(vol.shape[0]):
        np.save(d / f"slice{k}.npy", vol[k])  # (H, W): a 2-D one-channel image
        np.save(probs / f"slice{k}.npy", prob[:, k])
    flags = ["--theta-alpha", "5", "--theta-beta", "20", "--theta-gamma", "2", "--iterations", "3"]
    flags += ["--message-passing", message_passing]
    rc, err = cli_main(capsys, "refine", d, "--volume", "--prob-dir", probs, "--out", out, "--save-q", *flags)
    assert rc == 0, err
    rc, err = cli_main(
        capsys, "refine", d / "v.npy", "--volume", "--prob-dir", probs, "--out", out / "z", "--save-q",
        "--spacing", "1000,1,1", *flags,
    )  # fmt: skip
    assert rc == 0, err
    stacked = np.load(out / "z" / "v_q.npy")
    for k in range(vol.shape[0]):
        one_by_one = np.load(out / f"slice{k}_q.npy")
        np.testing.assert_allclose(stacked[:, k], one_by_one, atol=atol)
        assert np.array_equal(stacked[:, k].argmax(0), one_by_one.argmax(0))


def test_two_channels_with_one_theta_beta_each(tmp_path, capsys):
    vol = blob_volume()
    two = np.stack([vol, 1000.0 + 10.0 * vol])  # (C, D, H, W): the second channel in other units
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "mc.npy", two)
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", tmp_path / "out", "--theta-beta", "20,200")
    assert rc == 0, err
    assert "(C=2)" in err and "θβ (20, 200)" in err
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", tmp_path / "o2", "--theta-beta", "20,200,5")
    assert rc == 1 and "--theta-beta: 3 values, but the volume has 2 channels" in err


def test_default_theta_beta_follows_the_intensities(tmp_path, capsys):
    vol = blob_volume()
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "a.npy", vol)
    np.save(d / "b.npy", vol * 100.0)  # the same volume in units 100 times smaller
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", tmp_path / "out", "--labels", "2", "--save-q")
    assert rc == 0, err
    lo, hi = np.percentile(vol, [1, 99])
    assert f"θβ {0.1 * (hi - lo):.3g}" in err  # a tenth of the 1–99 % range, in the file's units
    qa, qb = np.load(tmp_path / "out" / "a_q.npy"), np.load(tmp_path / "out" / "b_q.npy")
    assert (qa.argmax(0) == qb.argmax(0)).mean() > 0.99  # so the units do not change the result


def test_bad_volumes_fail_one_by_one(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "good.npy", blob_volume())
    bad = blob_volume()
    bad[1, 2, 3] = np.nan
    np.save(d / "nan.npy", bad)
    np.save(d / "five_d.npy", np.zeros((2, 2, 2, 2, 2), np.float32))
    (d / "text.npy").write_text("not an array")
    np.save(d / "strings.npy", np.array(["a", "b"]))
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", tmp_path / "out", "--labels", "2")
    assert rc == 1 and "Traceback" not in err
    assert "nan.npy: FAILED: " in err and "1 voxels are NaN or Inf" in err
    assert "five_d.npy: FAILED: " in err and "expected a 2-D (H, W), 3-D (D, H, W) or 4-D (C, D, H, W)" in err
    assert "text.npy: FAILED: " in err and "not a readable .npy" in err
    assert "strings.npy: FAILED: " in err
    assert "1 of 5 volumes refined" in err
    assert (tmp_path / "out" / "good_labels.npy").exists() and not (tmp_path / "out" / "nan_labels.npy").exists()


def test_probability_volume_on_another_grid_is_refused(tmp_path, capsys):
    d, probs = tmp_path / "in", tmp_path / "probs"
    d.mkdir()
    probs.mkdir()
    np.save(d / "v.npy", blob_volume())
    np.save(probs / "v.npy", np.full((2, 3, 7, 8), 0.5, np.float32))  # half the grid
    rc, err = cli_main(capsys, "refine", d, "--volume", "--prob-dir", probs, "--out", tmp_path / "out")
    assert rc == 1
    assert "shape (2, 3, 7, 8) is neither (L, *spatial) nor (*spatial, L)" in err and "(6, 14, 16)" in err


def test_too_many_voxels_refused_from_the_header(tmp_path, capsys, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "v.npy", blob_volume())
    read = []
    monkeypatch.setattr(np, "ascontiguousarray", lambda *a, **k: read.append(1) or a[0])  # the voxel read
    rc, err = cli_main(capsys, "refine", d, "--volume", "--out", tmp_path / "out", "--max-pixels", "100")
    assert rc == 1 and "6 × 14 × 16 = 1,344 voxels, more than the cap of 100; refused before reading" in err
    assert not read


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--unary", "voc"], "--unary voc: not for --volume"),
        (["--max-side", "64"], "--max-side: not for --volume"),
        (["--message-passing", "window"], "--message-passing window: not for --volume"),
        (["--spacing", "0,1,1"], "--spacing: expected positive finite numbers"),
        (["--theta-alpha", "3,x"], "--theta-alpha: expected a number or comma-separated numbers"),
    ],
)
def test_usage_errors(tmp_path, capsys, extra, message):
    np.save(tmp_path / "v.npy", blob_volume())
    rc, err = cli_main(capsys, "refine", tmp_path / "v.npy", "--volume", "--out", tmp_path / "out", *extra)
    assert rc == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_volumes_without_the_flag_get_a_hint(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "v.npy", blob_volume())
    rc, err = cli_main(capsys, "refine", d, "--out", tmp_path / "out")
    assert rc == 2 and "1 volume files are there: add --volume" in err
    rc, err = cli_main(capsys, "refine", d / "v.npy", "--out", tmp_path / "out")
    assert rc == 1 and "v.npy: SKIPPED: a volume (.nii, .nii.gz, .npy): add --volume" in err
    rc, err = cli_main(capsys, "refine", d / "v.npy", "--spacing", "2", "--out", tmp_path / "out")
    assert rc == 2 and "--spacing: applies to --volume only" in err


def test_nifti_without_nibabel_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nibabel(name, *args, **kwargs):
        if name == "nibabel" or name.startswith("nibabel."):
            raise ImportError("No module named 'nibabel'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "x.nii").write_bytes(b"\0" * 352)
    monkeypatch.setattr(builtins, "__import__", no_nibabel)
    with pytest.raises(lab.errors.Unavailable, match=r"needs nibabel: pip install 'crf-rnn-lab\[volumes\]'"):
        load_volume(tmp_path / "x.nii")


def test_layouts_of_npy_and_nifti(tmp_path):
    nib = _nibabel()
    np.save(tmp_path / "img.npy", np.zeros((5, 6), np.uint8))
    np.save(tmp_path / "mc.npy", np.zeros((3, 4, 5, 6), np.int16))
    assert load_volume(tmp_path / "img.npy").data.shape == (1, 5, 6)
    assert load_volume(tmp_path / "mc.npy").data.shape == (3, 4, 5, 6)
    four = nib.Nifti1Image(np.arange(4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2), np.eye(4))
    nib.save(four, tmp_path / "two.nii")
    v = load_volume(tmp_path / "two.nii")
    assert v.data.shape == (2, 4, 5, 6) and v.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(v.data[1], np.asarray(four.dataobj)[..., 1])
    assert volume_stem(tmp_path / "two.nii") == "two"
