"""Frame extraction on real clips: frames/s, stored bytes per frame, random-access reads/s.

Reads every clip under --videos (default: the real clips in tests/fixtures/videos).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import video_files, write_section
from stresnet.frames import extract_shard
from stresnet.store import ShardReader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/videos"))
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--reads", type=int, default=3000)
    p.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md")
    a = p.parse_args()
    root = Path(a.videos)
    paths = video_files(root)
    index = pd.DataFrame({"path": paths, "shard": "00000"})
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "frames.h5"
        start = time.perf_counter()
        report = extract_shard(index, "00000", root, shard, a.short_side, a.jpeg_quality)
        seconds = time.perf_counter() - start
        frames = int(report["n_frames"].sum())
        reader = ShardReader(shard)
        keys = reader.keys()
        stored = sum(int(reader.offsets(k)[-1]) for k in keys)
        file_bytes = shard.stat().st_size
        rng = np.random.default_rng(0)
        picks = [(keys[v], int(rng.integers(reader.length(keys[v])))) for v in rng.integers(len(keys), size=a.reads)]
        start = time.perf_counter()
        for key, i in picks:
            reader.encoded(key, i)
        raw_rate = a.reads / (time.perf_counter() - start)
        start = time.perf_counter()
        for key, i in picks:
            reader.image(key, i)
        decoded_rate = a.reads / (time.perf_counter() - start)
        fresh = ShardReader(shard)  # cold: each video's offsets read once, as a new worker would
        start = time.perf_counter()
        for key, i in picks[:500]:
            fresh.image(key, i)
        cold_rate = 500 / (time.perf_counter() - start)
    bad = report[report["status"] != "ok"]
    body = f"""Frame extraction of {len(report)} real clips ({len(bad)} rejected), short side {a.short_side},
JPEG quality {a.jpeg_quality}, one process (ffmpeg decodes in its own process, Python encodes).

| figure | value |
| --- | --- |
| frames extracted | {frames} |
| extraction, frames/s (one job) | {frames / seconds:.0f} |
| stored JPEG bytes per frame | {stored / frames:.0f} |
| shard file bytes per frame (with HDF5 overhead) | {file_bytes / frames:.0f} |
| random reads/s, encoded bytes | {raw_rate:.0f} |
| random reads/s, decoded RGB frame | {decoded_rate:.0f} |
| random reads/s, decoded, fresh reader (cold offsets) | {cold_rate:.0f} |
"""
    print(body)
    if not a.no_write:
        write_section("Frame extraction", body)


if __name__ == "__main__":
    main()
