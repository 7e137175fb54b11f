"""Ops per training pass (forward, summed loss, backward) of each Table 2 phase with sub-batch
BN (Sec. 3.3) at its BN groups, against the same micro-batch in one BN group:

  one group       every BatchNorm2d normalises the whole micro-batch (the floor)
  loop            one BatchNorm2d call per group (SubBatchNorm2d before issue 21)
  batched         one set of batched ops for all groups (SubBatchNorm2d now, unfused: the CPU's path)
  batched, fused  the same through torch.compile (SubBatchNorm2d's path on CUDA)

Two counts. "dispatch": a TorchDispatchMode counting every aten op that reaches the dispatcher
below autograd, views included (they launch no kernel, so they are also given apart); it cannot
see into compiled code (it runs it unfused), so the fused variant has no such count.
"profiler": torch.profiler's CPU events that are aten ops or kernels of compiled graphs and not
inside another such event: ops as called from Python or autograd, each compiled kernel once.
Op counts do not depend on the image size: crops are small. Also the wall time of one pass
(median of --repeats after a warm-up, which compiles the fused variant; the variants in turn).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import types

import torch
import torch._inductor.config
import yaml
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from bench_micro_batch import model_of
from common import write_section
from stresnet.batching import probe_batch
from stresnet.models import SubBatchNorm2d, convert_sub_batch_norm
from stresnet.models.temporal import set_chunks
from stresnet.runtime import autocast, channels_last, setup_process
from stresnet.train import clip_loss

# clips per micro-batch: motion 256 = 86 + 86 + 84 (Table 2's SGD batch in one pass, a smaller
# last group), appearance 32 groups of 8, ST-ResNet 16 groups of 4 x 5 chunks, ST-ResNet* 4 x 11
MICRO = {"motion": 256, "appearance": 256, "st_resnet": 64, "st_resnet_star": 16}
VARIANTS = ("one group", "loop", "batched", "batched, fused")


class OpCount(TorchDispatchMode):
    """Counts the aten ops run inside it, by op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


def _is_view(name: str) -> bool:
    """Whether the aten op of a profiler event's name is a view (all its overloads are)."""
    packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
    overloads = [getattr(packet, o) for o in packet.overloads()] if packet is not None else []
    return bool(overloads) and all(o.is_view for o in overloads)


def profiled_ops(run, device: torch.device) -> tuple[int, int, int]:
    """Aten ops and compiled kernels that `run` calls from Python or autograd, from the profiler;
    how many of them are host-only: views, and the wrapping of Python numbers into tensors
    before a compiled graph ("Pregraph bytecode"); and the CUDA kernel launches (0 on the CPU)."""
    cuda = [ProfilerActivity.CUDA] if device.type == "cuda" else []
    with profile(activities=[ProfilerActivity.CPU, *cuda]) as prof:
        run()

    def counted(e) -> bool:
        return e.name.startswith("aten::") or "cpp_fused" in e.name

    def parents(e):
        p = e.cpu_parent
        while p is not None:
            yield p
            p = p.cpu_parent

    ops = [e for e in prof.events() if counted(e) and not any(counted(p) for p in parents(e))]
    host = [e for e in ops if _is_view(e.name) or any(p.name == "Pregraph bytecode" for p in parents(e))]
    launches = [e for e in prof.events() if e.name.startswith(("cudaLaunchKernel", "cuLaunchKernel"))]
    return len(ops), len(host), len(launches)


def loop_forward(self: SubBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """SubBatchNorm2d.forward before issue 21: one BatchNorm2d call per group."""
    if not self.training:
        return nn.BatchNorm2d.forward(self, x)
    norm = super(SubBatchNorm2d, self).forward
    return torch.cat([norm(group) for group in x.split(self.videos * self.chunks)])


def with_variant(model: nn.Module, variant: str, bn: int, micro: int, device: torch.device) -> nn.Module:
    """`model` with its BatchNorm2d layers made sub-batch BN of `variant`."""
    convert_sub_batch_norm(model, micro if variant == "one group" else bn)
    for m in model.modules():
        if isinstance(m, SubBatchNorm2d):
            m.fuse = variant == "batched, fused"
            if variant == "loop":
                m.forward = types.MethodType(loop_forward, m)
    return model.to(device, memory_format=torch.channels_last).train()


def measure(run, dispatch: bool, device: torch.device) -> dict:
    """Op counts of `run` (one training pass), after a warm-up."""
    run()
    profiled, host, launches = profiled_ops(run, device)
    r = {"profiler": profiled, "host": host, "launches": launches, "dispatch": None, "views": None,
         "by_op": collections.Counter()}
    if dispatch:
        with OpCount() as count:
            run()
        r.update(dispatch=sum(count.ops.values()), views=sum(n for op, n in count.ops.items() if op.is_view),
                 by_op=count.ops)
    return r


def median_seconds(runs: dict, repeats: int, device: torch.device) -> dict:
    """Median seconds of each of `runs`, timed in turn (a, b, c, a, b, c, ...) so that a change
    in the machine's load touches them alike."""
    times: dict = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            tic = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(t) if t else None for name, t in times.items()}


