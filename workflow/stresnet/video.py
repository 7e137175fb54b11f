"""Decoding and rescaling through ffmpeg: the one module that runs ffmpeg."""

from __future__ import annotations

import functools
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import ffmpeg
import numpy as np

from .errors import InputError


class VideoError(InputError):
    """A video that cannot be used; `status` is a short machine-readable cause."""

    def __init__(self, path: str | Path, status: str, detail: str):
        super().__init__(f"{path}: {status}: {detail}")
        self.path, self.status, self.detail = str(path), status, detail


@dataclass
class VideoInfo:
    """What the container says of the first video stream, plus what was decoded."""

    fps: float
    width: int
    height: int
    duration: float  # seconds, from the container; 0 when unknown
    n_frames: int = 0

    @property
    def expected_frames(self) -> int:
        return round(self.fps * self.duration)


@functools.cache
def ffmpeg_executable() -> str:
    """ffmpeg from PATH, else the one shipped in the imageio-ffmpeg package."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def scale_filter_args(short_side: int) -> dict[str, str]:
    """Arguments of ffmpeg's scale filter that make the smaller side `short_side`, aspect kept."""
    s = int(short_side)
    return {"w": f"if(gt(iw,ih),-1,{s})", "h": f"if(gt(iw,ih),{s},-1)"}


def decode_command(path: str | Path, short_side: int, threads: int = 1) -> list[str]:
    """The ffmpeg call that writes the first video stream's frames as a stream of PPM images.

    PPM carries each frame's size in its header, so no separate probe is needed; every decoded
    frame is passed through as is (no frame-rate conversion duplicates or drops frames).
    """
    stream = ffmpeg.input(str(path), threads=threads)["v:0"]
    stream = stream.filter("scale", **scale_filter_args(short_side), flags="area")
    out = stream.output("pipe:", format="image2pipe", vcodec="ppm", fps_mode="passthrough")
    out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-threads", str(threads))
    return out.compile(cmd=ffmpeg_executable())


def _read_ppm(stream: IO[bytes]) -> np.ndarray | None:
    """One binary PPM (P6, 8 bit) from the stream as an RGB array; None at the end."""
    tokens: list[bytes] = []
    while len(tokens) < 4:
        line = stream.readline()
        if not line:
            return None
        tokens += line.split(b"#", 1)[0].split()
    magic, width, height, maxval = tokens
    if magic != b"P6" or maxval != b"255":
        raise ValueError(f"unexpected image header from ffmpeg: {tokens!r}")
    w, h = int(width), int(height)
    data = stream.read(w * h * 3)
    if len(data) < w * h * 3:
        return None
    return np.frombuffer(data, np.uint8).reshape(h, w, 3)


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_LINE = re.compile(r"Stream #0:\d+.*?: Video: (.*)")
_SIZE = re.compile(r"\b(\d{1,5})x(\d{1,5})\b")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")


def parse_input_info(log: str) -> VideoInfo | None:
    """fps, size and duration of input 0's first video stream, from ffmpeg's log."""
    head = log.split("Stream mapping:", 1)[0]
    video = _VIDEO_LINE.search(head)
    if not video:
        return None
    size, fps = _SIZE.search(video.group(1)), _FPS.search(video.group(1))
    duration = _DURATION.search(head)
    seconds = 0.0
    if duration:
        hh, mm, ss = duration.groups()
        seconds = int(hh) * 3600 + int(mm) * 60 + float(ss)
    rate = float(fps.group(1)) * (1000 if fps.group(2) else 1) if fps else 0.0
    width, height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    return VideoInfo(fps=rate, width=width, height=height, duration=seconds)


def _last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    keep = [ln for ln in lines if "rror" in ln or "nvalid" in ln or "No such" in ln]
    return (keep or lines or ["no output from ffmpeg"])[-1][:300]


def riff_shortfall(path: Path) -> str:
    """For AVI (RIFF) files: why the file is shorter than its header says, else ''.

    A cut AVI loses its index, so ffmpeg reports the duration of what is left and decodes it
    without complaint; the RIFF size field still tells the original length. Trailing bytes
    after the RIFF chunk (HMDB51 pads its files) are harmless.
    """
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return ""
    announced = struct.unpack("<I", head[4:8])[0] + 8
    actual = path.stat().st_size
    if actual < announced:
        return f"the file has {actual} bytes, its RIFF header announces {announced}"
    return ""


class VideoReader:
    """Iterate over a video's frames as RGB arrays, rescaled so the smaller side is `short_side`.

    After the iteration `info` holds the source's fps, size and duration and the number of
    frames decoded. A file that is missing, empty, undecodable or clearly truncated raises
    VideoError naming the file and the cause.
    """

    # fewer decoded frames than this share of what the container announces means truncated
    truncated_ratio = 0.75

    def __init__(self, path: str | Path, short_side: int = 256, threads: int = 1):
        self.path, self.short_side, self.threads = Path(path), short_side, threads
        self.info: VideoInfo | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if not self.path.is_file():
            raise VideoError(self.path, "missing", "no such file")
        if self.path.stat().st_size == 0:
            raise VideoError(self.path, "empty", "the file has 0 bytes")
        with tempfile.TemporaryFile() as log_file:
            cmd = decode_command(self.path, self.short_side, self.threads)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file)
            n = 0
            try:
                while (frame := _read_ppm(proc.stdout)) is not None:
                    n += 1
                    yield frame
            finally:
                proc.stdout.close()
                returncode = proc.wait()
            log_file.seek(0)
            log = log_file.read().decode("utf-8", "replace")
        self.info = self._check(log, returncode, n)

    def _check(self, log: str, returncode: int, n: int) -> VideoInfo:
        info = parse_input_info(log)
        short = riff_shortfall(self.path)
        if short:
            raise VideoError(self.path, "truncated", short)
        if info is None and "Stream #0" in log and "Video:" not in log.split("Stream mapping:", 1)[0]:
            raise VideoError(self.path, "undecodable", "no video stream (the file holds only other streams)")
        if n == 0 or info is None:
            raise VideoError(self.path, "undecodable", _last_error(log))
        info.n_frames = n
        expected = info.expected_frames
        if returncode != 0:
            raise VideoError(
                self.path, "truncated", f"ffmpeg failed after {n} frames: {_last_error(log)}"
            )
        if expected and n < self.truncated_ratio * expected:
            raise VideoError(
                self.path,
                "truncated",
                f"decoded {n} frames, the container announces about {expected}",
            )
        return info


def encode_video(frames: np.ndarray, path: str | Path, fps: float = 25.0, codec: str = "mpeg4") -> None:
    """Write RGB frames (T, H, W, 3) as a video file, deterministically (used for the demo data)."""
    t, h, w, _ = frames.shape
    out = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
        .output(str(path), vcodec=codec, pix_fmt="yuv420p", qscale=3, g=12, threads=1,
                flags="+bitexact", fflags="+bitexact")
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
    )
    cmd = out.compile(cmd=ffmpeg_executable())
    result = subprocess.run(cmd, input=np.ascontiguousarray(frames, np.uint8).tobytes(),
                            capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {result.stderr.decode()[-300:]}")
