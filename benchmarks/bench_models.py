"""Size and speed of the ST-ResNet models beside two plain ResNet-50 streams.

    PYTHONPATH=workflow python benchmarks/bench_models.py [--device cuda] [--append docs/benchmarks.md]

Prints a markdown table: parameters and multiply-adds of every model kind; a training step
(forward + backward) of ST-ResNet against the plain two-stream net on the same clips; and the
test of one video (25 chunks and their flips) run fully convolutionally by ST-ResNet* (and by
the plain two-stream net, for reference) against the original two-stream testing (10 crops of
224 per frame, 25 frames, both streams). Inputs are random, only time is measured (so flipped
flow keeps the sign of u). Everything runs as the pipeline runs it: channels-last, bf16
autocast on CUDA, the allocator setting of the stages (unless --system-allocator), and for
testing the models of evaluate.inference_model (batch norm folded) with its video_scores.
"""

import argparse
import contextlib
import copy
import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms.v2.functional import ten_crop

from stresnet.data import network_inputs
from stresnet.evaluate import inference_model, video_scores
from stresnet.models import appearance_stream, motion_stream, st_resnet, st_resnet_star, two_stream
from stresnet.runtime import autocast, keep_freed_memory

FLOW = 20


def macs(model: nn.Module, *inputs) -> int:
    """Multiply-adds of one forward pass, counted on the meta device."""
    model = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter:
        model(*(x.to("meta") if torch.is_tensor(x) else x for x in inputs))
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-add


