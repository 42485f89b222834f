"""Two revisions of the lab side by side: mean_field timed call by call, alternating, in one run.

    python benchmarks/revisions.py REV            # REV (e.g. a commit or tag) against the working tree
    python benchmarks/revisions.py REV --repeat 9

REV is checked out into a temporary git worktree; each side runs in its own worker process (its own ``lab``
on ``PYTHONPATH``), warmed up once, then the two take turns on every call (who goes first alternates), so
machine load hits both alike. The table gives the median time of each side, their ratio (< 1: the working
tree is faster) and whether the two final Q maps are equal bit for bit. The case is ``benchmarks/crf.py``'s:
the astronaut, a smooth random unary, pydensecrf's parameters, T = 5, ``keep=None``, no autograd.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
CASES = [(250, 21), (512, 21), (512, 2)]

WORKER = r"""
import hashlib, json, sys, time
import numpy as np, torch
from skimage import data, transform
import lab
from lab.crf import CRFParams, mean_field

P = CRFParams(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0,
              normalize="symmetric")
cases = {}
for side, labels in json.loads(sys.argv[1]):
    img = transform.resize(data.astronaut(), (side, side), preserve_range=True, anti_aliasing=True)
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, labels, 8, 8, generator=g) * 2
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    unary = torch.log_softmax(smooth + 0.7 * torch.randn(1, labels, side, side, generator=g), 1)
    image = torch.from_numpy(np.ascontiguousarray(img.astype(np.uint8))).permute(2, 0, 1)[None].float()
    cases[f"{side}² L={labels}"] = (unary, image)
with torch.no_grad():
    for unary, image in cases.values():
        mean_field(unary, image, P, 5, keep=None)  # compile / warm the caches once
print(json.dumps({"lab": lab.__file__}), flush=True)
for line in sys.stdin:
    unary, image = cases[line.strip()]
    with torch.no_grad():
        t0 = time.perf_counter()
        q = mean_field(unary, image, P, 5, keep=None).q
        seconds = time.perf_counter() - t0
    print(json.dumps({"s": seconds, "q": hashlib.sha256(q.numpy().tobytes()).hexdigest()}), flush=True)
"""


def _worker(root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(root))
    cases = json.dumps(CASES)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, cases], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    ready = json.loads(proc.stdout.readline())
    print(f"  {root}: lab from {ready['lab']}")
    return proc


def _call(proc: subprocess.Popen, name: str) -> dict:
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the revision to compare the working tree with (a commit, tag or branch)")
    parser.add_argument("--repeat", type=int, default=7, help="calls per side and case (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old_root), args.rev], check=True
        )
        try:
            print(describe(f"{args.rev} against the working tree"))
            old, new = _worker(old_root), _worker(ROOT)
            print(f"\n| case | {args.rev} | working tree | ratio | Q equal bit for bit |\n|---|---|---|---|---|")
            for side, labels in CASES:
                name = f"{side}² L={labels}"
                runs: dict[str, list[dict]] = {"old": [], "new": []}
                for r in range(args.repeat):
                    order = [("old", old), ("new", new)] if r % 2 == 0 else [("new", new), ("old", old)]
                    for tag, proc in order:
                        runs[tag].append(_call(proc, name))
                t_old = statistics.median(x["s"] for x in runs["old"])
                t_new = statistics.median(x["s"] for x in runs["new"])
                equal = runs["old"][0]["q"] == runs["new"][0]["q"]
                print(f"| {name} | {1e3 * t_old:.0f} ms | {1e3 * t_new:.0f} ms | {t_new / t_old:.2f} | {equal} |")
            for proc in (old, new):
                proc.stdin.close()
                proc.wait(timeout=60)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_root)], check=False)


if __name__ == "__main__":
    main()
