"""Does every notebook execute under plain ``jupyter nbconvert --execute``, run after run, without a stall?

    python benchmarks/notebook_runs.py                       # every notebook, 20 runs each
    python benchmarks/notebook_runs.py --runs 5 notebooks/04_playground.ipynb

Each run is one ``jupyter nbconvert --to notebook --execute`` of the notebook, as a student or a CI would
type it: no cell timeout (nbclient's default, so a lost kernel reply would wait forever), a fresh process
and kernel, the notebooks folder as working directory. The script gives each run ``--limit`` seconds of
wall time and counts a run past it as a stall.

Per run it reads nbclient's own timing from the executed notebook (``metadata.execution``, recorded by
default): for every code cell, how long after the kernel went idle (``iopub.status.idle``) the client
took the execute reply (``shell.execute_reply``). A healthy cell shows milliseconds; a lost wake-up shows
the time the client slept. The table prints, per notebook: runs, how many finished, failed (a cell raised
or nbconvert exited non-zero), stalled (over the limit), the median and longest wall time, and the
longest idle → reply gap over all its cells and runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def reply_gaps(executed: Path) -> list[float]:
    """Seconds from each code cell's kernel idle to the client's receipt of its execute reply."""
    nb = json.loads(executed.read_text())
    gaps = []
    for cell in nb["cells"]:
        timing = cell.get("metadata", {}).get("execution", {})
        idle, reply = timing.get("iopub.status.idle"), timing.get("shell.execute_reply")
        if cell["cell_type"] == "code" and idle and reply:
            stamp = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in (idle, reply)]
            gaps.append(abs((stamp[1] - stamp[0]).total_seconds()))
    return gaps


def run_once(notebook: Path, out_dir: Path, limit: float) -> tuple[str, float, float]:
    """One nbconvert execution: (status, wall seconds, longest idle → reply gap)."""
    out = out_dir / notebook.name
    out.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).with_name("jupyter")), "nbconvert", "--to", "notebook", "--execute",
           "--output-dir", str(out_dir), str(notebook)]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=NOTEBOOKS, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return "stalled", time.perf_counter() - start, float("nan")
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.exists():
        print(f"  {notebook.name}: nbconvert exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr)
        return "failed", seconds, float("nan")
    gaps = reply_gaps(out)
    return "ok", seconds, max(gaps, default=0.0)


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
                status, seconds, gap = run_once(notebook, Path(tmp), args.limit)
                runs.append((status, seconds, gap))
                print(f"  {notebook.name} run {k + 1}/{args.runs}: {status}, {seconds:.1f} s, gap {gap:.3f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
            rows.append((notebook.name, runs))
    print()
    print("| notebook | runs | ok | failed | stalled | median s | longest s | longest idle → reply s |")
    print("|---|---|---|---|---|---|---|---|")
    bad = 0
    for name, runs in rows:
        count = {s: sum(r[0] == s for r in runs) for s in ("ok", "failed", "stalled")}
        bad += count["failed"] + count["stalled"]
        seconds = [r[1] for r in runs]
        gaps = [r[2] for r in runs if r[0] == "ok"]
        gap = f"{max(gaps):.3f}" if gaps else "–"
        print(f"| {name} | {len(runs)} | {count['ok']} | {count['failed']} | {count['stalled']} | "
              f"{statistics.median(seconds):.1f} | {max(seconds):.1f} | {gap} |")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
