"""How fast the app answers a knob change: the work behind one rerun, and the real script under AppTest.

    python benchmarks/app_rerun.py           # 0.25 MP (512 x 512), T = 5, L = 4 colour clusters
    python benchmarks/app_rerun.py --side 256

Part 1 times the plain functions one rerun calls (what the script does besides drawing widgets):
first view (unary + lattice build + inference + KL + figures), a weight or T change (the lattices are
cached: inference + KL + figures), and a θ change (rebuild + the rest). Part 2 drives the real
app/streamlit_app.py with Streamlit's AppTest and times whole reruns after a knob change.
What a user waits for in a browser, knob → new image on screen, is measured by benchmarks/app_latency.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from machine import describe

from lab.crf import CRFParams
from lab.data import sample_images
from lab.explore import build_kernels, fit_image, run_crf, to_tensor
from lab.unary import coarse_colour_clusters
from lab.viz import changed_mask, class_heatmap, entropy_map, kl_figure, overlay

APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


def ms(t0: float) -> float:
    return 1e3 * (time.perf_counter() - t0)


def views(image: np.ndarray, result, t: int) -> None:
    """What the app draws for one iteration t."""
    labels = result.labels
    q = result.trace.history[t][0]
    overlay(image, labels[0])
    overlay(image, labels[t])
    class_heatmap(q, 0)
    entropy_map(q)
    changed_mask(labels[max(t - 1, 0)], labels[t])
    changed_mask(labels[0], labels[t])
    kl_figure(result.trace.kl[0], current=t)


def functions(side: int, iterations: int, repeat: int) -> list[tuple[str, float]]:
    image = fit_image(sample_images()["astronaut"], side)
    rows = []
    for what in ("first view", "weight change (lattices cached)", "θα change (rebuild)"):
        times = []
        for r in range(repeat):
            t0 = time.perf_counter()
            theta_alpha = 80.0 + (r if what.startswith("θ") else 0)
            params = CRFParams(theta_alpha=theta_alpha, w_bilateral=5.0 + r, w_spatial=3.0)
            if what == "first view":
                unary, _ = coarse_colour_clusters(image, 4, 16, 0.6)
            if what != "weight change (lattices cached)" or r == 0:
                kernels, _ = build_kernels(to_tensor(image), params)
            if what == "weight change (lattices cached)" and r == 0:
                t0 = time.perf_counter()  # the first pass only fills the cache
            result = run_crf(unary, to_tensor(image), params, iterations, kernels)
            views(image, result, iterations)
            if not (what == "weight change (lattices cached)" and r == 0):
                times.append(ms(t0))
        rows.append((what, float(np.median(times))))
    return rows


def app_reruns(side: int, repeat: int) -> list[tuple[str, float]]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=600)
    t0 = time.perf_counter()
    at.run()
    first = ms(t0)
    at.sidebar.slider(key="work_size").set_value(side).run()
    rows = [("first run of the script (imports, photos, build, inference)", first)]
    for key, values, label in (
        ("w_bilateral", [6.0, 7.0, 8.0, 9.0], "w bilateral moved"),
        ("iterations", [4, 6, 5, 7], "T moved"),
        ("theta_alpha", [70.0, 75.0, 85.0, 90.0], "θα moved (lattice rebuilt)"),
    ):
        times = []
        for v in values[:repeat]:
            t0 = time.perf_counter()
            at.sidebar.slider(key=key).set_value(v).run()
            times.append(ms(t0))
            assert not at.exception, at.exception
        rows.append((label, float(np.median(times))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=512, help="working size (longer side) in pixels")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-app", action="store_true", help="skip the AppTest part")
    args = parser.parse_args()
    print(f"# App latency, {time.strftime('%Y-%m-%d')}\n")
    print(describe(f"image {args.side}x{args.side} (astronaut), T={args.iterations}, L=4") + "\n")
    print("| what | ms (median) |\n|---|---|")
    for what, t in functions(args.side, args.iterations, args.repeat):
        print(f"| functions: {what} | {t:.0f} |")
    if not args.no_app:
        for what, t in app_reruns(args.side, args.repeat):
            print(f"| app rerun: {what} | {t:.0f} |")


if __name__ == "__main__":
    main()
