"""How many clips one forward pass takes (`micro_batch`): a speed setting, never a result one.

Sub-batch BN (Sec. 3.3) keeps Table 2's batch-norm groups whatever the micro-batch holds, so
`micro_batch: auto` is free to fill the device: on CUDA the largest multiple of the BN group
that fits (probed once per job, and logged); on the CPU one BN group per pass: no larger size
was faster in both of two runs of benchmarks/bench_micro_batch.py (docs/benchmarks.md), and
memory grows with the size.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import psutil
import torch
from torch import nn

from .errors import SettingError
from .flow_reader import STACK_LENGTH

log = logging.getLogger(__name__)

# share of the device's memory a probed micro-batch may peak at: the loader's pinned batches,
# the allocator's fragmentation and other processes on the device need the rest
CUDA_HEADROOM = 0.85


def candidates(batch: int, bn: int, world: int = 1) -> list[int]:
    """Micro-batch sizes, largest first: for p = 1, 2, ... passes per process, the smallest
    multiple of the BN group that covers the SGD batch in p passes on each of `world` processes
    (so the passes are as even as whole groups allow), where those passes share out evenly."""
    groups = math.ceil(batch / bn)
    sizes = {bn * math.ceil(groups / (p * world)) for p in range(1, groups + 1)}
    return sorted((m for m in sizes if math.ceil(batch / m) % world == 0), reverse=True)


def largest_fitting(sizes: list[int], fits: Callable[[int], bool]) -> int | None:
    """The first of `sizes` (largest first) that `fits`, by bisection: fitting is monotone."""
    lo, hi = 0, len(sizes) - 1  # sizes[hi] is the smallest
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(sizes[mid]):
            best, hi = sizes[mid], mid - 1
        else:
            lo = mid + 1
    return best


def probe_batch(phase: str, clips: int, chunks: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A micro-batch of `clips` clips of the shape network_inputs hands over, constant values:
    drawing random ones would move the training's random state."""
    shape = (clips, chunks)
    batch = {"label": torch.zeros(clips, dtype=torch.long, device=device)}
    if phase != "motion":
        batch["rgb"] = torch.zeros(*shape, 3, size, size, device=device)
    if phase != "appearance":
        batch["flow"] = torch.zeros(*shape, 2 * STACK_LENGTH, size, size, device=device)
    return batch


def cuda_fits(model: nn.Module, loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
              make_batch: Callable[[int], dict[str, torch.Tensor]], device: torch.device) -> Callable[[int], bool]:
    """Whether a training pass of m clips fits in CUDA_HEADROOM of the device's memory, with
    room for SGD's momentum buffers. The model's weights and BN statistics are left as found."""
    total = torch.cuda.get_device_properties(device).total_memory
    momentum = sum(p.numel() * p.element_size() for p in model.parameters())
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    def fits(m: int) -> bool:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            loss_of(make_batch(m)).backward()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            ok = peak + momentum <= CUDA_HEADROOM * total
            log.info("micro_batch probe: %d clips peak at %.1f of %.1f GiB -> %s", m, peak / 2**30,
                     total / 2**30, "fits" if ok else "too large")
            return ok
        except torch.cuda.OutOfMemoryError:
            log.info("micro_batch probe: %d clips run out of memory", m)
            return False
        finally:
            model.zero_grad(set_to_none=True)
            model.load_state_dict(saved)  # the probe's passes updated BN's running statistics
            torch.cuda.empty_cache()

    return fits


def resolve_micro_batch(setting: int | str, phase: str, batch: int, bn: int, world: int,
                        device: torch.device, fits: Callable[[int], bool] | None = None) -> tuple[int, str]:
    """The micro-batch a job uses, and why: a number as set, or `auto` resolved for the device."""
    sizes = candidates(batch, bn, world)
    if setting != "auto":
        return int(setting), "set"
    if not sizes:
        raise ValueError(f"no micro-batch of whole BN groups of {bn} splits a batch of {batch} evenly over "
                         f"{world} processes; set micro_batch")
    if device.type == "cuda" and fits is not None:
        found = largest_fitting(sizes, fits)
        if found is None:
            raise ValueError(f"not even one BN group ({bn} clips) of {phase} fits on {device}; lower bn_batch "
                             "or use a device with more memory")
        return found, "largest that fits the device"
    if world == 1 or bn in sizes:
        return bn, "one BN group per pass, the fastest on the CPU"
    return sizes[-1], f"the fewest BN groups per pass that {world} processes share evenly"


# memory estimates, checked before the first step (docs/benchmarks.md, "Memory per image"):
# ResNet-50 activations kept for the backward pass per 224 x 224 image and stream in fp32
# (111 MB measured on the CPU, rounded up), and those held at once in whole-frame testing per
# pixel of a chunk, both streams (57 MB for a 341 x 256 chunk)
TRAIN_BYTES_PER_IMAGE = 120e6
TEST_BYTES_PER_PIXEL = 660


def training_bytes(streams: int, clips: int, chunks: int, size: int, half: bool) -> float:
    """About how much memory one training pass of `clips` clips needs."""
    return streams * clips * chunks * (size / 224) ** 2 * TRAIN_BYTES_PER_IMAGE * (0.5 if half else 1)


def inference_bytes(chunks: int, height: int, width: int, half: bool) -> float:
    """About how much memory testing one video (one flip, whole frames) needs."""
    return chunks * height * width * TEST_BYTES_PER_PIXEL * (0.5 if half else 1)


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_memory(need: float, what: str, remedy: str, device: torch.device) -> None:
    """Refuse `what` in one line when its estimated need exceeds 80% of the free memory (the
    loader's workers and the allocator need the rest); warn above half of it."""
    free = free_bytes(device)
    line = (f"{what} needs about {need / 1e9:.1f} GB (an estimate from ResNet-50's activations), "
            f"{free / 1e9:.1f} GB are free on {device}")
    if need > 0.8 * free:
        raise SettingError(f"{line}; {remedy}")
    if need > 0.5 * free:
        log.warning("%s: little room left; %s if the job is killed", line, remedy)
