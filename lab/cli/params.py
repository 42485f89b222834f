"""The CRF parameters of a run: the ``--params`` JSON (the app's download), then the flags that override it.

:func:`crf_params` reads the file (UTF-8, a BOM allowed), checks the type of every key the CLI uses
(θ, weights, ``compat``, ``normalize``, ``window_size``, ``iterations``) before :class:`lab.crf.CRFParams`
sees it, applies the flags in :data:`OVERRIDES` one by one so that a bad value names its flag, and returns
the parameters with the number of mean-field iterations; :func:`crf_settings` also gives the working size
(``--working-size``, else the file's ``working_size``, else :data:`lab.explore.defaults.DEFAULT_WORKING_SIZE`).
What neither the file nor a flag sets is :mod:`lab.explore.defaults`' value, the app's too. Every error is a
:class:`lab.cli.args.UsageError`. :func:`mean_field_q` runs mean field with them, as photos and volumes share
it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from lab.cli.args import UsageError

if TYPE_CHECKING:
    from lab.crf import CRFParams

# the CRFParams fields that a flag of the same name (--theta-alpha, ...) overrides
OVERRIDES = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "normalize")


def _is_number(v: object) -> bool:
    """A finite JSON number (not true / false, not NaN / Infinity, not an integer beyond float's range)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _check_params_doc(doc: object, where: str) -> None:
    """The types of the keys the CLI reads from a parameters JSON, each error naming its key."""
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a JSON object (the app's parameters download), got {type(doc).__name__}")

    def bad(key: str, expected: str) -> UsageError:
        return UsageError(f'{where}: "{key}": expected {expected}, got {json.dumps(doc[key])}')

    for key in ("theta_alpha", "theta_beta", "theta_gamma"):
        if key in doc and not _is_number(doc[key]):
            raise bad(key, "a number > 0")
    for key in ("w_bilateral", "w_spatial"):
        v = doc.get(key)
        if key in doc and not (_is_number(v) or (isinstance(v, list) and v and all(map(_is_number, v)))):
            raise bad(key, "a finite number or a list of finite numbers (one per label)")
    if "normalize" in doc and not isinstance(doc["normalize"], str):
        raise bad("normalize", 'one of "after", "symmetric", "none"')
    if "compat" in doc:
        v = doc["compat"]
        square = (
            isinstance(v, list)
            and v
            and all(isinstance(r, list) and len(r) == len(v) and all(map(_is_number, r)) for r in v)
        )
        if v != "potts" and not square:
            raise bad("compat", '"potts" or an L × L list of lists of finite numbers')
    for key, least in (("window_size", 1), ("iterations", 0)):
        v = doc.get(key)
        if key in doc and not (isinstance(v, int) and not isinstance(v, bool) and v >= least):
            raise bad(key, f"an integer >= {least}")
    v = doc.get("working_size")
    if "working_size" in doc and not (isinstance(v, int) and not isinstance(v, bool) and (v == 0 or v >= 8)):
        raise bad("working_size", "an integer >= 8 (the longer side in pixels), or 0 for the image's own size")


def mean_field_q(args: argparse.Namespace, unary, guide, params: CRFParams, iterations: int):
    """Mean field on the CPU as the options say: (Q (L, *spatial) numpy, labels, share of pixels relabelled)."""
    import torch

    from lab.crf import mean_field

    with torch.no_grad():
        trace = mean_field(
            unary,
            guide,
            params,
            iterations=iterations,
            keep=None,
            message_passing=args.message_passing,
            backend=args.backend,
        )
    q = trace.q[0].numpy()
    labels = q.argmax(0)
    return q, labels, float((unary[0].argmax(0).numpy() != labels).mean())


def crf_params(args: argparse.Namespace) -> tuple[CRFParams, int]:
    """The CRF parameters and the iterations T: the ``--params`` JSON, then the flags that override it.

    Each error is a :class:`UsageError` naming the file and the key, or the flag.
    """
    params, iterations, _ = _read(args)
    return params, iterations


def crf_settings(args: argparse.Namespace) -> tuple[CRFParams, int, int]:
    """:func:`crf_params` and the working size (the longer side in pixels; 0 = the image's own size).

    The working size is ``--working-size`` (``--max-side``) when given, else the ``--params`` file's
    ``working_size`` (the app's slider), else :data:`lab.explore.defaults.DEFAULT_WORKING_SIZE`.
    """
    from lab.explore.defaults import DEFAULT_WORKING_SIZE

    params, iterations, extra = _read(args)
    given = getattr(args, "working_size", None)
    size = given if given is not None else extra.get("working_size", DEFAULT_WORKING_SIZE)
    return params, iterations, size


def _read(args: argparse.Namespace) -> tuple[CRFParams, int, dict]:
    from lab.crf import CRFParams
    from lab.explore import params_from_json
    from lab.explore.defaults import DEFAULT_ITERATIONS

    base: dict = {}
    extra: dict = {}
    if args.params:
        where = f"--params {args.params}"
        try:
            raw = Path(args.params).read_bytes()
        except OSError as exc:
            raise UsageError(f"--params: cannot read {args.params} ({exc.strerror})") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start}); "
                "expected the JSON the app downloads"
            ) from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None
        except RecursionError:
            raise UsageError(f"{where}: not valid parameters (nested too deeply)") from None
        _check_params_doc(doc, where)
        try:
            params, extra = params_from_json(text)
        except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:  # float() of 1e999 overflows
            raise UsageError(f"{where}: {exc}") from None
        base = {name: getattr(params, name) for name in (*OVERRIDES, "compat", "window_size")}
    for name in OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            try:
                CRFParams(**{name: value})  # the flag alone, so that the message names the flag
            except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
                raise UsageError(f"--{name.replace('_', '-')}: {str(exc).removeprefix(f'{name}: ')}") from None
            base[name] = value
    try:
        params = CRFParams(**base)
    except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    iterations = args.iterations if args.iterations is not None else extra.get("iterations", DEFAULT_ITERATIONS)
    if iterations < 0:
        raise UsageError(f"--iterations: expected an integer >= 0, got {iterations}")
    return params, iterations, extra
