"""Training throughput of each Table 2 phase by micro-batch size: clips/s of a full training
step's compute (forward, summed loss, backward, SGD step) on the phase's real model and input
shape, with sub-batch BN keeping Table 2's BN groups, and the peak memory of the process.

Each (phase, micro-batch) runs in a fresh process so that its peak memory is its own. Inputs are
synthetic tensors of the shape the loader hands over (the loader's own rate is bench_loader.py's).
On the CPU this chose what `micro_batch: auto` takes there (stresnet.batching).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import yaml

from common import write_section
from stresnet.batching import probe_batch
from stresnet.models import appearance_stream, convert_sub_batch_norm, motion_stream, st_resnet, st_resnet_star
from stresnet.runtime import autocast, setup_process
from stresnet.train import clip_loss

PHASES = ("motion", "appearance", "st_resnet", "st_resnet_star")
# larger sizes need more than the 24 GB of the machine these figures come from (about 0.1 GB per image)
CANDIDATES = {"motion": (86,), "appearance": (8, 16, 32, 64), "st_resnet": (4, 8), "st_resnet_star": (4,)}
# on a GPU: every count of whole BN groups that covers Table 2's SGD batch in 1, 2, 3 ... passes
CUDA_CANDIDATES = {"motion": (86, 172, 258), "appearance": (8, 32, 64, 128, 256), "st_resnet": (4, 8, 16, 32),
                   "st_resnet_star": (4, 8, 16)}


def model_of(phase: str, classes: int = 101) -> torch.nn.Module:
    if phase == "motion":
        return motion_stream(classes, "none")
    if phase == "appearance":
        return appearance_stream(classes, "none")
    build = st_resnet if phase == "st_resnet" else st_resnet_star
    return build(appearance_stream(classes, "none"), motion_stream(classes, "none"))


def one(phase: str, micro: int, bn: int, chunks: int, size: int, repeats: int, device: str = "auto",
        precision: str = "bf16") -> dict:
    """clips/s and peak memory of `repeats` timed steps after one warm-up step."""
    setup_process(0)
    device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    model = model_of(phase)
    if micro > bn:
        convert_sub_batch_norm(model, bn)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    batch = probe_batch(phase, micro, chunks, size, device)
    times = []
    for _ in range(repeats + 1):
        tic = time.perf_counter()
        with autocast(device, precision):
            loss, _ = clip_loss(model, phase, batch, chunks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"clips_per_s": micro * repeats / sum(times[1:]), "peak_mb": peak, "device": str(device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--phases", nargs="*", default=list(PHASES))
    p.add_argument("--one", nargs=2, metavar=("PHASE", "MICRO"), help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="on CUDA (the CPU runs fp32)")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    table2 = yaml.safe_load(open("config.yaml"))["train"]
    if a.one:
        phase, micro = a.one[0], int(a.one[1])
        cfg = table2[phase]
        print(json.dumps(one(phase, micro, cfg["bn_batch"], cfg["chunks"], cfg["size"], a.repeats, a.device,
                             a.precision)))
        return
    rows = []
    for phase in a.phases:
        cfg = table2[phase]
        for micro in (CUDA_CANDIDATES if cuda else CANDIDATES)[phase]:
            out = subprocess.run([sys.executable, __file__, "--one", phase, str(micro), "--repeats", str(a.repeats),
                                  "--device", a.device, "--precision", a.precision],
                                 capture_output=True, text=True)
            if out.returncode:  # out of memory on the device: the sizes above it would be too
                print(phase, micro, "failed:", out.stderr.strip().splitlines()[-1:], flush=True)
                break
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((phase, cfg["bn_batch"], micro, r))
            print(phase, micro, r, flush=True)
    base = {phase: r["clips_per_s"] for phase, bn, micro, r in rows if micro == bn}
    lines = ["| phase | BN group | micro-batch | clips/s | vs micro = BN group | peak memory (MB) | default |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for phase, bn, micro, r in rows:
        mark = "auto on the CPU" if micro == bn else ""
        lines.append(f"| {phase} | {bn} | {micro} | {r['clips_per_s']:.2f} | {r['clips_per_s'] / base[phase]:.2f}x "
                     f"| {r['peak_mb']:.0f} | {mark} |")
    device = rows[0][3]["device"] if rows else "cpu"
    body = (f"Device {device}; Table 2's chunks and crop (224), 101 classes, ResNet-50 streams, fp32 on the CPU "
            f"(bf16 autocast on CUDA); {a.repeats} timed steps after one warm-up, each size in its own process. "
            "A clip of ST-ResNet is 5 chunks x 2 streams, of ST-ResNet* 11 x 2.\n\n" + "\n".join(lines))
    print(body)
    if not a.no_write:
        write_section(f"Micro-batch size and training throughput ({device})", body)


if __name__ == "__main__":
    main()
