"""How much memory the app's server holds while the knobs move: the real script under AppTest, RSS per 10 changes.

    python benchmarks/app_memory.py                  # 1024 x 1024 upload, working size 1024, 50 knob changes
    python benchmarks/app_memory.py --changes 20 --side 512

The photo is scikit-image's astronaut resized to side x side and uploaded as a PNG, the working size set to
the same side (1 MP by default), the colour-cluster unary with L = 4, T = 10 (the schedule's largest) to
start. Then ``--changes`` knob moves: eight each of θβ, θα, θγ, the weights and T, then mixed moves of all
of them at once (seeded); every θ move asks for a lattice pair the app has not built yet, so the cache
fills and evicts. RSS (this process: the script, Streamlit and the cache all live in it) is read after
every ten changes; the peak is the kernel's high-water mark VmHWM (every byte ever resident at once,
between the samples too).

RSS is read from /proc/self/status (VmRSS; psutil reads the same field), so this runs on Linux only.

The bound it checks: peak RSS ≤ start + the app cache's budget (``lab.explore.cache_budget()``, 1.5 GiB by
default) + the other spatial lattices (``lab.crf.kernels`` keeps the spatial lattices of the last
``_SPATIAL_CACHE_SIZE`` θγ in its own LRU, beyond the app cache; one is already in "start", measured at this
size) + one working set.
"start" is the RSS after the imports and that measurement, before the app's first run (VmHWM is reset
there); one working set is the larger of the library's own estimate of a rerun (both lattices built at
the schedule's smallest θ, ``estimate_build_bytes``, plus mean field's buffers at T = 10,
``estimate_mean_field_bytes``) and the first view's measured peak above "start" less what the app cache
kept of it. The script prints PASS or FAIL
against it and exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import describe

APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
MiB = 2**20
GiB = 2**30


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: the peak so far)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (not Linux?)")


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/status (psutil's figure is the same number)."""
    return 1024 * status_kib("VmRSS")


def peak_bytes() -> int:
    """The process's RSS high-water mark (VmHWM)."""
    return 1024 * status_kib("VmHWM")


