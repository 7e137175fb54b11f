"""Counting what a TV-L1 solve asks of a device, on the CPU: what CUDA would launch (graphs,
compiled calls, eager aten ops) and how often the host waits for it, per batch of frame pairs.

The solver runs unfused; the functions that CUDA runs compiled (the inner iteration, the
linearisation, the median filter) count as one call each, the body of a CUDA graph (a block of
iterations, replayed through stresnet.cuda_graphs.GraphedFunction on the CPU) as one launch, and
the aten ops outside both, seen by a TorchDispatchMode, as eager ops (views apart: they launch no
kernel). Host synchronisations are the ops that read a value or size a tensor by its values:
`.item()`, `int()`, `bool()` (aten._local_scalar_dense, or item and is_nonzero under inference
mode), nonzero, masked_select and indexing by a boolean mask (which calls nonzero inside).
"""

from __future__ import annotations

import collections
import contextlib
import functools
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

aten = torch.ops.aten
READS = (aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default, aten.nonzero.default,
         aten.masked_select.default)


def is_host_sync(func: Any, args: tuple) -> bool:
    if func is aten.index.Tensor:  # t[mask]: nonzero inside
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
    return func in READS


class LaunchCounter(TorchDispatchMode):
    """Counts, by where they run (eager, in a compiled call, in a graph): aten ops, views, host
    synchronisations; and the calls of the functions wrapped by `compiled` and `graph`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.where = "eager"

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kind = "host syncs" if is_host_sync(func, args) else "views" if func.is_view else "ops"
        self.counts[f"{kind} ({self.where})"] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def inside(self, where: str) -> Iterator[None]:
        outer, self.where = self.where, where if self.where == "eager" else self.where
        try:
            yield
        finally:
            self.where = outer

    def wrap(self, fn: Callable[..., Any], name: str, where: str) -> Callable[..., Any]:
        """fn, counted as a call of `name` (by where it is called) whose ops run `where`."""

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[f"{name} ({self.where})"] += 1
            with self.inside(where):
                return fn(*args, **kwargs)

        return counted


def count_solve(solver: Any, i0: torch.Tensor, i1: torch.Tensor) -> dict[str, float]:
    """Counts of one solve of a batch by `solver` (a tvl1_torch.Solver, this branch's or an older
    one with the same step, linearise and median attributes), with CUDA's schedule where it has
    one: graph launches, compiled calls and eager ops (outside graphs), views, host syncs, and
    pixel-iterations computed and needed (by the pairs that had not stopped)."""
    counter = LaunchCounter()
    work = collections.Counter()
    step = solver.step

    def step_counting_pixels(*args: Any) -> Any:
        u, active = args[0], args[6]
        with _disable_current_modes():
            pixels = u.shape[-2] * u.shape[-1]
            work["iterations"] += 1
            work["computed"] += u.shape[0] * pixels
            work["needed"] += (u.shape[0] if active is None else int(active.sum())) * pixels
        return step(*args)

    solver.step = counter.wrap(step_counting_pixels, "compiled calls", "compiled")
    solver.linearise = counter.wrap(solver.linearise, "compiled calls", "compiled")
    solver.median = counter.wrap(solver.median, "compiled calls", "compiled")
    graphs = getattr(solver, "block", None)
    if hasattr(graphs, "_graph_body"):
        graphs._graph_body = counter.wrap(graphs._graph_body, "graph launches", "graph")
    with counter:
        solver(i0, i1)
    c = counter.counts
    return {"graph launches": c["graph launches (eager)"], "compiled calls": c["compiled calls (eager)"],
            "compiled calls in graphs": c["compiled calls (graph)"], "eager ops": c["ops (eager)"],
            "eager views": c["views (eager)"], "host syncs": sum(v for k, v in c.items() if k.startswith("host syncs")),
            "iterations": work["iterations"], "pixel-iterations computed": work["computed"],
            "pixel-iterations needed": work["needed"]}
