"""Fusion stage: ST-ResNet*'s scores fused late with external ones (Table 4, right).

Sec. 4.3: "averaging the L2-normalized SVM scores of the FV-encoded IDT descriptors ... with the
L2-normalized video predictions of our ST-ResNet*, again without softmax normalization". Scores
of any other model fuse the same way. An external score file holds one row per test video of
one split: the video's path as in videos.csv and one score per class, in label (classInd) order:

- CSV: a header `path,<class 0>,<class 1>,...` (class names as in videos.csv), then the rows;
- NPZ: arrays `paths` (N,), `scores` (N, K) and `classes` (K,).

`fuse split` writes a split's fused scores; `fuse export` writes saved scores in that format.
"""

from __future__ import annotations

import argparse
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, run_stage
from .index import class_names, read_table
from .manifest import file_sha256

log = logging.getLogger(__name__)
OWN = "st_resnet_star"  # the pipeline's scores that external ones are fused with


class ScoresError(InputError):
    """An external score file that cannot be fused."""


def read_scores(path: str | Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(video paths, scores) of an external score file, its class columns checked."""
    path = Path(path)
    fix = "write it as README.md describes (Fusing external scores)"
    try:
        if path.suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if table.columns[0] != "path":
                raise ScoresError(f"{path}: the first column is {table.columns[0]!r}, not 'path'; {fix}")
            videos, names = table["path"].to_numpy(str), list(table.columns[1:])
            values = table[names].to_numpy().astype(float)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = sorted({"paths", "scores", "classes"} - set(data.files))
                if missing:
                    raise ScoresError(f"{path}: no array {', '.join(missing)} (it has {', '.join(data.files)}); {fix}")
                videos, values = data["paths"].astype(str), data["scores"].astype(float)
                names = data["classes"].astype(str).tolist()
            if values.ndim != 2 or videos.shape != values.shape[:1]:
                raise ScoresError(f"{path}: scores of shape {values.shape} for {videos.size} paths; "
                                  f"write one row of class scores per path")
        else:
            raise ScoresError(f"{path}: neither .csv nor .npz; {fix}")
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ScoresError(f"{path}: unreadable ({' '.join(str(e).split())}); {fix}") from e
    if len(names) != len(classes):
        raise ScoresError(f"{path}: {len(names)} class columns, the dataset has {len(classes)} classes; "
                          f"write one score per class, in label (classInd) order")
    wrong = next((i for i, (a, b) in enumerate(zip(names, classes)) if a != b), None)
    if wrong is not None:
        raise ScoresError(f"{path}: class column {wrong + 1} is {names[wrong]!r}, but class {wrong} is "
                          f"{classes[wrong]!r}; order the columns by label (classInd order)")
    return videos, values


def align(path: str | Path, videos: np.ndarray, values: np.ndarray, tested: np.ndarray,
          test_videos: set[str], split: int) -> np.ndarray:
    """An external file's scores in the order of `tested` (the videos evaluated), checked: each
    listed once, finite, and every row a test video of the split (rows of test videos left out
    of evaluation as bad are ignored)."""
    def example(names) -> str:
        return f"{len(names)} video(s), e.g. {str(names[0])!r}"

    duplicated = videos[pd.Index(videos).duplicated()]
    if duplicated.size:
        raise ScoresError(f"{path}: rows repeated for {example(duplicated)}; keep one row per video")
    unknown = [v for v in videos if v not in test_videos]
    if unknown:
        raise ScoresError(f"{path}: rows of {example(unknown)} that are not test videos of split {split} "
                          f"(paths as in videos.csv); give the file of split {split}")
    row = {v: i for i, v in enumerate(videos)}
    missing = [v for v in tested if v not in row]
    if missing:
        raise ScoresError(f"{path}: no scores of {example(missing)} among split {split}'s test videos; "
                          f"give one row per test video")
    aligned = values[[row[v] for v in tested]]
    infinite = tested[~np.isfinite(aligned).all(1)]
    if infinite.size:
        raise ScoresError(f"{path}: scores that are not finite (NaN or inf) for {example(infinite)}; "
                          f"replace them with real numbers")
    return aligned


def l2_normalised(scores: np.ndarray) -> np.ndarray:
    """Each video's scores divided by their L2 norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(scores, axis=1, keepdims=True)
    return scores / np.where(norms > 0, norms, 1)


def fuse(scores: list[np.ndarray], weights: list[float]) -> np.ndarray:
    # Table 4 (right): the weighted average of L2-normalised, pre-softmax scores
    return sum(w * l2_normalised(s) for s, w in zip(scores, weights)) / sum(weights)


def fuse_split(own: dict[str, np.ndarray], videos: pd.DataFrame, classes: list[str], split: int,
               sources: list[tuple[str, str, float]]) -> dict[str, np.ndarray]:
    """ST-ResNet*'s scores of a split (its scores file's arrays) fused with each (name, file,
    weight) source; ST-ResNet*'s weight is 1. `videos`: videos.csv (test membership), `classes`:
    the dataset's class names by label (classes.csv). Keeps each source's aligned scores."""
    tested = own["paths"].astype(str)
    test_videos = set(videos.loc[videos[f"split{split}"] == "test", "path"])
    external = [align(path, *read_scores(path, classes), tested, test_videos, split) for _, path, _ in sources]
    fused = fuse([own["fused"], *external], [1.0, *(w for *_, w in sources)])
    return {"fused": fused, OWN: own["fused"], "external": np.stack(external),
            "sources": np.array([name for name, *_ in sources]),
            "weights": np.array([w for *_, w in sources], float),
            "labels": own["labels"], "paths": own["paths"]}


def fusion_rows(data) -> dict[str, np.ndarray]:
    """The metrics rows of a fusion's scores: each source alone, and the fusion (`st_resnet_star+<names>`)."""
    names = [str(n) for n in data["sources"]]
    return {**dict(zip(names, data["external"])), "+".join([OWN, *names]): data["fused"]}


def export_scores(scores: np.ndarray, paths: np.ndarray, classes: list[str], out: str | Path) -> None:
    """Scores in the external format (CSV or NPZ by the suffix of `out`)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if Path(out).suffix == ".npz":
        np.savez(out, paths=paths.astype(str), scores=scores, classes=np.array(classes))
    else:
        table = pd.DataFrame(scores, columns=classes)
        table.insert(0, "path", paths.astype(str))
        table.to_csv(out, index=False, float_format="%.9g", na_rep="nan")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet fuse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="fuse ST-ResNet*'s scores of one split with external ones")
    s.add_argument("--scores", required=True, help="st_resnet_star.npz of the split")
    s.add_argument("--videos", required=True, help="videos.csv (the split's test videos)")
    s.add_argument("--classes", required=True, help="classes.csv (class names by label)")
    s.add_argument("--split", type=int, required=True)
    s.add_argument("--source", action="append", required=True, nargs=3, metavar=("NAME", "FILE", "WEIGHT"),
                   help="an external score file (.csv or .npz) and its weight; repeat for more")
    s.add_argument("--out", required=True, help="NPZ of the fused scores")
    e = sub.add_parser("export", help="write saved scores in the external format")
    e.add_argument("--scores", required=True, help="a scores NPZ of `stresnet evaluate`")
    e.add_argument("--part", default="fused", help="its array: appearance, motion or fused")
    e.add_argument("--classes", required=True, help="classes.csv (class names by label)")
    e.add_argument("--out", required=True, help=".csv or .npz")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    classes = class_names(read_table(args.classes))
    own = dict(np.load(args.scores))
    if args.command == "export":
        export_scores(own[args.part], own["paths"], classes, args.out)
        log.info("%s of %s -> %s", args.part, args.scores, args.out)
        return
    sources = [(name, path, float(weight)) for name, path, weight in args.source]
    fused = fuse_split(own, read_table(args.videos), classes, args.split, sources)
    provenance = {"split": args.split, OWN: {"path": args.scores, "sha256": file_sha256(args.scores)},
                  "sources": [{"name": n, "path": p, "weight": w, "sha256": file_sha256(p)} for n, p, w in sources]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **fused, provenance=json.dumps(provenance))
    for name, scores in fusion_rows(fused).items():
        log.info("%s: top-1 %.3f", name, (scores.argmax(1) == fused["labels"]).mean())


if __name__ == "__main__":
    run_stage("fuse", main)
