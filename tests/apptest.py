"""What the AppTest suites share: the app's path, its timeout, and opening one of its result tabs."""

from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT = 180  # importing torch and the first lattice build take well over AppTest's 3 s default


def open_tab(at, name: str):
    """Select the results tab ``name`` (as a click on it would) and rerun; only the open tab's view is drawn."""
    labels = [t.label for t in at.tabs]
    assert name in labels, f"no tab {name!r} among {labels}"
    at.session_state["view_tab"] = name
    at.run()
    assert not at.exception, at.exception
    return at
