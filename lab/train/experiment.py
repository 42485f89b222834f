"""The paper's Table 1 in miniature: FCN, FCN + CRF post-processing, CRF-RNN end to end, and ablations.

Per seed (the seed sets the FCN's initial weights and the batch order; the data set is the same for all):

1. ``fcn``: the FCN trained alone.
2. ``fcn+crf``: the dense CRF on the FCN's logits as post-processing, its bandwidths and weights chosen by
   grid search on the val split (the paper's "disconnected" CRF).
3. ``crf-rnn``: FCN from 1 and CRF from 2 fine-tuned jointly: FCN weights, kernel weights and a free
   (asymmetric) compatibility µ; bandwidths fixed. T = ``iterations`` in training and at test.

Ablations (the paper's, plus one control):

- ``crf-rnn-t10``: the ``crf-rnn`` model with ``test_iterations`` (10) at test time.
- ``crf-rnn-per-class``: one kernel weight per class (the paper's diagonal weights).
- ``crf-rnn-symmetric``: µ kept symmetric ((µ + µᵀ)/2 parametrisation).
- ``crf-rnn-potts``: µ fixed to Potts, only the kernel weights learned with the FCN.
- ``crf-rnn-learned-theta``: as ``crf-rnn``, and the bandwidths θα, θβ, θγ are learned too (through log θ,
  starting from the grid's values; the lattice is rebuilt every step from the current θ and the gradient
  reaches θ through the features, see ``docs/feature_gradients.md``). The learned θ are reported.
- ``fcn-finetuned``: the FCN fine-tuned alone for as long and at the same learning rate as step 3:
  how much of CRF-RNN's gain is just more training.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from lab.crf import CRFRNN, CRFParams
from lab.data import SyntheticShapes
from lab.models import FCN
from lab.train.data import Split
from lab.train.distributed import Context
from lab.train.metrics import mean_iou
from lab.train.models import SegmentationCRFRNN, SymmetricCompat
from lab.train.stages import GRID, evaluate, grid_search, load_checkpoint, save_checkpoint, scores, train_model

__all__ = ["METHODS", "PAPER", "ExperimentConfig", "aggregate", "load_data", "run_experiment", "run_seed"]

# method id -> label in the table
METHODS: dict[str, str] = {
    "fcn": "FCN (unary only)",
    "fcn+crf": "FCN + CRF post-processing (grid-searched on val)",
    "crf-rnn": "CRF-RNN end to end (T=5)",
    "crf-rnn-t10": "CRF-RNN, T=5 in training, T=10 at test",
    "crf-rnn-per-class": "CRF-RNN, per-class kernel weights",
    "crf-rnn-symmetric": "CRF-RNN, symmetric compatibility µ",
    "crf-rnn-potts": "CRF-RNN, Potts µ fixed (weights learned)",
    "crf-rnn-learned-theta": "CRF-RNN, bandwidths θ learned too (from the grid's θ)",
    "fcn-finetuned": "FCN fine-tuned as long as CRF-RNN, no CRF (control)",
}
# Zheng et al. 2015, Table 1: mIoU (%) on the reduced VOC 2012 val set.
PAPER: dict[str, float] = {"fcn": 61.3, "fcn+crf": 63.7, "crf-rnn": 69.6}
_CRF_VARIANTS = {
    "crf-rnn": "free",
    "crf-rnn-per-class": "per-class",
    "crf-rnn-symmetric": "symmetric",
    "crf-rnn-potts": "potts",
    "crf-rnn-learned-theta": "learned-theta",
}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run (sizes in images and pixels, learning rates for Adam).

    Attributes:
        image_size: H = W of the synthetic images.
        train_size: training images (the FCN and all fine-tuning).
        val_size: validation images (the CRF grid search and the curves).
        test_size: test images (the table).
        batch_size: images per batch.
        data_seed: the synthetic data set's seed (the same for every training seed).
        seeds: training seeds (FCN initialisation and batch order); the table reports mean ± std over them.
        fcn_width: channels of the FCN's first block.
        fcn_epochs: epochs of step 1.
        fcn_lr: step 1's learning rate.
        crf_epochs: epochs of step 3 (and of each trained ablation).
        crf_fcn_lr: the FCN's learning rate in step 3.
        crf_lr: the kernel weights' learning rate in step 3.
        compat_lr: the compatibility µ's learning rate in step 3 (its own: see ``docs/training.md``; the
            Potts row keeps µ fixed).
        theta_lr: the learning rate of log θ in the ``crf-rnn-learned-theta`` ablation.
        iterations: T in training, in the grid search and at test.
        test_iterations: T of the ``crf-rnn-t10`` ablation.
        grid: the post-processing grid (see :data:`lab.train.stages.GRID`).
        ablations: also run the ablations.
        ablation_seeds: how many of ``seeds`` (the first ones) also train the three CRF-RNN variants
            (per-class weights, symmetric µ, Potts µ, learned θ); the T = 10 row and the fine-tuned-FCN control use all.
        examples: test images in the example figure.
        trimap_radius: half-width in pixels of the band around the true label boundaries in which the
            trimap accuracy is measured (:func:`lab.train.metrics.trimap_counts`).
    """

    image_size: int = 64
    train_size: int = 768
    val_size: int = 64
    test_size: int = 128
    batch_size: int = 16
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    fcn_width: int = 16
    fcn_epochs: int = 30
    fcn_lr: float = 5e-3
    crf_epochs: int = 3
    crf_fcn_lr: float = 3e-4
    crf_lr: float = 0.05
    compat_lr: float = 0.005
    theta_lr: float = 0.02
    iterations: int = 5
    test_iterations: int = 10
    grid: dict = field(default_factory=lambda: dict(GRID))
    ablations: bool = True
    ablation_seeds: int = 3
    examples: int = 4
    trimap_radius: int = 3

    @classmethod
    def quick(cls, **changes) -> ExperimentConfig:
        """A smoke-test configuration (well under a minute on 2 cores): tiny sizes, one seed, a 2×2 grid."""
        small = {
            "image_size": 32,
            "train_size": 16,
            "val_size": 8,
            "test_size": 8,
            "batch_size": 8,
            "seeds": (0,),
            "fcn_width": 8,
            "fcn_epochs": 2,
            "crf_epochs": 1,
            "grid": {"theta_alpha": (4.0, 12.0), "theta_beta": (15.0,), "w_bilateral": (3.0, 10.0)},
            "examples": 2,
        }
        return cls(**{**small, **changes})

    def data_config(self) -> dict:
        """The fields that define the data."""
        return {k: getattr(self, k) for k in ("image_size", "train_size", "val_size", "test_size", "data_seed")}


