"""The five teaching notebooks: committed without outputs, and each runs top to bottom without an error.

Each notebook is executed headless by nbclient in a fresh ``python3`` kernel (the interpreter running the
tests: jupyter_client starts kernel specs whose command is ``python`` with ``sys.executable``), with the
notebooks folder as working directory. A cell that raises fails the test with the cell and its traceback.
nbclient runs unpatched, as ``jupyter nbconvert --execute`` runs it, in a child process per notebook (its
own environment, see ``_execute``, and a wall-time limit). The client must take each cell's execute reply
promptly after the kernel sent it (REPLY_DELAY_S, measured by nbclient's public ``on_cell_executed`` hook
against the reply's header date): a client that loses the socket's wake-up sleeps out the whole cell
timeout and only then finds the reply, which would otherwise pass as a slow cell. (nbclient's own
``metadata.execution`` stamps are the kernel's message dates, so they cannot show it.) The playground's
figure was an Output widget until 2026-12-03, and nbclient answers for an Output widget from inside its
wait for the reply; with pyzmq 27.3 and jupyter_client 8.10 that send can use up the wake-up. Its figure is
now an Image widget (``lab.explore.playground.LiveFigure``), which the client only receives.
Run times (2-core development machine, 2026-12-03, ``benchmarks/notebook_runs.py``, 20 plain nbconvert runs
each, on a machine shared with other jobs: the medians are in benchmarks/RESULTS.md); unloaded, 03 (which trains
a small FCN and the CRF-RNN end to end) takes 30–45 s, 04 about 15 s.

Notebooks 01 and 04 use the bundled VOC network where ``lab.unary.voc_status()`` says it can run, and print
why and skip that work where it cannot; the checks below follow the same status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed (nbformat)")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_mean_field_step_by_step.ipynb",
    "02_permutohedral_lattice.ipynb",
    "03_crf_as_rnn.ipynb",
    "04_playground.ipynb",
    "05_volumes_and_other_guides.ipynb",
]
KERNEL = "python3"
# The slowest cell alone: 03's end-to-end training, 31–36 s at moderate load and several times that on a
# machine shared with other jobs; the limits leave room for that. A stall is caught by REPLY_DELAY_S, not by
# these limits.
CELL_TIMEOUT_S = 900
NOTEBOOK_TIMEOUT_S = 1800  # the whole notebook, kernel start included
# A lost wake-up delays the client's receipt of a reply by the whole cell timeout; a healthy one takes
# milliseconds (0.017 s at most over 04 with its drives at load ≈ 14, 2026-12-03). 10 s leaves room for load.
REPLY_DELAY_S = 10.0
# Run in a child process: execute the notebook at argv[1] into argv[2] (written even when a cell fails), with
# plain nbclient, as nbconvert does; its on_cell_executed hook records, per code cell, how long after the
# kernel sent the execute reply the client had taken it (cell metadata "reply_delay_s").
EXECUTE = """
import datetime, sys, nbclient, nbformat

def on_cell_executed(cell, cell_index, execute_reply):
    sent = execute_reply["header"]["date"]  # the kernel's clock, the same machine's
    cell.metadata["reply_delay_s"] = (datetime.datetime.now(datetime.timezone.utc) - sent).total_seconds()

src, dst, cwd, kernel, timeout = sys.argv[1:6]
nb = nbformat.read(src, as_version=4)
client = nbclient.NotebookClient(nb, timeout=int(timeout), kernel_name=kernel, resources={"metadata": {"path": cwd}},
                                 on_cell_executed=on_cell_executed)
try:
    client.execute()
finally:
    nbformat.write(nb, dst)
"""
RUN_METADATA = ("execution", "collapsed", "scrolled")
# Appended to the playground before it runs: move every control as a user would. Each change redraws the live
# figure once, through the widgets' callbacks, whose errors land in its error widget (checked here and in the
# saved widget state), not in a cell; after each, the figure was drawn with the controls' values and its title
# writes every knob as the slider's readout does.
DRIVE_PLAYGROUND = """
def check_drawn(key, draws, changed):
    assert not live.error.value, (key, live.error.value)
    assert live.draws == draws + changed, (key, live.draws, draws, changed)
    assert live.drawn == live.values(), (key, live.drawn, live.values())
    missing = [k for k, (symbol, _) in KNOBS.items() if f"{symbol}={readout(controls[k])}" not in live.title]
    assert not missing, (key, missing, live.title)

