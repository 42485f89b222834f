# Two commands set everything up on a fresh machine: `make app` and `make test`.
# Each creates .venv on first use; a second run installs nothing new (stamp files).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# The tested torch. Override for another build, e.g. make test TORCH_SPEC="torch==2.11.0".
TORCH_SPEC ?= torch==2.13.0

.PHONY: app test test-gpu test-install setup-browser lint format bench lab train clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) "$(TORCH_SPEC)"
	touch $@

# MediaPipe's selfie segmenter is optional: without it the app shows that unary source as unavailable.
MEDIAPIPE = ($(PIP) -e ".[mediapipe]" && $(PY) scripts/fetch_selfie_model.py) \
	|| echo "MediaPipe selfie segmenter unavailable: the app and its tests report it and go on"

# Compile the Numba lattice build and CPU iteration once (cached on disk), so that no first view waits for it.
WARM_UP = $(PY) -c "from lab.lattice.numba_kernels import warm_up; warm_up(); from lab.crf.cpu_step import warm_up; warm_up()" \
	|| echo "Numba kernels unavailable: lattices are built with PyTorch (slower, the same result)"

$(VENV)/.stamp-app: pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[app]"
	$(MEDIAPIPE)
	$(WARM_UP)
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[dev]"
	$(PIP) -e ".[peers]" || echo "pydensecrf2 could not be built: the pydensecrf parity tests will skip"
	$(MEDIAPIPE)
	$(WARM_UP)
	touch $@

# Debian's chromium for the browser test (tests/app/test_browser.py), as root with apt-get; once per machine.
# `make test` does not need it: without /usr/bin/chromium that test skips, saying why.
setup-browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	elif [ "$$(id -u)" != 0 ]; then echo "setup-browser installs Debian's chromium with apt-get: run it as root" >&2; exit 1; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "setup-browser: no apt-get (not Debian/Ubuntu)" >&2; exit 1; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  && echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; fi

$(VENV)/.stamp-notebooks: pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[notebooks]"
	touch $@

# JupyterLab on the course; --allow-root because these machines run as root
lab: $(VENV)/.stamp-notebooks
	$(VENV)/bin/jupyter lab --notebook-dir notebooks --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

app: $(VENV)/.stamp-app
	$(VENV)/bin/streamlit run app/streamlit_app.py --server.headless true --browser.gatherUsageStats false

# ruff check covers the notebooks too (ruff reads .ipynb); ruff format leaves them as written (pyproject.toml)
lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The main suite, then the Triton-interpreter tests in their own process
# (TRITON_INTERPRET is read when @triton.jit decorates, so it must be set before import).
test: lint
	$(PY) -m pytest -m "not interpreter" -q
	TRITON_INTERPRET=1 $(PY) -m pytest -m interpreter -q

# The compiled Triton kernels on a CUDA device (the interpreter tests' bodies, compiled). Needs a CUDA build of
# torch in .venv (PyPI's Linux x86_64 torch wheels are; another: make clean, then make test-gpu TORCH_SPEC=...).
test-gpu: $(VENV)/.stamp-dev
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
	  f'make test-gpu: torch {torch.__version__} sees no CUDA device (no GPU, or a CPU build of torch)')"
	$(PY) -m pytest -m gpu -q

# The wheel in a clean venv with its runtime dependencies only: README example and crf-lab refine (under /tmp)
test-install:
	PYTHON="$(PYTHON)" TORCH_SPEC="$(TORCH_SPEC)" scripts/check_install.sh

# The paper's Table 1 in miniature (17 min on 2 cores, the seeds side by side): results/paper_table.md and figures
train: $(VENV)/.stamp-dev
	$(PY) -m lab.train --out results

bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/lattice.py
	$(PY) benchmarks/crf.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
