# Two commands on a fresh machine with only Python 3.11+:
#   make run    set up .venv and run the fleet (embedded Redis, workers, beat, Flower)
#   make test   set up .venv and run lint, types, import contracts and the test suite

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck imports pytest stress bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/python main.py

test: lint typecheck imports pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

imports: $(BIN)/.installed
	$(BIN)/lint-imports

# two test processes (PYTEST_WORKERS=1 runs them one at a time): most tests wait on real
# workers, sockets and windows, so two share two cores well (about 7 min against 13)
PYTEST_WORKERS ?= 2
pytest: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

# long runs kept out of the default suite: 20 trials of each order-duplication scenario
stress: $(BIN)/.installed
	ORDER_TRIALS=20 $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/integration/test_order_gate.py -k "concurrent or dead_worker"
	SHUTDOWN_MATRIX=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/integration/test_shutdown.py
	REDIS_CHAOS_TRIALS=10 $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/integration/test_redis_restart.py

bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .crypto-ai .pytest_cache .mypy_cache .ruff_cache
