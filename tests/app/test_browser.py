"""The app in a real browser: Streamlit served on 127.0.0.1, driven by Playwright in Debian's Chromium.

Never downloads a browser: it uses /usr/bin/chromium (Debian's package: `make setup-browser`, as root) and
skips with the reason when that or the playwright package is missing. Screenshots go to artifacts/.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytest.importorskip("streamlit", reason="the app extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} not found (Debian's chromium package: run `make setup-browser` as root)", allow_module_level=True
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app" / "streamlit_app.py"),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not answer its health check within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def metric(page, label):
    box = page.locator('[data-testid="stMetric"]', has_text=label)
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_browser_upload_and_knob(server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (30, 60, 200)
    img[:, 32:] = (230, 200, 40)
    img[10:38, 20:44] = (200, 30, 30)
    from PIL import Image

    path = tmp_path / "blocks.png"
    Image.fromarray(img).save(path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.goto(server)
        page.get_by_text("Pixels changed vs unary").wait_for(timeout=180_000)
        # 2 overlays + 4 per-iteration maps + the KL curve
        page.wait_for_function("document.querySelectorAll('img').length >= 7", timeout=120_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "app_default.png"))  # docs/app.png is a copy of this
        # upload our image
        sidebar = page.locator('[data-testid="stSidebar"]')  # the page's ground-truth uploader is outside it
        sidebar.get_by_text("Upload", exact=True).click()  # the image-source radio option
        sidebar.locator('input[type="file"]').first.set_input_files(str(path))
        page.get_by_text("blocks.png: 64×48").wait_for(timeout=120_000)
        # T → 0 with the keyboard: the Q map must equal the unary's labels
        slider = page.locator('input[type="range"][aria-label="Iterations T"]')  # streamlit 1.67: react-aria
        slider.focus()
        for _ in range(5):
            slider.press("ArrowLeft")
        page.get_by_text("0 iterations (ms)").wait_for(timeout=120_000)
        page.wait_for_timeout(500)
        assert metric(page, "Pixels changed vs unary") == "0"
        page.screenshot(path=str(ARTIFACTS / "app_browser.png"))
        browser.close()
