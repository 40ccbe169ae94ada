# `make demo`, `make test` and `make docs` each create .venv in the repo root and install what they need, in
# layers, each marked by a stamp file in .venv: the package and its dependencies (what `make demo` uses), then
# the test tools and NVIDIA DALI on top (`make test`), or the documentation tools on top (`make docs`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
TEST := $(VENV)/.installed-test
DOCS := $(VENV)/.installed-docs
DEMO := demo
# NVIDIA DALI's TensorFlow plugin (load(..., backend="dali")) is a source package built against the installed
# TensorFlow (g++, ~25 s): it comes after TF and DALI (the `dali` extra, which pins the version), without build
# isolation, at the version of the DALI installed. Only `make test` installs DALI (~1 GB); the demo does not use it.
DALI_VERSION = $$($(BIN)/python -c 'from importlib.metadata import version; print(version("nvidia-dali-cuda120"))')

.PHONY: test demo docs clean

$(BASE): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77"  # pyproject.toml's SPDX license; Beam runs setup.py
	$(BIN)/python -m pip install -q -e .
	touch $(BASE)

$(TEST): $(BASE)
	$(BIN)/python -m pip install -q -e '.[test,dali]'
	$(BIN)/python -m pip install -q --no-build-isolation nvidia-dali-tf-plugin-cuda120==$(DALI_VERSION)
	touch $(TEST)

$(DOCS): $(BASE)
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $(DOCS)

# Lint, format and types first (seconds), then the suite in TEST_WORKERS processes (pytest-xdist), a test file
# per process at a time, so a file's module fixtures are built once (here, 2 cores: 5.6 min against 9.0 in one).
TEST_WORKERS ?= 2
test: $(TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The site (API reference from the docstrings) goes to site/; --strict fails on any warning or broken reference.
docs: $(DOCS)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

demo: $(BASE)
	rm -rf $(DEMO)
	$(BIN)/shardflow sample-data $(DEMO)/raw --layout kaggle --n 2000
	$(BIN)/shardflow convert $(DEMO)/raw $(DEMO)/data --name sample_pets --max-side 160
	$(BIN)/shardflow inspect $(DEMO)/data
	$(BIN)/shardflow train $(DEMO)/data --model small_convnet --augment seed004 --epochs 25 --patience 6 \
		--seed 0 --out $(DEMO)/report
	$(BIN)/shardflow evaluate $(DEMO)/report $(DEMO)/data --split test
	$(BIN)/shardflow preview $(DEMO)/data --augment seed004 --out $(DEMO)/report/preview.png
	@echo "report: $(DEMO)/report (history.png, preview.png, metrics.json, logs/ for TensorBoard)"

clean:
	rm -rf $(VENV) $(DEMO) site *.egg-info
