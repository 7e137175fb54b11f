"""Snakemake's planning cost on a UCF101-sized tree (13,320 empty placeholder videos in the
official layout, 101 classes, 25 groups, official-style split files), or with `--kinetics` on a
Kinetics-400-sized `folder` dataset (300,000 placeholder videos in 400 class folders, Kinetics'
train.csv and validate.csv).

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

from common import ucf101_layout, write_section

REPO = Path(__file__).resolve().parent.parent
N_VIDEOS = 13320


def make_tree(root: Path) -> None:
    for path in ucf101_layout(root, N_VIDEOS):
        path.touch()


K400_VIDEOS, K400_CLASSES, K400_VALIDATION = 300_000, 400, 20_000


def make_kinetics_tree(root: Path) -> None:
    """<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 and annotations/{train,validate}.csv."""
    videos, ann = root / "videos", root / "annotations"
    ann.mkdir(parents=True)
    labels = [f"action {i:03d}" for i in range(K400_CLASSES)]  # Kinetics' labels have spaces
    for label in labels:
        (videos / label.replace(" ", "_")).mkdir(parents=True)
    rows = {"train": [], "validate": []}
    for n in range(K400_VIDEOS):
        label, vid, start = labels[n % K400_CLASSES], f"{n:011d}", n % 300
        (videos / label.replace(" ", "_") / f"{vid}_{start:06d}_{start + 10:06d}.mp4").touch()
        rows["validate" if n < K400_VALIDATION else "train"].append(f'"{label}",{vid},{start},{start + 10},{"val" if n < K400_VALIDATION else "train"}\n')
    for name, lines in rows.items():
        (ann / f"{name}.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "".join(lines))


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
    p.add_argument("--kinetics", action="store_true", help="a Kinetics-400-sized folder dataset instead")
    p.add_argument("--shard-size", type=int, help="videos per shard (default: config.yaml's)")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    name = "kinetics400" if a.kinetics else "ucf101"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        if a.kinetics:
            make_kinetics_tree(work / "k400")
            config["datasets"] = {name: {"format": "folder", "root": str(work / "k400/videos"),
                                         "splits": str(work / "k400/annotations")}}
        else:
            make_tree(work / "ucf")
            config["datasets"] = {name: {"format": "ucf101", "root": str(work / "ucf/UCF-101"),
                                         "splits": str(work / "ucf/ucfTrainTestlist")}}
        config["targets"] = [name]
        if a.shard_size:
            config["index"]["shard_size"] = a.shard_size
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        before, out_before = snakemake(work, "-n")
        index_s, _ = snakemake(work, f"results/{name}/index.csv")
        after, out_after = snakemake(work, "-n")
        files = sum(1 for _ in (work / "results").rglob("*"))
    what = (f"A Kinetics-400-sized `folder` dataset: {K400_VIDEOS:,} empty placeholder videos in {K400_CLASSES} "
            f"class folders, Kinetics' train.csv ({K400_VIDEOS - K400_VALIDATION:,} rows) and validate.csv "
            f"({K400_VALIDATION:,} rows)" if a.kinetics else
            f"A UCF101-sized tree of {N_VIDEOS} empty placeholder videos (official layout and split files)")
    body = f"""{what}, shard size {config['index']['shard_size']}.

| figure | value |
| --- | --- |
| `snakemake -n` before the index exists: seconds / jobs | {before:.1f} / {total_jobs(out_before)} |
| building the index (`snakemake results/{name}/index.csv`): seconds | {index_s:.1f} |
| `snakemake -n` with the index: seconds / jobs | {after:.1f} / {total_jobs(out_after)} |
| files under results/ after indexing | {files} |

""" + ("Target: under 60 s.\n" if a.kinetics else "Targets: under 20 s and under 1,000 jobs.\n")
    print(body)
    if not a.no_write:
        title = "Workflow planning (dry run)"
        write_section(f"{title}, Kinetics-400 size, shard size {config['index']['shard_size']}" if a.kinetics else title, body)


if __name__ == "__main__":
    main()
