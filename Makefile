# Two commands set everything up on a fresh machine: `make app` and `make test`.
# Each creates .venv on first use; a second run installs nothing new (stamp files).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The tested torch. Override for another build, e.g. make test TORCH_SPEC="torch==2.11.0".
TORCH_SPEC ?= torch==2.13.0

.PHONY: app test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.stamp-base: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet -e ".[peers]" || echo "pydensecrf2 could not be built: parity tests will skip"
	touch $@

app: $(VENV)/.stamp-base
	$(PY) -m lab.demo --out demo.png

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

bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/lattice.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
