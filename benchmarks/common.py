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
