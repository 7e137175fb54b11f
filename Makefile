# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
CORES ?= $(shell nproc 2>/dev/null || echo 2)
export PATH := $(abspath $(VENV))/bin:$(PATH)
# the lock: every package at its exact version (`make install CONSTRAINTS=` installs the newest instead)
CONSTRAINTS ?= requirements/constraints.txt
# where torch and torchvision come from, e.g. https://download.pytorch.org/whl/cpu (the CPU build);
# empty: PyPI's wheel (on Linux x86_64 the CUDA build, about 6 GB with its nvidia-* packages)
TORCH_INDEX ?=
LOCK_VENV ?= build/lock-venv
PINNED = $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: install lock demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(VENV)/bin/python -m pip install -q --no-deps $(PINNED) --index-url $(TORCH_INDEX) torch torchvision)
	$(VENV)/bin/python -m pip install -q $(PINNED) -e '.[test]'
# the package's bytecode, once (pip leaves an editable one's uncompiled): where
# PYTHONDONTWRITEBYTECODE is set, every process would compile what it imports again
	$(VENV)/bin/python -m compileall -q workflow/stresnet
	touch $@

install: $(VENV)/.installed

lock:  ## the newest releases pyproject.toml allows, in a fresh venv, frozen into the constraints and envs/*.yaml
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[test]'
	$(LOCK_VENV)/bin/python requirements/lock.py --python $(LOCK_VENV)/bin/python
	rm -rf $(LOCK_VENV)

demo: install  ## set up, then run the whole workflow on the generated demo dataset
	snakemake --cores $(CORES)

# test processes at once (pytest-xdist): the end-to-end tests spend part of their time waiting
# (on Snakemake, the stand-in SLURM, the S3 server), which another process fills; on 2 cores
# 3 processes taking one test at a time took 18:27, 2 with worksteal 19:11 (docs/benchmarks.md)
TEST_WORKERS ?= 3

test: install  ## set up, then run every test (the slow end-to-end ones too)
	python -m pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 1

test-fast: install  ## skip the slow end-to-end tests
	python -m pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 1 -m "not slow"

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
	python benchmarks/bench_threads.py

clean:  ## remove results/ and .snakemake/, keeping downloads (results/*/download*) and results/pretrained/
	@find results -mindepth 1 -maxdepth 1 ! -name pretrained -print 2>/dev/null | while read -r d; do \
	  find "$$d" -mindepth 1 -maxdepth 1 ! -name 'download*' -print -exec rm -rf {} +; \
	  rmdir "$$d" 2>/dev/null || true; done
	@test ! -e .snakemake || { echo .snakemake; rm -rf .snakemake; }
