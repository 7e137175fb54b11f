"""What the dataset adapters share: the error type and the checks of split files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import InputError

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv")


class DatasetError(InputError):
    """A dataset that cannot be read as declared: the message names the file and the cause."""


def _listing(items: list[str], limit: int = 20) -> str:
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {shown}{more}"


def require_files(paths: Iterable[Path], what: str) -> None:
    """Raise one error listing every file of `paths` that does not exist."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} {what} missing:{_listing(missing)}")


def check_exist(root: Path, relpaths: Iterable[str]) -> None:
    """Raise one error listing the videos named by split files but absent under root."""
    missing = [p for p in relpaths if not (root / p).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} videos named by the split files are missing under {root}:"
            f"{_listing(missing)}"
        )


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file, whatever its line endings (UCF101 uses CRLF)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_columns(n: int) -> list[str]:
    return [f"split{k}" for k in range(1, n + 1)]
