"""Strip outputs from the notebooks before committing them, and write their text pairs.

Clears every code cell's outputs and execution count, nbclient's per-cell timing metadata and the saved
widget state, and leaves the source untouched. Then writes each notebook's reviewable text form beside it:
``notebooks/<name>.py`` in jupytext's percent format (``# %%`` code cells, ``# %% [markdown]`` text cells),
paired through the notebook's ``jupytext.formats`` metadata, so ``jupytext --sync`` (or JupyterLab with
jupytext) keeps the two in step whichever is edited. ``--check`` changes nothing and exits 1 if a notebook
has anything to strip or its pair differs from it (``tests/notebooks`` checks the same).

    python scripts/strip_notebooks.py            # strip notebooks/*.ipynb in place, rewrite their .py pairs
    python scripts/strip_notebooks.py --check    # list what is not stripped or not paired; exit 1 if any
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PAIR_FORMAT = "py:percent"
FORMATS = f"ipynb,{PAIR_FORMAT}"  # the notebooks' jupytext pairing
_CELL_METADATA = ("execution", "collapsed", "scrolled")  # written by Jupyter / nbclient when running


def strip(nb: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts, run metadata and widget state in place.

    Args:
        nb: a notebook (nbformat 4).

    Returns:
        Whether anything was removed.
    """
    changed = False
    for cell in nb.cells:
        for key in _CELL_METADATA:
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs = []
            cell.execution_count = None
            changed = True
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
        changed = True
    return changed


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """The notebook's content as (cell type, source) pairs: what a text pair must reproduce."""
    return [(cell.cell_type, cell.source.rstrip("\n")) for cell in nb.cells]


def pair_path(path: Path) -> Path:
    """The text pair of a notebook: the same name with ``.py``."""
    return path.with_suffix(".py")


def pair_differs(path: Path, nb: nbformat.NotebookNode) -> str | None:
    """Why the notebook's text pair does not hold the notebook's cells (None when it does)."""
    import jupytext

    if nb.metadata.get("jupytext", {}).get("formats") != FORMATS:
        return f"not paired (metadata jupytext.formats should be {FORMATS!r})"
    pair = pair_path(path)
    if not pair.is_file():
        return f"no text pair {pair.name}"
    theirs = cells(jupytext.read(pair, fmt=PAIR_FORMAT))
    ours = cells(nb)
    if theirs != ours:
        pairs = enumerate(zip(ours, theirs, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
        return f"{pair.name} differs from the notebook from cell {first} ({len(theirs)} cells vs {len(ours)})"
    return None


def write_pair(path: Path, nb: nbformat.NotebookNode) -> None:
    """Write the notebook's percent-format text pair beside it."""
    import jupytext

    jupytext.write(nb, pair_path(path), fmt=PAIR_FORMAT)


def main(argv: list[str] | None = None) -> int:
    """Strip (or check) the given notebooks, by default ``notebooks/*.ipynb``; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook has outputs")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("*.ipynb"))
    problems = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        stripped = strip(nb)
        paired = nb.metadata.get("jupytext", {}).get("formats") == FORMATS
        if args.check:
            if stripped:
                problems.append(f"{path}: has outputs")
            if (why := pair_differs(path, nb)) is not None:
                problems.append(f"{path}: {why}")
            continue
        nb.metadata["jupytext"] = {"formats": FORMATS}
        if stripped or not paired:
            nbformat.write(nb, path)
            problems.append(f"{path}: stripped" if stripped else f"{path}: paired")
        write_pair(path, nb)
    for line in problems:
        print(line)
    return 1 if (args.check and problems) else 0


if __name__ == "__main__":
    sys.exit(main())
