"""A rehearsal at UCF101's size: the whole DAG of a smoke run (`--config smoke=2`) with
config.yaml's real settings (Table 2's phases, frames of short side 256, TV-L1 flow) on a tree of
13,320 small real videos in UCF101's official layout, split files included.

Videos: one clip per (class, group) rendered by the demo generator and encoded with ffmpeg, its
group's other clips copies of it (UCF101's clips of a group are cut from one video). Reports the
wall time, the time of each rule's jobs and each job's peak memory (Snakemake's benchmark files).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common import UCF101_CLASSES, ucf101_layout, write_section
from stresnet.demo import CLASSES, render_clip
from stresnet.video import encode_video

REPO = Path(__file__).resolve().parent.parent
N_VIDEOS = 13320


def _encode(job: tuple[str, int, Path]) -> None:
    pattern, seed, path = job
    frames = render_clip(pattern, np.random.default_rng(seed), 32, 128, 96)
    encode_video(frames, path)


def make_tree(root: Path) -> int:
    """UCF101's layout with 13,320 clips; each group's first clip rendered and encoded, its other
    clips copies of it. Returns the number of clips encoded."""
    paths = ucf101_layout(root, N_VIDEOS)
    firsts = {p.stem.rsplit("_", 1)[0]: p for p in paths if p.stem.endswith("_c01")}
    patterns = list(CLASSES)
    jobs = [(patterns[UCF101_CLASSES.index(p.parent.name) % len(patterns)], i, p) for i, p in enumerate(firsts.values())]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_encode, jobs, chunksize=16))
    for p in paths:
        if not p.stem.endswith("_c01"):
            shutil.copyfile(firsts[p.stem.rsplit("_", 1)[0]], p)
    return len(jobs)


def job_table(results: Path) -> pd.DataFrame:
    """One row per job that has a Snakemake benchmark file: its path, seconds, peak memory (MB)."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        rows.append({"job": tsv.relative_to(results / "benchmarks").as_posix(), "s": float(bench["s"].iloc[0]),
                     "max_rss_mb": float(bench["max_rss"].iloc[0])})
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=2, help="smoke steps per phase")
    p.add_argument("--workdir", help="keep the tree and results here (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="rehearsal"))
    work.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    distinct = make_tree(work / "ucf") if not (work / "ucf").exists() else -1
    made = time.perf_counter() - tic
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"ucf101": {"format": "ucf101", "root": str(work / "ucf/UCF-101"),
                                     "splits": str(work / "ucf/ucfTrainTestlist")}}
    config.update(targets=["ucf101"], smoke=a.steps)
    config["train"]["pretrained"] = "none"  # no ImageNet download here; the weights' shapes are the same
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "2"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    tic = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    wall = time.perf_counter() - tic
    (work / "snakemake.log").write_text(result.stdout + result.stderr)
    if result.returncode:
        raise SystemExit(f"the rehearsal failed; see {work / 'snakemake.log'}:\n{result.stderr[-3000:]}")
    jobs = job_table(work / "results/smoke/ucf101")
    per_rule = jobs.assign(rule=jobs["job"].map(rule_of)).groupby("rule").agg(
        jobs=("s", "size"), seconds=("s", "sum"), peak_mb=("max_rss_mb", "max"))
    index = pd.read_csv(work / "results/smoke/ucf101/index.csv")
    lines = ["| rule | jobs | seconds (sum over its jobs) | peak memory of a job (MB) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {rule} | {r.jobs} | {r.seconds:.0f} | {r.peak_mb:.0f} |" for rule, r in per_rule.iterrows()]
    over = jobs[jobs["max_rss_mb"] > 4096]
    body = (f"{N_VIDEOS} videos (128x96, 32 frames, {distinct if distinct > 0 else 'kept'} distinct clips, made in "
            f"{made:.0f} s), 101 classes, official split files; config.yaml's settings with `smoke: {a.steps}` "
            f"and `pretrained: none`. The smoke index kept {len(index)} of the {N_VIDEOS} videos.\n\n"
            f"**Whole rehearsal: {wall / 60:.1f} min** on 2 cores (`snakemake --cores 2`), "
            f"{len(jobs)} jobs with benchmark files. Jobs over 4 GB: "
            + (", ".join(f"{j} ({m / 1024:.1f} GB)" for j, m in zip(over["job"], over["max_rss_mb"])) or "none")
            + ".\n\n" + "\n".join(lines))
    print(body)
    if not a.no_write:
        write_section("Rehearsal: a smoke run at UCF101's size", body)


def rule_of(job: str) -> str:
    """The rule of a benchmark file's path: frames/00012.tsv -> frames, split1/train_motion.tsv -> train_motion."""
    parts = job.removesuffix(".tsv").split("/")
    if parts[0] in ("frames", "flow"):
        return parts[0]
    return parts[-1].split("_kind")[0]


if __name__ == "__main__":
    main()
