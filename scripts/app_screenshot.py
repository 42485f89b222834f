"""docs/app.png, the README's picture of the app: the app served headless and photographed in Chromium.

    python scripts/app_screenshot.py                    # writes docs/app.png
    python scripts/app_screenshot.py --out /tmp/app.png --width 1400 --height 900

The app as a new user first sees it (the bundled cat photo, the VOC network's unary, the default knobs), once
the page is idle and its images are loaded, in a 1280 px wide window tall enough to show the tabs of views.
Uses lab.explore.browser (Debian's /usr/bin/chromium through Playwright; exits with status 2 saying why when
either is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.explore import browser as web

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Serve the app, wait for its first view, and photograph it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app.png", help="where the PNG goes")
    parser.add_argument("--width", type=int, default=1280, help="window width (px)")
    parser.add_argument("--height", type=int, default=1040, help="window height (px)")
    args = parser.parse_args()
    reason = web.missing()
    if reason:
        print(f"app_screenshot: cannot run: {reason}.", file=sys.stderr)
        raise SystemExit(2)
    from playwright.sync_api import sync_playwright

    with web.served() as url, sync_playwright() as p:
        browser = web.launch(p)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        page.get_by_text("Pixels changed vs unary").wait_for(timeout=300_000)
        page.get_by_text("Classes shown:").first.wait_for(timeout=300_000)
        web.wait_idle(page, 300_000, settle_ms=2000)
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out} ({args.width} × {args.height})")


if __name__ == "__main__":
    main()
