"""CRF benchmark: lab.mean_field against pydensecrf's inference, same photo and unary, one process.

    python benchmarks/crf.py            # 0.06 … 4 MP; L = 2, 21, 59; T = 5 (and 10 at 0.25, 1 MP); 1 and 2 threads
    python benchmarks/crf.py --quick    # 0.06 and 0.25 MP, L = 2, 21, T = 5, the current thread count
    python benchmarks/crf.py --volumes  # instead: 3-D volumes 64³, 128³, 256³ (C = 1), L = 2, 8; MONAI beside

Both sides do the whole job from (image, unary) to Q: build the kernels' lattices, T iterations.
pydensecrf: DenseCRF2D + addPairwiseGaussian(sxy=3, compat=3) + addPairwiseBilateral(sxy=80, srgb=13,
compat=10) + inference(T) (symmetric normalisation, Potts; single-threaded). lab: mean_field(...,
normalize="symmetric", keep=None) under torch.no_grad() on the CPU in float32: the compiled iteration of
lab/crf/cpu_step.py, lattices built by the Numba build. "lab" reuses the spatial kernel's lattice across calls
of the same size (mean_field caches it: it depends on H, W and θγ only); "lab cold" clears that cache first,
so it builds both lattices as pydensecrf does. The sides alternate call by call (median of ``--repeat``), so
machine load hits both alike. Ratios < 1 mean lab is faster.

Per iteration: (mean_field with prebuilt kernels, T iterations − the same with 0) / T. Roofline: the bytes
one iteration must move through memory — read U, write Q, read Q again for the splat (3·L·4 bytes per pixel)
and read the (6 + 3) corner indices and weights twice, for the slice and the splat (144 bytes per pixel) —
divided by this machine's copy bandwidth, measured in the same run on one (M, L) float32 map (read + write).
"achieved" = roofline / per-iteration time.

Volumes (``--volumes``): a synthetic CT-like volume (smooth blobs in HU plus noise, C = 1: d = 4 and 3), an
intensity-cluster unary, θ in voxels and HU. Per row: the kernels' build (both lattices, cold), T = 5 on
them, per iteration as above, and the process's RSS before the row and its peak (VmHWM, reset before the row;
what the build added, read right after it, and what the whole row added), beside the memory the build's
pre-build check refuses below (``estimate_kernel_bytes``, documented as a lower estimate) and mean field's own
(upper) estimate of what it adds beyond the kernels. MONAI's ``monai.networks.blocks.CRF`` runs beside where
it can (the same θ and weights, its own update); where it cannot, one line says why. 256³ is 16.8 M voxels:
~9 GiB, ~2 minutes for the whole table; run it once.
"""

from __future__ import annotations

import argparse
import gc
import time

import numba
import numpy as np
import torch
from app_memory import GiB, peak_bytes, reset_peak, rss_bytes
from machine import describe
from skimage import data, transform

import lab
from lab.crf import CRFParams, mean_field
from lab.crf.kernels import CRFKernels, _spatial_lattice
from lab.crf.mean_field import estimate_mean_field_bytes
from lab.explore import trim_heap
from lab.lattice.limits import estimate_kernel_bytes

SIZES_MP = {0.06: 250, 0.25: 512, 1.0: 1000, 4.0: 2000}
PARAMS = CRFParams(
    theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0, normalize="symmetric"
)
CORNER_BYTES = 2 * (6 + 3) * (4 + 4)  # int32 index + float32 weight per corner, read by slice and by splat


def photo(side: int) -> np.ndarray:
    """The astronaut at side × side, (H, W, 3) uint8, C-contiguous."""
    img = transform.resize(data.astronaut(), (side, side), preserve_range=True, anti_aliasing=True)
    return np.ascontiguousarray(img.astype(np.uint8))


