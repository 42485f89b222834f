"""``crf-lab refine --workers N``: the inputs refined in N worker processes on one machine.

Each worker is a fresh (spawned) process that runs single-threaded (``torch.set_num_threads(1)``,
``NUMBA_NUM_THREADS=1``, ``OMP_NUM_THREADS=1``: N workers use N cores), loads the VOC network once if the run
uses it, and only computes: :func:`lab.cli.batch.compute` gives an input's file contents and summary fields,
which go back to the batch's process. That process writes every file (all or nothing, as without workers)
and the record, in the inputs' order. Workers ignore SIGINT: the batch's process decides, ends them
(:func:`pooled` terminates them when it is closed) and records the inputs in flight as "not reached". A
worker that dies (killed by the OS, say) breaks the pool: a new one is started and the inputs that were in
flight are tried once more; an input in flight at two such deaths is recorded as failed.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

__all__ = ["pooled"]

_STATE: dict = {}
# how many times an input may be in flight when a worker dies before it is recorded as failed
TRIES = 2


def _start_worker(args: argparse.Namespace, params, iterations: int) -> None:
    """A worker's set-up: one thread, SIGINT left to the batch's process, the VOC network loaded once."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"  # before Numba is imported (lab.cli's imports leave it out)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)
    voc = None
    if args.unary == "voc":
        from lab.unary.voc import VOCSegmenter

        voc = VOCSegmenter().__enter__()  # for the worker's life
    _STATE.update(args=args, params=params, iterations=iterations, voc=voc)


def _work(path: Path, targets: dict[str, Path]) -> tuple:
    """One input in a worker: ("ok", payloads, info, checked, ms) or ("failed", why, ms)."""
    from lab.cli.batch import compute, failure_text

    t0 = time.perf_counter()
    try:
        payloads, info, checked = compute(
            _STATE["args"], path, targets, _STATE["params"], _STATE["iterations"], _STATE["voc"]
        )
    except Exception as exc:  # reported per input, as without workers
        return "failed", failure_text(exc, path), 1e3 * (time.perf_counter() - t0)
    return "ok", payloads, info, checked, 1e3 * (time.perf_counter() - t0)


def _end(pool: ProcessPoolExecutor) -> None:
    """Stop the pool now: pending inputs cancelled, running workers terminated."""
    procs = dict(getattr(pool, "_processes", None) or {})  # the executor's own table; it has no public one
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs.values():
        if proc.is_alive():
            proc.terminate()
    for proc in procs.values():
        proc.join(timeout=10)


def pooled(args: argparse.Namespace, todo: list[Path], plan: dict, params, iterations: int) -> Iterator[tuple]:
    """Yield (input, result) as each input finishes in ``args.workers`` processes; see the module's notes.

    Close the generator (``contextlib.closing``) to end the workers early.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks copied by fork
    queue = collections.deque(todo)
    tries: collections.Counter = collections.Counter()
    flying: dict = {}
    pool = None
    finished = False
    try:
        while queue or flying:
            if pool is None:
                pool = ProcessPoolExecutor(
                    args.workers, mp_context=context, initializer=_start_worker, initargs=(args, params, iterations)
                )
            while queue and len(flying) < args.workers:
                path = queue.popleft()
                flying[pool.submit(_work, path, plan[path])] = path
            done, _ = wait(flying, return_when=FIRST_COMPLETED)
            lost = []  # inputs in flight when a worker died: the whole pool went down with them
            for future in done:
                path = flying.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(path)
                    continue
                yield path, result
            if lost:
                lost += flying.values()
                flying.clear()
                _end(pool)
                pool = None
                for path in reversed(lost):
                    tries[path] += 1
                    if tries[path] < TRIES:
                        queue.appendleft(path)
                    else:
                        why = (
                            f"a worker process died while refining it, {TRIES} times (killed by the OS, out of memory?)"
                        )
                        yield path, ("failed", why, 0.0)
        finished = True
    finally:
        if pool is not None:
            if finished:
                pool.shutdown(wait=True)
            else:
                _end(pool)