@dataclass
class _Data:
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]


def load_data(cfg: ExperimentConfig, ctx: Context) -> _Data:
    """The train, val and test splits of ``cfg`` (the same for every seed)."""
    splits = {}
    for name, size in (("train", cfg.train_size), ("val", cfg.val_size), ("test", cfg.test_size)):
        ds = SyntheticShapes(name, size=size, image_size=cfg.image_size, seed=cfg.data_seed)
        images, labels = ds.tensors()
        splits[name] = Split(images, labels, cfg.batch_size, ctx.device)
    return _Data(**splits, num_classes=SyntheticShapes.num_classes, class_names=SyntheticShapes.class_names)


def _make_crf(variant: str, params: CRFParams, num_classes: int, iterations: int) -> CRFRNN:
    """The CRF-RNN of one variant, initialised from the post-processing CRF's parameters."""
    crf = CRFRNN(
        num_classes,
        iterations=iterations,
        params=params,
        per_class_weights=variant == "per-class",
        learnable_bandwidths=variant == "learned-theta",
    )
    if variant == "symmetric":
        parametrize.register_parametrization(crf, "compat", SymmetricCompat())
    elif variant == "potts":
        crf.compat.requires_grad_(False)
    return crf


def _miou(model: SegmentationCRFRNN, split: Split, ctx: Context, num_classes: int, iterations=None) -> float:
    return mean_iou(evaluate(model, split, ctx, num_classes, iterations))


