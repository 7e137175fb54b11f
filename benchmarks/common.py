"""What the benchmark scripts share: machine description and writing a section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from pathlib import Path

from stresnet.datasets.common import VIDEO_SUFFIXES

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def video_files(root: Path) -> list[str]:
    """Paths (relative to `root`, sorted) of the video files under `root`."""
    return sorted(q.relative_to(root).as_posix() for q in root.rglob("*")
                  if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)


UCF101_CLASSES = [f"Class{i:03d}" for i in range(1, 102)]


def ucf101_layout(root: Path, n_videos: int = 13320) -> list[Path]:
    """UCF101's layout for `n_videos` clips: 101 class folders, 25 groups, clips spread so the
    total is n_videos, and official-style split files (split k tests groups 7(k-1)+1 .. 7k, CRLF).
    Makes the folders and split files; returns the video paths, clip c01 of each group first."""
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    names = [(UCF101_CLASSES[n % 101], (n // 101) % 25 + 1, n // 101 // 25 + 1) for n in range(n_videos)]
    for cls in UCF101_CLASSES:
        (videos / cls).mkdir(parents=True)
    crlf = "\r\n"
    (lists / "classInd.txt").write_text("".join(f"{i} {c}{crlf}" for i, c in enumerate(UCF101_CLASSES, 1)), newline="")
    rows = [(f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi", UCF101_CLASSES.index(cls) + 1, g) for cls, g, c in names]
    for k in (1, 2, 3):
        test = range(7 * (k - 1) + 1, 7 * k + 1)
        (lists / f"trainlist0{k}.txt").write_text("".join(f"{p} {l}{crlf}" for p, l, g in rows if g not in test), newline="")
        (lists / f"testlist0{k}.txt").write_text("".join(f"{p}{crlf}" for p, l, g in rows if g in test), newline="")
    return sorted((videos / p for p, _, _ in rows), key=lambda p: (not p.stem.endswith("_c01"), p))


def kernel_share(trace, wall: float) -> float | None:
    """The union of the GPU's kernel and copy intervals in a torch.profiler trace over `wall` s."""
    import torch

    spans = sorted((e.time_range.start, e.time_range.end) for e in trace.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy / 1e6 / wall if spans else None


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of docs/benchmarks.md."""
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(DOC.parent.parent) if script.is_relative_to(DOC.parent.parent) else script.name
    command = " ".join(["python", Path(script).as_posix(), *sys.argv[1:]])
    header = (f"## {title}\n\nMachine: {machine()}. Date: {datetime.date.today()}. "
              f"Command: `{command}`.\n\n")
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nFigures measured by the scripts in `benchmarks/`.\n"
    section = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = header + body.strip() + "\n\n"
    text = section.sub(lambda _: new, text) if section.search(text) else text.rstrip() + "\n\n" + new
    DOC.write_text(text)
