# Two commands set everything up on a fresh machine: `make app` and `make test`.
# Each creates .venv on first use; a second run installs nothing new (stamp files).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# The tested torch. Override for another build, e.g. make test TORCH_SPEC="torch==2.11.0".
TORCH_SPEC ?= torch==2.13.0

.PHONY: app test lint format bench lab train clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) "$(TORCH_SPEC)"
	touch $@

# MediaPipe's selfie segmenter is optional: without it the app shows that unary source as unavailable.
MEDIAPIPE = ($(PIP) -e ".[mediapipe]" && $(PY) scripts/fetch_selfie_model.py) \
	|| echo "MediaPipe selfie segmenter unavailable: the app and its tests report it and go on"

# Compile the Numba lattice build once (cached on disk), so that no first view waits ~20 s for it.
WARM_UP = $(PY) -c "from lab.lattice.numba_kernels import warm_up; warm_up()" \
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

# Debian's chromium for the browser test (as root, with apt-get); without it that test skips, saying why.
$(VENV)/.stamp-browser: | $(PY)
	@if [ -x /usr/bin/chromium ]; then touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    && touch $@ || echo "chromium could not be installed: the browser test will skip"; \
	else echo "not root or no apt-get: chromium not installed, the browser test will skip"; fi

$(VENV)/.stamp-notebooks: pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[notebooks]"
	touch $@

# JupyterLab on the course; --allow-root because these machines run as root
lab: $(VENV)/.stamp-notebooks
	$(VENV)/bin/jupyter lab --notebook-dir notebooks --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

app: $(VENV)/.stamp-app
	$(VENV)/bin/streamlit run app/streamlit_app.py --server.headless true --browser.gatherUsageStats false

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The main suite, then the Triton-interpreter tests in their own process
# (TRITON_INTERPRET is read when @triton.jit decorates, so it must be set before import).
test: lint $(VENV)/.stamp-browser
	$(PY) -m pytest -m "not interpreter" -q
	TRITON_INTERPRET=1 $(PY) -m pytest -m interpreter -q

# The paper's Table 1 in miniature (about 27 min on 2 cores): results/paper_table.md and figures
train: $(VENV)/.stamp-dev
	$(PY) -m lab.train --out results

bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/lattice.py
	$(PY) benchmarks/crf.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
