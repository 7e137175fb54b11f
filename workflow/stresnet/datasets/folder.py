"""Any folder with one sub-folder of videos per class.

Splits come from `split<k>.csv` files (columns `path`, `subset` = train/test) in the splits
folder when given; without it, one seeded split stratified by class.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd

from .common import VIDEO_SUFFIXES, DatasetError

_SPLIT_CSV = re.compile(r"^split(\d+)\.csv$")


def _scan(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for cls in root.iterdir() if cls.is_dir() and not cls.name.startswith(".")
        for p in cls.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
    )


def _stratified(videos: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    by_class: dict[str, list[str]] = {}
    for v in videos:
        by_class.setdefault(v.split("/")[0], []).append(v)
    rng = random.Random(seed)
    subset = {}
    for cls_videos in by_class.values():
        shuffled = cls_videos[:]
        rng.shuffle(shuffled)
        n_test = round(len(shuffled) * test_fraction) if len(shuffled) > 1 else 0
        subset.update({v: "test" if i < n_test else "train" for i, v in enumerate(shuffled)})
    return subset


def load_table(root: Path, splits: Path | None, test_fraction: float = 0.3, seed: int = 0) -> pd.DataFrame:
    videos = _scan(root)
    if not videos:
        raise DatasetError(f"{root}: no videos in class sub-folders")
    classes = sorted({v.split("/")[0] for v in videos})
    table = pd.DataFrame({"path": videos, "class": [v.split("/")[0] for v in videos]})
    table["label"] = table["class"].map(classes.index)
    if splits is None:
        table["split1"] = table["path"].map(_stratified(videos, test_fraction, seed))
        return table
    files = {int(m[1]): p for p in sorted(Path(splits).glob("split*.csv")) if (m := _SPLIT_CSV.match(p.name))}
    if not files:
        raise DatasetError(f"{splits}: no split<k>.csv files (columns path, subset)")
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
