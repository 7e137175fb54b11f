"""HDF5 shards of JPEG sequences: the one format that frames and flow are stored in.

A shard holds a group of videos. Each video is a group under `videos/<key>` (the key is the
video's path relative to the dataset root) holding one or more named sequences of encoded
images (`frames`, or the flow components `u` and `v`). A sequence is two datasets: `data`,
all JPEG files concatenated, and `offsets`, where image i is data[offsets[i]:offsets[i+1]].
Reading image i therefore touches two small slices, never the whole video. `crc32` holds each
image's CRC-32, checked on every read: a changed byte is an error naming the shard, the video and
the image (not a silently different picture).

The root attributes record what produced the shard (stage, parameters, versions); a reader
can refuse a shard made with other settings. A shard is written to a temporary name and
renamed when complete, so a killed job leaves nothing a later stage would accept.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import h5py
import numpy as np

from .errors import InputError

FORMAT_VERSION = 2  # 2: a CRC-32 per image


class ShardError(InputError):
    """A shard that is missing, incomplete, corrupt or made with other settings."""


def rebuild_hint(path: str | Path) -> str:
    return f"rebuild it: snakemake --force {path}, then snakemake"


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB (H, W, 3) or greyscale (H, W) uint8 image -> JPEG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes | np.ndarray, grey: bool = False) -> np.ndarray:
    """JPEG bytes -> RGB (H, W, 3) or, with grey, (H, W) uint8 image; the one decoder of every stage.

    libjpeg fills a cut image with grey and only warns, so the start and end markers are checked
    too; a changed byte inside stored data is caught before decoding, by the shard's CRC-32.
    """
    buf = np.frombuffer(data, np.uint8)
    if len(buf) < 4 or bytes(buf[:2]) != b"\xff\xd8" or bytes(buf[-2:]) != b"\xff\xd9":
        raise ValueError("corrupt JPEG data (missing start or end marker)")
    image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("corrupt JPEG data")
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ShardWriter:
    """Write a shard atomically: use as a context manager, add videos, and on a clean exit the
    file appears under its final name; on an error nothing does."""

    def __init__(self, path: str | Path, attrs: Mapping[str, Any]):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.attrs = dict(attrs)
        self.keys: list[str] = []

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp, "w")
        for name, value in self.attrs.items():
            self.file.attrs[name] = json.dumps(value)
        self.file.attrs["format_version"] = FORMAT_VERSION
        self.file.attrs["complete"] = False
        return self

    def add(self, key: str, sequences: Mapping[str, Iterable[bytes]], **attrs: Any) -> None:
        """Store one video: its named sequences of encoded images and a few attributes."""
        group = self.file.create_group(f"videos/{key}")
        for name, images in sequences.items():
            images = list(images)
            sizes = np.fromiter((len(b) for b in images), np.int64, len(images))
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            data = np.frombuffer(b"".join(images), np.uint8)
            seq = group.create_group(name)
            seq.create_dataset("data", data=data)
            seq.create_dataset("offsets", data=offsets)
            seq.create_dataset("crc32", data=np.array([zlib.crc32(b) for b in images], np.uint32))
        for name, value in attrs.items():
            group.attrs[name] = value
        self.keys.append(key)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.file.create_dataset("keys", data=np.array(self.keys, dtype=object),
                                         dtype=h5py.string_dtype())
                self.file.attrs["complete"] = True
            self.file.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def shard_attrs(path: str | Path) -> dict[str, Any]:
    """The producing stage's attributes of a complete shard."""
    with h5py.File(path, "r") as f:
        return {k: json.loads(v) for k, v in f.attrs.items() if isinstance(v, str)}


def damaged_items(path: str | Path) -> list[str]:
    """What `stresnet verify` reports of a shard: every damaged image, or why it cannot be read."""
    reader = ShardReader(path)
    try:
        return reader.damaged()
    except (ShardError, OSError, KeyError) as e:
        return [f"{path}: cannot be read ({e}); {rebuild_hint(path)}"]
    finally:
        reader.close()


