"""What drawing one result costs in the app, ours beside the plain library call it replaces.

    python benchmarks/display.py            # 512 x 512, L = 21
    python benchmarks/display.py --side 256

Every rerun of the app encodes its label images as PNG, draws Q_t's entropy and lists the classes on screen.
Per operation, on the astronaut photo with a softmax over L classes of a smooth random field: ours
(``lab.explore.display.png_bytes``, ``lab.viz.entropy_map``, ``lab.explore.voc_view.present_classes``) and
the one-line version with Pillow or NumPy, median
of ``--repeat`` calls after one warm-up, and whether the two give the same result (bytes decoded, values or
pixels compared).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch
from machine import describe
from PIL import Image
from skimage import data

from lab.explore.display import class_colours, label_image, png_bytes
from lab.explore.voc_view import present_classes
from lab.viz import entropy_map


def median_ms(fn, repeat: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), out


def pillow_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=512, help="image side in px (the astronaut, resized)")
    parser.add_argument("--labels", type=int, default=21, help="L")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per operation")
    args = parser.parse_args()
    if not 16 <= args.side <= 4096 or not 2 <= args.labels <= 256 or args.repeat < 1:
        parser.error("expected --side in 16..4096, --labels in 2..256, --repeat ≥ 1")
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((args.side, args.side)))
    # smooth regions, as a network's output: a coarse random field, upsampled, then a softmax
    coarse = 4 * torch.randn(
        1, args.labels, max(args.side // 32, 2), max(args.side // 32, 2), generator=torch.manual_seed(0)
    )
    field = torch.nn.functional.interpolate(coarse, size=(args.side, args.side), mode="bilinear")[0]
    q = torch.softmax(field, 0).numpy()
    labels = q.argmax(0)
    blend = label_image(labels, class_colours(args.labels), photo, 0.5)
    rows = []

    ours_ms, ours = median_ms(lambda: png_bytes(blend), args.repeat)
    plain_ms, plain = median_ms(lambda: pillow_png(blend), args.repeat)
    same = np.array_equal(np.asarray(Image.open(io.BytesIO(ours))), np.asarray(Image.open(io.BytesIO(plain))))
    rows.append(("PNG of a label blend over the photo (level 1)", ours_ms, plain_ms, "Pillow", same))
    rows[-1] += (f"{len(ours) // 1024} vs {len(plain) // 1024} KB",)

    ours_ms, ours = median_ms(lambda: entropy_map(q), args.repeat)
    plain_ms, plain = median_ms(lambda: -(q * np.log(np.clip(q, 1e-20, 1))).sum(0, dtype=np.float64), args.repeat)
    rows.append(("entropy of Q (L classes)", ours_ms, plain_ms, "NumPy, whole array", np.allclose(ours, plain), ""))

    ours_ms, ours = median_ms(lambda: present_classes(labels, labels, labels), args.repeat)
    plain_ms, plain = median_ms(lambda: sorted(set(np.unique(labels).tolist())), args.repeat)
    rows.append(("classes present in three label maps", ours_ms, plain_ms, "np.unique", ours == plain, ""))

    print(f"# Drawing one result, {time.strftime('%Y-%m-%d')}\n")
    print(describe(f"astronaut at {args.side} × {args.side}, L = {args.labels}, median of {args.repeat} calls") + "\n")
    print("| operation | ours ms | plain ms | plain | same result | size |")
    print("|---|---|---|---|---|---|")
    for what, ours_ms, plain_ms, plain_name, same, size in rows:
        print(f"| {what} | {ours_ms:.1f} | {plain_ms:.1f} | {plain_name} | {'yes' if same else 'NO'} | {size} |")


if __name__ == "__main__":
    main()
