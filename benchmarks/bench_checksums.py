"""What the per-image CRC-32 of the shards costs (issue 12): the same work with checksums written
and verified, and with both switched off (patched out here only), on the real fixture clips at
short side 256.

    python benchmarks/bench_checksums.py [--rounds 2] [--no-write]

Measured: frame extraction of the clips (decode, JPEG encode, write), DIS flow of the shard
(read, decode, flow, encode, write), random reads of single frames (read, verify, decode), and
the training loader (ST-ResNet clips of Table 2: 5 chunks, 105 JPEGs each). Each figure is the
fastest of `--rounds` interleaved runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import yaml

from bench_loader import prepare
from common import write_section
from stresnet import store as store_module
from stresnet.data import ClipDataset, SampleSchedule

REPO = Path(__file__).resolve().parent.parent
CRC = store_module.zlib
NO_CRC = types.SimpleNamespace(crc32=lambda data: 0)
CHECKED = store_module.ShardReader._checked


def checksums(on: bool) -> None:
    store_module.zlib = CRC if on else NO_CRC
    store_module.ShardReader._checked = CHECKED if on else (lambda self, key, name, first, images: images)


def measure(videos_dir: Path, on: bool, reads: int, clips: int) -> dict[str, float]:
    checksums(on)
    with tempfile.TemporaryDirectory() as tmp:
        store, frames_s, flow_s = prepare(videos_dir, Path(tmp), 256, "dis")
        rng = np.random.default_rng(0)
        picks = [(i, int(rng.integers(store.n_frames(i)))) for i in rng.integers(len(store), size=reads)]
        start = time.perf_counter()
        for i, t in picks:
            store.frame(int(i), t)
        reads_s = time.perf_counter() - start
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())["train"]["st_resnet"]
        dataset = ClipDataset(store, cfg["crop"], cfg["chunks"], cfg["size"], 256)
        schedule = SampleSchedule(len(store), clips, clips, clips, 0, tuple(cfg["stride"]))
        start = time.perf_counter()
        for spec in schedule.micro_batch(0, 0):
            dataset[spec]
        loader_s = time.perf_counter() - start
    return {"frame extraction": frames_s, "DIS flow": flow_s, f"{reads} random frame reads": reads_s,
            f"loader: {clips} ST-ResNet clips": loader_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", default=str(REPO / "tests" / "fixtures" / "videos"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reads", type=int, default=3000)
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    best: dict[bool, dict[str, float]] = {True: {}, False: {}}
    for _ in range(a.rounds):
        for on in (False, True):
            for name, seconds in measure(Path(a.videos), on, a.reads, a.clips).items():
                best[on][name] = min(best[on].get(name, float("inf")), seconds)
    checksums(True)
    rows = ["| work | without checksums (s) | with CRC-32 (s) | cost |", "| --- | ---: | ---: | ---: |"]
    for name in best[True]:
        off, on = best[False][name], best[True][name]
        rows.append(f"| {name} | {off:.2f} | {on:.2f} | {100 * (on - off) / off:+.1f}% |")
    body = "\n".join([
        "Every stored frame and flow image carries its CRC-32 (zlib), written with it and checked on every "
        "read; the baseline switches both off. The 10 fixture clips (1900 frames) at short side 256, DIS flow, "
        f"fastest of {a.rounds} interleaved rounds, idle machine.", "", *rows, "",
        "HDF5's own checksum (the fletcher32 filter) was not taken: it needs chunked datasets, so a "
        "random read of one JPEG would read and check a whole chunk of its neighbours, and its error "
        "would name neither the video nor the frame.",
    ])
    print(body)
    if not a.no_write:
        write_section("Cost of the per-image checksums (issue 12)", body)


if __name__ == "__main__":
    main()
