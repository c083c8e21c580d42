# `make demo` and `make test` set everything up on a fresh machine: .venv is created when
# missing and samnet is (re)installed only when setup.cfg or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.samnet-installed
DEMO_ID := 990

.PHONY: demo test lint

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/samnet_demo_dataset --id $(DEMO_ID) --exist-ok
	$(BIN)/samnet_plan_and_train $(DEMO_ID) --folds 0 --epochs 10 --iterations-per-epoch 25

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -ra --durations=15
