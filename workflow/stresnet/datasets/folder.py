"""Any folder with one sub-folder of videos per class.

Splits come from the splits folder when given: `split<k>.csv` files (columns `path`, `subset` =
train/test), or Kinetics' annotation files `train.csv` and `validate.csv` (or `val.csv`; columns
`label`, `youtube_id`, `time_start`, `time_end`), which make split 1 with the validation set as
its test set. Without a splits folder, one seeded split by a hash of each video's path.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pandas as pd

from .common import VIDEO_SUFFIXES, DatasetError

log = logging.getLogger(__name__)

_SPLIT_CSV = re.compile(r"^split(\d+)\.csv$")
KINETICS_FILES = {"train": ("train.csv",), "test": ("validate.csv", "val.csv")}
KINETICS_COLUMNS = {"label", "youtube_id", "time_start", "time_end"}


def _scan(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for cls in root.iterdir() if cls.is_dir() and not cls.name.startswith(".")
        for p in cls.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
    )


def _hashed_split(videos: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """path -> train/test: test where the video's path, hashed with the seed, falls below
    `test_fraction`. A video's subset is a function of its own path alone, so adding or removing
    videos moves no other (about `test_fraction` of each class is tested; exact shares would move
    videos whenever a class grows)."""
    def share(video: str) -> float:
        return int(hashlib.sha256(f"{seed}/{video}".encode()).hexdigest()[:13], 16) / 16**13

    subsets = {v: "test" if share(v) < test_fraction else "train" for v in videos}
    by_class: dict[str, set[str]] = {}
    for video, subset in subsets.items():
        by_class.setdefault(video.split("/")[0], set()).add(subset)
    lacking = sorted(c for c, found in by_class.items() if len(found) < 2)
    if lacking:
        log.warning("seeded split (index.seed %d): classes %s have no %s; add videos or split files", seed,
                    ", ".join(lacking[:10]), "test or no training video")
    return subsets


def kinetics_files(splits: Path) -> dict[str, Path]:
    """Kinetics' train and validation annotation files in `splits`, when both are there."""
    found = {subset: next((splits / n for n in names if (splits / n).is_file()), None)
             for subset, names in KINETICS_FILES.items()}
    return found if all(found.values()) else {}


def _kinetics_subsets(files: dict[str, Path], videos: list[str], allow_missing: bool) -> dict[str, str]:
    """path -> train/test from Kinetics' annotation files. A row names the video
    `<label>/<youtube_id>_<time_start:06d>_<time_end:06d>.<any suffix>` (as the usual downloader
    names it) or `<label>/<youtube_id>.<suffix>`; a label's folder may have `_` for its spaces."""
    by_stem = {v.rsplit(".", 1)[0]: v for v in videos}
    folders = {v.split("/")[0] for v in videos}
    subsets: dict[str, str] = {}
    for subset, path in files.items():
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if not KINETICS_COLUMNS <= set(table.columns):
            raise DatasetError(f"{path}: needs the columns {', '.join(sorted(KINETICS_COLUMNS))} "
                               f"(Kinetics' annotation format), found {', '.join(table.columns)}")
        missing = []
        for label, vid, start, end in zip(table["label"], table["youtube_id"], table["time_start"], table["time_end"]):
            folder = label if label in folders else label.replace(" ", "_")
            try:
                clip = f"{folder}/{vid}_{int(float(start)):06d}_{int(float(end)):06d}"
            except ValueError:
                raise DatasetError(f"{path}: time_start/time_end of {vid} are not numbers: {start!r}, {end!r}") from None
            found = by_stem.get(clip) or by_stem.get(f"{folder}/{vid}")
            if found is None:
                missing.append(clip)
            else:
                subsets[found] = subset
        if missing and not allow_missing:
            raise DatasetError(f"{path}: {len(missing)} of {len(table)} listed videos are not under the root, "
                               f"e.g. {', '.join(missing[:3])}; download them, or set skip_bad_videos: true "
                               "to train without them")
        if missing:
            log.warning("%s: %d of %d listed videos are not under the root (skip_bad_videos: left out), e.g. %s",
                        path, len(missing), len(table), ", ".join(missing[:3]))
    return subsets


def load_table(root: Path, splits: Path | None, test_fraction: float = 0.3, seed: int = 0,
               allow_missing: bool = False) -> pd.DataFrame:
    videos = _scan(root)
    if not videos:
        raise DatasetError(f"{root}: no videos in class sub-folders")
    classes = sorted({v.split("/")[0] for v in videos})
    table = pd.DataFrame({"path": videos, "class": [v.split("/")[0] for v in videos]})
    table["label"] = table["class"].map(classes.index)
    if splits is None:
        table["split1"] = table["path"].map(_hashed_split(videos, test_fraction, seed))
        return table
    files = {int(m[1]): p for p in sorted(Path(splits).glob("split*.csv")) if (m := _SPLIT_CSV.match(p.name))}
    if not files and kinetics_files(Path(splits)):
        table["split1"] = table["path"].map(_kinetics_subsets(kinetics_files(Path(splits)), videos, allow_missing))
        table["split1"] = table["split1"].fillna("")
        return table
    if not files:
        raise DatasetError(f"{splits}: no split<k>.csv files (columns path, subset) and no Kinetics "
                           "annotation files (train.csv and validate.csv)")
    for k, path in sorted(files.items()):
        split = pd.read_csv(path, dtype=str)
        if not {"path", "subset"} <= set(split.columns):
            raise DatasetError(f"{path}: needs the columns path and subset")
        bad = split.loc[~split["subset"].isin(["train", "test"]), "subset"]
        if len(bad):
            raise DatasetError(f"{path}: subset must be train or test, found {bad.iloc[0]!r}")
        unknown = sorted(set(split["path"]) - set(videos))
        if unknown:
            raise DatasetError(f"{path}: {len(unknown)} videos not found under {root}: "
                               + ", ".join(unknown[:20]))
        table[f"split{k}"] = table["path"].map(dict(zip(split["path"], split["subset"]))).fillna("")
    return table
