"""GPU benchmark of the lattice: Triton kernels vs the PyTorch backend (eager and torch.compile), one device.

    python benchmarks/gpu.py                 # 0.25, 1, 4 MP x B = 1, 8 (several minutes on an H100)
    python benchmarks/gpu.py --quick         # 0.25 and 1 MP, B = 1
    python benchmarks/gpu.py --no-compile    # skip the torch.compile column

Inputs: scikit-image's astronaut resized to 512², 1024², 2048² (B copies, each rolled so the batch elements
differ), C = L = 21 channels, float32. Kernels: bilateral d=5 (θα=80, θβ=13) and spatial d=2 (θγ=3), the
dense-CRF defaults. Times are medians of ``triton.testing.do_bench`` (CUDA events, warm caches), except the
lattice build (one cold call after one warm-up, wall clock with a synchronize).

Effective bandwidth = compulsory bytes / time, against the device's peak (a spec table for known parts,
else a measured device-to-device copy). Compulsory bytes, for the kernels as implemented: every value row
read and written once per stage, plus the index and weight arrays each stage must read (int32 indices,
float32 weights); gathered rows read again from cache are not counted. So 100 % is the memory-bound limit
of this data layout.

Exits with a message (status 0) when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

import lab
from lab.lattice import LatticeStructure

DEVICE = "cuda"
SIDES = {0.25: 512, 1.0: 1024, 4.0: 2048}
C = 21  # channels = labels
T = 5  # mean-field iterations
BILATERAL = {"theta_alpha": 80.0, "theta_beta": 13.0}
THETA_GAMMA = 3.0
SPLAT_VECTOR_ROWS = 8  # rows per program of the CSR-vector splat (benchmarks/triton_schedules.py; 32 entries per step)
W_BILATERAL, W_SPATIAL = 10.0, 3.0  # pydensecrf-style kernel weights (Potts: compat = 1 - I)
# Peak DRAM bandwidth (GB/s) of parts we may be lent, from the vendors' data sheets.
PEAK_GBPS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0, "A100-SXM4-80GB": 2039.0}


def header() -> str:
    props = torch.cuda.get_device_properties(0)
    import triton

    return (
        f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
        f"capability {props.major}.{props.minor}; CUDA {torch.version.cuda}; "
        f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}"
    )


def peak_bandwidth() -> tuple[float, str]:
    """(GB/s, where the number came from): the data-sheet value if known, else a measured copy."""
    name = torch.cuda.get_device_name(0)
    for part, gbps in PEAK_GBPS.items():
        if part in name:
            return gbps, f"data sheet ({part})"
    from triton.testing import do_bench

    x = torch.empty(2**28, dtype=torch.float32, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / ms / 1e6, "measured copy"


def bench(fn) -> float:
    """Median milliseconds of fn() (CUDA events)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=5, rep=50, return_mode="median"))


