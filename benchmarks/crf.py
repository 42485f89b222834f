"""CRF benchmark: lab.mean_field against pydensecrf's inference, same photo and unary, one process.

    python benchmarks/crf.py            # 0.06, 0.25, 1 MP; L = 2, 21; T = 5, 10 (a few minutes on 2 cores)
    python benchmarks/crf.py --quick    # 0.06 and 0.25 MP, T = 5

Both sides do the whole job from (image, unary) to Q: build the kernels' lattices, T iterations.
pydensecrf: DenseCRF2D + addPairwiseGaussian(sxy=3, compat=3) + addPairwiseBilateral(sxy=80, srgb=13,
compat=10) + inference(T) (symmetric normalisation, Potts). lab: mean_field(..., normalize="symmetric",
keep=None) under torch.no_grad(), backend "torch" (lattices built by the compiled Numba build where Numba is
installed; benchmarks/lattice.py times both builds). "lab" reuses the spatial kernel's lattice across calls
of the same size (mean_field caches it: it depends on H, W and θγ only); "lab cold" clears that cache
first, so it builds both lattices as pydensecrf does. The two sides alternate call by call (median of
``--repeat``), so machine load hits both alike. Ratios < 1 mean lab is faster.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import describe
from skimage import data, transform

import lab
from lab.crf import CRFParams, mean_field
from lab.crf.kernels import CRFKernels, _spatial_lattice
from lab.lattice.multi import MultiLatticeFilter

SIZES_MP = {0.06: 250, 0.25: 512, 1.0: 1000}
PARAMS = CRFParams(
    theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0, normalize="symmetric"
)


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


def run_pydensecrf(dcrf, img: np.ndarray, energy: np.ndarray, iterations: int) -> np.ndarray:
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, energy.shape[0])
    d.setUnaryEnergy(energy)
    d.addPairwiseGaussian(sxy=PARAMS.theta_gamma, compat=PARAMS.w_spatial)
    d.addPairwiseBilateral(sxy=PARAMS.theta_alpha, srgb=PARAMS.theta_beta, rgbim=img, compat=PARAMS.w_bilateral)
    return np.array(d.inference(iterations))


def run_lab(unary: torch.Tensor, image: torch.Tensor, iterations: int, cold: bool) -> torch.Tensor:
    if cold:
        _spatial_lattice.cache_clear()
    with torch.no_grad():
        return mean_field(unary, image, PARAMS, iterations, keep=None, backend="torch").q


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(sizes: list[float], labels: list[int], iterations: list[int], repeat: int) -> None:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        dcrf = None
        print("pydensecrf is not installed (pip install -e .[peers]): lab times only")
    print("\n## Dense CRF inference, image + unary → Q (symmetric, Potts, θα=80 θβ=13 θγ=3, w=10/3, float32)\n")
    print("| MP | pixels | L | T | pydensecrf s | lab s | lab cold s | lab / pyd | lab cold / pyd | max abs dQ |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mp in sizes:
        side = SIZES_MP[mp]
        img = photo(side)
        image = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
        for num_labels in labels:
            unary = unary_for(num_labels, side)
            energy = np.ascontiguousarray(-unary[0].reshape(num_labels, -1).numpy())
            for t in iterations:
                run_lab(unary, image, t, cold=False)  # warm-up (and fills the spatial cache)
                pyd, warm, cold = [], [], []
                for _ in range(repeat):
                    if dcrf is not None:
                        pyd.append(timed(lambda: run_pydensecrf(dcrf, img, energy, t)))  # noqa: B023
                    warm.append(timed(lambda: run_lab(unary, image, t, cold=False)))  # noqa: B023
                    cold.append(timed(lambda: run_lab(unary, image, t, cold=True)))  # noqa: B023
                tw, tc = float(np.median(warm)), float(np.median(cold))
                if dcrf is not None:
                    tp = float(np.median(pyd))
                    q_ref = run_pydensecrf(dcrf, img, energy, t).reshape(num_labels, side, side)
                    dq = np.abs(run_lab(unary, image, t, cold=False)[0].numpy() - q_ref).max()
                    cells = f"{tp:.3f} | {tw:.3f} | {tc:.3f} | {tw / tp:.2f} | {tc / tp:.2f} | {dq:.1e}"
                else:
                    cells = f"— | {tw:.3f} | {tc:.3f} | — | — | —"
                print(f"| {mp} | {side}×{side} | {num_labels} | {t} | {cells} |", flush=True)


def breakdown(side: int = 512, num_labels: int = 21, iterations: int = 5) -> None:
    """Where lab's time goes at 0.25 MP (cold: both lattices built)."""
    img = photo(side)
    image = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
    unary = unary_for(num_labels, side)
    with torch.no_grad():
        _spatial_lattice.cache_clear()
        t0 = time.perf_counter()
        kernels = CRFKernels(image, PARAMS, backend="torch")
        t1 = time.perf_counter()
        for lat in kernels.lattices:
            lat.normalizer()
        t2 = time.perf_counter()
        op = MultiLatticeFilter(kernels.lattices, [PARAMS.w_bilateral, PARAMS.w_spatial], "symmetric")
        t3 = time.perf_counter()
        q = torch.softmax(kernels.to_points(unary), 1)
        t_iter = timed(lambda: [torch.softmax(op(q).add_(kernels.to_points(unary)), 1) for _ in range(iterations)])
    print(f"\n## Where lab's time goes ({side}×{side}, L={num_labels}, T={iterations}, cold)\n")
    print("| stage | ms |")
    print("|---|---|")
    print(f"| build both lattices (bilateral + spatial) | {1e3 * (t1 - t0):.0f} |")
    print(f"| normalisers K·1 (one filtering each) | {1e3 * (t2 - t1):.0f} |")
    print(f"| fused operator (block-sparse splat/blur/slice) | {1e3 * (t3 - t2):.0f} |")
    print(f"| {iterations} iterations (fused message passing + softmax) | {1e3 * t_iter:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="0.06 and 0.25 MP, T = 5 only")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per side and cell (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(header())
    if args.quick:
        bench([0.06, 0.25], [2, 21], [5], args.repeat)
    else:
        bench([0.06, 0.25, 1.0], [2, 21], [5, 10], args.repeat)
    breakdown()


if __name__ == "__main__":
    main()
