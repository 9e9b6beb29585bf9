# qsmliver: every target bootstraps .venv on a fresh machine (DESIGN section 7).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(BIN)/qsmliver demo -o demo_output --overwrite

# second pass: the gpu tests against the CuPy stand-in of tests/emulated_gpu.py (no GPU needed);
# exit status 5 (nothing selected, e.g. PYTEST_ARGS names a file without gpu tests) is fine
test: venv
	$(BIN)/ruff check qsmliver tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	QSMLIVER_EMULATE_GPU=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS) -m gpu || test $$? -eq 5

lint: venv
	$(BIN)/ruff check qsmliver tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run.py --output benchmarks/results

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output .pytest_cache .ruff_cache