for key, value in [("theta_alpha", 8.0), ("w_bilateral", 12.0), ("w_spatial", 0.0), ("iterations", 8), ("t", 2),
                   ("label", 3), ("theta_gamma", 1.0), ("theta_beta", 4.0), ("name", "coffee"), ("iterations", 0)]:
    draws, changed = live.draws, controls[key].value != value
    controls[key].value = value
    check_drawn(key, draws, changed)
assert controls["t"].max == 0 and controls["t"].value == 0
assert all(on_grid(controls[k], controls[k].value) == controls[k].value for k in KNOBS)
"""
# ... then, where the VOC network runs, switch the unary to it: the label dropdown offers only the classes the
# network finds in the photo (defaulting to the largest object), and switching back restores the cluster labels.
DRIVE_VOC = """
if VOC in controls["source"].options:
    draws = live.draws
    controls["source"].value = VOC  # on the coffee photo, where DRIVE_PLAYGROUND left the image
    assert live.draws == draws + 1 and not live.error.value, live.error.value  # one redraw, new labels included
    offered = dict(controls["label"].options)
    assert "background" in offered and len(offered) < 21, offered
    assert controls["label"].value != offered["background"] and not controls["temperature"].disabled
    assert live.drawn["label"] == controls["label"].value
    controls["temperature"].value = 4.0
    assert "temperature 4.00" in live.title, live.title
    controls["name"].value = "chelsea"
    assert controls["label"].value == dict(controls["label"].options)["cat"], controls["label"].options
    controls["source"].value = CLUSTERS
    assert [v for _, v in controls["label"].options] == list(range(N_LABELS))
    assert controls["temperature"].disabled
    assert live.drawn == live.values() and not live.error.value, live.error.value
else:
    assert controls["source"].options == (CLUSTERS,)
"""
# The playground's own calls: the live figure (not an Output widget) and the θ sweep
PLAYGROUND_CALLS = ["LiveFigure(draw, controls", "theta_sweep(", "on_grid(", "readout("]
# The playground's static figure at the defaults must show the CRF doing visible work: at least this share of
# pixels changes label (measured: 24.9 % on chelsea at T = 5, 2026-12-03; the first iteration alone changes 0.1 %)
PLAYGROUND_MIN_CHANGED = 0.10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Calls each notebook's code must make (a section dropped or its unary swapped fails here, without running it)
REQUIRED_CALLS = {
    "01_mean_field_step_by_step.ipynb": ["voc_status()", "voc_unary(", "mean_field(", "crf_changes(",
                                         "flip_pairs_view(", "voc_example()", "class_legend("],
    "03_crf_as_rnn.ipynb": ["train_model(", "grid_search(", "evaluate("],
    "04_playground.ipynb": ["voc_status()", "voc_unary(", "present_classes(", '"source": widgets.Dropdown('],
}  # fmt: skip
# The table crf_changes prints for notebook 01's VOC photo with its ground truth (ChangeReport.__str__)
CHANGE_TABLE_HEADER = "| id | class | before | after | gained | lost | truth | iou_before | iou_after |"


def test_the_five_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


def test_04_playground_draws_without_an_output_widget():
    nb = nbformat.read(NOTEBOOKS_DIR / "04_playground.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    missing = [call for call in PLAYGROUND_CALLS if call not in code]
    assert not missing, f"04_playground.ipynb: no {missing} in its code cells"
    for name in ("interactive_output", "widgets.Output", "widgets.interact"):
        assert name not in code, f"04_playground.ipynb uses {name}: an Output widget stalls nbconvert (see above)"


@pytest.mark.parametrize("name", sorted(REQUIRED_CALLS))
def test_notebooks_use_the_voc_unary(name):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    missing = [call for call in REQUIRED_CALLS[name] if call not in code]
    assert not missing, f"{name}: no {missing} in its code cells"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if any(k in cell.metadata for k in RUN_METADATA)
        or (cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or run metadata; run python scripts/strip_notebooks.py"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state; run python scripts/strip_notebooks.py"
    assert nb.metadata["kernelspec"]["name"] == KERNEL, f"{path.name}: kernel must be {KERNEL!r} (NoSuchKernel)"


def _ensure_kernel() -> None:
    """Install the ``python3`` kernel spec into this environment if no spec of that name exists."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL, prefix=sys.prefix)


