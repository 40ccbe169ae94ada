# `make demo` and `make test` each create .venv in the repo root and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo

.PHONY: test demo clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/shardflow sample-data $(DEMO)/raw --layout kaggle --n 2000
	$(BIN)/shardflow convert $(DEMO)/raw $(DEMO)/data --name sample_pets
	$(BIN)/shardflow inspect $(DEMO)/data
	@echo "demo dataset: $(DEMO)/data"

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info
