# Quick start: `make run` (daemon on the simulated rig), `make test` (the whole suite).
SHELL := /bin/bash
BIN := .venv/bin
STAMP := .venv/.installed
RUN_STAMP := .venv/.installed-run
BENCH_STAMP := .venv/.installed-bench

.PHONY: setup setup-run setup-bench run test lint typecheck pytest firmware-test bench bench-smoke clean

setup: $(STAMP)
setup-run: $(RUN_STAMP)
setup-bench: $(BENCH_STAMP)

# what the tests need (firmware toolchain, D-Bus, ...) on top of what `make run` needs
$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh test
	touch $@ $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh run
	touch $@

# the benchmarks' peers (biosppy, NeuroKit2) on top of what the tests need
$(BENCH_STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh bench
	touch $@ $(STAMP) $(RUN_STAMP)

run: setup-run
	bash scripts/with-broker.sh $(BIN)/nmcore run $(ARGS)

test: setup lint typecheck firmware-test pytest

lint: setup
	$(BIN)/ruff check src drivers tests benchmarks
	$(BIN)/ruff format --check src drivers tests benchmarks

typecheck: setup
	$(BIN)/mypy src drivers benchmarks

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

firmware-test:
	$(MAKE) -C firmware test

bench: setup-bench
	$(BIN)/python benchmarks/run_all.py

bench-smoke: setup-bench
	$(BIN)/python benchmarks/run_all.py --smoke

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
