# The two commands: `make run` (the server, sample plans) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check bench bench-cdr bench-cdr-path bench-exporter bench-instructions lint clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/callrouter db upgrade --config config.yaml
	$(BIN)/callrouter serve --config config.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/callrouter check --config config.yaml

lint: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,dev]'
	$(BIN)/ruff check callrouter tests bench
	$(BIN)/mypy callrouter
	$(BIN)/lint-imports

# Sizes and other options pass through, e.g. `make bench-cdr BENCH_ARGS="--stats-rows 1000000"` (`--help` lists them).
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-cdr: $(STAMP)
	$(BIN)/python bench/cdr.py $(BENCH_ARGS)

bench-cdr-path: $(STAMP)
	$(BIN)/python bench/cdr_path.py $(BENCH_ARGS)

bench-exporter: $(STAMP)
	$(BIN)/python bench/exporter.py $(BENCH_ARGS)

# Instructions per call under valgrind's callgrind, callrouter against the floor: the same count whatever
# the machine's load, for comparing two trees (docs/benchmarks.md). Needs valgrind.
bench-instructions: $(STAMP)
	$(BIN)/python bench/instructions.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
