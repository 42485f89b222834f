"""``fit_crf``: gradient descent on the CRF's parameters (θ, w, µ) against a few labelled images.

The unaries are fixed; only the CRF moves. One step is one Adam update from the mean per-pixel cross-entropy
of every training image's CRF scores (U − Q̂ after T mean-field iterations) against its labels, each image
run on its own (sizes may differ) and counted equally. Early stopping watches the validation loss, or the
training loss without validation images, and the parameters at the best value are the ones returned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lab._checks import check_choice, check_int, check_number, check_positive
from lab.crf import CRFKernels, CRFParams, mean_field
from lab.fit.inputs import Example, prepare
from lab.fit.progress import progress_reporter
from lab.fit.space import LEARNABLE, NaturalParams

__all__ = ["MONITORS", "STOP_REASONS", "FitResult", "fit_crf"]

# why a fit ended (FitResult.stopped)
STOP_REASONS = ("steps", "patience", "converged", "time", "cancelled", "non-finite")
# what early stopping watches: the loss (smooth; the default) or the mIoU (what is reported; steps in jumps)
MONITORS = ("loss", "miou")
# a step that moves no parameter by more than this (in its natural space) has converged (zero gradients)
_CONVERGED_CHANGE = 1e-7


@dataclass
class FitResult:
    """What :func:`fit_crf` found, and how.

    Attributes:
        params: the fitted :class:`CRFParams` (the best evaluated): θ and scalar weights as floats, µ a
            detached (L, L) tensor when learned (else the start's µ).
        start: the starting parameters (as moved into the fit's ranges; see ``notes``).
        iterations: T, the mean-field iterations the parameters were fitted for (use them at inference).
        learned: which of "weights", "compat", "bandwidths" moved.
        loss: the training loss of every step, at the parameters the step started from.
        val_loss, val_miou: the validation loss and mIoU at each evaluation (empty without ``val``).
        eval_steps: the number of steps taken before each evaluation (0 = the start).
        miou_before, miou_after: the mIoU (0..1, pixels over all images pooled, VOC style) at the start and
            fitted parameters, on the images ``miou_on`` names.
        miou_on: "val" (the validation images) or "train" (no ``val`` given).
        best_step: after how many steps the returned parameters were reached.
        steps_run: the gradient steps taken.
        stopped: one of :data:`STOP_REASONS`: "steps" (all of them), "patience" (no improvement in ``patience``
            evaluations), "converged" (a step moved nothing), "time" (``max_seconds``), "cancelled" (the
            callback returned False), "non-finite" (the loss became NaN/Inf; rolled back to the best).
        seconds: wall-clock time of the whole call.
        num_train, num_val: the number of training and validation images.
        notes: anything the caller should know (a start moved into range, a roll-back).
    """

    params: CRFParams
    start: CRFParams
    iterations: int
    learned: tuple[str, ...]
    loss: list[float]
    val_loss: list[float]
    val_miou: list[float]
    eval_steps: list[int]
    miou_before: float
    miou_after: float
    miou_on: str
    best_step: int
    steps_run: int
    stopped: str
    seconds: float
    num_train: int
    num_val: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The fit in a few numbers: the JSON's ``"fit"`` entry."""
        return {
            "learned": list(self.learned),
            "train_images": self.num_train,
            "val_images": self.num_val,
            "steps_run": self.steps_run,
            "best_step": self.best_step,
            "stopped": self.stopped,
            "miou_on": self.miou_on,
            "miou_before": round(self.miou_before, 6),
            "miou_after": round(self.miou_after, 6),
        }

    def to_json(self) -> str:
        """The parameters as the app's download (:func:`lab.explore.params_to_json`, ``iterations`` = T).

        ``crf-lab refine --params`` and the app read it; the extra ``"fit"`` key (:meth:`summary`) is kept
        by :func:`lab.explore.params_from_json` among the other keys and ignored by both.
        """
        from lab.explore import params_to_json

        return params_to_json(self.params, iterations=self.iterations, fit=self.summary())


def _learn(learn: object) -> tuple[str, ...]:
    names = (learn,) if isinstance(learn, str) else learn
    if not isinstance(names, Sequence) or not names:
        raise ValueError(f"learn: expected a non-empty subset of {list(LEARNABLE)}, got {learn!r}")
    for n in names:
        if n not in LEARNABLE:
            raise ValueError(f"learn: expected names among {list(LEARNABLE)}, got {n!r}")
    return tuple(n for n in LEARNABLE if n in names)


def _plain(params: object) -> CRFParams:
    """The start as plain values (0-d tensors as floats, tensors detached), checked finite."""
    if params is None:
        return CRFParams()
    if not isinstance(params, CRFParams):
        raise TypeError(f"params: expected a CRFParams, got {type(params).__name__}")
    values = {}
    for name in ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "compat"):
        v = getattr(params, name)
        if isinstance(v, torch.Tensor):
            v = v.detach().to("cpu", torch.float32).clone()
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"params.{name}: expected finite values, got {v.tolist()}")
            v = float(v) if v.dim() == 0 else v
        elif not isinstance(v, str) and not math.isfinite(v):
            raise ValueError(f"params.{name}: expected a finite number, got {v!r}")
        values[name] = v
    return CRFParams(**values, normalize=params.normalize, window_size=params.window_size)


