"""How fast the app answers in a real browser: one control moved → its image on screen changed.

    python benchmarks/app_latency.py                      # astronaut at 512 × 512 (0.25 MP), VOC unary
    python benchmarks/app_latency.py --side 256 --unary clusters --repeat 5

Serves app/streamlit_app.py headless on 127.0.0.1 (lab.explore.browser) and drives Debian's Chromium
(/usr/bin/chromium, never a downloaded browser) with Playwright. The photo is astronaut (512 × 512: exactly
0.25 MP at --side 512), the unary the VOC network (L = 21, the app's default) or colour clusters (L = 4).

Per control it presses an arrow key on the focused widget, always the same way, so that every press asks for a
value not seen before (sliders move by their step, the inspector's x input by 1), and times from the key press
until the script run it caused has finished (Streamlit's script_finished message on the page's websocket,
which also says whether the run was the whole app or the results fragment) and the page is idle with its
images loaded; it counts the bytes that answer brought (websocket frames and media fetched), and also reports
when the run's script_finished message reached the page (the rest of an answer is the browser drawing it).
With the "Up close" tab open (the default): w spatial and T (lattices cached), θα (lattice rebuilt), the t
scrubber (no inference: the trace is kept), the label opacity (redraw only); then, with the "Pixel inspector"
tab open (the heaviest view), its x input and w spatial again. Opening that tab is timed too. Prints a
Markdown table (median and max per control) and exits with a message (status 2) when Chromium or the
playwright package is missing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from lab.explore import browser as web

RUN_KINDS = {"FINISHED_SUCCESSFULLY": "whole app", "FINISHED_FRAGMENT_RUN_SUCCESSFULLY": "results fragment"}
UNARIES = {"voc": "PASCAL VOC network (21 classes)", "clusters": "Colour clusters (built-in)"}
# (what, the widget's aria-label, the key pressed)
KNOBS = (
    ("w spatial (lattices cached)", "w spatial", "ArrowRight"),
    ("iterations T (lattices cached)", "Iterations T", "ArrowRight"),
    ("θα (lattice rebuilt)", "θα: bilateral spatial width (px)", "ArrowRight"),
    ("t scrubber (kept trace)", "Show iteration t", "ArrowLeft"),
    ("label opacity (redraw)", "Label opacity over the photo", "ArrowRight"),
)
INSPECTOR = (
    ("inspector x (its tab open)", "x (column)", "ArrowUp"),
    ("w spatial (inspector tab open)", "w spatial", "ArrowRight"),
)


class Runs:
    """The script runs the page sees end, read off Streamlit's websocket, and the bytes each answer brought.

    Streamlit ends every script run with a ``script_finished`` ForwardMsg (a fragment run with its own status);
    a key press has been answered once a run that started after it has finished and the page has drawn it.
    """

    def __init__(self, page):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._msg = ForwardMsg
        self.finished: list[tuple[float, str]] = []  # (perf_counter, status name) per run that ended
        self.ws_bytes = 0  # frames received on the websocket
        self.media_bytes = 0  # images and other media fetched over HTTP
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        page.on("response", self._response)

    def _frame(self, payload) -> None:
        data = payload if isinstance(payload, bytes) else payload.encode()
        self.ws_bytes += len(data)
        try:
            msg = self._msg.FromString(data)
        except Exception:  # not a ForwardMsg (a ping): nothing to record
            return
        if msg.WhichOneof("type") == "script_finished":
            status = self._msg.ScriptFinishedStatus.Name(msg.script_finished)
            self.finished.append((time.perf_counter(), status))

    def _response(self, response) -> None:
        if "/media/" in response.url:
            try:
                self.media_bytes += len(response.body())
            except Exception:  # a response the browser dropped (a rerun replaced the image): not received
                pass

    def answered(self, page, since: int, timeout_ms: int) -> str:
        """Wait for a run after the ``since``-th to finish (not one cut short by a newer run), the page to be idle
        and its images loaded; returns the finished run's status."""
        deadline = time.perf_counter() + timeout_ms / 1000
        while True:
            done = [s for _, s in self.finished[since:] if s != "FINISHED_EARLY_FOR_RERUN"]
            if done:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no script run finished within {timeout_ms / 1000:g} s")
            page.wait_for_timeout(10)
        page.wait_for_function(
            f"() => ({web.IDLE})() && [...document.images].every(i => i.complete)", timeout=timeout_ms
        )
        return done[-1]


def widget(page, label: str):
    """The focusable input of the widget with this aria-label (sliders are react-aria range inputs)."""
    return page.locator(f'input[aria-label="{label}"]').first


def time_control(page, runs: Runs, label: str, key: str, repeat: int, timeout_ms: int):
    """``repeat`` presses of ``key`` on the widget: ms each (press → answered), KB each, and the runs' kinds."""
    times, kbytes, kinds, finished = [], [], set(), []
    for _ in range(repeat):
        field = widget(page, label)
        field.focus()
        # always the same way: each press is a value not seen before (going back would be a cached run)
        press = key
        since, sent = len(runs.finished), runs.ws_bytes + runs.media_bytes
        t0 = time.perf_counter()
        field.press(press)
        if label == "x (column)":
            field.press("Enter")  # a number input commits on Enter (or blur)
        kinds.add(runs.answered(page, since, timeout_ms))
        times.append(1e3 * (time.perf_counter() - t0))
        finished.append(1e3 * (runs.finished[-1][0] - t0))
        page.wait_for_timeout(300)  # late media requests of this answer are counted with it
        kbytes.append((runs.ws_bytes + runs.media_bytes - sent) / 1024)
        page.wait_for_timeout(200)
    return times, kbytes, kinds, finished


