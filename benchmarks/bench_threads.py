"""Training processes sharing the CPUs: wall time of one motion phase (24 steps, batch 4, 32 px,
on the prepared demo) run alone and as N processes at once, each with T torch threads, with
OpenMP's threads waiting by spinning (OMP_WAIT_POLICY=ACTIVE, libgomp's default) and by sleeping
(PASSIVE, which `import stresnet` sets unless the environment says otherwise).

More threads than cores is what a shared node, a job's loader workers or two Snakemake jobs
make; a spinning thread then holds a core its partner needs to reach the barrier.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_section
from stresnet.prepared import prepare_demo

PHASE = {"batch": 4, "bn_batch": 2, "lr": [[0.01, 24]], "chunks": 1, "stride": [1, 1], "size": 32, "seed": 0,
         "momentum": 0.9, "weight_decay": 5e-4, "crop": "multiscale_corners",
         "lr_factors": {"weights": 1, "biases": 2, "bn_scales": 2, "bn_shifts": 1},
         "decay_factors": {"weights": 1, "biases": 0, "bn_scales": 0, "bn_shifts": 0}}
SPEED = {"workers": 0, "micro_batch": 2, "checkpoint_every": 1000}


def train(results: Path, out: Path, threads: int, policy: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stresnet", "train", "--phase", "motion", "--split", "1",
           "--frames-manifest", str(results / "dataset_ready.json"),
           "--flow-manifest", str(results / "flow/dis/manifest.json"), "--pretrained", "none",
           "--config", json.dumps(PHASE), "--speed", json.dumps(SPEED), "--out-dir", str(out),
           "--threads", str(threads)]
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def at_once(results: Path, work: Path, processes: int, threads: int, policy: str) -> float:
    """Seconds until the last of `processes` training processes started together ends."""
    start = time.perf_counter()
    runs = [train(results, work / f"{policy}-{processes}x{threads}-{k}", threads, policy) for k in range(processes)]
    for run in runs:
        _, err = run.communicate()
        if run.returncode:
            sys.exit(err[-2000:])
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/benchmarks.md")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = prepare_demo(Path(tmp) / "data")
        rows = []
        for processes in args.processes:
            seconds = {p: at_once(results, Path(tmp), processes, args.threads, p) for p in ("ACTIVE", "PASSIVE")}
            rows.append(f"| {processes} x {args.threads} | {seconds['ACTIVE']:.0f} | {seconds['PASSIVE']:.0f} |")
            print(rows[-1], flush=True)
    body = ("Wall seconds until the last of N motion phases started together ends (24 steps each, "
            f"{os.cpu_count()} cores), each with T torch threads, by OpenMP wait policy.\n\n"
            "| N x T | ACTIVE (spin) | PASSIVE (sleep, the default now) |\n| --- | --- | --- |\n" + "\n".join(rows))
    print(body)
    if not args.no_write:
        write_section("Training processes sharing the CPUs (OpenMP wait policy)", body)


if __name__ == "__main__":
    main()
