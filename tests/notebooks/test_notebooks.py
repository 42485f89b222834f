"""The four teaching notebooks: committed without outputs, and each runs top to bottom without an error.

Each notebook is executed headless by nbclient in a fresh ``python3`` kernel (the interpreter running the
tests: jupyter_client starts kernel specs whose command is ``python`` with ``sys.executable``), with the
notebooks folder as working directory. A cell that raises fails the test with the cell and its traceback.
nbclient itself runs in a child process per notebook: run one after another in the pytest process, the
playground's widget cell sometimes waited out the whole cell timeout (300 s) with its kernel idle, then
went on (seen with ipykernel 6.31 and 7.4; most likely a lost ZMQ wake-up in client state shared across
notebooks); a fresh process per notebook has none of the previous notebook's sockets or event loop.
Measured on the 2-core development machine (2026-11-26, each in its own process): 01 ≈ 15 s, 02 ≈ 10 s,
03 ≈ 23 s, 04 ≈ 16 s.
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
]
KERNEL = "python3"
CELL_TIMEOUT_S = 300  # the slowest cell (03's training) takes ≈ 25 s alone; generous for a loaded machine
NOTEBOOK_TIMEOUT_S = 900  # the whole notebook, kernel start included
# Run in a child process: execute the notebook at argv[1] into argv[2] (written even when a cell fails).
EXECUTE = """
import sys, nbclient, nbformat
src, dst, cwd, kernel, timeout = sys.argv[1:6]
nb = nbformat.read(src, as_version=4)
client = nbclient.NotebookClient(nb, timeout=int(timeout), kernel_name=kernel, resources={"metadata": {"path": cwd}})
try:
    client.execute()
finally:
    nbformat.write(nb, dst)
"""
RUN_METADATA = ("execution", "collapsed", "scrolled")
# Appended to the playground before it runs: move every control as a user would; each change redraws
# through the widgets' callbacks, whose errors land in the output widget (checked below), not in a cell.
DRIVE_PLAYGROUND = """
for key, value in [("theta_alpha", 8.0), ("w_bilateral", 12.0), ("w_spatial", 0.0), ("iterations", 8), ("t", 2),
                   ("label", 3), ("theta_gamma", 1.0), ("theta_beta", 6.0), ("name", "coffee"), ("iterations", 0)]:
    controls[key].value = value
assert controls["t"].max == 0 and controls["t"].value == 0
"""


def test_the_four_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


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


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, record_property, tmp_path):
    pytest.importorskip("nbclient", reason="the notebooks extra is not installed (nbclient)")
    pytest.importorskip("ipykernel", reason="the notebooks extra is not installed (ipykernel)")
    pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed (ipywidgets)")
    _ensure_kernel()
    # importing streamlit (the app tests) sets MPLBACKEND=Agg in this process; the kernel would inherit it
    # and then draw no inline figures, so the child gets the environment without it
    nb = nbformat.read(path, as_version=4)
    if path.name == "04_playground.ipynb":
        nb.cells.append(nbformat.v4.new_code_cell(DRIVE_PLAYGROUND))
    src, dst = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    start = time.perf_counter()
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
    assert done.returncode == 0, f"{path.name} failed after {seconds:.0f} s:\n{done.stderr[-6000:]}"
    nb = nbformat.read(dst, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    widget_state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    widget_outputs = [
        o
        for w in widget_state.get("state", {}).values()
        if w["model_name"] == "OutputModel"
        for o in w["state"].get("outputs", [])
    ]
    widget_errors = [f"{o['ename']}: {o['evalue']}" for o in widget_outputs if o.get("output_type") == "error"]
    assert not widget_errors, f"{path.name}: a widget callback raised: {widget_errors}"
    if path.name == "04_playground.ipynb":
        assert any("image/png" in o.get("data", {}) for o in widget_outputs), "the playground drew no figure"
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert figures >= 2, f"{path.name}: expected figures, got {figures}"
