#!/usr/bin/env bash
# The package as a user gets it (make test-install): build the wheel from the working tree, install it into a
# clean venv with only its runtime dependencies (plus the tested torch), then, from a folder outside the
# repository, run the README's API example and `crf-lab refine` on a bundled photo.
#
#   scripts/check_install.sh                       # PYTHON=python3 TORCH_SPEC=torch==2.13.0 by default
#   KEEP=1 scripts/check_install.sh                # keep the scratch folder (its path is printed)
#
# Everything is made in a new folder under $TMPDIR (/tmp): nothing is written into the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/crf-lab-install.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then trap 'echo "kept $WORK"' EXIT; else trap 'rm -rf "$WORK"' EXIT; fi

step() { printf '[check_install %4ds] %s\n' "$SECONDS" "$*"; }
fail() { echo "check_install: FAILED: $*" >&2; exit 1; }

step "copy the working tree (tracked and untracked files, not ignored ones) to $WORK/src"
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"

step "new venv ($($PYTHON --version)), $TORCH_SPEC"
$PYTHON -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install "$TORCH_SPEC"

step "build the wheel"
"${PIP[@]}" wheel --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/crf_rnn_lab-*.whl)
"$VPY" - "$WHEEL" "$WORK/src" <<'EOF' || fail "the wheel's contents"
import sys, zipfile
from pathlib import Path
names = zipfile.ZipFile(sys.argv[1]).namelist()
src = Path(sys.argv[2])
# every file of the package in the source tree (modules and package data alike) is in the wheel
need = sorted(
    p.relative_to(src).as_posix()
    for p in (src / "lab").rglob("*")
    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
)
missing = [n for n in need if n not in names]
outside = sorted({n.split("/")[0] for n in names} - {"lab"} - {n.split("/")[0] for n in names if ".dist-info/" in n})
assert not missing, f"missing from the wheel: {missing}"
assert not outside, f"the wheel installs more than the lab package: {outside}"
entry = [n for n in names if n.endswith("entry_points.txt")]
assert entry and "crf-lab = lab.cli:main" in zipfile.ZipFile(sys.argv[1]).read(entry[0]).decode(), "no crf-lab script"
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no LICENSE in the wheel"
print(f"  {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, all {len(need)} of the source tree's lab/")
EOF

step "install the wheel with its runtime dependencies only"
"${PIP[@]}" install "$WHEEL"

# From here on: a folder outside the repository, no PYTHONPATH, no user site: only the venv is importable.
mkdir "$WORK/outside"
cd "$WORK/outside"
export PYTHONNOUSERSITE=1
unset PYTHONPATH
export MPLBACKEND=Agg

step "import lab from the venv (not the source tree); triton is optional"
"$VPY" - "$WORK/venv" <<'EOF' || fail "import lab"
import importlib.util, sys
from pathlib import Path
import lab, numpy, skimage, torch
from lab.lattice import triton_available
venv = Path(sys.argv[1]).resolve()
for mod in (lab, skimage):
    assert venv in Path(mod.__file__).resolve().parents, f"{mod.__name__} imported from {mod.__file__}, not the venv"
print(f"  lab from {Path(lab.__file__).parent}; torch {torch.__version__}, numpy {numpy.__version__}")
print(f"  triton installed: {triton_available()} (runtime dependencies only: it is the 'gpu' extra)")
if not triton_available():
    try:
        lab.mean_field(torch.randn(1, 2, 8, 8), torch.rand(1, 3, 8, 8) * 255, lab.CRFParams(), backend="triton")
    except RuntimeError as e:
        assert "Triton is not installed" in str(e), e
    else:
        raise AssertionError("backend='triton' without Triton did not raise")
EOF

step "the README's API example"
"$VPY" - "$WORK/src/README.md" <<'EOF' || fail "the README's API example"
import re, sys
from pathlib import Path
blocks = re.findall(r"```python\n(.*?)```", Path(sys.argv[1]).read_text(), flags=re.S)
assert blocks, "the README has no Python example"
namespaces = []
for code in blocks:  # each block on its own, as a reader would paste it
    namespaces.append({})
    exec(compile(code, "README.md", "exec"), namespaces[-1])
namespace = namespaces[0]  # the API example
assert namespace["logits"].shape == (2, 21, 120, 160), namespace["logits"].shape
assert len(namespace["trace"].history) == 6
fitted = next(ns["result"] for ns in namespaces if "result" in ns)  # the fit_crf example
assert fitted.stopped and 0.0 <= fitted.miou_after <= 1.0, (fitted.stopped, fitted.miou_after)
print(f"  {len(blocks)} block(s) ran")
EOF

step "the bundled photos load from the installed packages"
"$VPY" - <<'EOF' || fail "the bundled photos"
from pathlib import Path
from PIL import Image
from lab.data import SAMPLE_IMAGE_NAMES, sample_images
photos = sample_images()
assert list(photos) == list(SAMPLE_IMAGE_NAMES)
for name, img in photos.items():
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype.name == "uint8", (name, img.shape, img.dtype)
Path("photos").mkdir()
Image.fromarray(photos["chelsea"]).save("photos/chelsea.png")
print("  " + ", ".join(f"{n} {i.shape[1]}×{i.shape[0]}" for n, i in photos.items()))
EOF

step "crf-lab refine photos/ --out refined/ --save-q --overlay"
"$WORK/venv/bin/crf-lab" refine photos/ --out refined/ --save-q --overlay || fail "crf-lab refine (exit $?)"
"$VPY" - <<'EOF' || fail "crf-lab refine's outputs"
import numpy as np
from PIL import Image
labels = np.asarray(Image.open("refined/chelsea_labels.png"))
q = np.load("refined/chelsea_q.npy")
overlay = Image.open("refined/chelsea_overlay.png")
assert labels.shape == (300, 451), labels.shape
# the photo at its own size, the legend of the classes present beside it
assert overlay.size[1] == 300 and overlay.size[0] > 451, overlay.size
assert np.isfinite(q).all() and q.shape[1:] == (300, 451), q.shape
print(f"  labels {labels.shape}, {len(np.unique(labels))} labels used; Q {q.shape}")
EOF
"$VPY" -m lab refine --help >/dev/null || fail "python -m lab refine --help"

step "OK: the wheel installs and runs with its runtime dependencies only"
