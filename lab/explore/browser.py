"""The app served on 127.0.0.1 and opened in Debian's Chromium through Playwright.

Shared by the real-browser test (``tests/app/test_browser.py``), the latency benchmark
(``benchmarks/app_latency.py``) and the README's screenshot (``scripts/app_screenshot.py``). Never downloads a
browser: it drives ``/usr/bin/chromium`` (``make setup-browser``, as root); :func:`missing` says why it cannot
run where it cannot.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
CHROMIUM = "/usr/bin/chromium"
# headless in a container as root: no sandbox, no GPU, nothing that reaches the network
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# no script running: Streamlit's status widget says "Running…" while one does, and no spinner is up
IDLE = """() => {
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  return !(status && /running/i.test(status.innerText)) && !document.querySelector('[data-testid="stSpinner"]');
}"""


def missing() -> str | None:
    """Why the app cannot be driven in a browser here (no Chromium, no playwright package), or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found (Debian's chromium package: run `make setup-browser` as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the dev extra: pip install -e .[dev])"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(app: Path = APP, timeout_s: float = 120.0, log=subprocess.DEVNULL) -> Iterator[str]:
    """``streamlit run app`` headless on a free port; yields its URL once it answers its health check.

    Args:
        app: the script to serve.
        timeout_s: how long to wait for the health check before raising ``RuntimeError``.
        log: where the server's output goes (a file, ``subprocess.PIPE``, or DEVNULL).
    """
    port = free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
        "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=Path(app).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with status {proc.returncode} before answering") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not answer its health check within {timeout_s:g} s") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def launch(playwright):
    """Chromium from ``/usr/bin/chromium`` with :data:`FLAGS`, from a ``sync_playwright()`` context."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def wait_idle(page, timeout_ms: int = 180_000, settle_ms: int = 500) -> None:
    """Wait until no script runs and no spinner is up, then ``settle_ms`` more for the page to draw."""
    page.wait_for_function(IDLE, timeout=timeout_ms)
    if settle_ms:
        page.wait_for_timeout(settle_ms)
