"""Optical flow stage: the frames of one shard -> clipped, quantised flow fields in HDF5.

For each video of the frame shard, flow is computed between consecutive stored frames (greyscale,
at their stored size), clipped to +-bound px, mapped to 0..255 and stored as one greyscale JPEG
per component (paper Sec. 3.4); see flow_reader for the layout. The method is TV-L1, the paper's,
or OpenCV's faster DIS or Farneback. The job's `threads` are worker threads, each running one
single-threaded flow computation at a time, over consecutive frame pairs of the shard's videos.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import h5py
import numpy as np

from . import __version__
from .flow_reader import quantize
from .errors import SettingError, run_stage
from .manifest import write_manifest
from .progress import Progress
from .store import ShardError, ShardReader, ShardWriter, decode_jpeg, encode_jpeg

log = logging.getLogger(__name__)
Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]  # grey frames -> (H, W, 2) float32
PAIRS_PER_TASK = 8  # most frame pairs per worker task (each task decodes one frame twice)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class FlowMethod:
    """A flow algorithm with its parameters; `create` gives an estimator for one thread."""

    name = ""
    defaults: dict[str, Any] = {}
    optional: tuple[str, ...] = ()  # accepted without a default of their own

    def __init__(self, params: Mapping[str, Any] | None = None):
        unknown = set(params or {}) - set(self.defaults) - set(self.optional)
        if unknown:
            raise SettingError(f"unknown {self.name} parameter(s): {', '.join(sorted(unknown))}")
        self.params = {**self.defaults, **(params or {})}

    def create(self) -> Estimator:
        raise NotImplementedError

    def effective_params(self) -> dict[str, Any]:
        """The parameters the algorithm runs with, as recorded in the shard."""
        return dict(self.params)


class _OpenCVObject(FlowMethod):
    """An OpenCV flow object configured through its setters (set<CamelCaseName>)."""

    def _configure(self, algo: Any) -> Any:
        for key, value in self.params.items():
            if key != "preset":
                getattr(algo, f"set{_camel(key)}")(value)
        return algo

    def create(self) -> Estimator:
        algo = self._configure(self._new())
        return lambda prev, nxt: algo.calc(prev, nxt, None)

    def effective_params(self) -> dict[str, Any]:
        algo = self._configure(self._new())
        read = {key: getattr(algo, f"get{_camel(key)}")() for key in self._recorded()}
        return {**{k: v for k, v in self.params.items() if k == "preset"},
                **{k: v.item() if hasattr(v, "item") else v for k, v in read.items()}}


class Tvl1(_OpenCVObject):
    """TV-L1 (Zach et al. 2007, Wedel et al. 2009), OpenCV contrib; the paper's method. The
    defaults are OpenCV's."""

    name = "tvl1"
    defaults = {"tau": 0.25, "lambda": 0.15, "theta": 0.3, "scales_number": 5,
                "warpings_number": 5, "epsilon": 0.01, "inner_iterations": 30,
                "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0, "median_filtering": 5}

    def _new(self) -> Any:
        return cv2.optflow.DualTVL1OpticalFlow_create()

    def _recorded(self) -> list[str]:
        return list(self.defaults)


class Dis(_OpenCVObject):
    """Dense Inverse Search (Kroeger et al. 2016): a preset, optionally with some of its values
    overridden. Two orders of magnitude faster than TV-L1, and less accurate."""

    name = "dis"
    defaults = {"preset": "medium"}
    optional = ("finest_scale", "patch_size", "patch_stride", "gradient_descent_iterations",
                "variational_refinement_iterations", "variational_refinement_alpha",
                "variational_refinement_delta", "variational_refinement_gamma",
                "use_mean_normalization", "use_spatial_propagation")
    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST, "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}

    def _new(self) -> Any:
        if self.params["preset"] not in self.presets:
            raise SettingError(f"dis preset must be one of {', '.join(self.presets)}")
        return cv2.DISOpticalFlow_create(self.presets[self.params["preset"]])

    def _recorded(self) -> list[str]:
        return list(self.optional)


class Farneback(FlowMethod):
    """Farneback's polynomial expansion (2003), with the values of OpenCV's optical flow tutorial."""

    name = "farneback"
    defaults = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
                "poly_sigma": 1.2, "gaussian": False}

    def create(self) -> Estimator:
        p = self.params
        flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if p["gaussian"] else 0
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(
            prev, nxt, None, p["pyr_scale"], p["levels"], p["winsize"], p["iterations"],
            p["poly_n"], p["poly_sigma"], flags)


METHODS: dict[str, type[FlowMethod]] = {m.name: m for m in (Tvl1, Dis, Farneback)}


def flow_method(name: str, params: Mapping[str, Any] | None = None) -> FlowMethod:
    if name not in METHODS:
        raise SettingError(f"unknown flow method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](params)


def _decode_grey(data: np.ndarray, where: str) -> np.ndarray:
    try:
        return decode_jpeg(data, grey=True)
    except ValueError as e:
        raise ShardError(f"{where}: {e}") from e


class _Worker:
    """Computes the fields of a run of consecutive frames; one estimator per thread."""

    def __init__(self, method: FlowMethod, bound: float, jpeg_quality: int):
        self.method, self.bound, self.quality = method, bound, jpeg_quality
        self.local = threading.local()

    def __call__(self, jpegs: list[np.ndarray], where: str, first: int) -> list[tuple[bytes, bytes]]:
        estimate = getattr(self.local, "estimate", None)
        if estimate is None:
            estimate = self.local.estimate = self.method.create()
        prev = _decode_grey(jpegs[0], f"{where}, frame {first}")
        fields = []
        for j, data in enumerate(jpegs[1:], first + 1):
            nxt = _decode_grey(data, f"{where}, frame {j}")
            if nxt.shape != prev.shape:
                raise ShardError(f"{where}: frame {j} is {nxt.shape}, frame {j - 1} {prev.shape}")
            flow = estimate(prev, nxt)
            fields.append((encode_jpeg(quantize(flow[..., 0], self.bound), self.quality),
                           encode_jpeg(quantize(flow[..., 1], self.bound), self.quality)))
            prev = nxt
        return fields


def _video_frames(reader: ShardReader, key: str) -> tuple[list[np.ndarray], dict]:
    """The encoded frames of a video, checked against the count its frame stage recorded."""
    attrs = reader.video_attrs(key)
    n = reader.length(key, "frames")
    expected = int(attrs.get("n_frames", n))
    if n == 0 or n != expected:
        raise ShardError(f"{reader.path}: video {key!r}: {n} frames stored, the frame stage "
                         f"recorded {expected}; rerun its frame extraction")
    return reader.encoded_range(key, 0, n, "frames"), attrs


def compute_shard(frames: str | Path, out: str | Path, method: str = "tvl1",
                  params: Mapping[str, Any] | None = None, bound: float = 20.0,
                  jpeg_quality: int = 95, threads: int = 1) -> dict[str, int]:
    """Write the flow of every video of the frame shard `frames` to `out`; returns counts."""
    algo = flow_method(method, params)
    if bound <= 0:
        raise SettingError("bound must be positive")
    try:
        effective = algo.effective_params()
    except cv2.error as e:
        raise SettingError(f"{method} parameters {dict(params or {})} rejected by OpenCV: {e}") from e
    reader = ShardReader(frames, expect={"stage": "frames"})
    attrs = {"stage": "flow", "method": method, "params": effective,
             "bound": bound, "jpeg_quality": jpeg_quality, "frames": reader.attrs,
             "shard": reader.attrs.get("shard"),
             "versions": {"stresnet": __version__, "opencv": cv2.__version__, "h5py": h5py.__version__}}
    worker = _Worker(algo, bound, jpeg_quality)
    counts = {"videos": 0, "fields": 0}
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # each worker runs single-threaded; the job's threads are the workers
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="flow")
    pending: collections.deque[tuple[str, dict, list[Future]]] = collections.deque()

    def finish(writer: ShardWriter) -> None:
        key, video_attrs, tasks = pending.popleft()
        fields = [f for task in tasks for f in task.result()]
        n = len(fields) + 1
        writer.add(key, {"u": [u for u, _ in fields], "v": [v for _, v in fields]},
                   n_frames=n, n_fields=n - 1, fps=float(video_attrs.get("fps", 0.0)))
        counts["videos"] += 1
        counts["fields"] += n - 1

    failed = True
    try:
        began = time.monotonic()
        with ShardWriter(out, attrs) as writer:
            keys = Progress(reader.keys(), f"flow {Path(frames).stem}", unit="video")
            for key in keys:
                keys.postfix(fields=counts["fields"], fields_s=counts["fields"] / max(time.monotonic() - began, 1e-9))
                jpegs, video_attrs = _video_frames(reader, key)
                if len(jpegs) < 2:
                    log.warning("video %r has %d frame; no flow field (the frame stage reports such "
                                "videos as too short unless run with --min-frames 1)", key, len(jpegs))
                where = f"{reader.path}: video {key!r}"
                step = max(1, min(PAIRS_PER_TASK, -(-(len(jpegs) - 1) // max(1, threads))))
                tasks = [pool.submit(worker, jpegs[a:a + step + 1], where, a)
                         for a in range(0, len(jpegs) - 1, step)]
                pending.append((key, video_attrs, tasks))
                # a few videos in flight keep every worker busy across video boundaries
                while len(pending) > 2 * max(1, threads):
                    finish(writer)
            while pending:
                finish(writer)
        failed = False
    finally:
        pool.shutdown(wait=not failed, cancel_futures=True)
        cv2.setNumThreads(cv_threads)
    return counts


def write_flow_manifest(out: str | Path, shards: list[str | Path], frames: str | Path) -> dict[str, Any]:
    """The flow stage's manifest: every flow shard with its fingerprint, the flow settings (which
    every shard must share), the frames manifest it was made from, and counts per shard."""
    settings: dict[str, Any] = {}
    per_shard = {}
    for path in shards:
        reader = ShardReader(path, expect={"stage": "flow"})
        attrs = reader.attrs
        for name in ("method", "params", "bound", "jpeg_quality"):
            if settings.setdefault(name, attrs[name]) != attrs[name]:
                raise ShardError(f"{path}: {name}={attrs[name]!r}, other shards have {settings[name]!r}")
        n_fields = [reader.length(key, "u") for key in reader.keys()]
        per_shard[Path(path).stem] = {"videos": len(n_fields), "fields": int(sum(n_fields))}
        reader.close()
    return write_manifest(out, "flow", settings, {Path(s).stem: s for s in shards}, {"frames": frames},
                          counts=per_shard)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet flow", description=__doc__,
                                epilog="`stresnet flow manifest --shards ... --frames-manifest ... --out "
                                       "manifest.json` lists a dataset's flow shards.")
    p.add_argument("--frames", required=True, help="frame shard (HDF5) to read")
    p.add_argument("--out", required=True, help="flow shard (HDF5) to write")
    p.add_argument("--method", default="tvl1", choices=list(METHODS))
    p.add_argument("--params", default="{}", type=json.loads,
                   help='parameters of the method as JSON, e.g. \'{"warpings_number": 3}\'')
    p.add_argument("--bound", type=float, default=20.0, help="clip displacements at +-bound px")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--threads", type=int, default=1, help="flow computations run at once")
    return p


def build_manifest_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet flow manifest", description=write_flow_manifest.__doc__)
    p.add_argument("--shards", nargs="*", default=[], help="every flow shard of the dataset")
    p.add_argument("--frames-manifest", required=True, help="the frames manifest (dataset_ready.json)")
    p.add_argument("--out", required=True, help="the flow manifest to write")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["manifest"]:
            args = build_manifest_parser().parse_args(argv[1:])
            write_flow_manifest(args.out, args.shards, args.frames_manifest)
            return
        args = build_parser().parse_args(argv)
        began = time.monotonic()
        counts = compute_shard(args.frames, args.out, args.method, args.params, args.bound,
                               args.jpeg_quality, args.threads)
        seconds = time.monotonic() - began
        log.info("%s: %d videos, %d flow fields (%s) in %.0f s, %.1f fields/s with %d threads -> %s", args.frames,
                 counts["videos"], counts["fields"], args.method, seconds, counts["fields"] / max(seconds, 1e-9),
                 args.threads, args.out)
    except cv2.error as e:  # OpenCV's own refusal of a frame pair is a fault of the data
        raise ShardError(f"{args.frames}: OpenCV could not compute the flow ({e}); rebuild the frame shard") from e


if __name__ == "__main__":
    run_stage("flow", main)
