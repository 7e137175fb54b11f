"""Dataset formats -> one table of videos: path, class, label and membership in each split.

Every adapter returns a pandas DataFrame with the columns
`path` (relative to the root, '/' separated), `class`, `label` (0-based, the same in every
split) and `split1` ... `splitK`, each 'train', 'test' or '' (not used in that split).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from .common import DatasetError, check_exist
from . import folder, hmdb51, ucf101

FORMATS = ("ucf101", "hmdb51", "folder", "demo")


def load_table(fmt: str, root: str | Path, splits: str | Path | None = None, **options) -> pd.DataFrame:
    """The video table of a dataset in one of FORMATS (demo data is in UCF101's layout)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    if fmt in ("ucf101", "demo"):
        table = ucf101.load_table(root, _need_splits(fmt, splits))
    elif fmt == "hmdb51":
        table = hmdb51.load_table(root, _need_splits(fmt, splits))
    elif fmt == "folder":
        table = folder.load_table(root, Path(splits) if splits else None, **options)
    else:
        raise DatasetError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    check_exist(root, table["path"])
    return table


def dataset_files(fmt: str, root: str | Path, splits: str | Path | None = None, allow_missing: bool = False
                  ) -> tuple[list[str], list[str]]:
    """The video files and split files the index of a dataset reads, so that the workflow sees a
    video or split file change, appear or go. A dataset that cannot be read as declared raises
    its DatasetError: the workflow reports it while planning, before any job."""
    split_files = sorted(str(p) for p in Path(splits).iterdir() if p.is_file()) if splits and Path(splits).is_dir() else []
    table = load_table(fmt, root, splits, **({"allow_missing": allow_missing} if fmt == "folder" else {}))
    return [str(Path(root) / p) for p in table["path"]], split_files


def files_fingerprint(files: list[str]) -> str:
    """SHA-256 of the files' paths: what the index is a function of (it lists videos, it does
    not read them; a video's bytes reach the frame job of its shard, whose input it is). The
    index takes this as a param rather than every video as an input: Snakemake compares each
    input of a job with every file a dependent job needs, which at 300,000 videos made planning
    take minutes."""
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()


def _need_splits(fmt: str, splits: str | Path | None) -> Path:
    if not splits:
        raise DatasetError(f"format {fmt!r} needs `splits`, the folder of its official split files")
    return Path(splits)


__all__ = ["DatasetError", "FORMATS", "dataset_files", "files_fingerprint", "load_table"]
