"""HMDB51: one folder of .avi per class and testTrainMulti_7030_splits/.

Each split file `<class>_test_split<k>.txt` holds lines `<video>.avi <tag>`, tag 1 = train,
2 = test, 0 = not used. Labels follow the alphabetical order of the classes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .common import DatasetError, read_lines, split_columns

N_SPLITS = 3
TAGS = {"1": "train", "2": "test", "0": ""}
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")


def load_table(root: Path, splits: Path) -> pd.DataFrame:
    if not splits.is_dir():
        raise DatasetError(f"HMDB51 split folder {splits} does not exist")
    found = {(m["cls"], int(m["k"])): p for p in splits.iterdir() if (m := _SPLIT_FILE.match(p.name))}
    classes = sorted({cls for cls, _ in found})
    if not classes:
        raise DatasetError(f"{splits}: no <class>_test_split<k>.txt files")
    missing = [f"{c}_test_split{k}.txt" for c in classes for k in range(1, N_SPLITS + 1)
               if (c, k) not in found]
    if missing:
        raise DatasetError(f"{splits}: {len(missing)} HMDB51 split files missing: {', '.join(missing)}")
    membership: dict[str, dict[str, str]] = {}
    for (cls, k), path in sorted(found.items()):
        for number, line in enumerate(read_lines(path), 1):
            name, _, tag = line.rpartition(" ")  # every name is data: the tag is after the last space
            if tag not in TAGS or not name:
                raise DatasetError(f"{path}, line {number}: {line!r}: expected '<video> <0|1|2>'; fix the line")
            membership.setdefault(f"{cls}/{name.strip()}", {})[f"split{k}"] = TAGS[tag]
    rows = [
        {"path": video, "class": video.split("/")[0],
         "label": classes.index(video.split("/")[0]), **sets}
        for video, sets in sorted(membership.items())
    ]
    return pd.DataFrame(rows).fillna({c: "" for c in split_columns(N_SPLITS)})
