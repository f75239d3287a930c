# runcast: `make demo` and `make test` work on a fresh machine (they create .venv and install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench bench-runs soak venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/runcast demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench.fanout $(BENCH_ARGS)

# Many concurrent runs (docs/performance.md): this checkout and BEFORE side by side, medians of REPEAT.
BEFORE ?= 2660476
REPEAT ?= 3
bench-runs: $(STAMP)
	$(BIN)/python -m bench.runs --before $(BEFORE) --repeat $(REPEAT) $(BENCH_ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.soak --cycles 1000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
