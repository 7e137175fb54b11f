"""Training and test samples from the frame and flow shards: sampling in time, the paper's
augmentation, normalisation, and a deterministic schedule of which sample each step sees.

A sample is a clip of T chunks (T = 1 for the stream phases); chunk i is frame t_i and, for the
motion stream, the stack of L flow fields around t_i. All chunks of a clip, and both modalities,
share one crop and one flip.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .flow_reader import STACK_LENGTH, FlowReader, hflip_stack, valid_centres
from .index import class_names, read_table
from .manifest import Manifest, ManifestError
from .runtime import channels_last
from .store import ShardReader

# RGB input: torchvision's ImageNet mean/std, which its weights expect (IMPLEMENTATION-NOTES)
RGB_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
RGB_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
FLOW_CENTRE = 128.0  # flow input: stored value - 128, no division (IMPLEMENTATION-NOTES)
MOTION_CROP_SIDES = (256, 224, 192, 168)  # Sec. 3.4, for frames of short side 256


class VideoStore:
    """Frames and flow fields of a dataset's videos, read from the shards that the frames and
    flow manifests list, each shard checked against its manifest's settings."""

    def __init__(self, videos: pd.DataFrame, frames: Manifest, flow: Manifest | None = None):
        self.frames_manifest, self.flow_manifest = frames, flow
        self.videos = videos.reset_index(drop=True)
        self._frames: dict[str, ShardReader] = {}
        self._flow: dict[str, FlowReader] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def _readers(self, i: int) -> tuple[str, ShardReader, FlowReader | None]:
        row = self.videos.iloc[i]
        shard = row["shard"]
        if shard not in self._frames:
            expect = {"stage": "frames", **self.frames_manifest.settings}
            self._frames[shard] = ShardReader(self.frames_manifest.file(shard), expect=expect)
            if self.flow_manifest is not None:
                self._flow[shard] = FlowReader(self.flow_manifest.file(shard), expect=self.flow_manifest.settings)
        return row["path"], self._frames[shard], self._flow.get(shard)

    def n_frames(self, i: int) -> int:
        return int(self.videos.iloc[i]["n_frames"])

    def label(self, i: int) -> int:
        return int(self.videos.iloc[i]["label"])

    def frame(self, i: int, t: int) -> np.ndarray:
        key, frames, _ = self._readers(i)
        return frames.image(key, int(t))

    def flow_stack(self, i: int, t: int, length: int = STACK_LENGTH) -> np.ndarray:
        key, _, flow = self._readers(i)
        if flow is None:
            raise ValueError("this VideoStore was opened without a flow manifest")
        return flow.stack(key, int(t), length)


def dataset_classes(frames: Manifest) -> list[str]:
    """The names of every class of the dataset, by label, from its frames manifest's classes.csv."""
    return class_names(read_table(frames.file("classes")))


def open_videos(frames_manifest: str | Path, flow_manifest: str | Path | None = None
                ) -> tuple[pd.DataFrame, Manifest, Manifest | None]:
    """The video table and the manifests of a prepared dataset; the flow must have been made
    from this very frames manifest."""
    frames = Manifest(frames_manifest, "frames")
    flow = Manifest(flow_manifest, "flow") if flow_manifest else None
    if flow is not None and flow.input_sha256("frames") != frames.sha256:
        raise ManifestError(f"{flow.path} was made from other frames than {frames.path} lists; "
                            "rerun snakemake to rebuild the flow")
    return read_table(frames.file("videos")), frames, flow


def usable_frames(n_frames: int, stacks: bool = True) -> range:
    """The frames a sample may be centred on: with `stacks`, those whose whole stack of L flow
    fields exists (t - L/2 ... t + L/2 - 1, as the authors sample), else every frame.

    A video too short to have any such frame (fewer than L + 1 frames) falls back to every frame;
    only there do its stacks repeat (clamp) the first or last field (`stack_indices`).
    """
    centres = valid_centres(n_frames - 1) if stacks else range(0)
    return centres if len(centres) else range(n_frames)