def reset_peak() -> bool:
    """Restart VmHWM from the current RSS (Linux ≥ 4.0: write 5 to /proc/self/clear_refs); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def knob_schedule(changes: int, seed: int = 0) -> list[tuple[str, list[tuple[str, float]]]]:
    """``changes`` moves: (what, [(slider key, value), ...]): 8 each of θβ, θα, θγ, the weights and T, then mixed."""
    rng = np.random.default_rng(seed)
    blocks = [
        ("θβ", lambda i: [("theta_beta", 14.0 + i)]),
        ("θα", lambda i: [("theta_alpha", 60.0 + 5 * i)]),
        ("θγ", lambda i: [("theta_gamma", 1.0 + 0.5 * i)]),
        ("weights", lambda i: [("w_bilateral" if i % 2 == 0 else "w_spatial", 4.0 + i)]),
        ("T", lambda i: [("iterations", [3, 8, 10, 2, 6, 9, 4, 7][i])]),
    ]
    out = []
    for n in range(changes):
        block, i = divmod(n, 8)
        if block < len(blocks):
            name, move = blocks[block]
            out.append((name, move(i)))
            continue
        mixed = [
            ("theta_alpha", float(rng.integers(40, 160))),
            ("theta_beta", float(rng.integers(3, 40))),
            ("theta_gamma", float(rng.integers(1, 10))),
            ("w_bilateral", float(rng.integers(1, 10))),
            ("iterations", int(rng.integers(1, 11))),
        ]
        out.append(("mixed", mixed))
    return out


def photo_png(side: int) -> bytes:
    from PIL import Image

    from lab.data import sample_images

    img = Image.fromarray(sample_images(["astronaut"])["astronaut"]).resize((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def estimated_working_set(png: bytes) -> int:
    """One rerun's transient by the library's own estimates, for the schedule's largest lattices and T.

    Both lattices built anew (``estimate_build_bytes``, with the vertex counts of the smallest θ the
    schedule reaches: θα = 40, θβ = 3, θγ = 1) plus mean field's buffers for T = 10 with every Q kept
    (``estimate_mean_field_bytes``, keep="q" as the app runs it).
    """
    import torch

    from lab.crf import CRFKernels, CRFParams
    from lab.crf.kernels import _spatial_lattice
    from lab.crf.mean_field import estimate_mean_field_bytes
    from lab.data.photos import load_image
    from lab.lattice.limits import estimate_build_bytes

    image = torch.from_numpy(load_image(png)).permute(2, 0, 1)[None].float()
    kernels = CRFKernels(image, CRFParams(theta_alpha=40.0, theta_beta=3.0, theta_gamma=1.0))
    m = kernels.num_points
    bilateral, spatial = (lat.num_vertices for lat in kernels.lattices)
    need = estimate_build_bytes(m, 5, bilateral) + estimate_build_bytes(m, 2, spatial)
    need += estimate_mean_field_bytes(kernels, 4, 10, "q", torch.float32, False)
    del kernels
    _spatial_lattice.cache_clear()  # its spatial lattice must not count in "start"
    gc.collect()
    return need


def spatial_lattice_bytes(side: int) -> int:
    """Bytes of one spatial lattice at this size once used (what mean_field's own LRU holds per θγ)."""
    import torch

    from lab.crf import CRFKernels, CRFParams
    from lab.explore import tensor_nbytes

    image = torch.zeros(1, 3, side, side)
    kernels = CRFKernels(image, CRFParams(theta_gamma=2.75))  # a θγ the schedule never asks for
    kernels.filter(torch.zeros(side * side, 4))
    return tensor_nbytes(kernels.lattices[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=1024, help="photo side and working size in pixels")
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()

    from streamlit.testing.v1 import AppTest

    from lab.crf.kernels import _SPATIAL_CACHE_SIZE as SPATIAL_LRU  # spatial lattices kept outside the app's cache
    from lab.explore import app_cache, cache_budget, trim_heap

    budget = cache_budget()
    png = photo_png(args.side)
    estimated_set = estimated_working_set(png)
    spatial = spatial_lattice_bytes(args.side)  # its lattice stays in mean_field's LRU: one of the SPATIAL_LRU
    gc.collect()
    trim_heap()  # what the set-up freed leaves the process, as the app does after each rerun
    start = rss_bytes()
    peak_reset = reset_peak()
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.run()
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="image_upload").set_value((f"astronaut{args.side}.png", png, "image/png"))
    at.sidebar.slider(key="iterations").set_value(10)  # the schedule's largest T: the first view is its worst rerun
    at.sidebar.slider(key="work_size").set_value(args.side).run()
    if at.exception or at.error:
        print("the app failed:", [e.value for e in at.exception], [e.value for e in at.error])
        return 1
    assert f"working at {args.side}×{args.side}" in at.caption[0].value, at.caption[0].value
    first = rss_bytes()
    first_peak = peak_bytes()
    # one working set: what the first view needed at its peak beyond the imports and what the cache kept
    measured_set = first_peak - start - app_cache().nbytes
    working_set = max(measured_set, estimated_set)
    bound = start + budget + (SPATIAL_LRU - 1) * spatial + working_set

    print(f"# App memory, {time.strftime('%Y-%m-%d')}\n")
    print(
        describe(
            f"astronaut {args.side}x{args.side} uploaded, working size {args.side}, L=4 colour clusters",
            f"cache budget {budget / GiB:.2f} GiB",
        )
        + "\n"
    )
    print("| after | knobs moved | RSS GiB | peak so far GiB | s |")
    print("|---|---|---|---|---|")
    print(f"| imports (start) | — | {start / GiB:.2f} | — | — |")
    print(f"| first view at {args.side} | — | {first / GiB:.2f} | {first_peak / GiB:.2f} | — |")
    t0 = time.perf_counter()
    moved: list[str] = []
    for n, (what, moves) in enumerate(knob_schedule(args.changes), 1):
        for key, value in moves:
            at.sidebar.slider(key=key).set_value(value)
        at.run()
        if at.exception:
            print(f"change {n} ({what}) raised: {at.exception[0].value}")
            return 1
        if what not in moved:
            moved.append(what)
        if n % 10 == 0 or n == args.changes:
            print(
                f"| {n} changes | {', '.join(moved)} | {rss_bytes() / GiB:.2f} | {peak_bytes() / GiB:.2f} "
                f"| {time.perf_counter() - t0:.0f} |"
            )
            moved = []
    peak = peak_bytes()
    cache = app_cache()
    print(
        f"\napp cache at the end: {len(cache)} entries, {cache.nbytes / GiB:.2f} GiB, {cache.evictions} evictions; "
        f"one spatial lattice at this size {spatial / MiB:.0f} MiB"
    )
    print(
        f"bound = start {start / GiB:.2f} + cache budget {budget / GiB:.2f} + {SPATIAL_LRU - 1} more spatial "
        f"lattices outside it {(SPATIAL_LRU - 1) * spatial / GiB:.2f} + one working set {working_set / GiB:.2f} "
        f"(the larger of: estimated {estimated_set / GiB:.2f}, first view measured {measured_set / GiB:.2f}) "
        f"= {bound / GiB:.2f} GiB" + ("" if peak_reset else " (VmHWM could not be reset: the peak includes the set-up)")
    )
    verdict = "PASS" if peak <= bound else "FAIL"
    print(f"peak RSS {peak / GiB:.2f} GiB, bound {bound / GiB:.2f} GiB: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
