"""Does every notebook execute under plain ``jupyter nbconvert --execute``, run after run, without a stall?

    python benchmarks/notebook_runs.py                       # every notebook, 20 runs each
    python benchmarks/notebook_runs.py --runs 5 notebooks/04_playground.ipynb

Each run is one ``jupyter nbconvert --to notebook --execute`` of the notebook, as a student or a CI would
type it: no cell timeout (nbclient's default, so a lost kernel reply would wait forever), a fresh process
and kernel, the notebooks folder as working directory. The script gives each run ``--limit`` seconds of
wall time and counts a run past it as a stall.

A stall shows in wall time only: the timestamps nbclient records per cell (``metadata.execution``) are the
kernel's own message dates, so a client that sleeps through a reply leaves them unchanged. The table
prints, per notebook: runs, how many finished, failed (a cell raised or nbconvert exited non-zero),
stalled (over the limit), the median and longest wall time, and how many runs took more than twice the
median (a lost reply that was eventually woken would show there; on a shared machine, so can load).
(``tests/notebooks`` measures the client side with nbclient's ``on_cell_executed`` hook.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def run_once(notebook: Path, out_dir: Path, limit: float) -> tuple[str, float]:
    """One nbconvert execution: (status, wall seconds)."""
    out = out_dir / notebook.name
    out.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).with_name("jupyter")), "nbconvert", "--to", "notebook", "--execute",
           "--output-dir", str(out_dir), str(notebook)]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=NOTEBOOKS, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return "stalled", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.exists():
        print(f"  {notebook.name}: nbconvert exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr)
        return "failed", seconds
    return "ok", seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every one in notebooks/)")
    p.add_argument("--runs", type=int, default=20, help="consecutive runs per notebook (default 20)")
    p.add_argument("--limit", type=float, default=600.0, help="seconds a run may take before it counts as a stall")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs: expected at least 1, got {args.runs}")
    notebooks = [n.resolve() for n in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(n) for n in notebooks if not n.is_file()]
    if missing:
        p.error(f"notebooks: no such file: {', '.join(missing)}")
    print(describe(f"{args.runs} runs per notebook, limit {args.limit:.0f} s a run"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="notebook_runs_") as tmp:
        for notebook in notebooks:
            runs = []
            for k in range(args.runs):
                status, seconds = run_once(notebook, Path(tmp), args.limit)
                runs.append((status, seconds))
                line = f"  {notebook.name} run {k + 1}/{args.runs}: {status}, {seconds:.1f} s"
                print(line, file=sys.stderr, flush=True)
            rows.append((notebook.name, runs))
    print()
    print("| notebook | runs | ok | failed | stalled | median s | longest s | runs > 2 × median |")
    print("|---|---|---|---|---|---|---|---|")
    bad = 0
    for name, runs in rows:
        count = {s: sum(r[0] == s for r in runs) for s in ("ok", "failed", "stalled")}
        bad += count["failed"] + count["stalled"]
        seconds = [r[1] for r in runs]
        median = statistics.median(seconds)
        slow = sum(t > 2 * median for t in seconds)
        print(f"| {name} | {len(runs)} | {count['ok']} | {count['failed']} | {count['stalled']} | "
              f"{median:.1f} | {max(seconds):.1f} | {slow} |")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
