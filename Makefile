# Every target sets itself up: a .venv with agentrun installed editable with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-py310 lint typecheck contracts pytest demo bench bench-smoke bench-floor bench-scale bench-peers clean

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

# The suite on the oldest Python agentrun supports, in a venv of its own (.venv310). Not part of
# `make test` (CI's machine has 3.11 only); give the interpreter if it is not on the PATH:
# `make test-py310 PY310=$$(pyenv root)/versions/3.10.13/bin/python`.
PY310 ?= python3.10
test-py310:
	test -x .venv310/bin/python || $(PY310) -m venv .venv310
	.venv310/bin/python -m pip install --quiet -e '.[dev,ray]'
	.venv310/bin/python -m pytest -W error -q

demo: $(STAMP)
	$(BIN)/agentrun demo

clean:
	rm -rf $(VENV) .venv310 .mypy_cache .ruff_cache

# Benchmarks against the peers (benchmarks/, docs/benchmarks.md). `bench` creates
# .bench-venv for LiteLLM and azure-ai-agents; `bench-smoke` needs only the project venv.
# `bench-smoke` asserts behaviour, not speed: 0 errors, 1 request per streamed call, at most
# POLL_REQUESTS_BOUND (bench.py) per polled one, 1 token request on a cold service principal.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

bench-smoke: $(STAMP)
	$(BIN)/python benchmarks/bench.py --smoke

# Issue 15's rows only (floor, agentrun's entry points, openai -> proxy, sync), 3 repetitions
# at 100 and 1,000, plus cProfile of the measured phase at 1,000 (~10 minutes).
bench-floor: $(STAMP)
	$(BIN)/python benchmarks/bench.py --plan floor --reps 3 --cprofile

# 10,000 concurrent invocations in every mode (floor, agentrun stream, poll, auto, acompletion,
# acompletion stream, sync from at most 1,000 threads, cold service principal), once each, then
# memory per in-flight run (RSS and tracemalloc, 10,000 polled runs of 60 s) (~25 minutes).
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench.py --plan scale --out benchmarks/results/scale.json --no-docs

# The peers (LiteLLM, azure-ai-agents; builds .bench-venv) beside the floor and the agentrun
# rows the issue's ratios divide by them, at 100 and 1,000, 3 repetitions (~10 minutes).
bench-peers: $(STAMP)
	$(BIN)/python benchmarks/bench.py --plan peers --reps 3 --out benchmarks/results/peers.json --no-docs
