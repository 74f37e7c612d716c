# Two commands do all the set-up on a fresh clone:
#   make demo   create .venv, install, run the main study
#   make test   create .venv, install, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench figures clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gradprobe demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/python -m pytest -n 2 --dist loadfile
	$(BIN)/python -m pytest -q -n 2 --doctest-modules src/gradprobe

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python benchmarks/probe_overhead.py
	$(BIN)/python benchmarks/phase_diagram.py
	$(BIN)/python benchmarks/sweep_throughput.py

figures: $(STAMP)
	$(BIN)/python -m gradprobe.app.readme_figures --out docs/img

clean:
	rm -rf $(VENV) runs reports .pytest_cache