def unary_for(num_labels: int, side: int, seed: int = 0) -> torch.Tensor:
    """(1, L, side, side) log-probabilities: smooth random regions plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_labels, 8, 8, generator=g) * 2
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return torch.log_softmax(smooth + 0.7 * torch.randn(1, num_labels, side, side, generator=g), 1)


def header() -> str:
    try:
        from importlib.metadata import version

        pyd = version("pydensecrf2")
    except Exception:  # any failure means "not installed"
        pyd = "not installed"
    return describe(f"pydensecrf2 {pyd}, lab {lab.__version__}")


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    numba.set_num_threads(n)


def run_pydensecrf(dcrf, img: np.ndarray, energy: np.ndarray, iterations: int) -> np.ndarray:
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, energy.shape[0])
    d.setUnaryEnergy(energy)
    d.addPairwiseGaussian(sxy=PARAMS.theta_gamma, compat=PARAMS.w_spatial)
    d.addPairwiseBilateral(sxy=PARAMS.theta_alpha, srgb=PARAMS.theta_beta, rgbim=img, compat=PARAMS.w_bilateral)
    return np.array(d.inference(iterations))


def run_lab(unary: torch.Tensor, image: torch.Tensor, iterations: int, cold: bool, kernels=None) -> torch.Tensor:
    if cold:
        _spatial_lattice.cache_clear()
    with torch.no_grad():
        return mean_field(unary, image, PARAMS, iterations, keep=None, backend="torch", kernels=kernels).q


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def copy_bandwidth(pixels: int, num_labels: int) -> float:
    """Bytes per second of a copy of one (M, L) float32 map (read + write), best of 7."""
    src = torch.rand(pixels, num_labels)
    dst = torch.empty_like(src)
    best = min(timed(lambda: dst.copy_(src)) for _ in range(7))
    return 2 * src.numel() * 4 / best


def per_iteration(unary: torch.Tensor, image: torch.Tensor, iterations: int, repeat: int) -> float:
    """Seconds per iteration: T iterations minus none, on prebuilt kernels (median of ``repeat``)."""
    kernels = CRFKernels(image, PARAMS, backend="torch")
    run_lab(unary, image, iterations, cold=False, kernels=kernels)
    full = [timed(lambda: run_lab(unary, image, iterations, cold=False, kernels=kernels)) for _ in range(repeat)]
    none = [timed(lambda: run_lab(unary, image, 0, cold=False, kernels=kernels)) for _ in range(repeat)]
    return max(float(np.median(full)) - float(np.median(none)), 0.0) / iterations


def cases(quick: bool) -> list[tuple[float, int, int]]:
    if quick:
        return [(mp, num_labels, 5) for mp in (0.06, 0.25) for num_labels in (2, 21)]
    out = [(mp, num_labels, 5) for mp in SIZES_MP for num_labels in (2, 21, 59)]
    out += [(mp, num_labels, 10) for mp in (0.25, 1.0) for num_labels in (2, 21, 59)]
    return out


def bench(table: list[tuple[float, int, int]], threads: list[int], repeat: int) -> None:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        dcrf = None
        print("pydensecrf is not installed (pip install -e .[peers]): lab times only")
    print("\n## Dense CRF inference, image + unary → Q (symmetric, Potts, θα=80 θβ=13 θγ=3, w=10/3, float32)\n")
    print(
        "| MP | L | T | threads | pydensecrf s | lab s | lab cold s | lab / pyd | lab cold / pyd "
        "| iteration ms | roofline ms | achieved | max abs dQ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mp, num_labels, t in table:
        side = SIZES_MP[mp]
        img = photo(side)
        image = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
        unary = unary_for(num_labels, side)
        energy = np.ascontiguousarray(-unary[0].reshape(num_labels, -1).numpy())
        pixels = side * side
        q_ref = run_pydensecrf(dcrf, img, energy, t).reshape(num_labels, side, side) if dcrf is not None else None
        for n in threads:
            set_threads(n)
            q = run_lab(unary, image, t, cold=False)  # warm-up (compiles or loads kernels, fills the spatial cache)
            pyd, warm, cold = [], [], []
            for _ in range(repeat):
                if dcrf is not None:
                    pyd.append(timed(lambda: run_pydensecrf(dcrf, img, energy, t)))  # noqa: B023
                warm.append(timed(lambda: run_lab(unary, image, t, cold=False)))  # noqa: B023
                cold.append(timed(lambda: run_lab(unary, image, t, cold=True)))  # noqa: B023
            tw, tc = float(np.median(warm)), float(np.median(cold))
            it = per_iteration(unary, image, t, repeat)
            roof = pixels * (3 * num_labels * 4 + CORNER_BYTES) / copy_bandwidth(pixels, num_labels)
            lab_cells = f"{tw:.3f} | {tc:.3f}"
            if dcrf is not None:
                tp = float(np.median(pyd))
                dq = np.abs(q[0].numpy() - q_ref).max()
                cells = f"{tp:.3f} | {lab_cells} | {tw / tp:.2f} | {tc / tp:.2f}"
            else:
                cells, dq = f"— | {lab_cells} | — | —", float("nan")
            roof_cells = f"{1e3 * it:.1f} | {1e3 * roof:.2f} | {roof / it if it else float('nan'):.0%}"
            print(f"| {mp} | {num_labels} | {t} | {n} | {cells} | {roof_cells} | {dq:.1e} |", flush=True)


def stage_times(step, u: torch.Tensor) -> dict[str, float]:
    """Seconds of each compiled pass of one iteration (Potts, L ≤ 32), run on their own, best of 5."""
    from lab.crf import cpu_kernels, cpu_step

    qp, up = step._padded(torch.softmax(u, 1), 0.0).numpy(), step._padded(u, -1e30).numpy()
    groups = step.width // cpu_step.LANES
    tables = [tuple(np.empty((t.num_vertices, step.width), np.float32) for _ in range(2)) for t in step.tables]
    a, b = step.tables
    update = cpu_kernels.potts_kernel(a.corners, b.corners, groups)
    out = {}

    def best(fn) -> float:
        return min(timed(fn) for _ in range(5))

    with cpu_step._LOCK, cpu_kernels.compiling():
        for name, t, (y, spare) in zip(("bilateral", "spatial"), step.tables, tables, strict=True):
            splat = cpu_kernels.splat_kernel(t.corners, groups)
            out[f"splat {name}"] = best(lambda: splat(t.index, t.coef, qp, y, numba.get_num_threads()))  # noqa: B023
            out[f"blur {name}"] = best(lambda: [cpu_kernels.csr_rows(*p, y, spare) for p in t.blurs])  # noqa: B023
        logits = np.empty_like(up)
        out["slice … softmax (per pixel)"] = best(
            lambda: update(
                up, step.mask, a.index, a.bary, a.post, tables[0][0], step.weights[0],
                b.index, b.bary, b.post, tables[1][0], step.weights[1], qp, logits, False,
            )
        )  # fmt: skip
    return out


def breakdown(side: int = 512, num_labels: int = 21, iterations: int = 5) -> None:
    """Where lab's time goes at 0.25 MP (cold: both lattices built), stage by stage."""
    from lab.crf import cpu_step

    img = photo(side)
    image = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
    unary = unary_for(num_labels, side)
    weights = PARAMS.weights(num_labels, dtype=torch.float32)
    with torch.no_grad():
        run_lab(unary, image, iterations, cold=True)  # warm-up
        _spatial_lattice.cache_clear()
        t0 = time.perf_counter()
        kernels = CRFKernels(image, PARAMS, backend="torch")
        t1 = t2 = time.perf_counter()
        step = cpu_step.CPUMeanField(kernels.lattices, "symmetric", weights, "potts")
        t3 = time.perf_counter()
        u = kernels.to_points(unary)
        t_iter = timed(lambda: step.run(u, iterations))
        stages = stage_times(step, u)
    threads = numba.get_num_threads()
    print(f"\n## Where lab's time goes ({side}×{side}, L={num_labels}, T={iterations}, cold, {threads} threads)\n")
    print("| stage | ms |")
    print("|---|---|")
    print(f"| build both lattices (bilateral + spatial) | {1e3 * (t1 - t0):.0f} |")
    print(f"| assemble the compiled iteration's operands (K·1 included) | {1e3 * (t3 - t2):.0f} |")
    print(f"| {iterations} iterations (Q ← softmax(U) included) | {1e3 * t_iter:.0f} |")
    for name, seconds in stages.items():
        print(f"| … one iteration: {name} | {1e3 * seconds:.1f} |")