def run_seed(cfg: ExperimentConfig, data: _Data, seed: int, ctx: Context, ckpt_dir: Path, resume: bool) -> dict:
    """Steps 1–3 and the ablations for one seed.

    Returns:
        ``{"test_miou": {method: float}, "test_trimap": {method: float}, "histories", "grid", "learned",
        "bandwidths", "examples"}``.
    """
    num_classes = data.num_classes
    ckpt = ckpt_dir / f"seed{seed}"
    base = {"data": cfg.data_config(), "seed": seed, "batch_size": cfg.batch_size}

    def validate(model: SegmentationCRFRNN) -> float:
        return _miou(model, data.val, ctx, num_classes)

    def test(model: SegmentationCRFRNN, iterations: int | None = None) -> dict[str, float]:
        return scores(model, data.test, ctx, num_classes, iterations, cfg.trimap_radius)

    # 1. FCN alone
    fcn_cfg = {**base, "stage": "fcn", "width": cfg.fcn_width, "epochs": cfg.fcn_epochs, "lr": cfg.fcn_lr}
    torch.manual_seed(seed)
    fcn = SegmentationCRFRNN(FCN(num_classes, width=cfg.fcn_width)).to(ctx.device)
    histories = {
        "fcn": train_model(
            fcn,
            [{"params": fcn.parameters(), "lr": cfg.fcn_lr}],
            data.train,
            epochs=cfg.fcn_epochs,
            ctx=ctx,
            seed=seed,
            desc=f"[seed {seed}] fcn",
            checkpoint=ckpt / "fcn.pt",
            config=fcn_cfg,
            resume=resume,
            validate=validate,
        )
    }
    fcn_state = {k: v.detach().clone() for k, v in fcn.unary_net.state_dict().items()}
    tests = {"fcn": test(fcn)}

    # 2. CRF as post-processing, grid-searched on val
    grid_cfg = {"fcn": fcn_cfg, "stage": "grid", "grid": {k: list(v) for k, v in cfg.grid.items()}, "T": cfg.iterations}
    state = load_checkpoint(ckpt / "grid.pt", grid_cfg, ctx.device) if resume else None
    if state is None:
        t0 = time.perf_counter()
        params, table = grid_search(fcn.unary_net, data.val, ctx, num_classes, cfg.grid, cfg.iterations)
        ctx.log(f"[seed {seed}] grid: {len(table)} settings in {time.perf_counter() - t0:.0f} s, best {params}")
        if ctx.is_main:
            save_checkpoint(ckpt / "grid.pt", {"config": grid_cfg, "params": params, "table": table})
        ctx.barrier()
    else:
        params, table = state["params"], state["table"]
        ctx.log(f"[seed {seed}] grid: resumed, best {params}")
    post = SegmentationCRFRNN(fcn.unary_net, CRFRNN(num_classes, cfg.iterations, params, learnable=False))
    post = post.to(ctx.device)
    tests["fcn+crf"] = test(post)

    # 3. CRF-RNN end to end, and the trained ablations
    crf_cfg = {
        "grid": grid_cfg,
        "epochs": cfg.crf_epochs,
        "fcn_lr": cfg.crf_fcn_lr,
        "crf_lr": cfg.crf_lr,
    }
    methods = ["crf-rnn", "fcn-finetuned"] if cfg.ablations else ["crf-rnn"]
    if cfg.ablations and seed in cfg.seeds[: cfg.ablation_seeds]:
        methods += ["crf-rnn-per-class", "crf-rnn-symmetric", "crf-rnn-potts", "crf-rnn-learned-theta"]
    models: dict[str, SegmentationCRFRNN] = {}
    for method in methods:
        net = FCN(num_classes, width=cfg.fcn_width)
        net.load_state_dict(fcn_state)
        variant = _CRF_VARIANTS.get(method)
        crf = None if variant is None else _make_crf(variant, params, num_classes, cfg.iterations)
        model = SegmentationCRFRNN(net, crf).to(ctx.device)
        groups = [{"params": net.parameters(), "lr": cfg.crf_fcn_lr}]
        stage_cfg = {**crf_cfg, "stage": method}
        if crf is not None:
            named = [(n, p) for n, p in crf.named_parameters() if p.requires_grad]
            thetas = [p for n, p in named if n.startswith("log_theta")]
            compat = [p for n, p in named if "compat" in n]  # µ, or its symmetric parametrisation's original
            weights = [p for n, p in named if not n.startswith("log_theta") and "compat" not in n]
            groups.append({"params": weights, "lr": cfg.crf_lr})
            if compat:
                groups.append({"params": compat, "lr": cfg.compat_lr})
                stage_cfg["compat_lr"] = cfg.compat_lr
            if thetas:
                groups.append({"params": thetas, "lr": cfg.theta_lr})
                stage_cfg["theta_lr"] = cfg.theta_lr
        histories[method] = train_model(
            model,
            groups,
            data.train,
            epochs=cfg.crf_epochs,
            ctx=ctx,
            seed=seed,
            desc=f"[seed {seed}] {method}",
            checkpoint=ckpt / f"{method}.pt",
            config=stage_cfg,
            resume=resume,
            validate=validate,
        )
        tests[method] = test(model)
        models[method] = model
    tests["crf-rnn-t10"] = test(models["crf-rnn"], cfg.test_iterations)
    ctx.log(
        f"[seed {seed}] test mIoU / trimap accuracy: "
        + ", ".join(f"{k} {v['miou']:.4f} / {v['trimap']:.4f}" for k, v in tests.items())
    )

    crf = models["crf-rnn"].crf
    learned = {
        "compat": crf.compat.detach().cpu().tolist(),
        "w_bilateral": crf.w_bilateral.detach().cpu().tolist(),
        "w_spatial": crf.w_spatial.detach().cpu().tolist(),
    }
    # the bandwidths every trained CRF ends with (they move only where they are learned)
    bandwidths = {m: model.crf.bandwidths for m, model in models.items() if model.crf is not None}
    examples = _examples(data, cfg.examples, fcn, post, models["crf-rnn"])
    return {
        "test_miou": {k: v["miou"] for k, v in tests.items()},
        "test_trimap": {k: v["trimap"] for k, v in tests.items()},
        "histories": histories,
        "grid": {"best": _params_dict(params), "table": table},
        "learned": learned,
        "bandwidths": bandwidths,
        "examples": examples,
    }


