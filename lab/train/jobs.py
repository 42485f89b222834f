"""``python -m lab.train --jobs N``: the seeds trained side by side in N child processes of one thread each.

Training here is many small tensor operations, which use two threads poorly, so on a small CPU a seed per
single-threaded process finishes the table sooner than all seeds in turn on every core (docs/training.md
has the times). Each child runs ``python -m lab.train`` with the parent's arguments and ``--worker-seed K``:
one seed, its checkpoints in the shared directory, and its per-seed result in ``seed<K>/result.pt``. The
parent prints each child's finished stages as whole lines (never interleaved), a live line with every
running seed's current stage and epoch on a terminal, and aggregates the results once all are done.

A child sets ``torch.set_num_threads(1)``: a seed's numbers then do not depend on ``N`` or on the other
children (the same as ``--jobs 1`` run with one thread); a different thread count changes float
summation order, and so the last digits.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["RESULT_FILE", "load_result", "run_seeds_in_children", "save_result"]

RESULT_FILE = "result.pt"
# "[seed 0] crf-rnn epoch 3/5 loss ..." (see lab.train.stages._Progress)
_EPOCH = re.compile(r"^\[seed (\d+)\] (\S+) epoch (\d+)/(\d+)")
_SEED = re.compile(r"^\[seed (\d+)\] (\S+?):? ")


def save_result(checkpoints: Path, seed: int, config: dict, result: dict) -> Path:
    """Write one seed's result (with the configuration that made it) for the parent to aggregate."""
    path = Path(checkpoints) / f"seed{seed}" / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": config, "seed": seed, "result": result}, tmp)
    os.replace(tmp, path)
    return path


def load_result(checkpoints: Path, seed: int, config: dict) -> dict:
    """The result a child wrote for ``seed``; raises if it is missing or was made for another configuration."""
    path = Path(checkpoints) / f"seed{seed}" / RESULT_FILE
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"] != config or state["seed"] != seed:
        raise RuntimeError(f"{path}: expected a result for seed {seed} of this configuration, found another")
    return state["result"]


class _Display:
    """Whole lines for finished stages; on a terminal, one redrawn line with every running seed's stage."""

    def __init__(self, seeds: Sequence[int], stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.current: dict[int, str] = {s: "waiting" for s in seeds}
        self.start = time.perf_counter()

    def _bar(self, done: int, total: int, width: int = 10) -> str:
        k = int(width * done / max(total, 1))
        return "#" * k + "." * (width - k)

    def line(self, text: str) -> None:
        """One child's line: kept if it ends a stage, else only updates the live line."""
        m = _EPOCH.match(text)
        keep = True
        if m:
            seed, stage, epoch, epochs = int(m[1]), m[2], int(m[3]), int(m[4])
            self.current[seed] = f"{stage} [{self._bar(epoch, epochs)}] {epoch}/{epochs}"
            keep = epoch == epochs
        elif (s := _SEED.match(text)) is not None:
            self.current[int(s[1])] = s[2]
        self._write(text if keep else None)

    def status(self, seed: int, text: str) -> None:
        """Set a seed's live status (e.g. "done") and redraw."""
        self.current[seed] = text
        self._write(None)

    def _write(self, text: str | None) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            if text is not None:
                self.stream.write(text + "\n")
            elapsed = time.perf_counter() - self.start
            live = " | ".join(f"s{s}: {c}" for s, c in self.current.items())
            self.stream.write(f"[{elapsed / 60:4.1f} min] {live}"[:200])
        elif text is not None:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_seeds_in_children(argv: Sequence[str], seeds: Sequence[int], jobs: int) -> None:
    """Run ``python -m lab.train ARGV --worker-seed K`` for every seed, at most ``jobs`` at a time.

    Args:
        argv: the parent's arguments (``--jobs`` already removed), passed on to every child.
        seeds: the seeds, started in this order.
        jobs: how many children run at once.

    Raises:
        RuntimeError: a child failed (the others are stopped; its last lines are in the message).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    display = _Display(seeds)
    lines: queue.Queue = queue.Queue()
    pending = list(seeds)
    running: dict[int, subprocess.Popen] = {}
    tails: dict[int, list[str]] = {s: [] for s in seeds}

    def pump(seed: int, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            lines.put((seed, raw.rstrip("\n")))
        lines.put((seed, None))

    def start(seed: int) -> None:
        cmd = [sys.executable, "-m", "lab.train", *argv, "--worker-seed", str(seed)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        running[seed] = proc
        threading.Thread(target=pump, args=(seed, proc), daemon=True).start()
        display.status(seed, "starting")

    try:
        while pending and len(running) < jobs:
            start(pending.pop(0))
        while running:
            seed, text = lines.get()
            if text is not None:
                tails[seed] = (tails[seed] + [text])[-20:]
                display.line(text)
                continue
            code = running.pop(seed).wait()
            if code != 0:
                raise RuntimeError(f"seed {seed}: the child process exited with {code}:\n" + "\n".join(tails[seed]))
            display.status(seed, "done")
            if pending:
                start(pending.pop(0))
    finally:
        for proc in running.values():  # only on failure or interruption: stop the children we started
            proc.terminate()
        for proc in running.values():
            proc.wait()
        display.close()
