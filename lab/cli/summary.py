"""The record of a ``crf-lab refine`` run: ``summary.json`` and ``summary.csv`` in the output folder.

:class:`RunSummary` collects one entry per input (its status, size, unary source, the unary report's verdict,
the time, the share of pixels the CRF relabelled, the files written, or why it failed or was skipped) and
writes both files all or nothing when the run ends, also after an error, Ctrl-C or a full disk (then as far
as the disk allows). ``summary.json`` also holds the parameters used and the command line. A resumed run
(``--skip-existing``) carries over the entries of the images it skips from the summary already there. A
``summary.json`` / ``summary.csv`` in the output folder that this tool did not write is never overwritten:
the run is refused before any image is read.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

from lab.cli.args import UsageError
from lab.cli.writing import SOFTWARE_TAG

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CSV_COLUMNS = (
    "input",
    "status",
    "size",
    "working_size",
    "labels",
    "unary",
    "verdict",
    "warnings",
    "ms",
    "changed",
    "outputs",
    "error",
)
STATUSES = ("ok", "failed", "skipped", "existing", "not reached")
# the columns of summary.csv files that earlier versions wrote (before "working_size"): theirs too are replaced
EARLIER_COLUMNS = (tuple(c for c in CSV_COLUMNS if c != "working_size"),)


def _csv_header(columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue()


def _ours_json(path: Path) -> dict | None:
    """The summary at ``path`` if this tool wrote it; None if there is none; a UsageError if someone else did."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not (isinstance(doc, dict) and doc.get("tool") == SOFTWARE_TAG and isinstance(doc.get("images"), list)):
        raise UsageError(
            f"--out: {path} exists and was not written by {SOFTWARE_TAG}; it is never overwritten: move it, "
            "or choose another --out"
        )
    return doc


def _check_csv(path: Path) -> None:
    if not path.exists():
        return
    try:
        with open(path, encoding="utf-8") as f:
            head = f.readline()
    except (OSError, UnicodeDecodeError):
        head = ""
    if head not in {_csv_header(c) for c in (CSV_COLUMNS, *EARLIER_COLUMNS)}:
        raise UsageError(
            f"--out: {path} exists and was not written by {SOFTWARE_TAG}; it is never overwritten: move it, "
            "or choose another --out"
        )


class RunSummary:
    """One entry per input, in the order met; :meth:`payloads` gives both files' contents."""

    def __init__(self, out: Path, argv: list[str] | None = None) -> None:
        self.out = out
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.parameters: dict = {}
        self.entries: list[dict] = []
        self.extra: dict = {}  # more top-level keys of summary.json (the ranks of a torchrun run)
        self._previous: dict[str, dict] = {}

    def check(self, shard=None) -> None:
        """Refuse summaries in ``out`` that this tool did not write; remember the entries of one it did.

        Under ``torchrun`` (``shard``: a :class:`lab.cli.ranks.Shard`) this rank's ``summary.rank<k>.json`` too.
        """
        doc = _ours_json(self.out / SUMMARY_JSON)
        _check_csv(self.out / SUMMARY_CSV)
        if shard is not None and shard.world > 1:
            from lab.cli.ranks import part_name

            _ours_json(self.out / part_name(shard.rank))
        if doc:
            self._previous = {e.get("input"): e for e in doc["images"] if isinstance(e, dict)}

    def add(self, path: object, status: str, **fields: object) -> None:
        """An input's entry; ``status`` one of :data:`STATUSES`, ``fields`` among :data:`CSV_COLUMNS`."""
        if status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {status!r}")
        entry = {"input": str(path), "status": status, **fields}
        if status == "existing" and str(path) in self._previous:  # resumed: what the earlier run recorded
            earlier = self._previous[str(path)]
            entry = {**earlier, "status": "existing"}
        self.entries.append(entry)

    def counts(self) -> dict[str, int]:
        """How many entries have each status (only the statuses present)."""
        statuses = [e["status"] for e in self.entries]
        return {s: statuses.count(s) for s in STATUSES if s in statuses}

    def payloads(self) -> dict[Path, bytes]:
        """``summary.json`` and ``summary.csv``'s contents."""
        doc = {
            "tool": SOFTWARE_TAG,
            "command": ["crf-lab", *self.argv],
            "started": self.started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "counts": self.counts(),
            "parameters": self.parameters,
            **self.extra,
            "images": self.entries,
        }
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for e in self.entries:
            row = []
            for column in CSV_COLUMNS:
                value = e.get(column, "")
                if isinstance(value, (list, tuple)):
                    value = "; ".join(map(str, value))
                row.append(value)
            writer.writerow(row)
        return {
            self.out / SUMMARY_JSON: (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode(),
            self.out / SUMMARY_CSV: buf.getvalue().encode(),
        }
