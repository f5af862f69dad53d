# Two commands on a fresh clone: `make demo` and `make test`. Both create/refresh .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_worker_niceness ?= 0
export MLFLOW_ALLOW_FILE_STORE ?= false

.PHONY: demo test test-fast lint format bench clean venv system-deps

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Real images for the offline libraries: Debian fonts (glyph library) and Fashion-MNIST (packages.apt).
# Installed automatically when running as root; otherwise prints the one sudo command to run.
system-deps:
	@missing=$$(for p in $$(cat packages.apt); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "note: for the full offline library run: sudo apt-get install $$(echo $$missing)"; fi; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/t2v demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -q --timeout=900 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_fisher.py
	$(BIN)/python tests/benchmarks/bench_embed.py
	$(BIN)/python tests/benchmarks/bench_grid.py
	$(BIN)/python tests/benchmarks/bench_heads.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