class ShardReader:
    """Random access to the images of one shard. Opens the file lazily, so it can be created in
    one process and used in DataLoader workers (each opens its own handle)."""

    def __init__(self, path: str | Path, expect: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.expect = dict(expect or {})
        self._file: h5py.File | None = None
        self._offsets: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_offsets": {}}

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            self._file = self._open()
        return self._file

    def _open(self) -> h5py.File:
        if not self.path.is_file():
            raise ShardError(f"{self.path}: no such shard")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise ShardError(f"{self.path}: not a readable HDF5 shard ({e})") from e
        if not f.attrs.get("complete", False):
            f.close()
            raise ShardError(f"{self.path}: incomplete shard (its writer did not finish); {rebuild_hint(self.path)}")
        if f.attrs.get("format_version") != FORMAT_VERSION:
            version = f.attrs.get("format_version")
            f.close()
            raise ShardError(f"{self.path}: shard format {version}, this code reads {FORMAT_VERSION}; "
                             f"{rebuild_hint(self.path)}")
        attrs = {k: json.loads(v) for k, v in f.attrs.items() if isinstance(v, str)}
        for name, want in self.expect.items():
            if attrs.get(name) != want:
                f.close()
                raise ShardError(
                    f"{self.path}: made with {name}={attrs.get(name)!r}, expected {want!r}; "
                    "rerun the stage that writes it"
                )
        return f

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.file.attrs.items() if isinstance(v, str)}

    def keys(self) -> list[str]:
        return [k.decode() if isinstance(k, bytes) else k for k in self.file["keys"][()]]

    def _sequence(self, key: str, name: str) -> h5py.Group:
        try:
            return self.file[f"videos/{key}/{name}"]
        except KeyError:
            raise ShardError(f"{self.path}: no sequence {name!r} for video {key!r}") from None

    def offsets(self, key: str, name: str = "frames") -> np.ndarray:
        cached = self._offsets.get((key, name))
        if cached is None:
            cached = self._offsets[(key, name)] = self._sequence(key, name)["offsets"][()]
        return cached

    def checksums(self, key: str, name: str = "frames") -> np.ndarray:
        cached = self._offsets.get((key, name, "crc32"))
        if cached is None:
            cached = self._offsets[(key, name, "crc32")] = self._sequence(key, name)["crc32"][()]
        return cached

    def _checked(self, key: str, name: str, first: int, images: list[np.ndarray]) -> list[np.ndarray]:
        expected = self.checksums(key, name)
        for i, data in enumerate(images, first):
            if zlib.crc32(data) != int(expected[i]):
                raise ShardError(f"{self.path}: video {key!r}, {name} {i}: checksum mismatch, the stored bytes "
                                 f"changed since they were written; {rebuild_hint(self.path)}")
        return images

    def length(self, key: str, name: str = "frames") -> int:
        return len(self.offsets(key, name)) - 1

    def video_attrs(self, key: str) -> dict[str, Any]:
        return dict(self.file[f"videos/{key}"].attrs)

    def encoded(self, key: str, i: int, name: str = "frames") -> np.ndarray:
        """The encoded bytes of image i of a video's sequence."""
        offsets = self.offsets(key, name)
        if not 0 <= i < len(offsets) - 1:
            raise IndexError(f"{key}: image {i} of {name!r} out of range 0..{len(offsets) - 2}")
        return self._checked(key, name, i, [self._sequence(key, name)["data"][offsets[i]:offsets[i + 1]]])[0]

    def encoded_range(self, key: str, start: int, stop: int, name: str = "frames") -> list[np.ndarray]:
        """The encoded bytes of images start..stop-1, read in one slice."""
        offsets = self.offsets(key, name)
        if not 0 <= start <= stop <= len(offsets) - 1:
            raise IndexError(f"{key}: images {start}..{stop - 1} of {name!r} out of range "
                             f"0..{len(offsets) - 2}")
        data = self._sequence(key, name)["data"][offsets[start]:offsets[stop]]
        cuts = offsets[start:stop + 1] - offsets[start]
        return self._checked(key, name, start, [data[a:b] for a, b in zip(cuts[:-1], cuts[1:])])

    def image(self, key: str, i: int, name: str = "frames", grey: bool = False) -> np.ndarray:
        """Image i of a video's sequence, decoded (RGB, or greyscale with grey)."""
        try:
            return decode_jpeg(self.encoded(key, i, name), grey=grey)
        except ValueError as e:
            raise ShardError(f"{self.path}: video {key!r}, {name} {i}: {e}") from e

    def damaged(self) -> list[str]:
        """Every image of the shard whose bytes fail their checksum, one line each."""
        found = []
        for key in self.keys():
            for name in self.file[f"videos/{key}"]:
                for i in range(self.length(key, name)):
                    try:
                        self.encoded(key, i, name)
                    except ShardError as e:
                        found.append(str(e))
        return found

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._offsets = None, {}
