"""Evaluation stage: fully convolutional testing of a trained model on a split's test videos.

Sec. 3.4: 25 frames spread evenly over each video, each with its horizontal flip, whole frames
(no crops), one forward pass per video; pre-softmax scores averaged over space, time positions
and flips. Each stream's scores are saved, and their equal-weight average (the fusion).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .batching import check_memory, inference_bytes
from .data import (TEST_PADDINGS, VideoStore, WholeVideoDataset, network_inputs, open_videos, quiet_worker,
                   usable_frames)
from .errors import run_stage
from .manifest import file_sha256
from .models import fold_batch_norm, load_checkpoint, two_stream
from .progress import Progress
from .provenance import tmp_name
from .runtime import PRECISIONS, autocast, setup_process

log = logging.getLogger(__name__)
KINDS = ("two_stream", "st_resnet", "st_resnet_star")


def load_model(kind: str, models: list[str]) -> nn.Module:
    """two_stream from the appearance and motion checkpoints; the others from their own."""
    if kind == "two_stream":
        return two_stream(load_checkpoint(models[0], "appearance").model,
                          load_checkpoint(models[1], "motion").model)
    return load_checkpoint(models[0], kind).model


def inference_model(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` as testing runs it: a copy in eval mode, batch norm folded, channels-last on `device`."""
    return fold_batch_norm(model).to(device, memory_format=torch.channels_last)


@torch.inference_mode()
def video_scores(model: nn.Module, item: dict[str, torch.Tensor], device: torch.device,
                 precision: str = "bf16") -> tuple[np.ndarray, np.ndarray]:
    """Each stream's class scores of one video, averaged over space, time and flips.

    `model` comes from inference_model(); item holds (flips, T, C, H, W) uint8 tensors. Each flip
    is its own pass: the same scores as one pass over both, in half the memory (and on the
    CPU about 15% faster in an exploratory run: 8.1 s -> 7.0 s for a 25-chunk ST-ResNet* video).
    """
    flips, chunks = item["rgb"].shape[:2]
    appearance, motion = 0, 0
    for rgb, flow in zip(item["rgb"], item["flow"]):
        inputs = network_inputs({"rgb": rgb, "flow": flow}, device)
        with autocast(device, precision):
            a, m = model.scores(inputs["rgb"], inputs["flow"], chunks)
        appearance = appearance + a.float().mean((0, 1, 3, 4))  # (1, T', K, h, w) -> (K,)
        motion = motion + m.float().mean((0, 1, 3, 4))
    return (appearance / flips).cpu().numpy(), (motion / flips).cpu().numpy()


def evaluate(model: nn.Module, store: VideoStore, chunks: int = 25, workers: int = 2,
             device: torch.device | None = None, precision: str = "bf16",
             padding: str = "repeat") -> dict[str, np.ndarray]:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_test_settings(store, chunks, device, precision)
    model = inference_model(model, device)
    loader = DataLoader(WholeVideoDataset(store, chunks, padding=padding), batch_size=None, num_workers=workers,
                        worker_init_fn=quiet_worker)
    appearance, motion = [], []
    for item in Progress(loader, "evaluate", total=len(store), unit="video"):
        a, m = video_scores(model, item, device, precision)
        appearance.append(a)
        motion.append(m)
    appearance, motion = np.stack(appearance), np.stack(motion)
    return {"appearance": appearance, "motion": motion, "fused": (appearance + motion) / 2,
            "labels": store.videos["label"].to_numpy(), "paths": store.videos["path"].to_numpy(str)}


def chunk_warnings(chunks: int, n_frames: np.ndarray) -> list[str]:
    """A line when `chunks` test positions exceed the usable frames of every test video."""
    usable = max(len(usable_frames(int(n))) for n in n_frames)
    if chunks <= usable:
        return []
    return [f"evaluate.chunks {chunks} exceeds the usable frames of every test video (at most {usable}): frames "
            "repeat in each (the paper tests 25)"]


def check_test_settings(store: VideoStore, chunks: int, device: torch.device, precision: str) -> None:
    """`chunks` against the test videos: a warning where frames must repeat in every video, a
    refusal where one video's whole frames would not fit in memory."""
    videos = store.videos
    for line in chunk_warnings(chunks, videos["n_frames"].to_numpy()):
        log.warning("%s", line)
    short = store.frames_manifest.settings["short_side"]
    long = max(round(short * max(w, h) / max(1, min(w, h))) for w, h in zip(videos["width"], videos["height"]))
    half = device.type == "cuda" and precision == "bf16"
    check_memory(inference_bytes(chunks, short, long, half), f"evaluate.chunks {chunks}: testing a video of "
                 f"{short} x {long} frames", "lower evaluate.chunks (25 in the paper)", device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet evaluate", description=__doc__)
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--models", nargs="+", required=True,
                   help="model.pt files: appearance and motion for two_stream, else the model's own")
    p.add_argument("--frames-manifest", required=True, help="the dataset's frames manifest (dataset_ready.json)")
    p.add_argument("--flow-manifest", required=True, help="its flow manifest")
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--chunks", type=int, default=25)
    p.add_argument("--padding", choices=TEST_PADDINGS, default="repeat",
                   help="a video with fewer usable frames than chunks: repeat (the authors' test code) | symmetric")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--precision", default="bf16", choices=PRECISIONS, help="bf16: autocast on CUDA; fp32 as the paper")
    p.add_argument("--out", required=True, help="NPZ of the scores")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    setup_process(args.threads)
    videos, frames, flow = open_videos(args.frames_manifest, args.flow_manifest)
    test = videos[(videos[f"split{args.split}"] == "test") & (videos["status"] == "ok")]
    store = VideoStore(test, frames, flow)
    scores = evaluate(load_model(args.kind, args.models), store, args.chunks, args.workers,
                      precision=args.precision, padding=args.padding)
    provenance = {"kind": args.kind, "split": args.split, "chunks": args.chunks, "padding": args.padding,
                  "precision": args.precision,
                  "frames": frames.identity(),
                  "flow": flow.identity(), "models": [{"path": m, "sha256": file_sha256(m)} for m in args.models]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp_name(out), "wb") as f:  # a killed job leaves no scores file a later stage would take
        np.savez(f, **scores, provenance=json.dumps(provenance))
    tmp_name(out).replace(out)
    log.info("%s: %d test videos, top-1 %.3f", args.kind, len(test),
             (scores["fused"].argmax(1) == scores["labels"]).mean())


if __name__ == "__main__":
    run_stage("evaluate", main)
