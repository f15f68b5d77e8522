# quantray: `make run` (the main job) and `make test` (lint + tests). Both set up .venv first.
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-learning lint bench env clean

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

# The main job: a local Ray head + the API, the demo sweep over HTTP, its summary table.
# Only the learning acceptance tests (also part of make test).
test-learning: $(STAMP)
	$(VENV)/bin/pytest -m learning tests/models/test_learning.py $(PYTEST_ARGS)

run: $(STAMP)
	$(VENV)/bin/quantray demo --spec examples/demo.yaml

bench: $(STAMP)
	$(PY) bench/prepare_sp500.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
