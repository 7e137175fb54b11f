"""A function replayed as CUDA graphs (torch.cuda.CUDAGraph): one graph per shape of its tensor
arguments and per value of its options, captured at the first call with them, so that a call is
one launch however many kernels the function runs.

Why not torch.compile(mode="reduce-overhead"): its CUDA graph trees free the outputs of a call at
the next call of a compiled function, and a loop that feeds each call's outputs to the next call
(and to other compiled functions) needs them; here each argument has a static buffer that the
graph updates in place, and the caller passes it back.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)
WARMUP_CALLS = 2  # before a capture, on a side stream: compilation, Triton's autotuning, lazy init
MAX_GRAPHS = 512  # past this many graphs (many frame sizes), all are dropped and captured anew


class GraphedFunction:
    """`fn(*tensors, **options)` returns a tuple whose first len(tensors) entries are the new
    values of its tensor arguments (an argument it does not change: that same tensor), then any
    other outputs; it may change its arguments in place. Called through this object, the
    arguments are copied into the graph's static buffers (skipped for a static buffer passed
    back: the returned tensors are those buffers), the graph is replayed, and the static buffers
    and other outputs come back; they hold valid values until the next call. Arguments may be
    None (part of the shape). Every graph with an argument of one shape and dtype at one
    position shares that argument's static buffer, and all graphs share one memory pool, which
    holds only each call's temporaries and other outputs. Where capturing fails, the function
    runs as it is from then on (warned once). On the CPU nothing is captured: each call runs
    what a graph would hold, on the same static buffers (to count what CUDA would launch)."""

    def __init__(self, fn: Callable[..., tuple[Any, ...]], device: torch.device):
        self.fn = fn
        self.device = device
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph | None, list, tuple]] = {}
        self.statics: dict[tuple, torch.Tensor] = {}
        self.cuda = device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.captures = 0
        self.disabled = False

    def __call__(self, *tensors: torch.Tensor | None, **options: Any) -> tuple[Any, ...]:
        if self.disabled:
            return self.fn(*tensors, **options)
        shapes = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors)
        key = (shapes, tuple(sorted(options.items())))
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(key, tensors, options)
            except Exception as e:  # noqa: BLE001 - any failure of the capture; the plain call reraises real faults
                log.warning("CUDA graph capture failed for %s (%s); running it without graphs",
                            getattr(self.fn, "__name__", "a function"), str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.disabled = True
                self.graphs.clear()
                self.statics.clear()
                return self.fn(*tensors, **options)
        graph, statics, extra = entry
        for t, static in zip(tensors, statics):
            if t is not None and t is not static:
                static.copy_(t)
        if graph is None:
            extra = self._graph_body(statics, options)
        else:
            graph.replay()
        return (*statics, *extra)

    def _graph_body(self, statics: list[torch.Tensor | None], options: dict[str, Any]) -> tuple[Any, ...]:
        """What a graph holds: the function on the static buffers, its results copied into them."""
        out = self.fn(*statics, **options)
        for static, new in zip(statics, out):
            if static is not None and new is not static:
                static.copy_(new)
        return tuple(out[len(statics):])

    def _capture(self, key: tuple, tensors: tuple[torch.Tensor | None, ...],
                 options: dict[str, Any]) -> tuple[torch.cuda.CUDAGraph, list, tuple]:
        if len(self.graphs) >= MAX_GRAPHS:
            log.info("%d CUDA graphs held: dropping them all", len(self.graphs))
            self.graphs.clear()
            self.statics.clear()
        statics: list[torch.Tensor | None] = []
        for slot, t in zip(enumerate(key[0]), tensors):  # slot: (position, (shape, dtype))
            if t is not None and slot not in self.statics:
                self.statics[slot] = torch.empty_like(t)
            statics.append(None if t is None else self.statics[slot])
        if not self.cuda:
            self.graphs[key] = (None, statics, ())
            return self.graphs[key]
        scratch = [None if t is None else t.clone() for t in tensors]  # the warm-up must not touch live values
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for _ in range(WARMUP_CALLS):
                self.fn(*scratch, **options)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        del scratch
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the flow stage's I/O pool) go on meanwhile; they launch nothing
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            extra = self._graph_body(statics, options)
        self.captures += 1
        self.graphs[key] = (graph, statics, extra)
        return graph, statics, extra
