# Every target sets itself up: a .venv with agentrun installed editable with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck contracts pytest demo bench bench-smoke bench-floor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# tests/typing/ holds misuses mypy must report (each under a `type: ignore` it must use).
typecheck: $(STAMP)
	$(BIN)/mypy --strict agentrun tests/typing

# The import layering ([tool.importlinter] in pyproject.toml).
contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest -W error

test: lint typecheck contracts bench-smoke pytest

demo: $(STAMP)
	$(BIN)/agentrun demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache

# Benchmarks against the peers (benchmarks/, docs/benchmarks.md). `bench` creates
# .bench-venv for LiteLLM and azure-ai-agents; `bench-smoke` needs only the project venv.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

bench-smoke: $(STAMP)
	$(BIN)/python benchmarks/bench.py --smoke

# Issue 15's rows only (floor, agentrun's entry points, openai -> proxy, sync), 3 repetitions
# at 100 and 1,000, plus cProfile of the measured phase at 1,000 (~10 minutes).
bench-floor: $(STAMP)
	$(BIN)/python benchmarks/bench.py --plan floor --reps 3 --cprofile
