# runcast: `make demo` and `make test` work on a fresh machine (they create .venv and install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
NODE_STAMP := tests/node/node_modules/.package-lock.json

.PHONY: demo test lint docs bench bench-runs bench-frameworks bench-stalled soak venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The Vercel AI SDK tests' npm packages (tests/node), as locked; without npm those tests are skipped, loudly.
$(NODE_STAMP): tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tests/node && npm ci --no-audit --no-fund; \
	else echo "npm not found: tests/test_ai_sdk.py will be skipped"; fi

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/runcast demo

test: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Regenerate the generated parts of docs/ (the HTTP API reference from the app's OpenAPI); the docs tests fail when
# a committed file is out of date.
docs: $(STAMP)
	$(BIN)/python -m tools.openapi_doc

bench: $(STAMP)
	$(BIN)/python -m bench.fanout $(BENCH_ARGS)

bench-frameworks: $(STAMP)
	$(BIN)/python -m bench.frameworks $(BENCH_ARGS)

# Many concurrent runs (docs/performance.md): this checkout and BEFORE side by side, medians of REPEAT.
BEFORE ?= 2660476
REPEAT ?= 3
bench-runs: $(STAMP)
	$(BIN)/python -m bench.runs --before $(BEFORE) --repeat $(REPEAT) $(BENCH_ARGS)

# Viewers that never read (docs/performance.md "Stalled viewers"): the gateway's RSS with 1,000 of them.
# BENCH_ARGS="--before 74ceea1" adds the gateway from before the bound, side by side.
bench-stalled: $(STAMP)
	$(BIN)/python -m bench.stalled $(BENCH_ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.soak --cycles 1000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