def photos(side: int, batch: int) -> torch.Tensor:
    """(B, 3, side, side) float32 CUDA images, 0..255: the astronaut, rolled by a different amount per element."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (side, side), preserve_range=True, anti_aliasing=True)
    one = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)
    return torch.stack([one.roll(37 * b, dims=2) for b in range(batch)]).to(DEVICE)


# --------------------------------------------------------------------------------- compulsory bytes
def filter_bytes(s: LatticeStructure, c: int) -> int:
    """Bytes one splat + (d+1) blurs + slice must move, for C float32 channels (see the module docstring).

    Index arrays as the kernels read them (lab.lattice.triton.layout.TritonLattice): int32 indices,
    float32 weights, int64 CSR row pointers.
    """
    m, v, dp1 = s.num_points, s.num_vertices, s.d + 1
    values = 4 * c
    splat = m * values + m * dp1 * (4 + 4) + v * 8 + v * values  # x, (point, weight) entries, crow, out
    blurs = dp1 * (2 * v * values + v * 2 * 4)  # per axis: in + out rows, the (V, 2) neighbour table
    slice_ = v * values + m * dp1 * (4 + 4) + m * values  # vertex rows (at least once), index + weight, out
    return splat + blurs + slice_


def splat_blur_bytes(s: LatticeStructure, c: int) -> int:
    """filter_bytes without the slice (the slice is inside the fused step)."""
    m, v, dp1 = s.num_points, s.num_vertices, s.d + 1
    return filter_bytes(s, c) - (v * 4 * c + m * dp1 * 8 + m * 4 * c)


def fused_bytes(structures: list[LatticeStructure], c: int) -> int:
    """Bytes one fused mean-field step must move: unary, blurred lattices, indices, weights, norms, 2 outputs."""
    m = structures[0].num_points
    lattices = sum(s.num_vertices * 4 * c + m * (s.d + 1) * (4 + 4) + m * 4 for s in structures)
    return 3 * m * 4 * c + lattices


# ----------------------------------------------------------------------------------------------- CRF
class CRF:
    """T mean-field iterations with both kernels, symmetric normalisation, on one backend.

    Triton: the D^-1/2 pre-scale is folded into the splat kernel (``scale=``), then d+1 blur launches per
    lattice and the fused step. PyTorch: the lattice's splat / blur and the reference step.
    """

    def __init__(self, image: torch.Tensor, backend: str) -> None:
        from lab.crf.triton_step import fused_mean_field_iteration, fused_mean_field_iteration_reference

        self.backend = backend
        self.lattices = [
            lab.PermutohedralLattice(lab.bilateral_features(image, **BILATERAL), backend=backend),
            lab.PermutohedralLattice(lab.spatial_features(image, theta_gamma=THETA_GAMMA), backend=backend),
        ]
        self.norms = [torch.rsqrt(lat.normalizer() + 1e-20) for lat in self.lattices]  # D^-1/2
        self.weights = torch.tensor([[W_BILATERAL] * C, [W_SPATIAL] * C], device=image.device)
        self.compat = 1 - torch.eye(C, device=image.device)  # Potts
        self.step = fused_mean_field_iteration if backend == "triton" else fused_mean_field_iteration_reference
        if backend == "triton":
            self.layouts = [lat.ops.layout for lat in self.lattices]  # the TritonOps' compact layouts

    def blurred(self, q: torch.Tensor) -> list[torch.Tensor]:
        """blur(splat(D^-1/2 q)) on each lattice: (V_k, L)."""
        if self.backend == "triton":
            from lab.lattice.triton.ops import lattice_blur, lattice_splat

            return [
                lattice_blur(lattice_splat(q, c, scale=n), c) for c, n in zip(self.layouts, self.norms, strict=True)
            ]
        return [lat.blur(lat.splat(lat.from_points(n * q))) for lat, n in zip(self.lattices, self.norms, strict=True)]

    def iteration(self, unary: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        _, q = self.step(unary, self.blurred(q), self.lattices, self.norms, self.weights, self.compat)
        return q

    def __call__(self, unary: torch.Tensor) -> torch.Tensor:
        q = unary.softmax(1)
        for _ in range(T):
            q = self.iteration(unary, q)
        return q


def compiled_filter(lat: lab.PermutohedralLattice):
    """torch.compile of the PyTorch backend's filter_points, or None with the reason printed."""
    try:
        fn = torch.compile(lambda x: lat.filter_points(x, "symmetric"), dynamic=False)
        fn(torch.zeros(lat.num_points, C, device=DEVICE))
        return fn
    except Exception as exc:  # report, don't abort the table
        print(f"  (torch.compile of the PyTorch filter failed: {type(exc).__name__}: {str(exc)[:120]})")
        return None


def fmt(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:.3f}"


