"""Predict: one video file in, its top-5 classes out, with a trained model folder
(results/<dataset>/split<k>), preparing the video exactly as the pipeline did for training."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from .data import flow_tensor, inference_positions, rgb_tensor, usable_frames
from .errors import SettingError, run_stage
from .evaluate import inference_model, video_scores
from .flow import flow_method
from .flow_reader import quantize, stack_indices
from .models import load_checkpoint
from .runtime import setup_process
from .store import decode_jpeg, encode_jpeg
from .video import VideoReader

MODEL_PREFERENCE = ("st_resnet_star", "st_resnet")


def find_model(model_dir: Path) -> Path:
    for kind in MODEL_PREFERENCE:
        if (path := model_dir / kind / "model.pt").is_file():
            return path
    raise SettingError(f"{model_dir}: no st_resnet_star/model.pt or st_resnet/model.pt; "
                       "give --model-dir a trained split folder, results/<dataset>/split<k>")


def flow_stacks(grey: list[np.ndarray], positions: np.ndarray, flow: dict) -> list[np.ndarray]:
    """The flow stacks around `positions` of greyscale frames, computed and stored (quantised,
    JPEG) as the flow stage does, so the model sees what it was trained on."""
    estimate = flow_method(flow["method"], flow["params"]).create()
    n_fields = len(grey) - 1
    needed = sorted({int(i) for t in positions for i in stack_indices(n_fields, int(t))})
    fields = {}
    for i in needed:
        d = estimate(grey[i], grey[i + 1])
        fields[i] = [decode_jpeg(encode_jpeg(quantize(d[..., c], flow["bound"]), flow["jpeg_quality"]), grey=True)
                     for c in (0, 1)]
    return [np.stack([fields[int(i)][c] for i in stack_indices(n_fields, int(t)) for c in (0, 1)])
            for t in positions]


def predict(video: str | Path, model_dir: str | Path, top: int = 5, chunks: int = 25,
            padding: str = "repeat") -> list[tuple[str, float]]:
    path = find_model(Path(model_dir))
    checkpoint = load_checkpoint(path, path.parent.name)
    info = checkpoint.extra["info"]
    frames = list(VideoReader(video, info["short_side"]))
    if "jpeg_quality" in info:  # the frames as the frame stage stored them, and the flow stage read them
        stored = [encode_jpeg(f, info["jpeg_quality"]) for f in frames]
        frames, grey = [decode_jpeg(b) for b in stored], [decode_jpeg(b, grey=True) for b in stored]
    else:  # a model from before model.pt recorded the frames' JPEG quality
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    if len(frames) < 2:
        raise SettingError(f"{video}: {len(frames)} frame(s); at least 2 are needed for optical flow")
    positions = inference_positions(usable_frames(len(frames)), chunks, padding)
    picked = [frames[t] for t in positions]
    stacks = flow_stacks(grey, positions, info["flow"])
    item = {"rgb": torch.stack([rgb_tensor(picked, False), rgb_tensor(picked, True)]),
            "flow": torch.stack([flow_tensor(stacks, False), flow_tensor(stacks, True)])}
    device = torch.device("cpu")
    appearance, motion = video_scores(inference_model(checkpoint.model, device), item, device)
    fused = torch.from_numpy((appearance + motion) / 2)
    probabilities = fused.softmax(0).numpy()
    best = np.argsort(-probabilities)[:top]
    return [(info["classes"][i], float(probabilities[i])) for i in best]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="stresnet predict", description=__doc__)
    p.add_argument("video", help="a video file")
    p.add_argument("--model-dir", required=True, help="results/<dataset>/split<k>")
    p.add_argument("--top", type=int, default=5)
    a = p.parse_args(argv)
    setup_process()
    for name, probability in predict(a.video, a.model_dir, a.top):
        print(f"{probability:7.3f}  {name}")


if __name__ == "__main__":
    run_stage("predict", main)
