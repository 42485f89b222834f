"""CRF benchmark: lab.mean_field against pydensecrf's inference, same photo and unary, one process.

    python benchmarks/crf.py            # 0.06 … 4 MP; L = 2, 21, 59; T = 5 (and 10 at 0.25, 1 MP); 1 and 2 threads
    python benchmarks/crf.py --quick    # 0.06 and 0.25 MP, L = 2, 21, T = 5, the current thread count

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
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch
from machine import describe
from skimage import data, transform

import lab
from lab.crf import CRFParams, mean_field
from lab.crf.kernels import CRFKernels, _spatial_lattice

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="0.06 and 0.25 MP, L = 2, 21, T = 5, current threads")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per side and cell (median)")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1,2; --quick: current)")
    args = ap.parse_args()
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
