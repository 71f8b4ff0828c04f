# Two commands on a fresh machine:  `make demo`  (main job)  and  `make test`  (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo_out

.PHONY: install demo test lint format clean

$(BIN)/fuse4seg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)" || $(BIN)/pip install -q "torch>=2.8"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/fuse4seg

demo: install
	$(BIN)/fuse4seg demo -o $(DEMO_DIR) --overwrite

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format:
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
