# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
CORES ?= $(shell nproc 2>/dev/null || echo 2)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install  ## set up, then run the whole workflow on the generated demo dataset
	snakemake --cores $(CORES)

test: install  ## set up, then run every test (the slow end-to-end ones too)
	python -m pytest

test-fast: install  ## skip the slow end-to-end tests
	python -m pytest -m "not slow"

lint: install
	snakemake --lint

bench: install  ## measure the stages; figures go to docs/benchmarks.md (bench_train needs `make demo` first)
	python benchmarks/bench_frames.py
	python benchmarks/bench_dryrun.py
	python benchmarks/bench_flow.py
	python benchmarks/bench_models.py --append docs/benchmarks.md
	python benchmarks/bench_train.py
	python benchmarks/bench_loader.py
	python benchmarks/bench_checksums.py

clean:
	rm -rf results .snakemake
