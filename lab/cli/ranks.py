"""Beyond one machine: the same ``crf-lab refine`` under ``torchrun`` splits the inputs by rank.

Each process reads its rank and the number of processes from ``RANK`` and ``WORLD_SIZE`` (set by torchrun,
or by hand) and refines ``files[rank::world]`` of the inputs in sorted order (:func:`shard_files`), so every
input is refined by exactly one rank whatever order the ranks start in. No process group is needed: the
ranks never talk to each other, only through the output folder.

torchrun's agent ends every rank (SIGTERM) as soon as one exits with an error. So a rank whose own images
partly failed, which exits with status 1, first waits until every other rank of the run has written its
part (:func:`wait_for_peers`): a bad file on one rank never stops the others' work. A rank that is killed or
stops on a usage error still ends the others; each of them records how far it got and names
``--skip-existing`` to finish.

The record: each rank writes its entries to ``summary.rank<k>.json`` when it ends (also after a failure,
Ctrl-C or a full disk), then, holding an exclusive lock on ``.summary.lock`` in the output folder, merges
every rank's part of this run into summary.json / summary.csv (:func:`write_part_and_merge`). The last rank
to finish therefore writes the complete record; until then (or for good, if a rank died without writing) the
inputs of a rank with no part are listed as "not reached", naming the rank. Parts of an earlier run
(another ``TORCHELASTIC_RUN_ID``, or another world size) are never merged. The part files stay beside the
merged record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.cli.args import UsageError

__all__ = [
    "Shard",
    "part_name",
    "shard_files",
    "shard_from_env",
    "under_agent",
    "wait_for_peers",
    "write_part_and_merge",
]

LOCK_NAME = ".summary.lock"


@dataclass(frozen=True)
class Shard:
    """This process's rank among ``world`` processes, and what tells this run's ranks apart from others'."""

    rank: int = 0
    world: int = 1
    run_id: str = ""

    @property
    def label(self) -> str:
        """``"rank k/W"`` under torchrun, else ``""``."""
        return f"rank {self.rank}/{self.world}" if self.world > 1 else ""


def _env_int(environ, name: str, least: int) -> int:
    text = environ.get(name, "")
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise UsageError(f"{name}: expected an integer >= {least} (as torchrun sets it), got {text!r}")
    return value


def shard_from_env(environ=None) -> Shard:
    """The shard that ``RANK`` / ``WORLD_SIZE`` name (torchrun's variables); rank 0 of 1 without them.

    Example:
        >>> shard_from_env({"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"})
        Shard(rank=1, world=2, run_id='x')
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ and "RANK" not in environ:
        return Shard()
    world = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0)
    if rank >= world:
        raise UsageError(f"RANK: expected 0..{world - 1} (WORLD_SIZE is {world}), got {rank}")
    run = environ.get("TORCHELASTIC_RUN_ID") or f"{environ.get('MASTER_ADDR', '')}:{environ.get('MASTER_PORT', '')}"
    return Shard(rank, world, run)


def shard_files(files: list[Path], shard: Shard | None) -> list[Path]:
    """This rank's inputs: every ``world``-th of them in sorted order, from the ``rank``-th; all of them alone.

    Example:
        >>> [p.name for p in shard_files([Path(n) for n in "edcba"], Shard(1, 2))]
        ['b', 'd']
    """
    if shard is None or shard.world == 1:
        return list(files)
    return sorted(files, key=str)[shard.rank :: shard.world]


def part_name(rank: int) -> str:
    """The file name of a rank's part of the record."""
    return f"summary.rank{rank}.json"


def _read_part(path: Path, shard: Shard) -> dict | None:
    """A part of this run's record (the same run id and world size), or None."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ours = isinstance(doc, dict) and isinstance(doc.get("images"), list)
    if not ours or doc.get("run_id") != shard.run_id or doc.get("world_size") != shard.world:
        return None
    return doc


def write_part_and_merge(summary, shard: Shard, everything: list[Path]) -> list[Path]:
    """Write this rank's part, then summary.json / .csv from every part of this run; returns the files written.

    ``summary`` is this rank's :class:`lab.cli.summary.RunSummary`; ``everything`` all ranks' inputs.
    """
    from lab.cli.signals import Signals
    from lab.cli.summary import SUMMARY_JSON, RunSummary
    from lab.cli.writing import write_outputs

    out = summary.out
    mask = os.umask(0)
    os.umask(mask)
    mode = 0o666 & ~mask
    mine = json.loads(summary.payloads()[out / SUMMARY_JSON])
    mine.update(rank=shard.rank, world_size=shard.world, run_id=shard.run_id)
    part = out / part_name(shard.rank)
    with open(out / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one rank at a time writes its part and merges: the last sees all
        try:
            write_outputs({part: (json.dumps(mine, indent=2, ensure_ascii=False) + "\n").encode()}, Signals(), mode)
            parts = {k: _read_part(out / part_name(k), shard) for k in range(shard.world)}
            parts = {k: doc for k, doc in parts.items() if doc is not None}
            merged = RunSummary(out, summary.argv)
            merged.parameters = summary.parameters
            merged.started = min(doc.get("started", summary.started) for doc in parts.values())
            entries = {}
            skipped = []  # entries of inputs that are no file to refine (rank 0 records them)
            names = {str(p) for p in everything}
            for k in sorted(parts):
                for e in parts[k]["images"]:
                    if isinstance(e, dict) and e.get("input") in names:
                        entries[e["input"]] = e
                    elif isinstance(e, dict):
                        skipped.append(e)
            missing = [k for k in range(shard.world) if k not in parts]
            merged.entries = list(skipped)
            for i, path in enumerate(sorted(everything, key=str)):
                e = entries.get(str(path))
                if e is None:
                    k = i % shard.world
                    e = {
                        "input": str(path),
                        "status": "not reached",
                        "error": f"rank {k} of {shard.world} wrote no "
                        "record (it failed before its end, was killed, or is still running)",
                    }
                merged.entries.append(e)
            merged.extra = {"ranks": {"world_size": shard.world, "recorded": sorted(parts), "missing": missing}}
            payloads = merged.payloads()
            write_outputs(payloads, Signals(), mode)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)
    return [part, *payloads]


def under_agent(environ=None) -> bool:
    """True when torchrun's agent started this process.

    The agent sets ``TORCHELASTIC_MAX_RESTARTS``; a hand-set ``RANK`` / ``WORLD_SIZE`` does not.

    Example:
        >>> under_agent({"RANK": "0", "WORLD_SIZE": "2"})
        False
    """
    environ = os.environ if environ is None else environ
    return "TORCHELASTIC_MAX_RESTARTS" in environ


def wait_for_peers(out: Path, shard: Shard, poll: float = 0.2) -> None:
    """Return once every other rank of this run has written its part in ``out``.

    Called by a rank about to exit with an error under torchrun, whose agent would otherwise end the ranks
    still working. There is no time limit: a rank that dies ends this one too (the agent's SIGTERM), and a
    signal stops the wait like any other (:class:`lab.cli.signals.Interrupted`).
    """
    others = [k for k in range(shard.world) if k != shard.rank]
    announced = False
    while True:
        left = [k for k in others if _read_part(out / part_name(k), shard) is None]
        if not left:
            return
        if not announced:
            names = ", ".join(map(str, left))
            print(
                f"{shard.label}: waiting for rank{'s' if len(left) > 1 else ''} {names} to end before exiting "
                "with status 1 (torchrun stops every rank once one exits with an error)",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        time.sleep(poll)
