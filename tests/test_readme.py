"""The README's Python examples run as written: the API in ten lines, then fitting the CRF."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    namespaces = []
    for code in blocks:
        namespaces.append({})
        exec(compile(code, str(README), "exec"), namespaces[-1])
    api = namespaces[0]
    assert api["logits"].shape == (2, 21, 120, 160)
    assert len(api["trace"].history) == 6
    fitted = next(ns for ns in namespaces if "result" in ns)["result"]  # the lab.fit_crf example
    assert fitted.steps_run == 5 and fitted.miou_after >= fitted.miou_before


def test_readme_images_exist_and_the_voc_figure_is_small():
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README.read_text())
    assert "docs/voc_before_after.png" in links
    for link in links:
        path = README.parent / link
        assert path.is_file(), f"README links to {link}, which does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert (README.parent / "docs" / "voc_before_after.png").stat().st_size < 300_000  # kept small for the README
