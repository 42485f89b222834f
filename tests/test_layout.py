"""The package's shape: layers import one way, modules stay small, the CPU path needs no Triton.

ARCHITECTURE.md lists the layers; an import that points up the list (or a cycle) fails here, naming it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lab"
MAX_LINES = 450

# Layer of each top-level part of lab (ARCHITECTURE.md): a module may import its own layer and those below.
LAYERS = {
    "_checks": 0,
    "errors": 0,
    "_paths": 0,
    "lattice": 1,
    "crf": 2,
    "unary": 3,
    "data": 3,
    "models": 3,
    "viz": 3,
    "train": 4,
    "explore": 5,
    "fit": 5,
    "cli": 6,
    "demo": 6,
    "__main__": 6,
    "__init__": 6,
}


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py"))


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _lab_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``lab.…`` import in the file, including imports inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n == "lab" or n.startswith("lab.")]
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_is_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT.parent)}: {lines} lines (split it: at most {MAX_LINES})"


def test_every_part_has_a_layer():
    assert {_part(p) for p in _modules()} <= set(LAYERS)


def test_imports_point_down_the_layers():
    wrong = []
    for path in _modules():
        own = LAYERS[_part(path)]
        for line, module in _lab_imports(path):
            if module == "lab":
                target = "__init__"
            else:
                target = module.split(".")[1]
            if LAYERS.get(target, 99) > own:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module} (layer {LAYERS.get(target)})")
    assert not wrong, "imports pointing up the layers:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules():
    """Module-level imports only (function-level ones are deferred on purpose); a cycle is reported as a path."""
    graph: dict[str, set[str]] = {}
    for path in _modules():
        name = ".".join(("lab", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:  # top level only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lab"):
                deps.add(node.module)
            elif isinstance(node, ast.If):  # `if numba is not None:` / TYPE_CHECKING blocks hold no cycles we run
                continue
        graph[name] = {d for d in deps if d != name}
    seen, stack = set(), []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in seen or node not in graph:
            return None
        seen.add(node)
        stack.append(node)
        for dep in sorted(graph[node]):
            if not dep.startswith(node + ".") and (cycle := visit(dep)):  # a package importing its own modules
                return cycle
        stack.pop()
        return None

    for node in sorted(graph):
        cycle = visit(node)
        assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_cpu_path_runs_without_triton():
    """``import lab``, the CLI and mean field on the CPU work where Triton is not installed (it is an extra)."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # any `import triton` now raises ImportError
        "import torch, lab, lab.cli, lab.explore\n"
        "t = lab.mean_field(torch.randn(1, 3, 8, 9), torch.rand(1, 3, 8, 9) * 255, iterations=2)\n"
        "assert t.q.shape == (1, 3, 8, 9)\n"
        "from lab.lattice.backend import triton_available\n"
        "assert not triton_available()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
