"""The demo dataset: small synthetic videos in UCF101's exact layout, generated from a seed.

Its classes need different cues. In the `Still*` classes an object of a class-specific colour
and shape stands still: only appearance tells them apart. In the `Disk*` classes the same grey
disk moves up or down, grows or shrinks: only motion tells them apart (a single frame shows a
disk somewhere, of some size). So the appearance stream, the motion stream and their fusion
each show their part in the metrics. No class is the mirror image of another, since training
flips frames horizontally (a disk moving left, flipped, moves right).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from .video import encode_video

log = logging.getLogger(__name__)

# name -> (colour RGB, shape, velocity in px/frame (dx, dy), growth of the radius in px/frame)
CLASSES = {
    "StillRedSquare": ((220, 40, 40), "square", (0.0, 0.0), 0.0),
    "StillGreenTriangle": ((40, 200, 60), "triangle", (0.0, 0.0), 0.0),
    "StillBlueDisk": ((50, 70, 230), "disk", (0.0, 0.0), 0.0),
    "DiskMovingUp": ((200, 200, 200), "disk", (0.0, -2.0), 0.0),
    "DiskMovingDown": ((200, 200, 200), "disk", (0.0, 2.0), 0.0),
    "DiskGrowing": ((200, 200, 200), "disk", (0.0, 0.0), 1.5),
    "DiskShrinking": ((200, 200, 200), "disk", (0.0, 0.0), -1.5),
}


def _mask(shape: str, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if shape == "disk":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(x - cx) <= r * 0.85) & (np.abs(y - cy) <= r * 0.85)
    # upward triangle inside the circle of radius r
    return (y <= cy + r * 0.7) & (y >= cy - r) & (np.abs(x - cx) <= (y - (cy - r)) * 0.6)


def render_clip(cls: str, rng: np.random.Generator, n_frames: int, width: int, height: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip of class `cls`."""
    colour, shape, (vx, vy), growth = CLASSES[cls]
    r = rng.uniform(0.28, 0.32) * height  # mean radius; large: the demo must be learnt in minutes
    travel_x, travel_y = abs(vx) * (n_frames - 1), abs(vy) * (n_frames - 1)
    # the centre stays inside the frame (at least half the object is always visible)
    x0 = rng.uniform(r / 2, width - r / 2 - travel_x) + (travel_x if vx < 0 else 0)
    y0 = rng.uniform(r / 2, height - r / 2 - travel_y) + (travel_y if vy < 0 else 0)
    # a smooth random background, different in every clip
    coarse = rng.uniform(40, 120, size=(4, 5, 3)).astype(np.float32)
    import cv2  # here: every Snakemake start reads this module (its names), cv2 is 0.06 s

    background = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        image = background.copy()
        radius = r + growth * (t - (n_frames - 1) / 2)
        image[_mask(shape, height, width, x0 + vx * t, y0 + vy * t, radius)] = colour
        image += rng.normal(0, 3, size=image.shape).astype(np.float32)  # sensor noise
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def held_out_groups(split: int, n_groups: int) -> list[int]:
    """Groups held out in split k (1-based), as UCF101 holds out 7 of its 25 groups per split."""
    per_split = max(1, n_groups // 3)
    return list(range((split - 1) * per_split + 1, split * per_split + 1))


SPLIT_FILES = ["classInd.txt", *(f"{kind}list0{k}.txt" for k in (1, 2, 3) for kind in ("train", "test"))]


def video_names(n_groups: int, clips_per_group: int) -> list[str]:
    """The demo's videos, `<Class>/v_<Class>_gXX_cYY.avi`, as the workflow declares them."""
    return [f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi" for cls in CLASSES for g in range(1, n_groups + 1)
            for c in range(1, clips_per_group + 1)]


def generate(out: str | Path, seed: int = 0, n_groups: int = 6, clips_per_group: int = 2,
             n_frames: int = 24, width: int = 128, height: int = 96, fps: float = 25.0) -> None:
    """Write `<out>/UCF101/<Class>/v_<Class>_gXX_cYY.avi` and `<out>/ucfTrainTestlist/`."""
    if n_groups < 3:
        raise ValueError("n_groups must be at least 3 (one test group per split)")
    out = Path(out)
    videos, lists = out / "UCF101", out / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names: list[tuple[str, int, str]] = []
    for name in video_names(n_groups, clips_per_group):  # in this order: the generator's draws follow it
        cls, g = name.split("/")[0], int(name.split("_g")[1][:2])
        (videos / cls).mkdir(parents=True, exist_ok=True)
        encode_video(render_clip(cls, rng, n_frames, width, height), videos / name, fps)
        names.append((name, g, cls))
    crlf = "\r\n"
    (lists / "classInd.txt").write_text(
        "".join(f"{i} {cls}{crlf}" for i, cls in enumerate(CLASSES, start=1)), newline="")
    for k in (1, 2, 3):
        held_out = held_out_groups(k, n_groups)
        train = [f"{n} {list(CLASSES).index(c) + 1}{crlf}" for n, g, c in names if g not in held_out]
        test = [f"{n}{crlf}" for n, g, c in names if g in held_out]
        (lists / f"trainlist0{k}.txt").write_text("".join(train), newline="")
        (lists / f"testlist0{k}.txt").write_text("".join(test), newline="")
    log.info("%d demo videos of %d classes -> %s", len(names), len(CLASSES), out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet demo", description=__doc__)
    p.add_argument("--out", required=True, help="folder to write UCF101/ and ucfTrainTestlist/ into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--groups", type=int, default=6)
    p.add_argument("--clips-per-group", type=int, default=2)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = build_parser().parse_args(argv)
    generate(a.out, a.seed, a.groups, a.clips_per_group, a.frames, a.width, a.height)


if __name__ == "__main__":
    main()
