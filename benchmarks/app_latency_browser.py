"""How fast the app answers in a real browser: one control moved → the result image on screen changed.

    python benchmarks/app_latency_browser.py                 # 256 px working size, colour clusters, T = 5
    python benchmarks/app_latency_browser.py --side 512 --repeat 5

Serves app/streamlit_app.py headless on 127.0.0.1 and drives Debian's Chromium (/usr/bin/chromium, never a
downloaded browser) with Playwright. Per control it presses an arrow key on the focused widget (sliders move
by their step, the inspector's x input by 1) and times, in the page's own clock, from the key press until the
image that control changes has a new source and Streamlit shows no running script. The controls: w spatial
and T (lattices cached), θα (lattice rebuilt), the t scrubber (no inference: the trace is kept), the label
opacity (redraw only) and the inspector's x. Prints a Markdown table (median and max per control).

Exits with a message (status 2) when Chromium or the playwright package is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "streamlit_app.py"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# (what, the widget's aria-label, the caption prefix of the image it changes, the key pressed)
CONTROLS = (
    ("w spatial (lattices cached)", "w spatial", "Q_", "ArrowRight"),
    ("iterations T (lattices cached)", "Iterations T", "Q_", "ArrowLeft"),
    ("θα (lattice rebuilt)", "θα: bilateral spatial width (px)", "Q_", "ArrowRight"),
    ("t scrubber (kept trace)", "Show iteration t", "Q_", "ArrowLeft"),
    ("label opacity (redraw)", "Label opacity over the photo", "Q_", "ArrowRight"),
    ("inspector x", "x (column)", "The bilateral kernel's footprint", "ArrowUp"),
)
# the src of the first image whose caption starts with the prefix; "" while none
IMAGE_SRC = """prefix => {
  for (const fig of document.querySelectorAll('[data-testid="stImage"], [data-testid="stImageContainer"]')) {
    const cap = fig.querySelector('[data-testid="stImageCaption"], [data-testid="caption"]');
    const img = fig.querySelector('img');
    if (img && cap && cap.innerText.startsWith(prefix)) return img.currentSrc || img.src;
  }
  return "";
}"""
# no script running: Streamlit's status widget says "Running…" while one does, and no spinner is up
IDLE = """() => {
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  return !(status && /running/i.test(status.innerText)) && !document.querySelector('[data-testid="stSpinner"]');
}"""


def missing() -> str | None:
    """Why the benchmark cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found: install Debian's chromium package (`make setup-browser`, as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the dev extra: pip install -e .[dev])"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
        "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_stcore/health"
    for _ in range(240):
        try:
            if urllib.request.urlopen(url, timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("streamlit did not answer its health check within 120 s")


def widget(page, label: str):
    """The focusable input of the widget with this aria-label (sliders are react-aria range inputs)."""
    return page.locator(f'input[aria-label="{label}"]').first


def time_control(page, label: str, prefix: str, key: str, repeat: int, timeout_ms: int) -> list[float]:
    times = []
    for r in range(repeat):
        before = page.evaluate(IMAGE_SRC, prefix)
        field = widget(page, label)
        field.focus()
        # alternate the direction so the control stays in its range
        press = key if r % 2 == 0 else {"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}.get(key, "ArrowDown")
        t0 = page.evaluate("performance.now()")
        field.press(press)
        if label == "x (column)":
            field.press("Enter")  # a number input commits on Enter (or blur)
        page.wait_for_function(
            f"prefix => ({IMAGE_SRC})(prefix) !== {json.dumps(before)} && ({IDLE})()", arg=prefix, timeout=timeout_ms
        )
        times.append(page.evaluate("performance.now()") - t0)
        page.wait_for_timeout(300)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=256, help="working size (longer side) in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="key presses per control")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for one change")
    args = parser.parse_args()
    reason = missing()
    if reason:
        print(f"app_latency_browser: cannot run: {reason}.", file=sys.stderr)
        raise SystemExit(2)
    from machine import describe
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc = serve(port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_text("Pixels changed vs unary").wait_for(timeout=300_000)
            # the working size and the built-in unary, set through the widgets like a user would
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Colour clusters (built-in)", exact=True).click()
            page.wait_for_function(IDLE, timeout=300_000)
            size = widget(page, "Working size (longer side, px)")
            size.focus()
            for _ in range(64):  # slider steps of 32 px from wherever it is down to 64, then up to --side
                size.press("ArrowLeft")
            for _ in range((args.side - 64) // 32):
                size.press("ArrowRight")
            page.get_by_text(f"working at {args.side}").first.wait_for(timeout=300_000)
            page.wait_for_function(IDLE, timeout=300_000)
            rows = []
            for what, label, prefix, key in CONTROLS:
                times = time_control(page, label, prefix, key, args.repeat, int(args.timeout * 1000))
                rows.append((what, statistics.median(times), max(times)))
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"# App latency in Chromium, {time.strftime('%Y-%m-%d')}\n")
    print(describe(f"working size {args.side} px (the default photo), colour clusters, {args.repeat} presses") + "\n")
    print("| control: key press → its image changed, script idle | median ms | max ms |\n|---|---|---|")
    for what, median, top in rows:
        print(f"| {what} | {median:.0f} | {top:.0f} |")


if __name__ == "__main__":
    main()
