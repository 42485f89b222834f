"""Quick study: train the stride-8 FCN on SyntheticShapes and see where it fails.

Reports validation mIoU, pixel accuracy in a band around the true boundaries versus the interior, and
writes a figure (input, prediction, ground truth). Not a test: it takes a minute or two on 2 CPU cores.

    python scripts/fcn_synthetic_study.py --epochs 20 --out /tmp/fcn_study.png
"""

from __future__ import annotations

import argparse
import time

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from lab.data import SyntheticShapes
from lab.models import FCN
from lab.viz import colorize


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(L, L) counts, rows = truth, columns = prediction."""
    idx = target.reshape(-1) * num_classes + pred.reshape(-1)
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(conf: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean IoU over classes and the per-class IoU."""
    inter = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - inter
    iou = inter / union.clamp(min=1)
    return float(iou.mean()), iou


def boundary_band(label: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, H, W) bool: pixels within ``radius`` (Chebyshev) of a label change."""
    lab = label.float().unsqueeze(1)
    k = 2 * radius + 1
    hi = F.max_pool2d(lab, k, stride=1, padding=radius)
    lo = -F.max_pool2d(-lab, k, stride=1, padding=radius)
    return (hi != lo).squeeze(1)


def main() -> None:
    """Train, evaluate, print the numbers and save the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/fcn_study.png")
    parser.add_argument("--save", default=None, help="write the trained weights here (torch.save state_dict)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    train = SyntheticShapes("train", args.train_size, args.image_size, args.seed)
    val = SyntheticShapes("val", args.val_size, args.image_size, args.seed)
    x_train, y_train = train.tensors()
    x_val, y_val = val.tensors()
    print(f"data: {len(train)} train + {len(val)} val images in {time.perf_counter() - t0:.1f} s")

    net = FCN(train.num_classes, width=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(train) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for i in range(0, len(train), args.batch_size):
            idx = order[i : i + args.batch_size]
            x, y = x_train[idx], y_train[idx]
            if torch.rand((), generator=gen) < 0.5:  # horizontal flip
                x, y = x.flip(-1), y.flip(-1)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x_val[i : i + 64]).argmax(1) for i in range(0, len(val), 64)])
        m, _ = miou(confusion(pred, y_val, train.num_classes))
        elapsed = time.perf_counter() - t0
        print(f"epoch {epoch + 1:3d}  loss {total / len(train):.3f}  val mIoU {m:.3f}  {elapsed:.0f} s")
    train_s = time.perf_counter() - t0
    if args.save:
        torch.save(net.state_dict(), args.save)

    m, iou = miou(confusion(pred, y_val, train.num_classes))
    n_params = sum(p.numel() for p in net.parameters())
    print(f"training: {train_s:.0f} s, {args.epochs} epochs, width {args.width}, {n_params} parameters")
    per_class = ", ".join(f"{n} {v:.2f}" for n, v in zip(train.class_names, iou.tolist(), strict=True))
    print(f"val mIoU {m:.3f}; per class {per_class}")
    correct = pred == y_val
    band = boundary_band(y_val, 2)
    print(
        f"pixel accuracy: all {correct.float().mean():.3f}, within 2 px of a true boundary"
        f" {correct[band].float().mean():.3f} ({band.float().mean():.0%} of pixels),"
        f" elsewhere {correct[~band].float().mean():.3f}"
    )
    edges_true, edges_pred = boundary_band(y_val, 1).float().mean(), boundary_band(pred, 1).float().mean()
    print(f"pixels next to a label change: truth {edges_true:.3f}, prediction {edges_pred:.3f}")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 8
    fig, axes = plt.subplots(3, n, figsize=(2 * n, 6.3))
    for j in range(n):
        axes[0, j].imshow(x_val[j].permute(1, 2, 0).numpy().astype(np.uint8))
        axes[1, j].imshow(colorize(pred[j]))
        axes[2, j].imshow(colorize(y_val[j]))
    for a, title in zip(axes[:, 0], ["input", "FCN", "ground truth"], strict=True):
        a.set_ylabel(title)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"FCN (stride 8) on SyntheticShapes val: mIoU {m:.3f}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