def run(sizes: list[float], batches: list[int], compile_torch: bool, peak: float) -> None:
    from triton_schedules import splat_csr_vector

    from lab.lattice.triton.ops import lattice_splat

    print("\n## Filter (one lattice, C=21, float32, normalize='symmetric')\n")
    print(
        "| MP | B | d | vertices/px | build ms (triton) | triton ms | torch ms | torch.compile ms "
        "| triton GB/s | % of peak | splat ms: tile | splat ms: CSR-vector |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    crf_rows = []
    for mp in sizes:
        for b in batches:
            image = photos(SIDES[mp], b)
            feats = {
                5: lab.bilateral_features(image, **BILATERAL),
                2: lab.spatial_features(image, theta_gamma=THETA_GAMMA),
            }
            for d, f in feats.items():
                lab.PermutohedralLattice(f, backend="triton")  # warm-up (allocator, kernels of build)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                lat = lab.PermutohedralLattice(f, backend="triton")
                torch.cuda.synchronize()
                build_ms = (time.perf_counter() - t0) * 1e3
                torch_lat = lab.PermutohedralLattice(f, backend="torch")
                x = torch.rand(lat.num_points, C, device=DEVICE)
                lat.normalizer(), torch_lat.normalizer()  # cached, as in mean field
                triton_ms = bench(lambda lat=lat, x=x: lat.filter_points(x, "symmetric"))
                torch_ms = bench(lambda lat=torch_lat, x=x: lat.filter_points(x, "symmetric"))
                compiled_ms = None
                if compile_torch:
                    fn = compiled_filter(torch_lat)
                    compiled_ms = bench(lambda fn=fn, x=x: fn(x)) if fn is not None else None
                gbps = filter_bytes(lat.structure, C) / triton_ms / 1e6
                # The library's splat (tile schedule) and the CSR-vector one of benchmarks/triton_schedules.py.
                layout = lat.ops.layout
                splat_tile = bench(lambda c=layout, x=x: lattice_splat(x, c))
                splat_vector = bench(
                    lambda c=layout, x=x: splat_csr_vector(x, c, rows=SPLAT_VECTOR_ROWS, block_entries=32)
                )
                print(
                    f"| {mp} | {b} | {d} | {lat.num_vertices / lat.num_points:.2f} | {build_ms:.1f} | "
                    f"{triton_ms:.3f} | {torch_ms:.3f} | {fmt(compiled_ms)} | {gbps:.0f} | {100 * gbps / peak:.0f} | "
                    f"{splat_tile:.3f} | {splat_vector:.3f} |"
                )
                del lat, torch_lat, x
            crf_rows.append(bench_crf(image, mp, b, peak))
            del image, feats
            torch.cuda.empty_cache()
    print(f"\n## Mean field (bilateral d=5 + spatial d=2, L={C}, symmetric normalisation, T={T})\n")
    print(
        "| MP | B | fused step ms (triton) | step ms (torch reference) | fused GB/s | % of peak "
        f"| CRF T={T} ms (triton) | CRF T={T} ms (torch) | CRF ms per MP (triton) | CRF GB/s | % of peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in crf_rows:
        print(row)


def bench_crf(image: torch.Tensor, mp: float, b: int, peak: float) -> str:
    """One table row for the mean field at this size: fused step and whole CRF, Triton vs PyTorch."""
    m = image.shape[0] * image.shape[2] * image.shape[3]
    unary = torch.randn(m, C, device=DEVICE) * 3
    crfs = {backend: CRF(image, backend) for backend in ("triton", "torch")}
    q = unary.softmax(1)
    ms = {}
    with torch.no_grad():
        for backend, crf in crfs.items():
            blurred = crf.blurred(q)
            args = (unary, blurred, crf.lattices, crf.norms, crf.weights, crf.compat)
            ms[f"step_{backend}"] = bench(lambda crf=crf, args=args: crf.step(*args))
            ms[f"crf_{backend}"] = bench(lambda crf=crf: crf(unary))
    structures = [lat.structure for lat in crfs["triton"].lattices]
    step_bytes = fused_bytes(structures, C)
    crf_bytes = T * (step_bytes + sum(splat_blur_bytes(s, C) for s in structures))
    step_gbps = step_bytes / ms["step_triton"] / 1e6
    crf_gbps = crf_bytes / ms["crf_triton"] / 1e6
    return (
        f"| {mp} | {b} | {ms['step_triton']:.3f} | {ms['step_torch']:.3f} | {step_gbps:.0f} | "
        f"{100 * step_gbps / peak:.0f} | {ms['crf_triton']:.2f} | {ms['crf_torch']:.2f} | "
        f"{ms['crf_triton'] / (mp * b):.2f} | {crf_gbps:.0f} | {100 * crf_gbps / peak:.0f} |"
    )


def pydensecrf_baseline() -> None:
    """pydensecrf's inference at 0.25 MP on the CPU, the reference users know (skipped if not installed)."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        print("\npydensecrf: not installed (pip install -e '.[peers]'), CPU baseline skipped")
        return
    image = photos(SIDES[0.25], 1)[0].permute(1, 2, 0).byte().cpu().numpy().copy(order="C")
    h, w = image.shape[:2]
    unary = np.ascontiguousarray(np.random.default_rng(0).standard_normal((C, h * w)).astype(np.float32) * 3)

    def infer() -> None:
        crf = dcrf.DenseCRF2D(w, h, C)
        crf.setUnaryEnergy(-unary)
        crf.addPairwiseGaussian(sxy=THETA_GAMMA, compat=W_SPATIAL)
        crf.addPairwiseBilateral(
            sxy=BILATERAL["theta_alpha"], srgb=BILATERAL["theta_beta"], rgbim=image, compat=W_BILATERAL
        )
        crf.inference(T)

    infer()
    t0 = time.perf_counter()
    infer()
    print(f"\npydensecrf (CPU, 0.25 MP, L={C}, T={T}, with set-up): {(time.perf_counter() - t0) * 1e3:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.25 and 1 MP, B = 1 only")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the PyTorch backend")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; nothing to measure (run it on a GPU machine).")
        return 0
    print(header())
    peak, source = peak_bandwidth()
    print(f"peak bandwidth: {peak:.0f} GB/s ({source})")
    sizes = [0.25, 1.0] if args.quick else list(SIDES)
    batches = [1] if args.quick else [1, 8]
    run(sizes, batches, not args.no_compile, peak)
    pydensecrf_baseline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