def _scores(ex: Example, params: CRFParams, iterations: int, kernels: CRFKernels | None) -> torch.Tensor:
    return mean_field(ex.unary, ex.image, params, iterations=iterations, keep=None, kernels=kernels).logits


@torch.no_grad()
def _evaluate(examples, kernels, params: CRFParams, iterations: int, num_labels: int) -> tuple[float, float]:
    """(mean per-image loss, pooled mIoU) of ``params`` on ``examples``; a FloatingPointError passes through."""
    from lab.train.metrics import confusion_matrix, mean_iou

    losses, confusion = [], torch.zeros(num_labels, num_labels, dtype=torch.int64)
    for ex, k in zip(examples, kernels, strict=True):
        logits = _scores(ex, params, iterations, k)
        losses.append(float(F.cross_entropy(logits, ex.labels, ignore_index=-1)))
        confusion += confusion_matrix(logits.argmax(1), ex.labels, num_labels)
    return sum(losses) / len(losses), mean_iou(confusion)


@dataclass(frozen=True)
class _Options:
    """The loop's settings, checked (each error names its argument)."""

    iterations: int
    steps: int
    lr: float
    compat_lr: float
    patience: int
    eval_every: int
    min_delta: float
    max_seconds: float | None
    monitor: str

    def __post_init__(self) -> None:
        check_choice(self.monitor, "monitor", MONITORS)
        check_int(self.iterations, "iterations", 1)
        check_int(self.steps, "steps", 0)
        check_positive(self.lr, "lr")
        check_positive(self.compat_lr, "compat_lr")
        check_int(self.patience, "patience", 1)
        check_int(self.eval_every, "eval_every", 1)
        if not 0 <= check_number(self.min_delta, "min_delta") < 1:
            raise ValueError(f"min_delta: expected a relative improvement in [0, 1), got {self.min_delta!r}")
        if self.max_seconds is not None:
            check_positive(self.max_seconds, "max_seconds")