def clips(videos: int, chunks: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 frames and flow stacks, as the datasets hand them over."""
    n = videos * chunks
    return (torch.randint(256, (n, 3, *size), dtype=torch.uint8),
            torch.randint(256, (n, FLOW, *size), dtype=torch.uint8))


class Runner:
    """Puts models and inputs on the device in channels-last order, as training and testing do."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=torch.channels_last)

    def inputs(self, rgb: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = network_inputs({"rgb": rgb, "flow": flow}, self.device)
        return x["rgb"], x["flow"]

    def autocast(self):
        return autocast(self.device)

    def seconds(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def compare(runner: Runner, first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two callables, one warm-up each, measured alternately."""
    first(), second()
    times = [(runner.seconds(first), runner.seconds(second)) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def train_step(runner: Runner, model: nn.Module, rgb, flow, chunks: int, labels) -> None:
    model.zero_grad(set_to_none=True)
    with runner.autocast():
        logits = model(rgb, flow, chunks)
        # Table 2: one cross-entropy per stream and time position
        loss = sum(F.cross_entropy(z.flatten(0, 1).float(), labels.repeat_interleave(z.shape[1])) for z in logits)
    loss.backward()


def original_two_stream_test(runner: Runner, model: nn.Module, rgb, flow, frames_per_pass: int) -> torch.Tensor:
    """Two-stream testing of [20]: 10 crops of 224 (corners, centre, flipped) of every frame."""
    scores = []
    for r, f in zip(rgb.split(frames_per_pass), flow.split(frames_per_pass)):
        crops = [torch.cat(ten_crop(x, 224)) for x in (r, f)]
        with runner.autocast():
            scores.append(sum(s.float().mean((0, 1)) for s in model(*runner.inputs(*crops), 1)))
    return torch.stack(scores).mean(0)


def fully_convolutional_test(runner: Runner, model: nn.Module, rgb, flow) -> np.ndarray:
    """Sec. 3.4 as evaluate.py runs it: the whole video and its horizontal flip, scores averaged."""
    video = {"rgb": torch.stack([rgb, rgb.flip(-1)]), "flow": torch.stack([flow, flow.flip(-1)])}
    appearance, motion = video_scores(model, video, runner.device)
    return appearance + motion


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = names[0] if names else cpu
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}; {versions}"


def size_rows(models: dict[str, nn.Module]) -> list[str]:
    """Parameters and multiply-adds per 224x224 chunk (5-chunk clips for the two-stream kinds)."""
    rgb, flow = (x.float() for x in clips(1, 5, (224, 224)))
    rows = ["| model | parameters (M) | multiply-adds per chunk, 224x224 (G) |", "| --- | ---: | ---: |"]
    for name, model in models.items():
        if name == "motion":
            gmacs = macs(model, flow[:1]) / 1e9
        elif isinstance(model, torchvision.models.ResNet):
            gmacs = macs(model, rgb[:1]) / 1e9
        else:
            gmacs = macs(model, rgb, flow, 5) / 5e9
        rows.append(f"| {name} | {sum(p.numel() for p in model.parameters()) / 1e6:.2f} | {gmacs:.2f} |")
    return rows


def training_row(runner: Runner, st: nn.Module, plain: nn.Module, args: argparse.Namespace) -> str:
    rgb, flow = runner.inputs(*clips(args.train_videos, args.train_chunks, (args.train_size,) * 2))
    labels = torch.randint(args.classes, (args.train_videos,), device=runner.device)
    st.train()
    plain.train()
    t_st, t_plain = compare(
        runner,
        lambda: train_step(runner, st, rgb, flow, args.train_chunks, labels),
        lambda: train_step(runner, plain, rgb, flow, args.train_chunks, labels),
        args.repeats,
    )
    ratio = macs(st, rgb, flow, args.train_chunks) / macs(plain, rgb, flow, args.train_chunks)
    return (
        f"| training step (forward + backward), {args.train_videos} videos x {args.train_chunks} chunks, "
        f"{args.train_size}x{args.train_size}: ST-ResNet vs two plain ResNet-50 streams | {t_st:.2f} s | {t_plain:.2f} s | {t_st / t_plain:.2f} "
        f"| {ratio:.2f} | <= 1.2 |"
    )


def test_rows(runner: Runner, star: nn.Module, plain: nn.Module, args: argparse.Namespace) -> list[str]:
    """ST-ResNet* and the plain two-stream net, fully convolutional, against 10-crop testing."""
    t, size = args.test_chunks, tuple(args.test_size)
    rgb, flow = clips(1, t, size)
    star, plain = inference_model(star, runner.device), inference_model(plain, runner.device)
    crops = torch.cat(ten_crop(rgb, 224)).float(), torch.cat(ten_crop(flow, 224)).float()
    crop_macs = macs(plain, *crops, 1)
    rows = []
    with torch.inference_mode():
        for name, model in (("ST-ResNet*", star), ("two plain ResNet-50 streams", plain)):
            t_ours, t_orig = compare(
                runner,
                lambda: fully_convolutional_test(runner, model, rgb, flow),
                lambda: original_two_stream_test(runner, plain, rgb, flow, frames_per_pass=5),
                args.test_repeats,
            )
            ratio = crop_macs / macs(model, torch.cat([rgb, rgb]).float(), torch.cat([flow, flow]).float(), t)
            target = ">= 3x less time" if model is star else "(the issue quotes 3.8x)"
            rows.append(
                f"| test of one video, {t} chunks + flips: {name} fully convolutional at "
                f"{'x'.join(map(str, size))} vs 10 crops of 224 x {t} frames (two plain streams) | {t_ours:.2f} s "
                f"| {t_orig:.2f} s | {t_orig / t_ours:.2f}x less time | {ratio:.2f}x fewer | {target} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds bf16 autocast)")
    parser.add_argument("--system-allocator", action="store_true",
                        help="leave glibc's allocator as it is (the stages call runtime.keep_freed_memory)")
    parser.add_argument("--classes", type=int, default=101, help="classifier size (UCF101: 101)")
    parser.add_argument("--train-videos", type=int, default=2, help="videos per training step")
    parser.add_argument("--train-size", type=int, default=112, help="side of the training crops")
    parser.add_argument("--train-chunks", type=int, default=5, help="chunks per training video (Table 2: 5)")
    parser.add_argument("--test-size", type=int, nargs=2, default=(256, 340), help="test frame height, width")
    parser.add_argument("--test-chunks", type=int, default=25, help="frames of a test video (25)")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--test-repeats", type=int, default=1, help="timed test passes per method")
    parser.add_argument("--append", type=Path, help="write the table into this markdown file's '## Models' section")
    args = parser.parse_args()

    allocator = "glibc defaults" if args.system_allocator else f"keep_freed_memory() {keep_freed_memory()}"
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    runner = Runner(args.device)
    load = os.getloadavg()[0]
    appearance, motion = appearance_stream(args.classes, "none"), motion_stream(args.classes, "none", FLOW)
    plain, st, star = two_stream(appearance, motion), st_resnet(appearance, motion), st_resnet_star(appearance, motion)
    rows = size_rows(
        {
            "ResNet-50 (torchvision)": torchvision.models.resnet50(),
            "appearance": appearance,
            "motion": motion,
            "two_stream (two plain ResNet-50 streams)": plain,
            "st_resnet": st,
            "st_resnet_star": star,
        }
    )
    plain, st, star = runner.model(plain), runner.model(st), runner.model(star)
    rows += [
        "",
        "| measurement | first | second | ratio (time) | ratio (multiply-adds) | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        training_row(runner, st, plain, args),
        *test_rows(runner, star, plain, args),
    ]
    command = "PYTHONPATH=workflow python " + shlex.join(["benchmarks/bench_models.py", *sys.argv[1:]])
    notes = (
        f"Machine: {machine()}; device {args.device}, channels-last{', bf16 autocast' if runner.cuda else ''}, "
        f"allocator: {allocator}. Command: `{command}`. "
        f"Date: {datetime.date.today().isoformat()}. Times are medians of {args.repeats} training steps "
        f"and {args.test_repeats} test passes after one warm-up each, the two methods measured alternately; "
        f"1-minute load average {load:.1f} before and {os.getloadavg()[0]:.1f} after (this run alone adds "
        f"about {torch.get_num_threads()}, more means other jobs shared the CPU)."
    )
    bound = (
        "The multiply-adds ratio bounds what the time ratio can reach where compute dominates: the fully "
        f"convolutional test sees 2 x {args.test_chunks} whole frames per stream against "
        f"{10 * args.test_chunks} crops of 224."
    )
    if not runner.cuda:
        bound += " The CUDA path (`--device cuda`: bf16 autocast) was not run here."
    title = "Models (glibc allocator defaults)" if args.system_allocator else "Models"
    section = "\n".join([f"## {title}", "", notes, "", *rows, "", bound, ""])
    print(section)
    if args.append:
        write_section(args.append, title, section)


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the '## title' section of a markdown file (up to the next '## '), or add it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
