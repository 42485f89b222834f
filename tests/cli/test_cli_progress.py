"""The progress bar of ``crf-lab refine``: on a terminal only, never with --quiet; the per-input lines stay."""

import io
import sys

import pytest
from inputs import cli_main, synthetic_photo
from PIL import Image

from lab.cli.progress import Progress


class Terminal(io.StringIO):
    """stderr as a terminal would be."""

    def isatty(self):
        return True


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a", "b"):
        Image.fromarray(synthetic_photo(30, 40, seed=ord(name))).save(d / f"{name}.png")
    return d


def test_a_bar_on_a_terminal(monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    p = Progress(3)
    p.line("[1/3] a.png: ok")
    p.advance()
    p.close()
    text = term.getvalue()
    assert "[1/3] a.png: ok\n" in text and "| 0/3 [" in text and "image/s]" in text  # tqdm's bar around the line


def test_no_bar_without_a_terminal_or_with_quiet(monkeypatch):
    pipe = io.StringIO()  # isatty() is False
    monkeypatch.setattr(sys, "stderr", pipe)
    p = Progress(3)
    p.line("[1/3] a.png: ok", routine=True)
    p.advance()
    p.close()
    assert pipe.getvalue() == "[1/3] a.png: ok\n"
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    q = Progress(3, quiet=True)
    q.line("[1/3] a.png: ok", routine=True)
    q.line("[2/3] b.png: FAILED: broken")
    q.advance()
    q.close()
    assert term.getvalue() == "[2/3] b.png: FAILED: broken\n"


def test_cli_quiet_keeps_failures_and_the_count(folder, tmp_path, capsys):
    (folder / "bad.png").write_text("not a PNG")
    rc, err = cli_main(capsys, "refine", folder, "--out", tmp_path / "out", "--iterations", "1", "--quiet")
    assert rc == 1
    assert "bad.png: FAILED" in err and "2 of 3 images refined" in err
    assert "a.png: ok" not in err  # refined without a warning: left out
    rc, err = cli_main(capsys, "refine", folder, "--out", tmp_path / "out2", "--iterations", "1")
    assert "a.png: ok" in err and "it/s" not in err and "image/s" not in err  # captured stderr: no bar
