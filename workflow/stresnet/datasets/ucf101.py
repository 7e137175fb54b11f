"""UCF101's official layout: <Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/.

classInd.txt holds `1 ApplyEyeMakeup` (1-based); trainlist0k.txt holds `<Class>/<video>.avi
<label>`, testlist0k.txt `<Class>/<video>.avi`; the files have Windows line endings.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import DatasetError, read_lines, require_files, split_columns

N_SPLITS = 3


def read_class_index(path: Path) -> list[str]:
    """Class names in label order from classInd.txt (whose labels are 1-based)."""
    classes: dict[int, str] = {}
    for line in read_lines(path):
        number, _, name = line.partition(" ")
        if not number.isdigit() or not name.strip():
            raise DatasetError(f"{path}: malformed line {line!r}, expected '<label> <Class>'")
        classes[int(number)] = name.strip()
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DatasetError(f"{path}: labels are not 1..{len(classes)}")
    return [classes[k] for k in range(1, len(classes) + 1)]


def _split_entries(path: Path, classes: list[str], labelled: bool) -> list[str]:
    """The videos a split file lists. Every name is data: a train list line is split at its last
    space (`<Class>/<video name, spaces allowed> <label>`), a test list line is all name."""
    entries = []
    for number, line in enumerate(read_lines(path), 1):
        video, label = line.rsplit(" ", 1) if labelled and " " in line else (line, None)
        video = video.strip().replace("\\", "/")
        cls = video.split("/")[0]
        where = f"{path}, line {number}: {line!r}"
        if labelled and (label is None or not label.isdigit()):
            raise DatasetError(f"{where}: expected '<Class>/<video> <label>' with a numeric label; fix the line")
        if "/" not in video or cls not in classes:
            raise DatasetError(f"{where}: class {cls!r} is not in classInd.txt; fix the line or classInd.txt")
        if label is not None and int(label) != classes.index(cls) + 1:
            raise DatasetError(f"{where}: label {label}, classInd.txt says {classes.index(cls) + 1} for {cls}")
        entries.append(video)
    return entries


def load_table(root: Path, splits: Path) -> pd.DataFrame:
    files = [splits / "classInd.txt"] + [
        splits / f"{kind}list0{k}.txt" for k in range(1, N_SPLITS + 1) for kind in ("train", "test")
    ]
    require_files(files, "UCF101 split files")
    classes = read_class_index(splits / "classInd.txt")
    membership: dict[str, dict[str, str]] = {}
    for col, k in zip(split_columns(N_SPLITS), range(1, N_SPLITS + 1)):
        for kind in ("train", "test"):
            for video in _split_entries(splits / f"{kind}list0{k}.txt", classes, labelled=kind == "train"):
                membership.setdefault(video, {})[col] = kind
    rows = [
        {"path": video, "class": video.split("/")[0],
         "label": classes.index(video.split("/")[0]), **sets}
        for video, sets in sorted(membership.items())
    ]
    return pd.DataFrame(rows).fillna({c: "" for c in split_columns(N_SPLITS)})
