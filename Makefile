# keystead: `make run` runs the rotation worker on the embedded default,
# `make test` runs the test suite, `make bench` measures. Each creates .venv
# and installs what it needs from the package index the first time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
# One stamp per set of extras: `make run` installs only keystead itself (quick),
# `make test` adds the test extra, `make bench` the bench extra; each once.
STAMP       := $(VENV)/.installed-main
STAMP_TEST  := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: run test test-fast bench venv clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(STAMP_BENCH): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

run: $(STAMP)
	$(BIN)/python -m keystead.cli.demo $(DEMO)

test: $(STAMP_TEST)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP_TEST)
	$(BIN)/python -m pytest -q -m 'not slow'

bench: $(STAMP_BENCH)
	$(BIN)/python -m benchmarks.run --out docs/benchmarks.md

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
