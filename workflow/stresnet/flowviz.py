"""Stored flow fields as colour images beside their frames (PNG), for a person to look at.

The usual colour wheel: hue is the direction of motion, brightness its magnitude, saturating at
`max_flow` px (by default the 99th percentile of the magnitudes shown). A key in the corner of
each flow panel shows the colour of each direction. Image y points down, so a field coloured as
the wheel's bottom moves down.
"""

from __future__ import annotations

import argparse
import logging

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import SettingError, run_stage
from .flow_reader import FlowReader
from .store import ShardReader, shard_attrs

log = logging.getLogger(__name__)

def flow_to_colour(u: np.ndarray, v: np.ndarray, max_flow: float) -> np.ndarray:
    """Displacement components in px -> RGB uint8 image (hue: direction, value: magnitude)."""
    magnitude, angle = cv2.cartToPolar(u.astype(np.float32), v.astype(np.float32), angleInDegrees=True)
    hsv = np.empty(u.shape + (3,), np.uint8)
    hsv[..., 0] = np.round(angle / 2) % 180  # OpenCV's 8-bit hue runs over 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude * (255.0 / max_flow), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

def colour_wheel(size: int) -> np.ndarray:
    """The key: the colour of every displacement within a disc of radius max_flow."""
    r = np.linspace(-1, 1, size, dtype=np.float32)
    u, v = np.meshgrid(r, r)
    wheel = flow_to_colour(u, v, 1.0)
    wheel[np.hypot(u, v) > 1] = 255
    return wheel

def _label(image: np.ndarray, text: str) -> None:
    scale = max(0.35, image.shape[0] / 400)
    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, (4, int(16 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    colour, width, cv2.LINE_AA)

def render(frames: ShardReader, flow: FlowReader, key: str, fields: list[int],
           max_flow: float | None = None, height: int | None = None) -> np.ndarray:
    """One row per field i: frame i and the colour-coded field i (frame i -> i + 1)."""
    pairs = [(frames.image(key, i), flow.field(key, i, as_float=True)) for i in fields]
    if max_flow is None:
        magnitudes = np.concatenate([np.hypot(f[0], f[1]).ravel() for _, f in pairs])
        max_flow = max(1.0, float(np.percentile(magnitudes, 99)))
    rows = []
    for i, (frame, field) in zip(fields, pairs):
        colour = flow_to_colour(field[0], field[1], max_flow)
        side = max(16, min(colour.shape[:2]) // 4)
        colour[-side - 2:-2, -side - 2:-2] = colour_wheel(side)
        row = [frame, colour]
        if height and height != frame.shape[0]:
            width = round(frame.shape[1] * height / frame.shape[0])
            row = [cv2.resize(p, (width, height), interpolation=cv2.INTER_AREA) for p in row]
        _label(row[0], f"frame {i}")
        _label(row[1], f"flow {i}->{i + 1}, wheel edge {max_flow:.1f} px")
        rows.append(np.hstack(row))
    return np.vstack(rows)

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet flowviz", description=__doc__)
    p.add_argument("--flow", required=True, help="flow shard (HDF5)")
    p.add_argument("--frames", required=True, help="the frame shard it was computed from")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--video", help="video key (default: the shard's first video)")
    p.add_argument("--fields", type=int, nargs="*", help="field indices (default: 3 spread out)")
    p.add_argument("--max-flow", type=float, help="magnitude in px at the wheel's edge")
    p.add_argument("--height", type=int, help="height of each panel in px (default: stored)")
    p.add_argument("--colours", type=int, help="write a palette PNG of at most this many colours "
                   "(2..256; about a third of the size)")
    return p

def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        flow = FlowReader(args.flow, expect={"frames": shard_attrs(args.frames)})
        frames = ShardReader(args.frames)
        if not flow.keys():
            raise ValueError(f"{args.flow} holds no video")
        key = args.video or flow.keys()[0]
        n = flow.n_fields(key)
        fields = args.fields if args.fields else sorted({round(x) for x in np.linspace(0, n - 1, 3)})
        if n < 1 or min(fields) < 0 or max(fields) >= n:
            raise ValueError(f"video {key!r} has fields 0..{n - 1}; asked for {fields}")
        png = Image.fromarray(render(frames, flow, key, fields, args.max_flow, args.height))
        if args.colours:
            png = png.quantize(colors=max(2, min(256, args.colours)), method=Image.Quantize.MEDIANCUT,
                               dither=Image.Dither.NONE)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        png.save(args.out, format="PNG", optimize=True)
    except OSError as e:  # the image could not be written
        raise SettingError(f"{args.out}: cannot write the image ({e}); choose another --out") from e
    log.info("%s: video %r, fields %s -> %s", args.flow, key, fields, args.out)

if __name__ == "__main__":
    run_stage("flowviz", main)
