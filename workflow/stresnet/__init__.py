"""Spatiotemporal Residual Networks (Feichtenhofer, Pinz, Wildes, NIPS 2016) as a pipeline."""

import os

__version__ = "0.1.0"

# OpenMP threads that wait by spinning hold their core: two 2-thread training processes on 2 cores
# ran 24 steps in 172 s each instead of 12 (16 s passive), and a job's CPUs are shared with its
# loader workers, other jobs on a node and Snakemake. Read once, when torch loads OpenMP, so set
# here, before any stage imports torch; a value the user sets is kept. (benchmarks/bench_threads.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
