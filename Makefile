# `make demo` and `make test` set everything up on a fresh machine: .venv is created when
# missing and samnet is (re)installed only when setup.cfg or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.samnet-installed
DEMO_ID := 990
# samnet as the wheel installs it (planners/, trainers/, preprocessing/ inside samnet/), which
# is the tree import-linter must see; the editable install maps those folders instead.
LAYERS_TREE := build/import-layers

.PHONY: demo test test-fast lint lint-imports

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/samnet_demo_dataset --id $(DEMO_ID) --exist-ok
	$(BIN)/samnet_plan_and_train $(DEMO_ID) --folds 0 --epochs 10 --iterations-per-epoch 25

lint-imports: $(INSTALLED)
	rm -rf $(LAYERS_TREE) && mkdir -p $(LAYERS_TREE)
	cp -r samnet $(LAYERS_TREE)/
	cp -r planners trainers preprocessing $(LAYERS_TREE)/samnet/
	cd $(LAYERS_TREE) && ../../$(BIN)/lint-imports --config ../../.importlinter

lint: lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Unit tests only: seconds to a few minutes, no training through nnU-Net.
test-fast: lint
	$(BIN)/python -m pytest -ra tests/unit

# Everything, as CI runs it: unit tests and the end-to-end runs through nnU-Net.
test: lint
	$(BIN)/python -m pytest -ra --durations=15