def _execute(nb, name: str, tmp_path: Path, record_property) -> nbformat.NotebookNode:
    """Run ``nb`` in a child process (see the module docstring) and return it executed; fail on a cell error."""
    pytest.importorskip("nbclient", reason="the notebooks extra is not installed (nbclient)")
    pytest.importorskip("ipykernel", reason="the notebooks extra is not installed (ipykernel)")
    pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed (ipywidgets)")
    _ensure_kernel()
    src, dst = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    start = time.perf_counter()
    # importing streamlit (the app tests) sets MPLBACKEND=Agg in this process; the kernel would inherit it
    # and then draw no inline figures, so the child gets the environment without it
    done = subprocess.run(
        [sys.executable, "-c", EXECUTE, str(src), str(dst), str(NOTEBOOKS_DIR), KERNEL, str(CELL_TIMEOUT_S)],
        capture_output=True,
        text=True,
        timeout=NOTEBOOK_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"},
    )
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    # CellExecutionError names the cell and carries its traceback
    assert done.returncode == 0, f"{name} failed after {seconds:.0f} s:\n{done.stderr[-6000:]}"
    nb = nbformat.read(dst, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    delays = {i: c.metadata["reply_delay_s"] for i, c in enumerate(nb.cells) if "reply_delay_s" in c.metadata}
    assert len(delays) == sum(c.cell_type == "code" for c in nb.cells), "on_cell_executed did not run for every cell"
    record_property("longest_reply_delay_s", round(max(delays.values(), default=0.0), 3))
    late = {i: round(d, 1) for i, d in delays.items() if d > REPLY_DELAY_S}
    assert not late, f"{name}: cells {late} took their execute reply seconds after the kernel sent it (lost wake-up)"
    return nb


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, record_property, tmp_path):
    nb = nbformat.read(path, as_version=4)
    if path.name == "04_playground.ipynb":
        nb.cells.append(nbformat.v4.new_code_cell(DRIVE_PLAYGROUND))
        nb.cells.append(nbformat.v4.new_code_cell(DRIVE_VOC))
    nb = _execute(nb, path.name, tmp_path, record_property)
    widget_state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    widgets = list(widget_state.get("state", {}).values())
    widget_outputs = [o for w in widgets if w["model_name"] == "OutputModel" for o in w["state"].get("outputs", [])]
    widget_errors = [f"{o['ename']}: {o['evalue']}" for o in widget_outputs if o.get("output_type") == "error"]
    assert not widget_errors, f"{path.name}: a widget callback raised: {widget_errors}"
    if path.name == "04_playground.ipynb":
        _check_playground(nb, widgets)
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert figures >= 2, f"{path.name}: expected figures, got {figures}"
    if path.name == "01_mean_field_step_by_step.ipynb":
        _check_voc_sections(nb)


def _check_playground(nb, widgets: list[dict]) -> None:
    """The live figure's saved state: a PNG in its Image widget, an empty error widget, no Output widget."""
    import base64
    import io
    import re

    from PIL import Image

    assert not [w for w in widgets if w["model_name"] == "OutputModel"], "the playground has an Output widget"
    live = [w for w in widgets if "live-figure" in w["state"].get("_dom_classes", [])]
    assert [w["model_name"] for w in live] == ["ImageModel"], [w["model_name"] for w in live]
    values = [b for b in live[0].get("buffers", []) if b["path"] == ["value"]]
    assert len(values) == 1, "the live figure's Image widget holds no value"
    png = base64.b64decode(values[0]["data"])
    assert png.startswith(PNG_SIGNATURE), "the live figure's value is not a PNG"
    width, height = Image.open(io.BytesIO(png)).size
    assert width >= 800 and height >= 400, (width, height)  # the 15 × 7.2 in figure at 80 dpi: 1200 × 576
    errors = [w for w in widgets if "live-figure-error" in w["state"].get("_dom_classes", [])]
    assert [w["model_name"] for w in errors] == ["HTMLModel"], [w["model_name"] for w in errors]
    assert errors[0]["state"].get("value", "") == "", f"the live figure showed an error: {errors[0]['state']['value']}"
    text = _texts(nb)
    shares = re.findall(r"([\d.]+) % of the pixels change label", text)
    assert shares, "the static figure's share of changed pixels is not printed"
    assert float(shares[0]) / 100 >= PLAYGROUND_MIN_CHANGED, f"the static figure changes only {shares[0]} %"
    assert "share of pixels changed vs the unary" in text, "the θα × θβ grid printed no table"
    # the text under the grid: the share grows with θα across each row and with θβ down each column
    rows = [[float(v) for v in line.split("|")[1:]] for line in re.findall(r"^ *\d+ \|[\d. |]+$", text, re.M)]
    assert len(rows) == 3 and all(len(r) == 3 for r in rows), rows
    assert all(r == sorted(r) for r in rows) and all(list(c) == sorted(c) for c in zip(*rows, strict=True)), rows


