"""RSS over repeated mean-field calls: memory must stay flat (each call builds both lattices anew).

Prints RSS every ``--every`` calls, as it is and after a collection and glibc's malloc_trim (the live
memory, without pages the allocator keeps for reuse, which swing by ±200 MiB from call to call), and a
least-squares slope of the trimmed RSS: a leak is a positive slope. A build that forms its paired blur with
torch's CPU CSR @ CSR product leaks ~13 MiB per lattice at 0.25 MP, which this loop shows as RSS going from
0.65 to 3.3 GiB over 200 calls (the build forms those stencils from the neighbour tables instead).
Usage: python benchmarks/memory.py [--calls 200] [--size 512] [--labels 21]
"""

import argparse
import gc
import time

import numpy as np
import torch
from machine import describe

import lab
from lab.explore import trim_heap


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--labels", type=int, default=21)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--every", type=int, default=20)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, args.size, args.size, generator=g) * 255
    unary = torch.randn(1, args.labels, args.size, args.size, generator=g)
    params = lab.CRFParams(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=5.0, w_spatial=3.0)
    print(describe(f"torch {torch.__version__}, {torch.get_num_threads()} threads"))
    print(f"mean_field: {args.size}×{args.size}, L = {args.labels}, T = {args.iterations}, {args.calls} calls")
    for _ in range(3):  # warm-up: allocator pools, compiled kernels, the spatial-lattice cache
        lab.mean_field(unary, image, params, iterations=args.iterations)

    def trimmed() -> float:
        """RSS after a collection and glibc's malloc_trim: live memory, without the allocator's retained pages."""
        gc.collect()
        trim_heap()
        return rss_mib()

    start, start_trimmed, peak, t0 = rss_mib(), trimmed(), 0.0, time.perf_counter()
    calls, live = [0], [start_trimmed]
    print("| calls | RSS MiB | RSS after trim MiB | growth after trim MiB |\n|---:|---:|---:|---:|")
    print(f"| 0 | {start:.0f} | {start_trimmed:.0f} | 0 |")
    for i in range(1, args.calls + 1):
        lab.mean_field(unary, image, params, iterations=args.iterations)
        peak = max(peak, rss_mib())
        if i % args.every == 0:
            now = rss_mib()
            calls.append(i)
            live.append(trimmed())
            print(f"| {i} | {now:.0f} | {live[-1]:.0f} | {live[-1] - start_trimmed:+.0f} |", flush=True)
    slope = float(np.polyfit(calls, live, 1)[0])  # MiB per call, least squares over the samples
    print(
        f"peak RSS {peak:.0f} MiB; after trim {min(live):.0f}..{max(live):.0f} MiB over {args.calls} calls, "
        f"fitted slope {slope:+.3f} MiB per call ({slope * args.calls:+.0f} MiB over the run); "
        f"{(time.perf_counter() - t0) / args.calls * 1000:.0f} ms per call"
    )


if __name__ == "__main__":
    main()
