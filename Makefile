# `make demo` and `make test` each create .venv in the repo root and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
# NVIDIA DALI's TensorFlow plugin (load(..., backend="dali")) is a source package built against the installed
# TensorFlow (g++, ~25 s): it comes after TF and DALI (the `dali` extra, which pins the version), without build
# isolation, at the version of the DALI installed.
DALI_VERSION = $$($(BIN)/python -c 'from importlib.metadata import version; print(version("nvidia-dali-cuda120"))')

.PHONY: test demo clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77"  # pyproject.toml's SPDX license; Beam runs setup.py
	$(BIN)/python -m pip install -q -e '.[test,dali]'
	$(BIN)/python -m pip install -q --no-build-isolation nvidia-dali-tf-plugin-cuda120==$(DALI_VERSION)
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
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
	rm -rf $(VENV) $(DEMO) *.egg-info
