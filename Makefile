# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lr2vq_jax.main --config configs/default.py --workdir runs/demo

# JOBS pytest-xdist workers (one per core of the 2-core reference machine), handed the tests a
# module at a time, the longest module first (tests/support/schedule.py).
JOBS ?= 2
PYTEST := TMPDIR=$${TMPDIR:-/tmp} $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile \
	--no-loadscope-reorder

test: $(STAMP)
	$(PYTEST) --durations=15 tests

# The edit loop: everything but the end-to-end runs marked `slow` (each of those is still in `test`).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check lr2vq_jax tests benchmarks configs examples
	$(BIN)/ruff format --check lr2vq_jax tests benchmarks configs examples

format: $(STAMP)
	$(BIN)/ruff format lr2vq_jax tests benchmarks configs examples

clean:
	rm -rf $(VENV) runs
