"""What a mean-field run costs in the app's server depending on where its memory comes from.

    python benchmarks/run_reuse.py                 # astronaut at 512 x 512, the VOC network's unary (L = 21)
    python benchmarks/run_reuse.py --runs 30 --side 256

Streamlit runs every rerun on a new thread, and the app keeps each run's maps in its byte-budget cache
(``lab.explore.app_cache``). This replays that outside Streamlit: ``--runs`` runs with a new weight each, each
started from a fresh thread, every result put in a ``ByteBudgetCache`` of ``--budget`` MiB (so the cache fills,
then evicts), under four policies:

- "trim each run, same thread": the run on the calling thread, ``trim_heap()`` after every one (the app
  before ``heap_limit``);
- "trim each run, worker": the same with the run on ``on_worker``'s long-lived thread;
- "trim above limit, same thread": ``trim_heap_above(heap_limit(budget))`` after every run;
- "trim above limit, worker": what the app does now.

Per policy it prints the median wall time of a run (first two runs left out: compilation, first touches), the
median minor page faults and system CPU time per run (``getrusage``: what taking fresh pages from the kernel
costs), and the process's RSS at the end. Each policy runs in its own process, so none inherits another's
heap. Linux only (``/proc/self/statm``, glibc's ``malloc_trim``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

POLICIES = {
    "trim each run, same thread": ("always", False),
    "trim each run, worker": ("always", True),
    "trim above limit, same thread": ("limit", False),
    "trim above limit, worker": ("limit", True),
}


def one_policy(trim: str, worker: bool, runs: int, side: int, budget_mib: int) -> dict:
    """Run the replay in this process; returns its figures."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from lab.crf import CRFParams
    from lab.explore import (
        ByteBudgetCache,
        build_kernels,
        heap_limit,
        on_worker,
        rss_bytes,
        run_crf,
        to_tensor,
        trim_heap,
        trim_heap_above,
    )
    from lab.unary.voc import voc_unary

    image = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
    unary = voc_unary(image, 1.0)[0]
    kernels, _ = build_kernels(to_tensor(image), CRFParams())
    budget = budget_mib * 2**20
    cache = ByteBudgetCache(budget)
    cache.put("kernels", kernels)
    limit = heap_limit(budget)  # the baseline: RSS now, libraries and the kernels loaded
    wall, faults, system = [], [], []

    def rerun(i: int) -> None:
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        args = (unary, to_tensor(image), CRFParams(w_spatial=3.0 + 0.1 * i), 5, kernels)
        result = on_worker(run_crf, *args) if worker else run_crf(*args)
        wall.append(1e3 * (time.perf_counter() - t0))
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        system.append(1e3 * (after.ru_stime - before.ru_stime))
        cache.put(("run", i), result)
        if trim == "always":
            trim_heap()
        else:
            trim_heap_above(limit)

    for i in range(runs):
        thread = threading.Thread(target=rerun, args=(i,))  # a fresh thread per rerun, as Streamlit's
        thread.start()
        thread.join()
    return {
        "run_ms": statistics.median(wall[2:]),
        "faults": statistics.median(faults[2:]),
        "system_ms": statistics.median(system[2:]),
        "rss_mib": (rss_bytes() or 0) / 2**20,
        "limit_mib": limit / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per policy (≥ 4)")
    parser.add_argument("--side", type=int, default=512, help="image side in px (the astronaut, resized)")
    parser.add_argument("--budget", type=int, default=1536, help="the cache's budget in MiB (the app's default)")
    parser.add_argument("--policy", help=argparse.SUPPRESS)  # one policy, in a child process
    args = parser.parse_args()
    if args.runs < 4 or not 32 <= args.side <= 2048 or args.budget < 1:
        parser.error("expected --runs ≥ 4, --side in 32..2048 and --budget ≥ 1")
    if args.policy:
        trim, worker = POLICIES[args.policy]
        print(json.dumps(one_policy(trim, worker, args.runs, args.side, args.budget)))
        return
    from machine import describe

    rows = []
    for name in POLICIES:
        cmd = [sys.executable, __file__, "--policy", name, "--runs", str(args.runs), "--side", str(args.side)]
        out = subprocess.run(
            [*cmd, "--budget", str(args.budget)], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"# Mean field in the app's server, by memory policy, {time.strftime('%Y-%m-%d')}\n")
    print(
        describe(
            f"astronaut at {args.side} × {args.side}, VOC unary (L = 21), T = 5, {args.runs} runs per policy, "
            f"each from a fresh thread, results kept in a {args.budget} MiB cache"
        )
        + "\n"
    )
    print("| policy | run ms (median) | minor faults per run | system ms per run | RSS at the end MiB |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['run_ms']:.0f} | {r['faults']:.0f} | {r['system_ms']:.0f} | {r['rss_mib']:.0f} |")
    print(f"\nheap_limit: {rows[-1][1]['limit_mib']:.0f} MiB (RSS when first asked + the budget × 1.5)")


if __name__ == "__main__":
    main()