def _texts(nb) -> str:
    """Everything the code cells printed or displayed as text (streams, text/plain, text/markdown)."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(o.get("text", ""))
            parts += [o.get("data", {}).get(kind, "") for kind in ("text/plain", "text/markdown")]
    return "\n".join(parts)


def _check_voc_sections(nb) -> None:
    """Notebook 01's sections 9 and 10 did their work, or said why not (the same status as the notebook's)."""
    from lab.unary import voc_status

    ok, reason = voc_status()
    text = _texts(nb)
    if not ok:
        assert "The VOC network cannot run here" in text and reason in text
        return
    assert "VOC network: ready" in text
    assert "cat:" in text, "section 9 printed no cat pixels"
    assert "lost 100 % of its" in text, "the coffee photo's erased-object note is missing"
    from lab.explore.voc_view import voc_example_status

    example_ok, example_reason = voc_example_status()
    if not example_ok:
        assert "No photo with a ground truth here" in text and example_reason in text
        return
    assert CHANGE_TABLE_HEADER in text, "section 10 displayed no per-class table"
    assert "Pixel accuracy" in text and "mIoU" in text and "bottle, a small object" in text


# Prepended to the cells run without the network: voc_status says no, and calling the network fails the cell.
NO_VOC = """
import lab.unary

def _unavailable():
    return False, "mediapipe is not installed (pretended by the test)"

def _refuse(*args, **kwargs):
    raise AssertionError("voc_unary called although voc_status() said the network is unavailable")

lab.unary.voc_status, lab.unary.voc_unary = _unavailable, _refuse
"""
# Notebook → (the markdown heading where its VOC part starts, or None; the heading where the run stops, or None)
# and a final check. The cells before the first code cell's imports are kept, so the VOC cells have their imports.
WITHOUT_VOC = {
    "01_mean_field_step_by_step.ipynb": (
        "## 9. A real photo",
        None,
        'assert not voc_ok and not have_truth and "cat" not in globals()',
    ),
    "04_playground.ipynb": (None, "## A trained model's θ", "assert SOURCES == [CLUSTERS]\n" + DRIVE_VOC),
}


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(WITHOUT_VOC))
def test_notebook_runs_without_the_voc_network(name, record_property, tmp_path):
    """Where voc_status() says no, 01's VOC sections and 04's playground print why and run on (part of each)."""
    start_at, stop_at, check = WITHOUT_VOC[name]
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    cells, keep = [], start_at is None
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    for i, cell in enumerate(nb.cells):
        heading = cell.cell_type == "markdown" and cell.source.lstrip()
        if stop_at and heading and heading.startswith(stop_at):
            break
        keep = keep or bool(heading and heading.startswith(start_at))
        if cell.cell_type == "code" and (keep or i == first_code):
            cells.append(cell)
    assert len(cells) >= 2, f"{name}: the VOC part's heading was not found"
    nb.cells = [nbformat.v4.new_code_cell(NO_VOC), *cells, nbformat.v4.new_code_cell(check)]
    nb = _execute(nb, name, tmp_path, record_property)
    assert "cannot run here" in _texts(nb) and "pretended by the test" in _texts(nb)
