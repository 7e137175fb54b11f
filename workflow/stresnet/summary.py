"""Summary stage: what a dataset's index will make, in one line, once it is listed: videos and
classes, frame and flow jobs, and the disk its frames, flow and models will take (estimates).

A checkpoint's later jobs are planned only once it has run, so a dry run of a new dataset shows
no frame or flow job; this line is where a user sees how big the run is before it starts.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .errors import run_stage
from .index import read_table

log = logging.getLogger(__name__)
# stored bytes per byte of the source videos, measured on UCF101 and HMDB51 clips at short side
# 256 (docs/benchmarks.md, "Disk per dataset"): JPEG frames at quality 90, flow at 95
FRAMES_PER_VIDEO_BYTE = 6.7
FLOW_PER_VIDEO_BYTE = 3.1


# what a phase's model.pt holds, in counts of ResNet-50 (torchvision's, without its classifier),
# so that this job, one per new index, needs no torch (5 s of imports); tests/test_summary.py
# checks the sizes against the models built on the meta device
RESNET50_PARAMS = 23_508_032
BN_FEATURES, BN_LAYERS = 26_560, 53  # running mean and variance (fp32) per feature, a step count (int64) per layer
FEATURES = 2048  # what the classifier of each stream reads
# ST-ResNet's 8 temporal convolutions per stream: 1x1 ones made 3-tap, 2 more copies of their weights
TEMPORAL_WEIGHTS = 2 * (16_384 + 65_536 + 262_144 + 1_048_576)


def model_bytes(num_classes: int) -> dict[str, int]:
    """Bytes of each phase's model.pt (parameters and buffers, fp32)."""
    appearance = 4 * (RESNET50_PARAMS + (FEATURES + 1) * num_classes) + 4 * 2 * BN_FEATURES + 8 * BN_LAYERS
    motion = appearance + 4 * 64 * (20 - 3) * 7 * 7  # conv1 takes 10 stacked x, y fields, not 3 colours
    both = appearance + motion + 2 * 2 * TEMPORAL_WEIGHTS * 4  # two streams, two more copies each
    return {"motion": motion, "appearance": appearance, "st_resnet": both, "st_resnet_star": both}


def summarise(dataset: str, index: Path, classes: Path, root: Path, short_side: int, flow_method: str,
              splits: int) -> dict:
    """The figures of the summary line; video bytes from the files the index lists."""
    table, names = read_table(index), read_table(classes)
    videos = sum((root / p).stat().st_size for p in table["path"] if (root / p).is_file())
    scale = (short_side / 256) ** 2  # the ratios were measured at 256
    models = splits * sum(model_bytes(len(names)).values())
    return {"dataset": dataset, "videos": len(table), "classes": len(names), "frame_jobs": int(table["shard"].nunique()),
            "flow_jobs": int(table["shard"].nunique()), "flow_method": flow_method, "video_gb": videos / 1e9,
            "frames_gb": videos * FRAMES_PER_VIDEO_BYTE * scale / 1e9, "flow_gb": videos * FLOW_PER_VIDEO_BYTE * scale / 1e9,
            "models_gb": models / 1e9, "splits": splits}


def size(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{1000 * gb:.0f} MB"


def line(s: dict) -> str:
    return (f"{s['dataset']}: {s['videos']} videos of {s['classes']} classes -> {s['frame_jobs']} frame jobs and "
            f"{s['flow_jobs']} flow jobs ({s['flow_method']}); disk, estimated from {size(s['video_gb'])} of video: "
            f"frames {size(s['frames_gb'])}, flow {size(s['flow_gb'])}, models {size(s['models_gb'])} "
            f"({s['splits']} split(s) x 4 phases)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet summary", description=__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--index", required=True, help="index.csv")
    p.add_argument("--classes", required=True, help="classes.csv")
    p.add_argument("--root", required=True, help="folder of the videos")
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--flow-method", default="tvl1")
    p.add_argument("--splits", type=int, default=3, help="splits that will be trained")
    p.add_argument("--out", required=True, help="JSON of the figures")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = build_parser().parse_args(argv)
    figures = summarise(a.dataset, Path(a.index), Path(a.classes), Path(a.root), a.short_side, a.flow_method, a.splits)
    Path(a.out).write_text(json.dumps(figures, indent=2) + "\n")
    log.info("%s", line(figures))


if __name__ == "__main__":
    run_stage("summary", main)
