"""Training and evaluation speed on a prepared dataset (default: the demo's results):
samples/s of each training phase, the data loader's samples/s beside it (the loader must not
be the bottleneck), and evaluation seconds per video.

Run `make demo` (or the workflow on another dataset) first; this reads results/<dataset>/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common import write_section
from stresnet import paths
from stresnet.data import ClipDataset, SampleSchedule, VideoStore, network_inputs, open_videos
from stresnet.evaluate import evaluate, load_model
from stresnet.runtime import autocast, keep_freed_memory
from stresnet.train import INPUTS, clip_loss, initial_model

REPO = Path(__file__).resolve().parent.parent


def loader_rate(dataset: ClipDataset, schedule: SampleSchedule, workers: int, steps: int) -> float:
    batches = list(schedule.batches(0, steps))
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers)
    it = iter(loader)
    next(it)  # start-up of the workers is not counted
    start = time.perf_counter()
    n = sum(len(b["label"]) for b in it)
    return n / (time.perf_counter() - start)


def model_rate(phase: str, dataset: ClipDataset, schedule: SampleSchedule, cfg: dict, split_dir: Path,
               num_classes: int, steps: int, device: torch.device) -> float:
    init = {"st_resnet": [split_dir / "appearance/model.pt", split_dir / "motion/model.pt"],
            "st_resnet_star": [split_dir / "st_resnet/model.pt"]}.get(phase, [])
    # as the Trainer runs it: channels-last, bf16 autocast on CUDA
    model = initial_model(phase, num_classes, "none", [str(p) for p in init])
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    first = next(iter(DataLoader(dataset, batch_sampler=[schedule.micro_batch(0, 0)])))
    batch = network_inputs(first, device)
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        with autocast(device):
            loss, _ = clip_loss(model, phase, batch, cfg["chunks"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return len(batch["label"]) * steps / sum(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="demo")
    p.add_argument("--split", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--eval-videos", type=int, default=4)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    keep_freed_memory()  # as the train and evaluate stages do
    split_dir = REPO / paths.split_dir(a.dataset, a.split)
    meta = torch.load(split_dir / "st_resnet_star/model.pt", weights_only=True)["extra"]
    short_side, flow_method = meta["info"]["short_side"], meta["info"]["flow"]["method"]
    videos, frames, flow = open_videos(REPO / paths.frames_manifest(a.dataset),
                                       REPO / paths.flow_manifest(a.dataset, flow_method))
    train = videos[(videos[f"split{a.split}"] == "train") & (videos["status"] == "ok")]
    store = VideoStore(train, frames, flow)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for phase in ("motion", "appearance", "st_resnet", "st_resnet_star"):
        cfg = json.loads(torch.load(split_dir / phase / "model.pt", weights_only=True)["extra"]["config"])
        wants = INPUTS[phase]
        crop = cfg.get("crop", "multiscale_corners" if phase == "motion" else "jitter_borders")  # older models lack it
        dataset = ClipDataset(store, crop, cfg["chunks"], cfg["size"], short_side, "rgb" in wants, "flow" in wants)
        schedule = SampleSchedule(len(train), cfg["bn_batch"] * 4, cfg["bn_batch"], cfg["bn_batch"], 0, tuple(cfg["stride"]))
        load = loader_rate(dataset, schedule, a.workers, a.steps)
        train_rate = model_rate(phase, dataset, schedule, cfg, split_dir, int(videos["label"].max()) + 1, a.steps, device)
        rows.append((phase, cfg["bn_batch"], cfg["chunks"], cfg["size"], train_rate, load))
    test = videos[(videos[f"split{a.split}"] == "test") & (videos["status"] == "ok")].head(a.eval_videos)
    eval_rows = []
    for kind, models in (("two_stream", [split_dir / "appearance/model.pt", split_dir / "motion/model.pt"]),
                         ("st_resnet_star", [split_dir / "st_resnet_star/model.pt"])):
        model = load_model(kind, [str(m) for m in models])
        start = time.perf_counter()
        evaluate(model, VideoStore(test, frames, flow), 25, workers=0, device=device)
        eval_rows.append((kind, (time.perf_counter() - start) / len(test)))
    lines = ["| phase | clips per step | chunks | crop | training samples/s (clips) | loader samples/s "
             f"({a.workers} workers) |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.1f} |" for r in rows]
    lines += ["", "| evaluation (25 chunks, 2 flips, whole frames) | seconds per video |", "| --- | --- |"]
    lines += [f"| {k} | {s:.2f} |" for k, s in eval_rows]
    body = (f"Dataset `{a.dataset}` split {a.split}, frames of short side {short_side}, flow `{flow_method}`, "
            f"device {device}.\n\n" + "\n".join(lines))
    print(body)
    if not a.no_write:
        write_section(f"Training and evaluation ({a.dataset}, {device})", body)


if __name__ == "__main__":
    main()