def chunk_positions(frames: range, chunks: int, stride: int, start: float) -> np.ndarray:
    """Frames of T chunks at temporal stride tau within `frames`, starting at `start` (0..1) of
    the free range (Sec. 3.4, Table 2: random start, stride tau).

    A range too short for the stride gets a smaller one (Sec. 3.4: "For videos with less than
    705 frames we reduce the stride"); one shorter than `chunks` repeats frames evenly.
    """
    n = len(frames)
    if chunks > 1 and (chunks - 1) * stride + 1 > n:
        stride = max(1, (n - 1) // (chunks - 1))
    span = (chunks - 1) * stride + 1
    if span > n:
        return spread_positions(frames, chunks)
    t0 = int(start * (n - span + 1 - 1e-9))
    return frames[0] + t0 + stride * np.arange(chunks)


def spread_positions(frames: range, chunks: int = 25) -> np.ndarray:
    """`chunks` frames spread evenly from the first to the last of `frames`, each position
    rounded (Sec. 3.4, "Fully convolutional inference": 25 frames; as in the authors' code).
    Fewer frames than chunks: frames repeat evenly (training's short clips, as the authors'
    round(linspace(...)) in cnn_get_im_flow_batch.m; testing pads instead: `inference_positions`)."""
    offsets = np.floor(np.linspace(0, len(frames) - 1, chunks) + 0.5).astype(np.int64)
    return frames[0] + offsets


TEST_PADDINGS = ("repeat", "symmetric")


def inference_positions(frames: range, chunks: int = 25, padding: str = "repeat") -> np.ndarray:
    """The frames of a test video's `chunks` chunks: spread evenly over `frames`; a video with
    fewer frames takes each once, in order, then pads (Sec. 3.3: "for extremely short videos we
    symmetrically pad the input over time"):

    - repeat (the authors' test code, cnn_get_im_flow_batch.m, lines 105-131): the frames again,
      alternately their last ones and their first ones, until `chunks` are reached; 10 frames
      a..j give a..j a..j a..e;
    - symmetric (the paper's word; padarray(..., 'symmetric', 'post') of the authors' stream
      code): mirrored at the end, again and again; a..j j..a a..e.
    """
    n = len(frames)
    if n >= chunks:
        return spread_positions(frames, chunks)
    if padding == "symmetric":
        return frames[0] + np.pad(np.arange(n), (0, chunks - n), mode="symmetric")
    if padding != "repeat":
        raise ValueError(f"unknown test padding {padding!r}; expected one of {TEST_PADDINGS}")
    offsets, odd = list(range(n)), False
    while len(offsets) < chunks:  # the authors' loop at stride 1: "back" (the last ones), then "front"
        missing = chunks - len(offsets)
        offsets += list(range(n))[:missing] if odd else list(range(n))[-missing:]
        odd = not odd
    return frames[0] + np.array(offsets, np.int64)


@dataclass
class Crop:
    x: int
    y: int
    w: int
    h: int
    flip: bool


CROPS = ("multiscale_corners", "jitter_borders")
BORDER_STEPS = 20  # offsets per axis near each border: linspace(0, .25, 20) and linspace(.75, 1, 20)


def jittered_size(rng: np.random.Generator, height: int, width: int, short_side: int) -> tuple[int, int]:
    """Sec. 3.4: "we randomly jitter the width and height of the 224 x 224 input frame by +-25%".
    As the authors' borders25 (cnn_ucf101_get_frame_batch.m, line 194): width and height each
    224 times a factor drawn uniformly from [0.75, 1.25], independently, at most the frame's;
    224 belongs to frames of short side 256 and scales with `short_side`."""
    side = 224 * short_side / 256
    jitter = rng.uniform(0.75, 1.25, size=2)
    return min(round(side * jitter[0]), width), min(round(side * jitter[1]), height)


def border_offset(rng: np.random.Generator, free_x: int, free_y: int) -> tuple[int, int]:
    """Sec. 3.4: the crop taken "from a maximum of 25% distance from the image borders". As the
    authors' borders25 and f25noCtr grid (cnn_ucf101_get_frame_batch.m lines 48-55 and 228-232,
    cnn_get_im_flow_batch.m lines 55-62 and 315-319): the offset of each axis is floor(free * f),
    f one of 20 evenly spaced fractions in [0, 0.25] for both axes (near the top-left corner) or
    in [0.75, 1] for both (near the bottom-right corner); never the centre, never top-right or
    bottom-left before the flip. `free_x`, `free_y`: frame minus crop."""
    # f = linspace(0, .25, 20)[k] = k / 76 or linspace(.75, 1, 20)[k] = (57 + k) / 76; in integers
    steps = 4 * (BORDER_STEPS - 1)
    first = 3 * (BORDER_STEPS - 1) * int(rng.integers(2))
    kx, ky = (first + int(k) for k in rng.integers(BORDER_STEPS, size=2))
    return free_x * kx // steps, free_y * ky // steps


def sample_crop(rng: np.random.Generator, height: int, width: int, crop: str, short_side: int) -> Crop:
    """A training crop of a (height, width) frame and a random flip (Sec. 3.4), drawn as the authors do.

    multiscale_corners (the motion stream; the authors' multiScaleRegular, cnn_ucf101_get_flow_batch.m
    lines 215-217 and 279-284): width and height each drawn from {256, 224, 192, 168} (at short
    side 256), the crop at one of the 4 corners or the centre. jitter_borders (the appearance
    stream and ST-ResNet; borders25 and f25noCtr): `jittered_size` at `border_offset`.
    """
    if crop == "multiscale_corners":
        scale = short_side / 256
        w, h = (min(round(int(rng.choice(MOTION_CROP_SIDES)) * scale), side) for side in (width, height))
        corner = int(rng.integers(5))  # 4 corners and the centre
        x = {0: 0, 1: width - w, 2: 0, 3: width - w, 4: (width - w) // 2}[corner]
        y = {0: 0, 1: 0, 2: height - h, 3: height - h, 4: (height - h) // 2}[corner]
        return Crop(x, y, w, h, bool(rng.integers(2)))
    if crop != "jitter_borders":
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    w, h = jittered_size(rng, height, width, short_side)
    x, y = border_offset(rng, width - w, height - h)
    return Crop(x, y, w, h, bool(rng.integers(2)))


def crop_resize(image: np.ndarray, crop: Crop | None, size: int | None) -> np.ndarray:
    """(H, W, C) image cut to the crop and resized to size x size (no crop: as it is)."""
    if crop is not None:
        image = image[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w]
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image if image.ndim == 3 else image[:, :, None]


def rgb_tensor(frames: list[np.ndarray], flip: bool) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (T, 3, H, W) uint8, mirrored if `flip` (network_inputs normalises)."""
    x = np.stack(frames)
    if flip:
        x = x[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def flow_tensor(stacks: list[np.ndarray], flip: bool) -> torch.Tensor:
    """(T, 2L, H, W) uint8 flow stacks, flipped as flow must be (u -> 255 - u) if `flip`."""
    return torch.from_numpy(np.stack([hflip_stack(s) if flip else s for s in stacks]))


def network_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of the datasets on `device` as the networks take it: float, normalised, channels innermost.

    The datasets hand over uint8, a quarter of the bytes of float through the loader's workers,
    and the arithmetic runs on the device.
    """
    out = {}
    for key, x in batch.items():
        x = x.to(device, non_blocking=True)
        if key == "rgb":
            mean, std = _rgb_normalisation(device)
            x = (channels_last(x).float() - mean) / std
        elif key == "flow":
            x = channels_last(x).float() - FLOW_CENTRE
        out[key] = x
    return out


@functools.cache
def _rgb_normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB_MEAN and RGB_STD on `device`, copied there once: a copy from host memory per batch would
    make the host wait for the device each time."""
    return tuple(torch.as_tensor(v, device=device).view(3, 1, 1) for v in (RGB_MEAN, RGB_STD))


def quiet_worker(_: int) -> None:
    """DataLoader worker set-up: one thread each, so workers do not compete with the model."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class ClipDataset(Dataset):
    """Training clips: T chunks at a stride from a random start, cropped, flipped, normalised.
    Chunks lie on frames whose whole flow stack exists when the phase reads flow (`usable_frames`).

    Items are addressed by a spec (video index, seed, stride) from `SampleSchedule`, so what a
    step sees does not depend on worker processes or on where a run was resumed.
    """

    def __init__(self, store: VideoStore, crop: str, chunks: int, size: int, short_side: int,
                 rgb: bool = True, flow: bool = True):
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
        self.store, self.crop, self.chunks, self.size = store, crop, chunks, size
        self.short_side, self.rgb, self.flow = short_side, rgb, flow

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, spec: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        video, seed, stride = spec
        rng = np.random.default_rng(seed)
        usable = usable_frames(self.store.n_frames(video), stacks=self.flow)
        positions = chunk_positions(usable, self.chunks, stride, rng.uniform())
        frames = [self.store.frame(video, t) for t in positions] if self.rgb else []
        stacks = [self.store.flow_stack(video, t).transpose(1, 2, 0) for t in positions] if self.flow else []
        height, width = (frames or stacks)[0].shape[:2]  # flow fields have their frames' size
        crop = sample_crop(rng, height, width, self.crop, self.short_side)
        item = {"label": torch.tensor(self.store.label(video))}
        if self.rgb:
            item["rgb"] = rgb_tensor([crop_resize(f, crop, self.size) for f in frames], crop.flip)
        if self.flow:
            item["flow"] = flow_tensor([crop_resize(s, crop, self.size).transpose(2, 0, 1) for s in stacks], crop.flip)
        return item


class WholeVideoDataset(Dataset):
    """Whole test videos: `chunks` frames spread evenly over the frames with a whole flow stack
    (Sec. 3.4), a short video padded (`inference_positions`), whole frames, each with its flip."""

    def __init__(self, store: VideoStore, chunks: int = 25, rgb: bool = True, flow: bool = True,
                 padding: str = "repeat"):
        if padding not in TEST_PADDINGS:
            raise ValueError(f"unknown test padding {padding!r}; expected one of {TEST_PADDINGS}")
        self.store, self.chunks, self.rgb, self.flow, self.padding = store, chunks, rgb, flow, padding

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, video: int) -> dict[str, torch.Tensor]:
        positions = inference_positions(usable_frames(self.store.n_frames(video)), self.chunks, self.padding)
        item = {"label": torch.tensor(self.store.label(video)), "index": torch.tensor(video)}
        if self.rgb:
            frames = [self.store.frame(video, t) for t in positions]
            item["rgb"] = torch.stack([rgb_tensor(frames, False), rgb_tensor(frames, True)])
        if self.flow:
            stacks = [self.store.flow_stack(video, t) for t in positions]
            item["flow"] = torch.stack([flow_tensor(stacks, False), flow_tensor(stacks, True)])
        return item


class SampleSchedule:
    """Which samples micro-batch m of step `it` holds: a pure function of (seed, it, m).

    A step's samples, their order and their batch-norm groups depend only on the settings that
    shape results: the SGD batch is cut into groups of `bn` samples, the last taking the rest
    (Table 2's 256 with 86: 86 + 86 + 84), and a micro-batch holds `micro` / `bn` whole groups,
    so `micro` (a multiple of `bn`) sets only the speed. Videos are visited in a fresh seeded
    permutation each epoch; each sample has its own seed (start, crop, flip); each step draws
    one temporal stride from `strides` (Table 2: per batch). Nothing is listed ahead: a step's plan
    is drawn when it is needed, so start-up time and memory do not grow with the schedule.
    """

    def __init__(self, n_videos: int, batch: int, bn: int, micro: int, seed: int,
                 strides: tuple[int, int] = (1, 1)):
        if micro % bn:
            raise ValueError(f"micro_batch {micro} must be a multiple of bn_batch {bn}: a micro-batch holds "
                             "whole batch-norm groups")
        self.n, self.batch, self.seed, self.strides = n_videos, batch, seed, strides
        starts = list(range(0, batch, micro))
        self.sizes = [min(micro, batch - a) for a in starts]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self._perms: dict[int, np.ndarray] = {}
        self._plan: tuple[int, np.ndarray, int] | None = None

    @property
    def accumulation(self) -> int:
        return len(self.sizes)

    def _video(self, s: int) -> int:
        epoch = s // self.n
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perms[epoch][s % self.n])

    def _step(self, it: int) -> tuple[np.ndarray, int]:
        """Step `it`'s sample seeds and temporal stride, from one generator per step."""
        if self._plan is None or self._plan[0] != it:
            rng = np.random.default_rng([self.seed, it])
            self._plan = (it, rng.integers(2**31, size=self.batch), int(rng.integers(self.strides[0], self.strides[1] + 1)))
        return self._plan[1], self._plan[2]

    def micro_batch(self, it: int, m: int) -> list[tuple[int, int, int]]:
        seeds, stride = self._step(it)
        first = it * self.batch
        return [(self._video(first + j), int(seeds[j]), stride)
                for j in range(int(self.offsets[m]), int(self.offsets[m + 1]))]

    def loader_batches(self, start: int, stop: int, ranks: int = 1, rank: int = 0) -> "LazyBatches":
        """The micro-batches of steps start..stop-1 of process `rank`, as a DataLoader batch_sampler
        that draws each when the loader asks for it."""
        return LazyBatches(self, start, stop, ranks, rank)

    def batches(self, start: int, stop: int, ranks: int = 1, rank: int = 0) -> Iterator[list[tuple[int, int, int]]]:
        """Micro-batches of steps start..stop-1 that process `rank` of `ranks` takes."""
        for it in range(start, stop):
            for m in range(rank, self.accumulation, ranks):
                yield self.micro_batch(it, m)


class LazyBatches:
    """A batch_sampler over a SampleSchedule: its length is known, its batches drawn on demand."""

    def __init__(self, schedule: SampleSchedule, start: int, stop: int, ranks: int, rank: int):
        self.schedule, self.start, self.stop, self.ranks, self.rank = schedule, start, stop, ranks, rank

    def __len__(self) -> int:
        return (self.stop - self.start) * len(range(self.rank, self.schedule.accumulation, self.ranks))

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return self.schedule.batches(self.start, self.stop, self.ranks, self.rank)
