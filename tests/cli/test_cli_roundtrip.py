"""App → command line: the app's parameters download drives ``crf-lab refine --params`` exactly, working size too.

The app, the library and the CLI share one set of defaults (lab.explore.defaults): checked against
CRFParams' fields, mean_field's signature, the app's slider lines and ``--help``.
"""

import ast
import inspect
import json
from pathlib import Path

import pytest
import torch
from inputs import cli_main, synthetic_photo
from PIL import Image

from lab.cli.args import build_parser
from lab.crf import CRFParams, mean_field
from lab.explore import params_from_json, params_to_json
from lab.explore.defaults import DEFAULT_ITERATIONS, DEFAULT_PARAMS, DEFAULT_WORKING_SIZE

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
KNOBS = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial")


@pytest.fixture
def photo(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(60, 90)).save(d / "a.png")
    return d / "a.png"


def test_the_app_export_drives_the_cli_exactly(photo, tmp_path, capsys):
    compat = torch.tensor([[0.0, 1.5, 2.0, 1.0], [1.5, 0.0, 1.0, 0.5], [2.0, 1.0, 0.0, 1.0], [1.0, 0.5, 1.0, 0.0]])
    params = CRFParams(
        theta_alpha=33.0, theta_beta=7.5, theta_gamma=1.5, w_bilateral=4.25, w_spatial=2.5, compat=compat
    )
    exported = params_to_json(  # exactly what the app's "Parameters (JSON)" button holds
        params, iterations=3, message_passing="lattice", image="a.png", working_size=64
    )
    (tmp_path / "crf_params.json").write_text(exported)
    out = tmp_path / "out"
    rc, err = cli_main(capsys, "refine", photo, "--params", tmp_path / "crf_params.json", "--out", out)
    assert rc == 0, err
    used = json.loads((out / "summary.json").read_text())["parameters"]
    want = json.loads(exported)
    for key in (*KNOBS, "compat", "normalize", "window_size", "iterations", "working_size"):
        assert used[key] == want[key], key
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert entry["size"] == "90x60" and entry["working_size"] == "64x43"  # refined at 64 px, written at 90
    assert Image.open(out / "a_labels.png").size == (90, 60)
    # and summary.json's parameters are themselves a --params file: the same values again
    again, extra = params_from_json(json.dumps(used))
    assert [getattr(again, k) for k in KNOBS] == [getattr(params, k) for k in KNOBS]
    assert torch.equal(again.compat, compat) and extra["working_size"] == 64 and extra["iterations"] == 3


def test_the_command_line_overrides_the_files_working_size(photo, tmp_path, capsys):
    (tmp_path / "p.json").write_text(params_to_json(CRFParams(), iterations=1, working_size=64))
    out = tmp_path / "out"
    rc, err = cli_main(capsys, "refine", photo, "--params", tmp_path / "p.json", "--working-size", "32", "--out", out)
    assert rc == 0, err
    doc = json.loads((out / "summary.json").read_text())
    assert doc["parameters"]["working_size"] == 32 and doc["images"][0]["working_size"] == "32x21"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", '"working_size": expected an integer >= 8'),
        ("4", '"working_size": expected an integer >= 8'),
        ('"big"', '"working_size": expected an integer >= 8'),
        ("12.5", '"working_size": expected an integer >= 8'),
    ],
)
def test_a_bad_working_size_in_the_file_is_refused(photo, tmp_path, capsys, value, message):
    doc = json.loads(params_to_json(CRFParams(), iterations=1))
    text = json.dumps(doc)[:-1] + f', "working_size": {value}}}'
    (tmp_path / "p.json").write_text(text)
    rc, err = cli_main(capsys, "refine", photo, "--params", tmp_path / "p.json", "--out", tmp_path / "out")
    assert rc == 2 and f"--params {tmp_path / 'p.json'}: {message}" in err
    assert not (tmp_path / "out").exists()


def test_without_params_the_shared_defaults_are_used(photo, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = cli_main(capsys, "refine", photo, "--out", out)
    assert rc == 0, err
    used = json.loads((out / "summary.json").read_text())["parameters"]
    assert [used[k] for k in KNOBS] == [80.0, 13.0, 3.0, 10.0, 3.0]  # CRFParams' documented defaults
    assert used["iterations"] == 5 and used["working_size"] == 1024


def test_the_defaults_are_one_set():
    fields = {f.name: f.default for f in CRFParams.__dataclass_fields__.values()}
    assert all(getattr(DEFAULT_PARAMS, k) == fields[k] for k in KNOBS)
    assert DEFAULT_ITERATIONS == inspect.signature(mean_field).parameters["iterations"].default
    # the app's sliders start at the shared values: their default argument is the shared name itself
    tree = ast.parse(APP.read_text())
    defaults = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "slider":
            key = next((k.value.value for k in node.keywords if k.arg == "key"), None)
            defaults[key] = ast.unparse(node.args[-1])
    assert {k: defaults[k] for k in KNOBS} == {k: f"DEFAULT_PARAMS.{k}" for k in KNOBS}
    assert defaults["iterations"] == "DEFAULT_ITERATIONS" and defaults["work_size"] == "APP_WORKING_SIZE"


def test_help_states_the_defaults():
    sub = build_parser()._subparsers._group_actions[0].choices["refine"]
    text = " ".join(sub.format_help().split())
    for flag, value in [
        ("θα, px", DEFAULT_PARAMS.theta_alpha),
        ("θβ, 0..255", DEFAULT_PARAMS.theta_beta),
        ("θγ, px", DEFAULT_PARAMS.theta_gamma),
        ("bilateral weight", DEFAULT_PARAMS.w_bilateral),
        ("spatial weight", DEFAULT_PARAMS.w_spatial),
        ("iterations T, >= 0", DEFAULT_ITERATIONS),
    ]:
        assert f"{flag} ({value:g})" in text, flag
    assert f"else {DEFAULT_WORKING_SIZE})" in text
