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

.PHONY: run lint test test-fast bench venv clean

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

# ruff checks every Python folder. mypy checks the packages strictly by import
# name (keystead is keystead/ with keystead/cli, keystead.rotation is rotation/,
# keystead.policies is policies/; see pyproject.toml), and the tests listed
# here more loosely (the others still have Optional results they do not narrow).
LINT_PATHS := keystead rotation policies stacks benchmarks tests
MYPY_PACKAGES := -p keystead
MYPY_TESTS := tests/policies tests/test_public_surface.py tests/test_references.py tests/test_error_tree.py \
	tests/test_layout.py tests/test_config.py tests/test_envelope.py tests/test_vault.py tests/test_cli.py \
	tests/stacks
# mypy reads the import names as installed (keystead.policies is policies/):
# a tree of links in that layout, rebuilt each run so new modules are seen.
MYPY_TREE := $(VENV)/mypy-tree

lint: $(STAMP_TEST)
	$(BIN)/ruff check $(LINT_PATHS)
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/keystead
	for f in keystead/*; do ln -s "$(CURDIR)/$$f" $(MYPY_TREE)/keystead/; done
	for d in policies rotation stacks; do ln -s "$(CURDIR)/$$d" $(MYPY_TREE)/keystead/$$d; done
	MYPYPATH=$(CURDIR)/$(MYPY_TREE) $(BIN)/mypy $(MYPY_PACKAGES)
	MYPYPATH=$(CURDIR)/$(MYPY_TREE) $(BIN)/mypy $(MYPY_TESTS)

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP_TEST)
	$(BIN)/python -m pytest -q -m 'not slow'

bench: $(STAMP_BENCH)
	$(BIN)/python -m benchmarks.run --out docs/benchmarks.md

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis .mypy_cache .ruff_cache
