"""Each notebook has a reviewable text pair, notebooks/<name>.py in jupytext's percent format, holding its cells.

``python scripts/strip_notebooks.py`` writes the pairs (and the pairing metadata); ``jupytext --sync
notebooks/*.ipynb`` brings the other side up to date after editing either one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed (nbformat)")
jupytext = pytest.importorskip("jupytext", reason="the notebooks extra is not installed (jupytext)")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _cells(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.rstrip("\n")) for cell in nb.cells]


def test_every_notebook_has_a_pair_and_every_pair_a_notebook():
    folder = NOTEBOOKS[0].parent
    assert sorted(p.stem for p in folder.glob("*.py")) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_text_pair_holds_the_notebooks_cells(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", (
        f"{path.name}: not paired; run python scripts/strip_notebooks.py"
    )
    pair = jupytext.read(path.with_suffix(".py"), fmt="py:percent")
    ours, theirs = _cells(nb), _cells(pair)
    assert len(theirs) == len(ours), f"{path.stem}.py has {len(theirs)} cells, the notebook {len(ours)}"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"{path.stem}.py cell {i} differs from the notebook; run python scripts/strip_notebooks.py"
