"""SIGINT and SIGTERM during a batch: they stop it between images, never half-way through an image's renames.

While the batch runs, :class:`Signals` turns either signal into :class:`Interrupted`, a BaseException that no
per-file handler swallows; the batch reports how far it got and exits with 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM). A signal that arrives while an image's outputs are being renamed into place waits
(:meth:`Signals.deferred`) until the batch has counted the image (:meth:`Signals.check`). Ignored signals
(e.g. under nohup) stay ignored, and the previous handlers come back when the batch ends.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that no per-file handler swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for a process stopped by this signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


class Signals:
    """SIGINT / SIGTERM become :class:`Interrupted`; inside :meth:`deferred` they wait for :meth:`check`.

    The renames that put an image's outputs in place run deferred, and the batch calls :meth:`check` once
    it has counted the image, so a signal never leaves half a set or a wrong count.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.depth = 0
        self.previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.depth:
            self.pending = signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM inside the ``with`` block; the previous handlers afterwards."""
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(s) is not signal.SIG_IGN:  # e.g. nohup: an ignored signal stays ignored
                    self.previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (e.g. main() called from a worker): signals stay as they are
            pass
        try:
            yield
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)
            self.previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals that arrive inside the ``with`` block until :meth:`check`."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def check(self) -> None:
        """Raise :class:`Interrupted` for a signal that arrived while deferred."""
        if self.pending is not None and not self.depth:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
