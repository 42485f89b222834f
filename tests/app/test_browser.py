"""The app in a real browser: Streamlit served on 127.0.0.1, driven by Playwright in Debian's Chromium.

Never downloads a browser: it uses /usr/bin/chromium (Debian's package: `make setup-browser`, as root) and
skips with the reason when that or the playwright package is missing. Screenshots go to artifacts/.
"""

from pathlib import Path

import numpy as np
import pytest

from lab.explore import browser as web

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"

pytest.importorskip("streamlit", reason="the app extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
if web.missing():
    pytest.skip(web.missing(), allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    with web.served() as url:
        yield url


def opened(browser, url, width, height, **context):
    """A new page of ``browser`` at ``url`` in a ``width`` × ``height`` window, once the first view is drawn."""
    page = browser.new_page(viewport={"width": width, "height": height}, **context)
    page.goto(url)
    page.get_by_text("Pixels changed vs unary").wait_for(timeout=180_000)
    idle(page)
    return page


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
        browser = web.launch(p)
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


def idle(page):
    """Wait until no script runs (Streamlit's status widget says "Running…" while one does) and no spinner is up."""
    web.wait_idle(page)


def working_size(page):
    """(w, h) of the working image, from the run's summary caption."""
    import re

    text = page.get_by_text("working at").first.inner_text()
    w, h = re.search(r"working at (\d+)×(\d+)", text).groups()
    return int(w), int(h)


def test_browser_inspector_scrubber_and_scribble(server, tmp_path):
    from PIL import Image

    from lab.explore.display import class_colours
    from lab.explore.inspect_view import display_to_pixel

    ARTIFACTS.mkdir(exist_ok=True)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (30, 60, 200)
    img[:, 32:] = (230, 200, 40)
    path = tmp_path / "halves.png"
    Image.fromarray(img).save(path)
    with sync_api.sync_playwright() as p:
        browser = web.launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 3200})
        page.goto(server)
        page.get_by_text("Pixels changed vs unary").wait_for(timeout=180_000)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Upload", exact=True).click()
        sidebar.locator('input[type="file"]').first.set_input_files(str(path))
        page.get_by_text("halves.png: 64×48").wait_for(timeout=120_000)
        sidebar.get_by_text("Colour clusters (built-in)", exact=True).click()
        idle(page)
        page.get_by_role("tab", name="Pixel inspector").click()  # only the open tab's view is drawn
        page.get_by_text("Pixel inspector: why does this pixel have its label?").wait_for(timeout=120_000)
        idle(page)
        w, h = working_size(page)

        # 1. click the inspector's image a quarter across and halfway down: the x, y inputs follow
        frame = page.frame_locator('iframe[title="streamlit_image_coordinates.streamlit_image_coordinates"]')
        target = frame.locator("#image")
        target.wait_for(timeout=60_000)
        box = target.bounding_box()
        cx, cy = box["width"] * 0.25 + 0.5, box["height"] * 0.5 + 0.5
        y, x = display_to_pixel({"x": cx, "y": cy, "width": box["width"], "height": box["height"]}, (h, w))
        for attempt in range(3):  # a click that lands while a rerun replaces the component is lost: click again
            idle(page)
            target.click(position={"x": cx, "y": cy})
            try:
                page.get_by_text(f"Pixel (x={x}, y={y}): the unary says").wait_for(timeout=60_000)
                break
            except sync_api.TimeoutError:
                if attempt == 2:
                    raise
        assert page.locator('input[aria-label="x (column)"]').input_value() == str(x)
        assert page.locator('input[aria-label="y (row)"]').input_value() == str(y)
        footprint = page.get_by_text(f"The bilateral kernel's footprint around pixel (x={x}, y={y})").first
        footprint.wait_for(timeout=180_000)  # the images of the new pixel, not the last pixel's still on screen
        page.wait_for_timeout(1000)
        footprint.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "app_inspector.png"))

        # 2. drag the t scrubber from its end (t = T) to its start: the view shows t = 0 without a new run
        page.get_by_role("tab", name="Up close").click()
        page.get_by_text("Iteration 5 up close").wait_for(timeout=120_000)
        scrub = page.locator('input[type="range"][aria-label="Show iteration t"]')
        track = page.locator('[data-testid="stSlider"]', has_text="Show iteration t")
        track.scroll_into_view_if_needed()
        thumb = scrub.locator("xpath=..")  # react-aria: the range input sits inside its thumb
        tb, kb = thumb.bounding_box(), track.bounding_box()
        page.mouse.move(tb["x"] + tb["width"] / 2, tb["y"] + tb["height"] / 2)
        page.mouse.down()
        for step in range(1, 11):  # in steps, as a hand drags
            page.mouse.move(tb["x"] - step * (tb["x"] - kb["x"]) / 10, tb["y"] + tb["height"] / 2)
        page.mouse.up()
        page.get_by_text("Iteration 0 up close").wait_for(timeout=180_000)
        page.screenshot(path=str(ARTIFACTS / "app_scrub.png"))

        # 3. a scribble: one stroke per class on the canvas, left half class 1, right half class 2
        sidebar.get_by_text("Scribbles (draw a few strokes per class)", exact=True).click()
        page.get_by_text("Draw a few strokes of each class").wait_for(timeout=60_000)
        canvas = page.locator(".upper-canvas").first  # Fabric.js: the canvas that takes the pointer
        canvas.scroll_into_view_if_needed()
        cb = canvas.bounding_box()
        for label, (x0, x1) in (("scribble 1", (0.1, 0.35)), ("scribble 2", (0.65, 0.9))):
            page.get_by_text(label, exact=True).first.click()  # the brush's class
            page.wait_for_timeout(500)
            page.mouse.move(cb["x"] + x0 * cb["width"], cb["y"] + 0.5 * cb["height"])
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(cb["x"] + (x0 + k * (x1 - x0) / 10) * cb["width"], cb["y"] + 0.5 * cb["height"])
            page.mouse.up()
            page.wait_for_timeout(1000)
        page.get_by_text("scribbles:").first.wait_for(timeout=120_000)  # the run's summary: the strokes' unary
        legend = page.locator('[data-testid="stMarkdownContainer"]', has_text="Classes shown:").first.inner_html()
        for r, g, b in class_colours(2).tolist():  # both stroked classes are on screen in their brush colours
            assert f"rgb({r}, {g}, {b})" in legend, legend
        page.screenshot(path=str(ARTIFACTS / "app_scribble.png"))
        browser.close()


OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('img, canvas, iframe, table, [data-testid="stHorizontalBlock"]')]
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > width + 1; })
    .map(e => e.tagName + ' ' + Math.round(e.getBoundingClientRect().right));
  return {scroll: document.documentElement.scrollWidth, width, wide};
}"""


def test_browser_laptop_and_phone_layouts(server):
    """At 1280 × 800 the knobs and both result images are on the first screen; on a phone nothing is cut off."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = web.launch(p)
        page = opened(browser, server, 1280, 800)
        for label in ("θα: bilateral spatial width (px)", "w spatial", "Iterations T"):  # the knobs, unscrolled
            box = page.locator(f'input[aria-label="{label}"]').first.bounding_box()
            assert box and box["y"] + box["height"] <= 800, (label, box)
        for prefix in ("Unary argmax", "Q_5 argmax"):  # the two result images start on the first screen
            figure = page.locator('[data-testid="stImage"]', has_text=prefix).first
            box = figure.bounding_box()
            assert box and box["y"] < 800, (prefix, box)
        page.screenshot(path=str(ARTIFACTS / "app_laptop.png"))

        phone = opened(browser, server, 390, 844, is_mobile=True, has_touch=True)
        sizes = phone.evaluate(OVERFLOW)
        assert sizes["scroll"] <= sizes["width"] + 1 and not sizes["wide"], sizes  # no sideways scrolling
        figure = phone.locator('[data-testid="stImage"]', has_text="Q_5 argmax").first
        box = figure.bounding_box()
        assert box and 0 <= box["x"] and box["x"] + box["width"] <= 391 and box["width"] > 300, box  # full width
        phone.get_by_role("tab", name="Pixel inspector").click()  # a wide view: it stacks, nothing cut off
        phone.get_by_text("Pixel inspector: why does this pixel have its label?").wait_for(timeout=120_000)
        idle(phone)
        sizes = phone.evaluate(OVERFLOW)
        assert sizes["scroll"] <= sizes["width"] + 1 and not sizes["wide"], sizes
        phone.screenshot(path=str(ARTIFACTS / "app_phone.png"), full_page=True)
        browser.close()


def test_browser_a_results_button_that_moves_the_sources_reruns_the_whole_app(server):
    """The example button sits in the results fragment but changes the sidebar's photo and unary: the app must
    rerun as a whole (a fragment rerun alone would leave the old photo on screen)."""
    from lab.explore.voc_view import voc_example_status
    from lab.unary import voc_status

    for ok, reason in (voc_example_status(), voc_status()):
        if not ok:
            pytest.skip(reason)
    with sync_api.sync_playwright() as p:
        browser = web.launch(p)
        page = opened(browser, server, 1400, 1600)
        page.get_by_role("tab", name="What changed").click()
        button = page.get_by_role("button", name="Use the example photo with its ground truth")
        button.wait_for(timeout=120_000)
        idle(page)
        button.click()
        page.get_by_text("VOC example (ground truth): 500×375 px").first.wait_for(timeout=180_000)  # the title
        page.locator('[data-testid="stMetric"]', has_text="mIoU after the CRF").wait_for(timeout=180_000)
        photo = page.locator('[data-testid="stSidebar"] input[aria-label="Bundled photo"]')
        assert photo.input_value() == "VOC example (ground truth)"  # the sidebar was drawn again
        browser.close()


def test_browser_downloads_are_made_on_click_and_agree(server, tmp_path):
    """The label map and Q_t are built when their buttons are pressed: the files arrive, Q_t is a distribution
    per pixel at the working size, and its arg-max is the label map."""
    import re

    from PIL import Image

    with sync_api.sync_playwright() as p:
        browser = web.launch(p)
        page = opened(browser, server, 1400, 1600)
        w, h = working_size(page)
        page.get_by_role("tab", name="Download").click()
        files = {}
        for label in ("Label map (PNG)", "Q_t (.npy)"):
            button = page.get_by_role("button", name=label)
            button.wait_for(timeout=120_000)
            web.wait_idle(page)  # a button of a run still being replaced would answer its click with nothing
            with page.expect_download(timeout=120_000) as download:
                button.click()
            files[label] = tmp_path / download.value.suggested_filename
            download.value.save_as(files[label])
        browser.close()
    assert re.fullmatch(r"labels_t5\.png", files["Label map (PNG)"].name) and files["Q_t (.npy)"].name == "q_t5.npy"
    labels = np.asarray(Image.open(files["Label map (PNG)"]))  # palette PNG: the pixel values are the class ids
    q = np.load(files["Q_t (.npy)"])
    assert labels.shape == (h, w) and q.shape[1:] == (h, w)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)  # a distribution over the labels at every pixel
    assert (q.argmax(0) == labels).mean() > 0.999  # ties aside, the map is Q_t's arg-max