def _params_dict(params: CRFParams) -> dict:
    fields = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial")
    return {k: float(getattr(params, k)) for k in fields}


@torch.no_grad()
def _examples(data: _Data, count: int, *models: SegmentationCRFRNN) -> dict:
    """The first ``count`` test images, their labels and each model's predictions (numpy, for the figure)."""
    images, labels = data.test[0]
    images, labels = images[:count], labels[:count]
    preds = []
    for m in models:
        m.eval()
        preds.append(m(images).argmax(1).cpu().numpy())
    return {
        "images": images.permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).cpu().numpy(),
        "labels": labels.cpu().numpy(),
        "predictions": preds,
    }


def run_experiment(cfg: ExperimentConfig, ctx: Context, checkpoints: Path, resume: bool = False) -> dict:
    """Run every seed in this process, one after the other, and aggregate.

    Args:
        cfg: the configuration.
        ctx: the distributed context.
        checkpoints: directory of the per-seed, per-stage checkpoints.
        resume: continue from checkpoints written for the same configuration.

    Returns:
        :func:`aggregate`'s dictionary.
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.data_seed)
    data = load_data(cfg, ctx)
    ctx.log(
        f"data: {cfg.train_size}/{cfg.val_size}/{cfg.test_size} train/val/test images of {cfg.image_size} px, "
        f"{ctx.world_size} process(es) on {ctx.device}"
    )
    per_seed = {seed: run_seed(cfg, data, seed, ctx, Path(checkpoints), resume) for seed in cfg.seeds}
    result = aggregate(cfg, per_seed, list(data.class_names))
    result.update(
        runtime_s=time.perf_counter() - t0, world_size=ctx.world_size, jobs=1, threads=torch.get_num_threads()
    )
    return result


def aggregate(cfg: ExperimentConfig, per_seed: dict[int, dict], class_names: list[str]) -> dict:
    """The table's rows (mean ± sample std over seeds of the test mIoU and trimap accuracy) from per-seed results.

    Args:
        cfg: the configuration.
        per_seed: :func:`run_seed`'s result per seed.
        class_names: the L class names.

    Returns:
        ``{"config", "seeds": per_seed, "rows": [...], "class_names"}``; rows as in ``paper_table.json``
        (the caller adds ``runtime_s``, ``world_size`` and ``jobs``).
    """
    rows = []
    for method in METHODS:
        seeds = [s for s in cfg.seeds if method in per_seed[s]["test_miou"]]
        if not seeds:
            continue
        row = {"method": method, "label": METHODS[method]}
        for key, metric in (("miou", "test_miou"), ("trimap", "test_trimap")):
            values = [per_seed[s][metric][method] for s in seeds]
            v = torch.tensor(values, dtype=torch.float64)
            row[f"{key}_mean"] = float(v.mean())
            row[f"{key}_std"] = float(v.std()) if len(values) > 1 else 0.0
            row["per_seed" if key == "miou" else f"{key}_per_seed"] = values
        row.update(seeds=len(seeds), paper=PAPER.get(method))
        rows.append(row)
    return {
        "config": {**dataclasses.asdict(cfg), "seeds": list(cfg.seeds)},
        "seeds": per_seed,
        "rows": rows,
        "class_names": list(class_names),
    }