def fit_crf(
    images: object,
    unaries: object,
    labels: object,
    *,
    learn: Sequence[str] | str = LEARNABLE,
    iterations: int = 5,
    steps: int = 100,
    ignore_index: int = 255,
    val: tuple[object, object, object] | None = None,
    params: CRFParams | None = None,
    lr: float = 0.05,
    compat_lr: float = 0.01,
    patience: int = 10,
    eval_every: int = 1,
    min_delta: float = 1e-4,
    monitor: str = "loss",
    max_seconds: float | None = None,
    seed: int = 0,
    progress: bool | Callable[[int, int, float], object] = True,
) -> FitResult:
    """Learn the CRF's bandwidths θ, kernel weights w and compatibility µ from a few labelled images.

    The unaries stay fixed; Adam moves log θ, the weights through w = W_MAX·sigmoid(z) (0 < w < 100) and µ
    (from the start's µ, Potts by default, at its own lower rate ``compat_lr``); see :mod:`lab.fit.space`.
    The loss is the per-pixel cross-entropy of the CRF's scores after T iterations against the labels
    (``ignore_index`` pixels left out), averaged per image and then over images. When θ is not learned,
    each image's lattices are built once and reused by every step.

    Early stopping: after every ``eval_every`` steps the parameters are evaluated (``monitor``: the
    validation loss, or the training loss without ``val``; or the mIoU); a value that does not improve on
    the best by more than ``min_delta`` (relative) counts against ``patience``, and the best parameters are
    returned. A loss that becomes NaN/Inf rolls back to the best parameters (``stopped="non-finite"``); at the
    start it raises.
    The fit draws no random numbers (every step uses all images, in order), so the result is the same for
    any seed and on every run at a given thread count; ``seed`` seeds a forked torch RNG all the same, so
    that the caller's RNG is untouched and a future stochastic option stays reproducible.

    Args:
        images: one image or a sequence: (H, W, 3) uint8 arrays or (3, H, W) tensors in 0..255 (sizes may
            differ). See :mod:`lab.fit.inputs` for every accepted form.
        unaries: per image an (L, H, W) (or (1, L, H, W)) U of log-probabilities or logits, or a callable
            ``image (H, W, 3) uint8 -> U`` (a tuple ``(U, names)`` as :func:`lab.unary.voc.voc_unary`
            returns is accepted; wrap it for a temperature, e.g. ``lambda im: voc_unary(im, 2.0)``).
        labels: per image an (H, W) integer map of class ids 0..L−1, ``ignore_index`` for unlabelled pixels.
        learn: a subset of ("weights", "compat", "bandwidths"); the rest stay exactly at the start.
        iterations: T ≥ 1 mean-field iterations (the JSON records T: fitted weights suit that T).
        steps: the most gradient steps (≥ 0).
        ignore_index: the label value that marks unlabelled pixels.
        val: None, or held-out ``(images, unaries, labels)`` in the same forms: they decide early stopping
            and the mIoU before / after.
        params: the start (default :class:`CRFParams`()); its normalisation and window size are kept.
        lr: Adam's rate for log θ and the weights' z.
        compat_lr: Adam's rate for µ.
        patience: evaluations without improvement before stopping.
        eval_every: steps between evaluations.
        min_delta: the relative improvement on the best value that counts.
        monitor: "loss" (the validation loss, else the training loss) or "miou" (the validation mIoU, else
            the training images' mIoU, one more forward pass per evaluation).
        max_seconds: a wall-clock budget for the call, checked after each step (None: none).
        seed: seeds the forked torch RNG (see above).
        progress: True prints a bar on stderr, False nothing; a callable gets ``(step, total, loss)`` after
            every step (the training loss of that step) and stops the fit by returning False.

    Returns:
        A :class:`FitResult`; ``result.to_json()`` is what ``crf-lab refine --params`` and the app read.

    Raises:
        ValueError, TypeError: a bad argument (the message names it, and the image's index).
        FloatingPointError: the loss at the starting parameters is not finite.

    Example:
        >>> from lab.data.synthetic import render_scene
        >>> from lab.unary import unary_from_labels
        >>> scene = render_scene(0, 32)
        >>> labels = torch.from_numpy(scene.label.astype("int64"))
        >>> unary = unary_from_labels(labels[None], 6, gt_prob=0.6, zero_unsure=False)[0]
        >>> result = fit_crf(scene.image, unary, labels, learn="weights", steps=3, progress=False)
        >>> result.steps_run, result.stopped, result.miou_on, len(result.loss)
        (3, 'steps', 'train', 3)
    """
    t0 = time.perf_counter()
    learned = _learn(learn)
    opts = _Options(iterations, steps, lr, compat_lr, patience, eval_every, min_delta, max_seconds, monitor)
    check_int(seed, "seed", 0)
    start = _plain(params)
    train, num_labels = prepare(images, unaries, labels, ignore_index)
    held: list[Example] = []
    if val is not None:
        if not isinstance(val, (tuple, list)) or len(val) != 3:
            raise TypeError("val: expected None or a tuple (images, unaries, labels)")
        held, val_labels = prepare(*val, ignore_index, where="val")
        if val_labels != num_labels:
            raise ValueError(f"val.unaries: expected L = {num_labels} labels like unaries, got {val_labels}")
    report, close = progress_reporter(progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return _fit(train, held, num_labels, start, learned, opts, report, t0)
        finally:
            close()


def _fit(
    train: list[Example],
    held: list[Example],
    num_labels: int,
    start: CRFParams,
    learned: tuple[str, ...],
    opts: _Options,
    report: Callable | None,
    t0: float,
) -> FitResult:
    iterations, steps, patience, eval_every = opts.iterations, opts.steps, opts.patience, opts.eval_every
    space = NaturalParams(start, num_labels, learned)
    if not space.finite():
        raise ValueError("params: expected finite values")
    start = space.detached()
    fixed = not space.learn_theta  # the lattices depend on θ only: build them once per image
    train_k = [CRFKernels(ex.image, start) if fixed else None for ex in train]
    held_k = [CRFKernels(ex.image, start) if fixed else None for ex in held]
    opt = torch.optim.Adam(space.groups(opts.lr, opts.compat_lr))
    watch, watch_k = (held, held_k) if held else (train, train_k)
    try:
        _, miou_before = _evaluate(watch, watch_k, start, iterations, num_labels)
    except FloatingPointError as exc:
        raise FloatingPointError(f"fit_crf: the starting parameters give a non-finite loss ({exc})") from None
    loss, val_loss, val_miou, eval_steps, notes = [], [], [], [], list(space.notes)
    best_value, best_state, best_step, bad, stopped, k = math.inf, space.snapshot(), 0, 0, "steps", 0
    out_of_time = False
    while True:
        at_end = k >= steps or out_of_time
        step_loss = None
        try:
            if not at_end:
                opt.zero_grad(set_to_none=True)
                step_loss = 0.0
                for ex, kern in zip(train, train_k, strict=True):
                    part = F.cross_entropy(_scores(ex, space.params(), iterations, kern), ex.labels, ignore_index=-1)
                    (part / len(train)).backward()
                    step_loss += float(part.detach()) / len(train)
                loss.append(step_loss)
            value = None
            if held and (k % eval_every == 0 or at_end):
                v_loss, v_miou = _evaluate(held, held_k, space.detached(), iterations, num_labels)
                val_loss.append(v_loss)
                val_miou.append(v_miou)
                eval_steps.append(k)
                value = v_loss if opts.monitor == "loss" else -v_miou
            elif not held and (k % eval_every == 0 or at_end):
                value = step_loss if opts.monitor == "loss" else None
                if value is None:  # the mIoU, or the last parameters' loss (no step computed it)
                    t_loss, t_miou = _evaluate(train, train_k, space.detached(), iterations, num_labels)
                    value = t_loss if opts.monitor == "loss" else -t_miou
                eval_steps.append(k)
            grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in space.parameters())
            finite = grads_ok and all(v is None or math.isfinite(v) for v in (step_loss, value))
        except FloatingPointError:  # mean field's own guard: Q became NaN/Inf
            finite = False
        if not finite:
            if k == 0:
                raise FloatingPointError("fit_crf: the loss at the starting parameters is not finite")
            space.load_state_dict(best_state)
            notes.append(f"the loss became NaN/Inf after {k} steps: rolled back to the parameters of step {best_step}")
            stopped = "non-finite"
            break
        if value is not None:
            if value < best_value - opts.min_delta * abs(best_value) or not math.isfinite(best_value):
                best_value, best_state, best_step, bad = value, space.snapshot(), k, 0
            else:
                bad += 1
                if bad >= patience:
                    stopped = "patience"
                    break
        if at_end:
            break
        before = space.snapshot()
        opt.step()
        space.project()
        k += 1
        after = space.state_dict()
        if max(float((after[n] - before[n]).abs().max()) for n in before) < _CONVERGED_CHANGE:
            stopped = "converged"
            break
        extra = f" val {val_loss[-1]:.4f} mIoU {val_miou[-1]:.3f}" if val_loss else ""
        if report is not None and report(k, steps, step_loss, extra) is False:
            stopped, out_of_time = "cancelled", True
        elif opts.max_seconds is not None and time.perf_counter() - t0 >= opts.max_seconds:
            stopped, out_of_time = "time", True
    space.load_state_dict(best_state)
    fitted = space.detached()
    _, miou_after = _evaluate(watch, watch_k, fitted, iterations, num_labels)
    return FitResult(
        params=fitted,
        start=start,
        iterations=iterations,
        learned=learned,
        loss=loss,
        val_loss=val_loss,
        val_miou=val_miou,
        eval_steps=eval_steps,
        miou_before=miou_before,
        miou_after=miou_after,
        miou_on="val" if held else "train",
        best_step=best_step,
        steps_run=k,
        stopped=stopped,
        seconds=time.perf_counter() - t0,
        num_train=len(train),
        num_val=len(held),
        notes=notes,
    )
