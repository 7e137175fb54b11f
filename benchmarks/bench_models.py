"""Size and speed of the ST-ResNet models beside two plain ResNet-50 streams.

    PYTHONPATH=workflow python benchmarks/bench_models.py [--device cuda] [--append docs/benchmarks.md]

Prints a markdown table: parameters and multiply-adds of every model kind; a training step
(forward + backward) of ST-ResNet against the plain two-stream net on the same clips; and the
test of one video (25 chunks and their flips) run fully convolutionally by ST-ResNet* against
the original two-stream testing (10 crops of 224 per frame, 25 frames, both streams).
Inputs are random, only time is measured (so flipped flow keeps the sign of u). On CUDA the
models run in channels_last memory format under bf16 autocast.
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

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms.v2.functional import ten_crop

from stresnet.models import appearance_stream, motion_stream, st_resnet, st_resnet_star, two_stream

FLOW = 20


def macs(model: nn.Module, *inputs) -> int:
    """Multiply-adds of one forward pass, counted on the meta device."""
    model = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter:
        model(*(x.to("meta") if torch.is_tensor(x) else x for x in inputs))
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-add


def clips(videos: int, chunks: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(videos * chunks, 3, *size), torch.randn(videos * chunks, FLOW, *size)


class Runner:
    """Puts models and inputs on the device, in channels_last and bf16 autocast on CUDA."""

    def __init__(self, device: str, channels_last: bool) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def inputs(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        return [x.to(self.device, memory_format=self.memory_format) for x in xs]

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()

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


def fully_convolutional_test(runner: Runner, model: nn.Module, rgb, flow, chunks: int) -> torch.Tensor:
    """Sec. 3.4: the whole video and its horizontal flip in one pass, scores averaged."""
    both = runner.inputs(torch.cat([rgb, rgb.flip(-1)]), torch.cat([flow, flow.flip(-1)]))
    with runner.autocast():
        return sum(s.float().mean((0, 1, 3, 4)) for s in model.scores(*both, chunks))


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
    rgb, flow = clips(1, 5, (224, 224))
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
        f"{args.train_size}x{args.train_size} | {t_st:.2f} s | {t_plain:.2f} s | {t_st / t_plain:.2f} "
        f"| {ratio:.2f} | <= 1.2 |"
    )


def test_row(runner: Runner, star: nn.Module, plain: nn.Module, args: argparse.Namespace) -> str:
    t = args.test_chunks
    rgb, flow = clips(1, t, tuple(args.test_size))
    video = runner.inputs(rgb, flow)
    star.eval()
    plain.eval()
    with torch.inference_mode():
        t_ours, t_orig = compare(
            runner,
            lambda: fully_convolutional_test(runner, star, *video, t),
            lambda: original_two_stream_test(runner, plain, *video, frames_per_pass=5),
            args.test_repeats,
        )
    crops = torch.cat(ten_crop(rgb, 224)), torch.cat(ten_crop(flow, 224))
    ratio = macs(plain, *crops, 1) / macs(star, torch.cat([rgb, rgb]), torch.cat([flow, flow]), t)
    return (
        f"| test of one video, {t} chunks + flips: ST-ResNet* fully convolutional at "
        f"{'x'.join(map(str, args.test_size))} vs 10 crops of 224 x {t} frames | {t_ours:.2f} s "
        f"| {t_orig:.2f} s | {t_orig / t_ours:.2f}x less time | {ratio:.2f}x fewer | >= 3x less time |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds bf16 autocast and channels_last)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last on the CPU too")
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

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    runner = Runner(args.device, channels_last=args.channels_last or args.device.startswith("cuda"))
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
        "| measurement | ST-ResNet | two plain ResNet-50 streams | ratio (time) | ratio (multiply-adds) | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        training_row(runner, st, plain, args),
        test_row(runner, star, plain, args),
    ]
    command = "PYTHONPATH=workflow python " + shlex.join(["benchmarks/bench_models.py", *sys.argv[1:]])
    notes = (
        f"Machine: {machine()}; device {args.device}, {runner.memory_format}"
        f"{', bf16 autocast' if runner.cuda else ''}. Command: `{command}`. "
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
        bound += " The CUDA path (`--device cuda`: bf16 autocast, channels_last) was not run here."
    section = "\n".join(["## Models", "", notes, "", *rows, "", bound, ""])
    print(section)
    if args.append:
        write_section(args.append, section)


def write_section(path: Path, section: str) -> None:
    """Replace the '## Models' section of a markdown file (up to the next '## '), or add it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Models\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