# ------------------------------------------------------------------------------------------------ volumes
VOLUME_SIDES = (64, 128, 256)
VOLUME_LABELS = (2, 8)
VOLUME_ITERATIONS = 5
VOLUME_PARAMS = CRFParams(
    theta_alpha=(5.0, 5.0, 5.0), theta_beta=20.0, theta_gamma=(1.5, 1.5, 1.5), w_bilateral=5.0, w_spatial=3.0,
    normalize="symmetric",
)  # θ in voxels (unit spacing) and HU  # fmt: skip


def synthetic_volume(side: int, seed: int = 0) -> torch.Tensor:
    """(1, 1, side, side, side) float32 CT-like guide: six Gaussian blobs (+40 … +160 HU) on −40 HU, noise σ = 15.

    Each blob is separable (a product of three 1-D Gaussians), so a 256³ volume costs three outer products.
    """
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(side, dtype=torch.float32)
    volume = torch.full((side, side, side), -40.0)
    for _ in range(6):
        centre = torch.rand(3, generator=g) * side
        radius = (0.08 + 0.12 * torch.rand(1, generator=g)) * side
        height = 40.0 + 120.0 * float(torch.rand(1, generator=g))
        z, y, x = (torch.exp(-0.5 * ((axis - c) / radius) ** 2) for c in centre)
        volume += height * z[:, None, None] * y[None, :, None] * x[None, None, :]
    volume += 15.0 * torch.randn(side, side, side, generator=g)
    return volume[None, None]


