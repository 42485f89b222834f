"""What a batch prints while it runs: one line per input and, on a terminal, a progress bar (tqdm).

:class:`Progress` shows tqdm's bar on stderr when stderr is a terminal and ``--quiet`` is not given; the
per-input lines then print above the bar (``tqdm.write``) so that it stays on the last line. With
``--quiet`` the bar and the lines of inputs refined without a warning are left out; failures, skips, warnings
and the final count still print. Without a terminal (a log file, a pipe, CI) there is no bar, only the lines.
"""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """The bar (or none) and the per-input lines of one run over ``total`` inputs."""

    def __init__(self, total: int, quiet: bool = False, label: str = "") -> None:
        self.quiet = quiet
        self.bar = None
        stream = sys.stderr
        if not quiet and total and getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=stream, unit="image", desc=label or None, dynamic_ncols=True, leave=False)

    def line(self, text: str, *, routine: bool = False) -> None:
        """Print one input's line; ``routine`` lines (refined, no warning) are left out under ``--quiet``."""
        if self.quiet and routine:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def advance(self) -> None:
        """One more input done."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        """Remove the bar (the final count prints after it)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