def open_tab(page, runs: Runs, name: str, timeout_ms: int):
    """Click the results tab ``name``; ms until its run finished and the page drew it, and the KB it brought."""
    since, sent = len(runs.finished), runs.ws_bytes + runs.media_bytes
    t0 = time.perf_counter()
    page.get_by_role("tab", name=name).click()
    kind = runs.answered(page, since, timeout_ms)
    elapsed = 1e3 * (time.perf_counter() - t0)
    finished = 1e3 * (runs.finished[-1][0] - t0)
    page.wait_for_timeout(300)
    return elapsed, (runs.ws_bytes + runs.media_bytes - sent) / 1024, kind, finished


def set_working_size(page, side: int) -> None:
    """The working-size slider (steps of 32 px) moved to ``side`` with the keyboard, as a user would."""
    size = widget(page, "Working size (longer side, px)")
    size.focus()
    size.press("Home")  # its minimum, 64
    for _ in range((side - 64) // 32):
        size.press("ArrowRight")
    page.get_by_text(f"working at {side}").first.wait_for(timeout=300_000)
    web.wait_idle(page, 300_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=512, help="working size (longer side, px), a multiple of 32")
    parser.add_argument("--unary", choices=list(UNARIES), default="voc", help="the unary source")
    parser.add_argument("--repeat", type=int, default=5, help="key presses per control")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for one change")
    parser.add_argument("--app", type=Path, default=web.APP, help="the script to serve (e.g. an earlier checkout's)")
    parser.add_argument("--knobs-only", action="store_true", help="skip the inspector tab (an app without tabs)")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 9:  # the opacity starts at 0.5 in steps of 0.05: ten presses reach its end
        parser.error("--repeat: expected 1..9 (each press must reach a value not seen before)")
    if args.side % 32 or not 64 <= args.side <= 1024:
        parser.error("--side: expected a multiple of 32 in 64..1024 (the app's working-size slider)")
    reason = web.missing()
    if reason:
        print(f"app_latency: cannot run: {reason}.", file=sys.stderr)
        raise SystemExit(2)
    from machine import describe
    from playwright.sync_api import sync_playwright

    timeout_ms = int(args.timeout * 1000)
    rows = []
    with web.served(args.app) as url, sync_playwright() as p:
        browser = web.launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        runs = Runs(page)  # before the page opens its websocket
        page.goto(url)
        page.get_by_text("Pixels changed vs unary").wait_for(timeout=300_000)
        sidebar = page.locator('[data-testid="stSidebar"]')
        # the photo and the unary, set through the widgets like a user would
        web.wait_idle(page, 300_000)
        photo = sidebar.locator('input[aria-label="Bundled photo"]')  # react-aria's combobox
        photo.scroll_into_view_if_needed()  # a click that scrolls the sidebar first does not open it
        page.wait_for_timeout(300)
        photo.click()
        page.locator('[role="option"]', has_text="astronaut").first.click()
        page.get_by_text("astronaut: 512×512").first.wait_for(timeout=300_000)
        sidebar.get_by_text(UNARIES[args.unary], exact=True).click()
        web.wait_idle(page, 300_000)
        set_working_size(page, args.side)
        for what, label, key in KNOBS:
            rows.append((what, *time_control(page, runs, label, key, args.repeat, timeout_ms)))
        if not args.knobs_only:
            ms, kb, kind, end = open_tab(page, runs, "Pixel inspector", timeout_ms)
            rows.append(("open the inspector tab (click → drawn)", [ms], [kb], {kind}, [end]))
            page.wait_for_timeout(2000)  # its click component's own reruns after it loads
            web.wait_idle(page)
            for what, label, key in INSPECTOR:
                rows.append((what, *time_control(page, runs, label, key, args.repeat, timeout_ms)))
        browser.close()
    print(f"# App latency in Chromium, {time.strftime('%Y-%m-%d')}\n")
    print(
        describe(
            f"astronaut at {args.side} × {args.side} ({args.side**2 / 1e6:.2f} MP), {args.unary} unary, T = 5 "
            f"(then 6, 7, …), {args.repeat} presses per control, viewport 1280 × 800, serving {args.app}"
        )
        + "\n"
    )
    for what, times, _, _, _ in rows:
        print(f"{what}: " + ", ".join(f"{t:.0f}" for t in times) + " ms", file=sys.stderr)
    print(
        "| control: key press → run finished, page drawn | median ms | max ms | of which: until the run's end "
        "reached the page | KB to the browser | run |"
    )
    print("|---|---|---|---|---|---|")
    for what, times, kbytes, kinds, finished in rows:
        kind = " + ".join(sorted(RUN_KINDS.get(k, k) for k in kinds))
        print(
            f"| {what} | {statistics.median(times):.0f} | {max(times):.0f} | {statistics.median(finished):.0f} | "
            f"{statistics.median(kbytes):.0f} | {kind} |"
        )


if __name__ == "__main__":
    main()
