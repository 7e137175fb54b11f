"""Training data loader at the paper's scale: frames of short side 256, 224x224 crops, Table 2's
chunks and clips per step, from real clips (default: the test fixtures, so it runs on a clone).

    PYTHONPATH=workflow python benchmarks/bench_loader.py [--videos DIR] [--flow dis] [--workers 1 2]

Extracts the clips' frames and optical flow into temporary shards as the workflow does, then
measures samples/s of ClipDataset through a DataLoader for each phase and worker count. A GPU
that trains S samples/s needs about S / (samples/s per worker) workers, and as many free cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from bench_train import loader_rate
from common import video_files, write_section
from stresnet.data import ClipDataset, SampleSchedule, VideoStore
from stresnet.manifest import Manifest
from stresnet.flow import compute_shard, write_flow_manifest
from stresnet.flow_reader import STACK_LENGTH
from stresnet.frames import extract_shard
from stresnet.index import class_table, frames_manifest, merge_reports
from stresnet.train import INPUTS

REPO = Path(__file__).resolve().parent.parent
PHASES = ("motion", "appearance", "st_resnet", "st_resnet_star")


def prepare(root: Path, results: Path, short_side: int, flow: str) -> tuple[pd.DataFrame, float, float]:
    """Frames and flow of every clip under `root` in one shard; labels from the parent folder."""
    paths = video_files(root)
    classes = sorted({Path(p).parent.as_posix() for p in paths})
    index = pd.DataFrame({"path": paths, "shard": "00000", "class": [Path(p).parent.as_posix() for p in paths],
                          "label": [classes.index(Path(p).parent.as_posix()) for p in paths]})
    start = time.perf_counter()
    report = extract_shard(index, "00000", root, results / "frames" / "00000.h5", short_side)
    frames_s = time.perf_counter() - start
    start = time.perf_counter()
    compute_shard(results / "frames" / "00000.h5", results / "flow" / flow / "00000.h5", flow, threads=2)
    flow_s = time.perf_counter() - start
    videos = merge_reports(index, [report])
    videos.to_csv(results / "videos.csv", index=False)
    class_table(index).to_csv(results / "classes.csv", index=False)
    frames_manifest(results / "frames.json", results / "videos.csv", results / "classes.csv",
                    [results / "frames" / "00000.h5"], {})
    write_flow_manifest(results / "flow.json", [results / "flow" / flow / "00000.h5"], results / "frames.json")
    store = VideoStore(videos[videos["status"] == "ok"], Manifest(results / "frames.json", "frames"),
                       Manifest(results / "flow.json", "flow"))
    return store, frames_s, flow_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default=str(REPO / "tests" / "fixtures" / "videos"))
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--flow", default="dis", help="flow method (the loader reads JPEGs either way)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--samples", type=int, default=200, help="about how many clips to load per measurement")
    p.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md")
    a = p.parse_args()
    train = yaml.safe_load((REPO / "config.yaml").read_text())["train"]
    with tempfile.TemporaryDirectory() as tmp:
        store, frames_s, flow_s = prepare(Path(a.videos), Path(tmp), a.short_side, a.flow)
        videos = store.videos
        rows = []
        for phase in PHASES:
            cfg, wants = train[phase], INPUTS[phase]
            dataset = ClipDataset(store, cfg["crop"], cfg["chunks"], cfg["size"], a.short_side, "rgb" in wants,
                                  "flow" in wants)
            micro = min(cfg["bn_batch"], 16)  # the loader's rate does not depend on the batch size
            schedule = SampleSchedule(len(videos), micro, micro, micro, 0, tuple(cfg["stride"]))
            steps = max(2, a.samples // micro)
            rates = [loader_rate(dataset, schedule, w, steps) for w in a.workers]
            jpegs = cfg["chunks"] * (("rgb" in wants) + 2 * STACK_LENGTH * ("flow" in wants))
            rows.append(f"| {phase} | {cfg['chunks']} | {cfg['size']} | {jpegs} | "
                        + " | ".join(f"{r:.1f}" for r in rates) + f" | {rates[0] * jpegs:.0f} |")
    n_frames = int(videos["n_frames"].sum())
    header = " | ".join(f"clips/s, {w} worker{'s' if w > 1 else ''}" for w in a.workers)
    body = "\n".join([
        f"{len(videos)} real clips ({n_frames} frames) from `{Path(a.videos).name}`, short side {a.short_side}, "
        f"flow `{a.flow}`; frames extracted in {frames_s:.0f} s, flow in {flow_s:.0f} s (2 threads). Each "
        "clip of a phase is Table 2's chunks at its crop side (`config.yaml` defaults), decoded, cropped, "
        "resized, flipped and normalised by `ClipDataset`.",
        "",
        f"| phase | chunks | crop | JPEGs decoded per clip | {header} | JPEGs/s, {a.workers[0]} worker |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in a.workers) + " | --- |",
        *rows,
    ])
    print(body)
    if not a.no_write:
        write_section("Data loader at 256 px (Table 2 clips)", body)


if __name__ == "__main__":
    main()
