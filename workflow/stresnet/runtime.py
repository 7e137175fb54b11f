"""How the models run: memory format, autocast, and the C allocator's handling of large tensors."""

from __future__ import annotations

import contextlib
import ctypes
import sys

import torch

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LARGEST = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory for large tensors instead of handing it back to the OS.

    By default every block over 32 MB is a fresh mmap that the kernel zero-fills page by page
    on first touch. Whole-frame testing allocates hundreds of such tensors per video; on the
    CPU that cost 44% of an ST-ResNet* test (12.5 s against 7.1 s, docs/benchmarks.md).
    The process keeps its peak memory instead. Returns whether the setting took (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST))


def setup_process(threads: int = 0) -> None:
    """What every stage that runs a model does first: keep freed memory, and use `threads`
    CPU threads (0: torch's default)."""
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (..., C, H, W) with channels innermost in memory, which oneDNN and cuDNN convolve
    fastest: channels_last for (N, C, H, W), and for (B, T, C, H, W) clips a layout that stays
    channels_last when B and T are flattened. Other tensors are returned as they are."""
    if x.dim() < 4:
        return x
    return x.movedim(-3, -1).contiguous().movedim(-1, -3)


PRECISIONS = ("bf16", "fp32")


def autocast(device: torch.device, precision: str = "bf16"):
    """bf16 autocast on CUDA with `precision` bf16 (the default: about twice the throughput; the
    paper ran fp32); full precision with fp32, and always on the CPU, where bf16 measured slower."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
