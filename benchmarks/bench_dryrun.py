"""Snakemake's planning cost on a UCF101-sized tree: 13,320 empty placeholder videos in the
official layout (101 classes, 25 groups) with official-style split files.

Times `snakemake -n` before the index exists (the index is a checkpoint, so the frame jobs are
not yet known), then builds the index and times `snakemake -n` again, now listing every job.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import write_section

REPO = Path(__file__).resolve().parent.parent
N_VIDEOS = 13320


def make_tree(root: Path) -> None:
    """101 classes x 25 groups, clips spread so the total is 13,320; split k tests groups 7(k-1)+1..7k."""
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = [f"Class{i:03d}" for i in range(1, 102)]
    names = []
    for n in range(N_VIDEOS):
        cls, rest = classes[n % 101], n // 101
        names.append((cls, rest % 25 + 1, rest // 25 + 1))
    for cls in classes:
        (videos / cls).mkdir(parents=True)
    crlf = "\r\n"
    for cls, g, c in names:
        (videos / cls / f"v_{cls}_g{g:02d}_c{c:02d}.avi").touch()
    (lists / "classInd.txt").write_text("".join(f"{i} {c}{crlf}" for i, c in enumerate(classes, 1)), newline="")
    for k in (1, 2, 3):
        test = range(7 * (k - 1) + 1, 7 * k + 1)
        rows = [(f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi", classes.index(cls) + 1, g) for cls, g, c in names]
        (lists / f"trainlist0{k}.txt").write_text("".join(f"{p} {l}{crlf}" for p, l, g in rows if g not in test), newline="")
        (lists / f"testlist0{k}.txt").write_text("".join(f"{p}{crlf}" for p, l, g in rows if g in test), newline="")


def snakemake(workdir: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env)
    if result.returncode:
        raise SystemExit(result.stdout + result.stderr)
    return time.perf_counter() - start, result.stdout


def total_jobs(out: str) -> int:
    return int(re.search(r"^total\s+(\d+)$", out, re.M)[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_tree(work / "ucf")
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        config["datasets"] = {"ucf101": {"format": "ucf101", "root": str(work / "ucf/UCF-101"),
                                         "splits": str(work / "ucf/ucfTrainTestlist")}}
        config["targets"] = ["ucf101"]
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        before, out_before = snakemake(work, "-n")
        index_s, _ = snakemake(work, "results/ucf101/index.csv")
        after, out_after = snakemake(work, "-n")
        files = sum(1 for _ in (work / "results").rglob("*"))
    body = f"""A UCF101-sized tree of {N_VIDEOS} empty placeholder videos (official layout and split files),
shard size {config['index']['shard_size']}.

| figure | value |
| --- | --- |
| `snakemake -n` before the index exists: seconds / jobs | {before:.1f} / {total_jobs(out_before)} |
| building the index (`snakemake results/ucf101/index.csv`): seconds | {index_s:.1f} |
| `snakemake -n` with the index: seconds / jobs | {after:.1f} / {total_jobs(out_after)} |
| files under results/ after indexing | {files} |

Targets: under 20 s and under 1,000 jobs.
"""
    print(body)
    if not a.no_write:
        write_section("Workflow planning (dry run)", body)


if __name__ == "__main__":
    main()
