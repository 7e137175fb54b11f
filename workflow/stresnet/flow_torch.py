"""The flow stage's batched path (method `tvl1_torch`): frame pairs of consecutive videos go to
the TV-L1 solver of stresnet.tvl1_torch in batches, on CUDA or the CPU, while a thread pool
decodes the frames ahead and encodes the finished fields, so the device does not wait for them.

One thread drives the solver; on the CPU its operations use `threads` torch threads (solver
threads side by side would not run at once: torch.compile's CPU kernels hold the GIL, measured).
Pairs of different sizes in one batch are solved as one sub-batch per size; each pair's flow is
the same as when solved alone.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from .errors import SettingError
from .tvl1_torch import Solver

Field = tuple[bytes, bytes]
AUTO_BATCH = {"cuda": 64, "cpu": 1}  # pairs per batch: large on a GPU; on the CPU, one measured fastest


def resolve_device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise SettingError(f"tvl1_torch device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError("tvl1_torch device is cuda but torch sees no CUDA device "
                           "(set device: auto or cpu, or run the job on a GPU)")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def resolve_batch(batch: int | str, device: torch.device) -> int:
    if batch == "auto":
        return AUTO_BATCH[device.type]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SettingError(f"tvl1_torch batch must be auto or a positive integer, not {batch!r}")
    return batch


class PairSolver:
    """Flow of a list of grey frame pairs (any sizes): one solver call per size. Counts the
    seconds spent solving and, of those, the seconds the solver thread waited for the device
    (reading the stopping test, fetching the flow): while it waits the device computes, so their
    ratio is a lower bound on the device's busy share (on the CPU, where the solver thread
    computes, it waits for nothing)."""

    def __init__(self, params: Mapping[str, Any], device: torch.device, compile: bool):
        self.solver = Solver(params, device, compile)
        self.device = device
        self.solve_s = self.fetch_wait_s = 0.0

    @property
    def wait_s(self) -> float:
        return self.solver.waited_s + self.fetch_wait_s

    def __call__(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """(H, W, 2) float32 flow of each pair (prev, next), in order."""
        by_size: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
        for i, (prev, _) in enumerate(pairs):
            by_size[prev.shape].append(i)
        flows: list[np.ndarray] = [np.empty(0)] * len(pairs)
        for members in by_size.values():
            i0 = torch.from_numpy(np.stack([pairs[i][0] for i in members]))
            i1 = torch.from_numpy(np.stack([pairs[i][1] for i in members]))
            for i, flow in zip(members, self._timed(i0, i1)):
                flows[i] = flow
        return flows

    def _timed(self, i0: torch.Tensor, i1: torch.Tensor) -> np.ndarray:
        began = time.perf_counter()
        flow = self.solver(i0, i1)
        fetch = time.perf_counter()
        out = flow.permute(0, 2, 3, 1).cpu().numpy()  # on CUDA: waits for the device
        ended = time.perf_counter()
        self.solve_s += ended - began
        if self.device.type == "cuda":
            self.fetch_wait_s += ended - fetch
        return out


class _Video:
    """A video in the pipeline: its decoded frames (a future), then one slot per field: the
    future of its batch's encoded fields and the field's place in that batch."""

    def __init__(self, key: str, attrs: dict, n_frames: int, frames: Future):
        self.key, self.attrs, self.frames = key, attrs, frames
        self.slots: list[tuple[Future, int] | None] = [None] * max(0, n_frames - 1)

    def ready(self) -> bool:
        return all(s is not None and s[0].done() for s in self.slots)

    def fields(self) -> list[Field]:
        return [batch.result()[i].result() for batch, i in self.slots]  # type: ignore[misc]


def write_fields(videos: Iterable[tuple[str, list[np.ndarray], dict, str]],
                 write: Callable[[str, dict, list[Field]], None], solve: PairSolver, batch: int, threads: int,
                 decode: Callable[[list[np.ndarray], str], list[np.ndarray]],
                 encode: Callable[[np.ndarray], Field]) -> None:
    """Flow of every video of `videos` ((key, encoded frames, attributes, where) in order), written
    in that order by `write(key, attrs, fields)`. Frames are decoded ahead and fields encoded by an
    I/O pool (`threads` threads on CUDA, 2 on the CPU, where they take little); batches of `batch`
    pairs go to `solve` in a thread of its own, one batch waiting behind the one it solves."""
    io = ThreadPoolExecutor(max(2, threads) if solve.device.type == "cuda" else 2, thread_name_prefix="flow-io")
    solver = ThreadPoolExecutor(1, thread_name_prefix="flow-solve")
    decoded: collections.deque[_Video] = collections.deque()  # decoding, not yet queued as pairs
    unwritten: collections.deque[_Video] = collections.deque()
    in_flight: collections.deque[Future] = collections.deque()
    queue: list[tuple[_Video, int, np.ndarray, np.ndarray]] = []
    ahead = 0  # pairs decoded (or decoding) ahead of the queue

    def solve_and_encode(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[Future]:
        return [io.submit(encode, flow) for flow in solve(pairs)]

    def run(items: list[tuple[_Video, int, np.ndarray, np.ndarray]]) -> None:
        while len(in_flight) > 1:  # one batch solving, one waiting: memory stays bounded
            in_flight.popleft().result()
        future = solver.submit(solve_and_encode, [(a, b) for _, _, a, b in items])
        in_flight.append(future)
        for k, (video, i, _, _) in enumerate(items):
            video.slots[i] = (future, k)

    def flush_written(block: bool) -> None:
        while unwritten and (block or unwritten[0].ready()):
            video = unwritten.popleft()
            write(video.key, video.attrs, video.fields())

    def enqueue(video: _Video) -> None:
        nonlocal ahead, queue
        frames = video.frames.result()
        ahead -= len(video.slots)
        queue += [(video, i, frames[i], frames[i + 1]) for i in range(len(video.slots))]
        while len(queue) >= batch:
            run(queue[:batch])
            queue = queue[batch:]
        flush_written(block=False)

    try:
        for key, jpegs, attrs, where in videos:
            video = _Video(key, attrs, len(jpegs), io.submit(decode, jpegs, where))
            decoded.append(video)
            unwritten.append(video)
            ahead += len(video.slots)
            while decoded and ahead - len(decoded[0].slots) >= 2 * batch:  # enough decoded behind it
                enqueue(decoded.popleft())
        while decoded:
            enqueue(decoded.popleft())
        if queue:
            run(queue)
        flush_written(block=True)
    finally:
        solver.shutdown(wait=True, cancel_futures=True)
        io.shutdown(wait=True, cancel_futures=True)


def batched_writer(params: Mapping[str, Any], speed: Mapping[str, Any], threads: int,
                   decode: Callable[[list[np.ndarray], str], list[np.ndarray]],
                   encode: Callable[[np.ndarray], Field]) -> tuple[Callable[..., dict[str, Any]], dict[str, Any]]:
    """The writing function of the flow stage for tvl1_torch, from its parameters and speed
    settings, and the shard attributes of the run (torch's version, the device)."""
    device = resolve_device(speed["device"])
    batch = resolve_batch(speed["batch"], device)
    if not isinstance(speed["compile"], bool):
        raise SettingError(f"tvl1_torch compile must be true or false, not {speed['compile']!r}")
    solve = PairSolver(params, device, speed["compile"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def run(videos: Iterable[tuple[str, list[np.ndarray], dict, str]],
            write: Callable[[str, dict, list[Field]], None]) -> dict[str, Any]:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))  # the solver's, on the CPU
        try:
            write_fields(videos, write, solve, batch, threads, decode, encode)
        finally:
            torch.set_num_threads(torch_threads)
        return {"solve_s": solve.solve_s, "wait_s": solve.wait_s if device.type == "cuda" else 0.0, "device": name}

    return run, {"torch": torch.__version__, "device": name}
