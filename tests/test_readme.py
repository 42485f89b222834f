"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (2, 21, 120, 160)
    assert len(namespace["trace"].history) == 6


def test_readme_images_exist_and_the_voc_figure_is_small():
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README.read_text())
    assert "docs/voc_before_after.png" in links
    for link in links:
        path = README.parent / link
        assert path.is_file(), f"README links to {link}, which does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert (README.parent / "docs" / "voc_before_after.png").stat().st_size < 300_000  # kept small for the README
