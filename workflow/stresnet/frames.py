"""Frame extraction stage: one shard of videos -> JPEG frames (short side 256) in HDF5.

Every video of the shard is decoded; a bad one (missing, empty, undecodable, truncated, or with
fewer than two frames) is reported with its cause and left out, while the good ones are stored.
The report CSV beside the shard lists every video with what was found.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import h5py
import pandas as pd

from . import __version__
from .index import REPORT_COLUMNS, read_table, write_csv_atomic
from .errors import run_stage
from .progress import Progress
from .store import ShardWriter, encode_jpeg
from .video import VideoError, VideoReader

log = logging.getLogger(__name__)


def frames_attrs(short_side: int, jpeg_quality: int) -> dict:
    """What a frame shard records of its making; readers compare against it."""
    return {"stage": "frames", "short_side": short_side, "jpeg_quality": jpeg_quality}


def shortfall(decoded: int, announced: int, tolerance: float) -> bool:
    """Whether a video decoded fewer frames than its container announces by more than the
    tolerance (a share, and at least one frame: fps x duration often rounds one frame up)."""
    return bool(announced) and announced - decoded > max(1.0, tolerance * announced)


def extract_shard(index: pd.DataFrame, shard: str, root: str | Path, out: str | Path,
                  short_side: int = 256, jpeg_quality: int = 90, min_frames: int = 2,
                  threads: int = 1, partial_tolerance: float = 0.02, accept_partial: bool = False) -> pd.DataFrame:
    """Write the frames of the shard's videos to `out`; return one report row per video.

    A video short of what its container announces by more than `partial_tolerance` is `partial`
    and left out like other bad videos, unless `accept_partial`; both counts are reported.
    """
    rows = index[index["shard"] == shard]
    if rows.empty:
        raise ValueError(f"shard {shard} has no videos in the index")
    attrs = {**frames_attrs(short_side, jpeg_quality), "shard": shard,
             "versions": {"stresnet": __version__, "opencv": cv2.__version__, "h5py": h5py.__version__}}
    report = []
    with ShardWriter(out, attrs) as writer:
        for path in Progress(rows["path"], f"frames {shard}", unit="video"):
            reader = VideoReader(Path(root) / path, short_side, threads)
            entry = {"path": path, "n_frames": 0, "expected_frames": 0, "fps": 0.0, "width": 0, "height": 0,
                     "status": "ok", "message": ""}
            try:
                jpegs = [encode_jpeg(frame, jpeg_quality) for frame in reader]
                info = reader.info
                entry.update(n_frames=info.n_frames, expected_frames=info.expected_frames, fps=info.fps,
                             width=info.width, height=info.height)
                if info.n_frames < min_frames:
                    raise VideoError(reader.path, "too_short",
                                     f"{info.n_frames} decodable frame(s); optical flow needs {min_frames}")
                if shortfall(info.n_frames, info.expected_frames, partial_tolerance):
                    detail = (f"decoded {info.n_frames} frames, the container announces {info.expected_frames}; "
                              "replace the file, or set accept_partial_videos: true")
                    if not accept_partial:
                        raise VideoError(reader.path, "partial", detail)
                    entry["message"] = f"accepted partial: {detail.split(';')[0]}"
                writer.add(path, {"frames": jpegs}, n_frames=info.n_frames, fps=info.fps)
            except VideoError as e:
                log.error("%s", e)
                entry.update(status=e.status, message=e.detail)
            report.append(entry)
    return pd.DataFrame(report, columns=REPORT_COLUMNS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet frames", description=__doc__)
    p.add_argument("--index", required=True, help="index CSV of the dataset")
    p.add_argument("--shard", required=True, help="shard id, as in the index")
    p.add_argument("--root", required=True, help="folder of the videos")
    p.add_argument("--out", required=True, help="HDF5 shard to write")
    p.add_argument("--report", required=True, help="CSV of what was found in each video")
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--min-frames", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="ffmpeg decoding threads")
    p.add_argument("--partial-tolerance", type=float, default=0.02,
                   help="share of the announced frames a video may lack before it is partial")
    p.add_argument("--accept-partial", action="store_true", help="keep partial videos")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    report = extract_shard(read_table(args.index), args.shard, args.root, args.out,
                           args.short_side, args.jpeg_quality, args.min_frames, args.threads,
                           args.partial_tolerance, args.accept_partial)
    write_csv_atomic(report, args.report)
    bad = report[report["status"] != "ok"]
    log.info("shard %s: %d videos, %d frames, %d bad", args.shard, len(report),
             report["n_frames"].sum(), len(bad))


if __name__ == "__main__":
    run_stage("frames", main)
