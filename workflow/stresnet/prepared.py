"""A demo dataset prepared without Snakemake, in a folder of its own: for the checks and tests that
need prepared data (benchmarks/gpu_check.py, the test suite). No stage imports this module, so
its code is part of no stage's identity."""

from __future__ import annotations

from pathlib import Path

from .demo import generate
from .flow import compute_shard, write_flow_manifest
from .frames import extract_shard
from .index import build_index, class_table, frames_manifest, merge_reports


def prepare_demo(root: str | Path, short_side: int = 32, n_frames: int = 12, width: int = 64, height: int = 48,
                 groups: int = 3) -> Path:
    """A demo dataset generated under root/raw and run through index, frames and DIS flow into
    root/results, with its manifests, without Snakemake: for checks and tests that need prepared
    data (benchmarks/gpu_check.py, the test suite). Returns root/results."""
    root = Path(root)
    if not (root / "raw").exists():
        generate(root / "raw", seed=0, n_groups=groups, clips_per_group=1, n_frames=n_frames, width=width,
                 height=height)
    index = build_index("demo", root / "raw/UCF101", root / "raw/ucfTrainTestlist", shard_size=11)
    results = root / "results"
    reports, frames, flows = [], [], []
    for shard in sorted(index["shard"].unique()):
        frames.append(results / f"frames/{shard}.h5")
        flows.append(results / f"flow/dis/{shard}.h5")
        reports.append(extract_shard(index, shard, root / "raw/UCF101", frames[-1], short_side=short_side))
        compute_shard(frames[-1], flows[-1], method="dis")
    merge_reports(index, reports).to_csv(results / "videos.csv", index=False)
    class_table(index).to_csv(results / "classes.csv", index=False)
    frames_manifest(results / "dataset_ready.json", results / "videos.csv", results / "classes.csv", frames, {})
    write_flow_manifest(results / "flow/dis/manifest.json", flows, results / "dataset_ready.json")
    return results
