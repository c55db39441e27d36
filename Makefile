# Two commands: `make demo` and `make test`. Each creates $(VENV) when missing and installs
# usssl (editable, with test extras); the install is a quick no-op when nothing changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.usssl-installed
PYTEST_ARGS ?=

.PHONY: demo test bench pocus install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/usssl run pipelines/demo.yaml

test: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q --durations=20 $(PYTEST_ARGS)

REALDATA ?= ../shared/realdata
pocus: install
	$(BIN)/python examples/pocus_tables.py $(REALDATA)/covid19_ultrasound_lung_pocus runs/pocus/tables
	$(BIN)/usssl run pipelines/pocus_realdata.yaml

bench: install
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache
