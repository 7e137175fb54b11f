"""Optical flow stage: the frames of one shard -> clipped, quantised flow fields in HDF5.

For each video of the frame shard, flow is computed between consecutive stored frames (greyscale,
at their stored size), clipped to +-bound px, mapped to 0..255 and stored as one greyscale JPEG
per component (paper Sec. 3.4); see flow_reader for the layout. The method is TV-L1, the paper's
(OpenCV's, or `tvl1_torch`: the same algorithm in torch, batched over frame pairs, on CUDA or the
CPU), or OpenCV's faster DIS or Farneback. For OpenCV's methods the job's `threads` are worker
threads, each running one single-threaded flow computation at a time, over consecutive frame
pairs of the shard's videos; for tvl1_torch see flow_torch.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

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
    speed_defaults: dict[str, Any] = {}  # settings of how fast, never recorded: batch, device, ...

    def __init__(self, params: Mapping[str, Any] | None = None, speed: Mapping[str, Any] | None = None):
        for kind, given, known in (("parameter", params, {*self.defaults, *self.optional}),
                                   ("speed setting", speed, set(self.speed_defaults))):
            unknown = set(given or {}) - known
            if unknown:
                raise SettingError(f"unknown {self.name} {kind}(s): {', '.join(sorted(unknown))}")
        self.params = {**self.defaults, **(params or {})}
        self.speed = {**self.speed_defaults, **(speed or {})}

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

    def create(self) -> Estimator:
        # an OpenCV DIS object carries state from one calc to the next (the same pair computed
        # again gives another field), so a field would depend on which pairs the worker thread
        # that took it had computed before: a fresh object for each pair
        return lambda prev, nxt: self._configure(self._new()).calc(prev, nxt, None)

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


class Tvl1Torch(FlowMethod):
    """OpenCV's TV-L1 in torch (stresnet.tvl1_torch), batched over frame pairs, on CUDA or the
    CPU; `stopping` chooses OpenCV's per-pair stopping test or a fixed iteration count. Speed
    settings: `batch` (pairs per solver call; auto: 64 on CUDA, 1 on the CPU), `device` (auto,
    cpu, cuda) and `compile` (fuse the inner iteration with torch.compile)."""

    name = "tvl1_torch"
    defaults = {**Tvl1.defaults, "stopping": "per_pair"}
    speed_defaults = {"batch": "auto", "device": "auto", "compile": True}

    def effective_params(self) -> dict[str, Any]:
        from .tvl1_torch import check_params  # torch is imported by this method only

        try:
            return check_params(self.params)
        except ValueError as e:
            raise SettingError(str(e)) from e


METHODS: dict[str, type[FlowMethod]] = {m.name: m for m in (Tvl1, Dis, Farneback, Tvl1Torch)}


def flow_method(name: str, params: Mapping[str, Any] | None = None,
                speed: Mapping[str, Any] | None = None) -> FlowMethod:
    if name not in METHODS:
        raise SettingError(f"unknown flow method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](params, speed)


def _decode_grey(data: np.ndarray, where: str) -> np.ndarray:
    try:
        return decode_jpeg(data, grey=True)
    except ValueError as e:
        raise ShardError(f"{where}: {e}") from e


def decode_video(jpegs: list[np.ndarray], where: str, first: int = 0) -> list[np.ndarray]:
    """Grey frames first, first + 1, ... of a video, which must all have one size."""
    frames = []
    for j, data in enumerate(jpegs, first):
        frames.append(_decode_grey(data, f"{where}, frame {j}"))
        if j > first and frames[-1].shape != frames[-2].shape:
            raise ShardError(f"{where}: frame {j} is {frames[-1].shape}, frame {j - 1} {frames[-2].shape}")
    return frames


def encode_field(flow: np.ndarray, bound: float, quality: int) -> tuple[bytes, bytes]:
    """(H, W, 2) flow -> the JPEGs of its clipped, quantised components u and v."""
    return (encode_jpeg(quantize(flow[..., 0], bound), quality),
            encode_jpeg(quantize(flow[..., 1], bound), quality))


class _Worker:
    """Computes the fields of a run of consecutive frames; one estimator per thread."""

    def __init__(self, method: FlowMethod, bound: float, jpeg_quality: int):
        self.method, self.bound, self.quality = method, bound, jpeg_quality
        self.local = threading.local()

    def __call__(self, jpegs: list[np.ndarray], where: str, first: int) -> list[tuple[bytes, bytes]]:
        estimate = getattr(self.local, "estimate", None)
        if estimate is None:
            estimate = self.local.estimate = self.method.create()
        frames = decode_video(jpegs, where, first)
        return [encode_field(estimate(a, b), self.bound, self.quality) for a, b in zip(frames, frames[1:])]


def _video_frames(reader: ShardReader, key: str) -> tuple[list[np.ndarray], dict]:
    """The encoded frames of a video, checked against the count its frame stage recorded."""
    attrs = reader.video_attrs(key)
    n = reader.length(key, "frames")
    expected = int(attrs.get("n_frames", n))
    if n == 0 or n != expected:
        raise ShardError(f"{reader.path}: video {key!r}: {n} frames stored, the frame stage "
                         f"recorded {expected}; rerun its frame extraction")
    return reader.encoded_range(key, 0, n, "frames"), attrs


def _write_per_pair(videos: Iterable[tuple[str, list[np.ndarray], dict, str]],
                    write: Callable[[str, dict, list[tuple[bytes, bytes]]], None], worker: _Worker,
                    threads: int) -> dict[str, float]:
    """OpenCV's methods: runs of consecutive pairs of each video go to `threads` workers."""
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # each worker runs single-threaded; the job's threads are the workers
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="flow")
    pending: collections.deque[tuple[str, dict, list[Future]]] = collections.deque()

    def finish() -> None:
        key, video_attrs, tasks = pending.popleft()
        write(key, video_attrs, [f for task in tasks for f in task.result()])

    failed = True
    try:
        for key, jpegs, video_attrs, where in videos:
            step = max(1, min(PAIRS_PER_TASK, -(-(len(jpegs) - 1) // max(1, threads))))
            tasks = [pool.submit(worker, jpegs[a:a + step + 1], where, a) for a in range(0, len(jpegs) - 1, step)]
            pending.append((key, video_attrs, tasks))
            # a few videos in flight keep every worker busy across video boundaries
            while len(pending) > 2 * max(1, threads):
                finish()
        while pending:
            finish()
        failed = False
    finally:
        pool.shutdown(wait=not failed, cancel_futures=True)
        cv2.setNumThreads(cv_threads)
    return {}


def compute_shard(frames: str | Path, out: str | Path, method: str = "tvl1",
                  params: Mapping[str, Any] | None = None, bound: float = 20.0,
                  jpeg_quality: int = 95, threads: int = 1,
                  speed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the flow of every video of the frame shard `frames` to `out`; returns counts (and,
    for tvl1_torch, `solve_s`: the seconds spent solving, `wait_s`: of those, the seconds spent
    waiting for a CUDA device, and `device`)."""
    algo = flow_method(method, params, speed)
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
    if isinstance(algo, Tvl1Torch):
        from .flow_torch import batched_writer  # torch is imported by this method only

        run, run_attrs = batched_writer(effective, algo.speed, threads, decode_video,
                                        functools.partial(encode_field, bound=bound, quality=jpeg_quality))
        attrs["versions"]["torch"] = run_attrs.pop("torch")
        attrs.update(run_attrs)  # the device: provenance, never compared
    else:
        run = functools.partial(_write_per_pair, worker=_Worker(algo, bound, jpeg_quality), threads=threads)
    counts: dict[str, Any] = {"videos": 0, "fields": 0}
    began = time.monotonic()

    def videos(keys: Progress) -> Iterator[tuple[str, list[np.ndarray], dict, str]]:
        for key in keys:
            keys.postfix(fields=counts["fields"], fields_s=counts["fields"] / max(time.monotonic() - began, 1e-9))
            jpegs, video_attrs = _video_frames(reader, key)
            if len(jpegs) < 2:
                log.warning("video %r has %d frame; no flow field (the frame stage reports such "
                            "videos as too short unless run with --min-frames 1)", key, len(jpegs))
            yield key, jpegs, video_attrs, f"{reader.path}: video {key!r}"

    with ShardWriter(out, attrs) as writer:
        def write(key: str, video_attrs: dict, fields: list[tuple[bytes, bytes]]) -> None:
            n = len(fields) + 1
            writer.add(key, {"u": [u for u, _ in fields], "v": [v for _, v in fields]},
                       n_frames=n, n_fields=n - 1, fps=float(video_attrs.get("fps", 0.0)))
            counts["videos"] += 1
            counts["fields"] += n - 1

        counts.update(run(videos(Progress(reader.keys(), f"flow {Path(frames).stem}", unit="video")), write))
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
    p.add_argument("--speed", default="{}", type=json.loads,
                   help='speed settings of the method as JSON (tvl1_torch: batch, device, compile), e.g. '
                        '\'{"device": "cuda", "batch": 64}\'; they set how fast, not what is computed')
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
                               args.jpeg_quality, args.threads, args.speed)
        seconds = time.monotonic() - began
        log.info("%s: %d videos, %d flow fields (%s) in %.0f s, %.1f fields/s with %d threads -> %s", args.frames,
                 counts["videos"], counts["fields"], args.method, seconds, counts["fields"] / max(seconds, 1e-9),
                 args.threads, args.out)
        if counts.get("device", "cpu") != "cpu":  # the device computed at least while the solver waited for it
            log.info("solver: %.0f s of %.0f s, waiting for %s %.0f s of them (its busy share: at least %.2f)",
                     counts["solve_s"], seconds, counts["device"], counts["wait_s"], counts["wait_s"] / max(seconds, 1e-9))
        elif "solve_s" in counts:
            log.info("solver: %.0f s of %.0f s", counts["solve_s"], seconds)
    except cv2.error as e:  # OpenCV's own refusal of a frame pair is a fault of the data
        raise ShardError(f"{args.frames}: OpenCV could not compute the flow ({e}); rebuild the frame shard") from e


if __name__ == "__main__":
    run_stage("flow", main)
