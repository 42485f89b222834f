"""The fit's progress: a one-line bar on stderr, or the caller's callback ``(step, total, loss)``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["ProgressBar", "progress_reporter"]

_WIDTH = 24  # characters of the bar


class ProgressBar:
    """``fit  12/50 [#####...........] loss 0.4123  2.1 s`` on stderr.

    On a terminal the line is redrawn in place (a carriage return); elsewhere (a log file, a captured stream) a line is
    printed at most every tenth of the steps, and the last one, so a log stays short.
    """

    def __init__(self, stream=None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.last_tenth = -1
        self.open = False

    def __call__(self, step: int, total: int, loss: float, extra: str = "") -> None:
        """Draw the bar after ``step`` of ``total`` steps."""
        filled = _WIDTH * step // max(total, 1)
        line = (
            f"fit {step:>{len(str(total))}}/{total} [{'#' * filled}{'.' * (_WIDTH - filled)}] loss {loss:.4f}"
            f"{extra}  {time.perf_counter() - self.t0:.1f} s"
        )
        if self.tty:
            self.stream.write("\r" + line)
            self.open = True
        else:
            tenth = 10 * step // max(total, 1)
            if tenth == self.last_tenth and step != total:
                return
            self.last_tenth = tenth
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def progress_reporter(progress: bool | Callable) -> tuple[Callable | None, Callable[[], None]]:
    """(report(step, total, loss, extra) → bool | None, close()) for ``fit_crf``'s ``progress`` argument."""
    if progress is True:
        bar = ProgressBar()
        return bar, bar.close
    if progress is False or progress is None:
        return None, lambda: None
    if callable(progress):
        return (lambda step, total, loss, extra="": progress(step, total, loss)), lambda: None
    raise TypeError(f"progress: expected True, False or a callable (step, total, loss), got {type(progress).__name__}")
