"""The stored flow format and its reader: stacks of L flow fields around a frame.

A flow shard (results/<ds>/flow/<method>/<shard>.h5) holds, for every video of the frame shard
of the same id and under the same key, two sequences `u` and `v` of greyscale JPEGs. A video of
N frames has N-1 fields: field i is the displacement from frame i to frame i+1, and the video's
attributes say so (`n_frames` = N, `n_fields` = N-1). Displacements are clipped to +-bound px
and mapped linearly to 0..255 (paper Sec. 3.4: bound 20), so a stored value q means
q * 2 * bound / 255 - bound px; the network input subtracts 128 instead (IMPLEMENTATION-NOTES),
and the stored 128 is +0.078 px at bound 20, not 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from .store import ShardError, ShardReader, decode_jpeg

STACK_LENGTH = 10  # L = 10 fields per motion input (paper Sec. 3.4)


def quantize(d: np.ndarray, bound: float) -> np.ndarray:
    """Displacement (px) -> uint8: clip to +-bound, map linearly to 0..255, round to nearest.

    Rounding bounds the error by half a step (bound / 255 = 0.078 px at 20). Some toolboxes
    truncate instead (mmcv's `quantize`, behind `quantize_flow`, floors; scripts that cast with
    `astype(np.uint8)` do too), which stores values up to a whole step low unless their decoder
    adds half a step back.
    """
    scale = np.float32(255.0 / (2.0 * bound))
    q = (np.clip(d, -bound, bound) + np.float32(bound)) * scale
    return np.rint(q).astype(np.uint8)


def dequantize_table(bound: float) -> np.ndarray:
    """The displacement in px of each stored value 0..255 (index it with the uint8 image)."""
    return (np.arange(256, dtype=np.float64) * (2.0 * bound / 255.0) - bound).astype(np.float32)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 stored values -> displacement in px (float32)."""
    q, table = np.asarray(q, np.uint8), dequantize_table(bound)
    if q.ndim < 2:
        return table[q]
    # a table lookup in OpenCV: exact, and about 5x faster than numpy's fancy indexing
    return cv2.LUT(q.reshape(-1, q.shape[-1]), table).reshape(q.shape)


def stack_indices(n_fields: int, t: int, length: int = STACK_LENGTH) -> np.ndarray:
    """Field indices of the stack around frame t: t - L/2 ... t + L/2 - 1 (offsets -5 ... +4 for
    L = 10, as in the authors' code), clamped to 0 ... n_fields - 1.

    Training and testing sample t only where no clamping is needed (`valid_centres`, as the
    authors do); only a video shorter than L + 1 frames, which has no such t, gets a stack that
    repeats its first or last field. No index outside the stored fields is ever produced.
    """
    if n_fields < 1:
        raise ValueError("a video with fewer than 2 frames has no flow field")
    offsets = np.arange(-(length // 2), length - length // 2)
    return np.clip(t + offsets, 0, n_fields - 1)


def valid_centres(n_fields: int, length: int = STACK_LENGTH) -> range:
    """The frames t whose stack needs no clamping (may be empty for short videos)."""
    return range(length // 2, n_fields - (length - length // 2) + 1)


def hflip_stack(stack: np.ndarray) -> np.ndarray:
    """Mirror a (2L, H, W) stack (u1, v1, u2, ...) left-right; u changes sign, which for stored
    values is u -> 255 - u (exact: the quantisation is symmetric about bound)."""
    out = stack[:, :, ::-1].copy()
    if out.dtype == np.uint8:
        out[0::2] = 255 - out[0::2]
    else:
        out[0::2] = -out[0::2]
    return out


class FlowReader:
    """Flow fields and stacks of one flow shard; like ShardReader, safe to hand to DataLoader
    workers (each opens its own handle). `expect` holds root attributes to insist on, e.g.
    {"method": "tvl1", "bound": 20} or {"frames": shard_attrs(frame_shard)}."""

    def __init__(self, path: str | Path, expect: Mapping[str, Any] | None = None):
        self.shard = ShardReader(path, expect={"stage": "flow", **(expect or {})})

    @property
    def attrs(self) -> dict[str, Any]:
        return self.shard.attrs

    @property
    def bound(self) -> float:
        return float(self.attrs["bound"])

    def keys(self) -> list[str]:
        return self.shard.keys()

    def n_fields(self, key: str) -> int:
        """N - 1 for a video of N frames."""
        return self.shard.length(key, "u")

    def n_frames(self, key: str) -> int:
        return self.n_fields(key) + 1

    def fields(self, key: str, indices: np.ndarray | list[int], as_float: bool = False) -> np.ndarray:
        """Fields at the given indices as (2 * len(indices), H, W), channels u, v interleaved;
        uint8 as stored, or with as_float the displacement in px (float32)."""
        indices = np.asarray(indices, dtype=np.int64)
        n = self.n_fields(key)
        if len(indices) == 0 or indices.min() < 0 or indices.max() >= n:
            raise IndexError(f"{key}: flow fields {indices.tolist()} out of range 0..{n - 1}")
        lo, hi = int(indices.min()), int(indices.max()) + 1
        images: dict[str, list[np.ndarray]] = {}
        for name in ("u", "v"):
            # one slice per component covers the whole stack; each field is decoded once
            encoded = self.shard.encoded_range(key, lo, hi, name)
            images[name] = [self._decode(b, key, name, lo + j) for j, b in enumerate(encoded)]
        h, w = images["u"][0].shape
        out = np.empty((2 * len(indices), h, w), np.uint8)
        for c, i in enumerate(indices):
            out[2 * c] = images["u"][i - lo]
            out[2 * c + 1] = images["v"][i - lo]
        return dequantize(out, self.bound) if as_float else out

    def field(self, key: str, i: int, as_float: bool = False) -> np.ndarray:
        """Field i (frame i -> i + 1) as (2, H, W): u, v."""
        return self.fields(key, [i], as_float)

    def stack(self, key: str, t: int, length: int = STACK_LENGTH, as_float: bool = False) -> np.ndarray:
        """The motion input around frame t: (2L, H, W), u1, v1, ..., uL, vL (see stack_indices)."""
        n = self.n_fields(key)
        if n < 1:
            raise ShardError(f"{self.shard.path}: video {key!r} has {n + 1} frame(s), no flow field")
        if not 0 <= t <= n:
            raise IndexError(f"{key}: frame {t} out of range 0..{n} (video of {n + 1} frames)")
        return self.fields(key, stack_indices(n, t, length), as_float)

    def _decode(self, data: np.ndarray, key: str, name: str, i: int) -> np.ndarray:
        try:
            return decode_jpeg(data, grey=True)
        except ValueError as e:
            raise ShardError(f"{self.shard.path}: video {key!r}, flow {name} {i}: {e}") from e

    def close(self) -> None:
        self.shard.close()