def training_pass(phase: str, variant: str, cfg: dict, micro: int, size: int, device: torch.device):
    model = with_variant(model_of(phase), variant, cfg["bn_batch"], micro, device)
    batch = {k: channels_last(v) for k, v in probe_batch(phase, micro, cfg["chunks"], size, device).items()}

    def run() -> None:
        with autocast(device):  # bf16 on CUDA, as training runs
            loss, _ = clip_loss(model, phase, batch, cfg["chunks"])
        loss.backward()
        model.zero_grad(set_to_none=True)
    return run


def one_layer(variant: str, groups: int, device: torch.device) -> tuple[collections.Counter, str]:
    """Dispatch ops by op, and profiler ops, of one layer's forward and backward (64 channels, 8 x 8)."""
    layer = with_variant(nn.Sequential(nn.BatchNorm2d(64)), variant, 2, 2 * groups, device)
    set_chunks(layer, 1)
    x = channels_last(torch.randn(2 * groups, 64, 8, 8, device=device)).requires_grad_()
    dy = torch.randn_like(x)

    def run() -> None:
        layer(x).backward(dy)
    r = measure(run, variant != "batched, fused", device)
    launches = f", {r['launches']} CUDA kernel launches" if device.type == "cuda" else ""
    return r["by_op"], f"{r['profiler']} ({r['host']}) profiler ops (host-only){launches}"


def fmt(n) -> str:
    return "n/a" if n is None else str(n)


def by_op(ops: collections.Counter) -> str:
    return ", ".join(f"{str(op).removeprefix('aten.')} {n}" for op, n in ops.most_common()) or "not visible"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=32, help="crop side (op counts do not depend on it)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per variant (0: count only)")
    p.add_argument("--phases", nargs="*", default=list(MICRO))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda: then also the kernel launches, under bf16 autocast")
    p.add_argument("--note", default="", help="how busy the machine was, for the write-up")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    setup_process(a.threads)
    device = torch.device(a.device)
    torch._inductor.config.cpp.enable_kernel_profile = True  # compiled kernels as profiler events
    table2 = yaml.safe_load(open("config.yaml"))["train"]

    layer = {v: one_layer(v, 4, device) for v in VARIANTS}
    layer_lines = [f"- {v}: {fmt(sum(ops.values()) if ops else None)} dispatch ops ({by_op(ops)}); {prof}"
                   for v, (ops, prof) in layer.items()]
    print("\n".join(layer_lines), flush=True)

    lines = ["| phase | micro-batch (clips x chunks) | BN groups | variant | dispatch ops (views) | vs one group "
             "| profiler ops (host-only) | vs one group | less host-only, vs one group | s per pass |"
             + (" CUDA kernel launches | vs one group |" if device.type == "cuda" else ""),
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
             + (" ---: | ---: |" if device.type == "cuda" else "")]
    for phase in a.phases:
        cfg, micro = table2[phase], MICRO[phase]
        groups = -(-micro // cfg["bn_batch"])
        runs = {v: training_pass(phase, v, cfg, micro, a.size, device) for v in VARIANTS}
        rows = {v: measure(run, v != "batched, fused", device) for v, run in runs.items()}
        for v, seconds in median_seconds(runs, a.repeats, device).items():
            rows[v]["seconds"] = seconds
        floor = rows["one group"]
        for v, r in rows.items():
            ratio = "n/a" if r["dispatch"] is None else f"{r['dispatch'] / floor['dispatch']:.2f}x"
            seconds = "n/a" if r["seconds"] is None else f"{r['seconds']:.2f}"
            line = (f"| {phase} | {micro} x {cfg['chunks']} | {1 if v == 'one group' else groups} | {v} "
                    f"| {fmt(r['dispatch'])} ({fmt(r['views'])}) | {ratio} | {r['profiler']} ({r['host']}) "
                    f"| {r['profiler'] / floor['profiler']:.2f}x "
                    f"| {(r['profiler'] - r['host']) / (floor['profiler'] - floor['host']):.2f}x | {seconds} |")
            if device.type == "cuda":
                line += f" {r['launches']} | {r['launches'] / floor['launches']:.2f}x |"
            print(line, flush=True)
            lines.append(line)
    precision = "bf16 autocast on CUDA" if device.type == "cuda" else "fp32 on the CPU"
    body = (f"Device {device}; crops {a.size}x{a.size}, {precision}, ResNet-50 streams with 101 classes; one training pass = "
            "forward, Sec. 3.4's summed loss, backward. Dispatch ops: a TorchDispatchMode counting every aten op "
            "below autograd (views in brackets; it cannot see into compiled code). Profiler ops: torch.profiler's "
            "aten ops called from Python or autograd plus the kernels of compiled graphs (in brackets those that "
            "run on the host only: views, and Python numbers made tensors for a compiled graph). Seconds: median of "
            f"{a.repeats} passes after a warm-up, the variants timed in turn{'; ' + a.note if a.note else ''}.\n\n" + "\n".join(lines)
            + "\n\nOne layer, forward and backward (64 channels, 8x8, 4 groups of 2):\n\n" + "\n".join(layer_lines))
    print(body)
    if not a.no_write:
        write_section(f"Sub-batch BN: ops per training pass (issue 21, {device.type})", body)


if __name__ == "__main__":
    main()
