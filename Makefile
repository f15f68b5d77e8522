# quantray: `make run` (the main job) and `make test` (lint + tests). Both set up .venv first.
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint bench env clean

env: $(STAMP)

# torch==2.13.0 first and explicitly: a bare torch requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(VENV)/bin/quantray data inspect sample:sp500
	$(VENV)/bin/quantray data prepare sample:sp500 --symbols 102 --seq-len 60 --horizons 1,5,10,20

bench: $(STAMP)
	$(PY) bench/prepare_sp500.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
