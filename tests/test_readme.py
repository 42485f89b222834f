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