def volume_unary(guide: torch.Tensor, num_labels: int, seed: int = 0) -> torch.Tensor:
    """(1, L, *spatial) log-probabilities of L intensity clusters (levels spread over the guide's 1–99 % range)."""
    g = torch.Generator().manual_seed(seed)
    sample = guide.reshape(-1)[:: max(guide.numel() // 100_000, 1)]
    lo, hi = torch.quantile(sample, torch.tensor([0.01, 0.99])).tolist()
    levels = torch.linspace(lo, hi, num_labels).view(1, num_labels, 1, 1, 1)
    spread = (hi - lo) / num_labels
    logits = -0.5 * ((guide - levels) / spread) ** 2
    return torch.log_softmax(logits + 0.5 * torch.randn(logits.shape, generator=g), 1)


def monai_crf():
    """(MONAI's version, a runner q = run(unary, guide) or None, the one-line reason it cannot run here)."""
    try:
        import monai
        from monai.networks.blocks import CRF
    except Exception as exc:  # not installed, or it fails to import: say so and go on
        return None, None, f"MONAI not importable here ({type(exc).__name__}: {exc})"
    p = VOLUME_PARAMS
    crf = CRF(
        iterations=VOLUME_ITERATIONS, bilateral_weight=p.w_bilateral, gaussian_weight=p.w_spatial,
        bilateral_spatial_sigma=p.theta_alpha[0], bilateral_color_sigma=p.theta_beta,
        gaussian_spatial_sigma=p.theta_gamma[0], compatibility_matrix=None,
    )  # fmt: skip

    def run(unary: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return crf(unary, guide)

    try:  # a tiny volume first: MONAI's permutohedral filter needs its compiled extension monai._C
        run(volume_unary(synthetic_volume(8), 2), synthetic_volume(8))
    except Exception as exc:  # whatever stops it: one line, and the table goes on without it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (
            monai.__version__,
            None,
            f"MONAI {monai.__version__}'s CRF fails on the CPU: {type(exc).__name__}: {first}",
        )
    return monai.__version__, run, ""


def volume_row(guide: torch.Tensor, unary: torch.Tensor, monai_run) -> str:
    """One row of the volume table: a cold build, T = 0 and T = 5 on it, the peak RSS after the build and after all."""
    t, points, num_labels = VOLUME_ITERATIONS, guide[0, 0].numel(), unary.shape[1]
    gc.collect()
    trim_heap()
    _spatial_lattice.cache_clear()  # cold: both lattices built in the row
    before, reset = rss_bytes(), reset_peak()
    with torch.no_grad():
        t0 = time.perf_counter()
        kernels = CRFKernels(guide, VOLUME_PARAMS, backend="torch")
        build = time.perf_counter() - t0
        build_added = peak_bytes() - before if reset else float("nan")
        none = timed(lambda: mean_field(unary, guide, VOLUME_PARAMS, 0, keep=None, kernels=kernels))
        full = timed(lambda: mean_field(unary, guide, VOLUME_PARAMS, t, keep=None, kernels=kernels))
    added = peak_bytes() - before if reset else float("nan")
    floor = estimate_kernel_bytes(points, 4, torch.float32)  # what CRFKernels checks before forming features
    estimate = estimate_mean_field_bytes(kernels, num_labels, t, None, torch.float32, False)
    vertices = " / ".join(str(lat.num_vertices) for lat in kernels.lattices)
    monai_cell = f"{timed(lambda: monai_run(unary, guide)):.2f}" if monai_run is not None else "—"
    side = guide.shape[-1]
    cells = [
        f"{side}³", str(points), str(num_labels), vertices, f"{build:.2f}", f"{full:.2f}", f"{(full - none) / t:.3f}",
        f"{before / GiB:.2f}", f"{(before + added) / GiB:.2f}", f"{build_added / GiB:.2f}", f"{added / GiB:.2f}",
        f"{floor / GiB:.2f}", f"{floor / build_added:.2f}", f"{estimate / GiB:.2f}", monai_cell,
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def volume_rows(sides: list[int], labels: list[int]) -> None:
    """The volume table: build, T = 5, per iteration and peak RSS for each side and L; MONAI beside."""
    monai_version, monai_run, why = monai_crf()
    p, t = VOLUME_PARAMS, VOLUME_ITERATIONS
    print(
        f"\n## 3-D volumes, guide + unary → Q (C = 1: d = 4 / 3; symmetric, Potts, θα={p.theta_alpha[0]} "
        f"θβ={p.theta_beta} θγ={p.theta_gamma[0]} voxels / HU, w={p.w_bilateral:g}/{p.w_spatial:g}, T={t}, "
        "float32)\n"
    )
    if monai_run is None:
        print(why + "\n")
    with torch.no_grad():  # warm-up: Numba compiles the build and the iteration for d + 1 = 5, 4 and 8-wide rows
        small = synthetic_volume(16)
        for num_labels in labels:
            mean_field(volume_unary(small, num_labels), small, p, t, keep=None, backend="torch")
    header_cells = [
        "side", "voxels", "L", "vertices (bil. / spa.)", "build s", f"T={t} s", "iteration s", "RSS before GiB",
        "peak RSS GiB", "build: peak − before GiB", "all: peak − before GiB", "build refusal floor GiB",
        "floor / build's", "mean-field estimate GiB", f"MONAI T={t} s",
    ]  # fmt: skip
    print("| " + " | ".join(header_cells) + " |")
    print("|" + "---|" * len(header_cells))
    for side in sides:
        guide = synthetic_volume(side)
        for num_labels in labels:
            print(volume_row(guide, volume_unary(guide, num_labels), monai_run), flush=True)
    print(f"\nMONAI: {monai_version or 'not installed'}" + (", not run (the line above the table)" if why else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="0.06 and 0.25 MP, L = 2, 21, T = 5, current threads")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per side and cell (median)")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1,2; --quick: current)")
    ap.add_argument("--volumes", action="store_true", help="instead: the 3-D volume table (current threads)")
    ap.add_argument(
        "--sides", default=",".join(map(str, VOLUME_SIDES)), help="with --volumes: comma-separated volume sides"
    )
    args = ap.parse_args()
    if args.volumes:
        print(header())
        volume_rows([int(n) for n in args.sides.split(",")], list(VOLUME_LABELS))
        return
    if args.threads:
        threads = [int(n) for n in args.threads.split(",")]
    else:
        threads = [torch.get_num_threads()] if args.quick else [1, 2]
    print(header())
    bench(cases(args.quick), threads, args.repeat)
    set_threads(max(threads))
    breakdown()


if __name__ == "__main__":
    main()
