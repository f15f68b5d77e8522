# quantray: `make run` (the main job) and `make test` (lint + tests). Both set up .venv first.
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
PYTEST_ARGS ?=
# Where torch's CPU build comes from. Empty: pip's own configuration (on our CI machines a
# local wheel cache holds torch-2.13.0+cpu). Elsewhere, plain PyPI serves the CUDA build of
# torch==2.13.0 on Linux: `make env TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=

.PHONY: run test test-learning lint bench env clean

env: $(STAMP)

# torch==2.13.0 first and explicitly: a bare torch requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Only the learning acceptance tests (also part of make test).
test-learning: $(STAMP)
	$(VENV)/bin/pytest -m learning tests/models/test_learning.py $(PYTEST_ARGS)

# The main job: a local Ray head + the API, the demo sweep over HTTP, its summary table.
run: $(STAMP)
	$(VENV)/bin/quantray demo --spec examples/demo.yaml

# Data preparation of the full S&P 500 file: ../shared/data/sp500_daily.parquet (not in a
# clone; `$(PY) bench/prepare_sp500.py --data PATH` for another copy).
bench: $(STAMP)
	$(PY) bench/prepare_sp500.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
