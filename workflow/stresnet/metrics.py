"""Metrics stage: Table 3's rows for one split from the saved scores, and their mean over splits.
A split whose ST-ResNet* scores were fused with external ones (`stresnet fuse`) has a row for
each external source and one for the fusion after them."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from .board import open_board
from .errors import InputError, run_stage
from .fuse import fusion_rows
from .paths import STAGES

log = logging.getLogger(__name__)


def accuracy(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Top-1, top-5, mean class accuracy and per-class accuracy (in %) of class scores. A class
    with no test video has no accuracy: it is named, and left out of the per-class and mean class
    accuracy, which says over how many classes it is taken."""
    top = np.argsort(-scores, axis=1)
    hit1 = top[:, 0] == labels
    hit5 = (top[:, :5] == labels[:, None]).any(1)
    tested = set(labels.tolist())
    per_class = {name: float(100 * hit1[labels == c].mean()) for c, name in enumerate(classes) if c in tested}
    return {"top1": float(100 * hit1.mean()), "top5": float(100 * hit5.mean()),
            "mean_class_accuracy": float(np.mean(list(per_class.values()))),
            "mean_class_accuracy_classes": len(per_class), "per_class": per_class,
            "classes_without_test_videos": [name for c, name in enumerate(classes) if c not in tested],
            "videos": int(len(labels))}


def confusion(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Videos by true class (rows) and predicted class (columns)."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (labels, scores.argmax(1)), 1)
    return matrix


def split_metrics(score_files: list[Path], classes: list[str], config_digest: str) -> dict:
    """Table 3's rows from the scores of each evaluated kind (files named <kind>.npz), and the
    rows of a fusion's scores file, with the provenance each scores file records (models and
    data manifests, external files, by fingerprint)."""
    files = {Path(f).stem: np.load(f) for f in score_files}
    missing = {k for k, _ in STAGES.values()} - set(files)
    if missing:
        raise ValueError(f"no scores of {sorted(missing)} among {[str(f) for f in score_files]}")
    out = {stage: accuracy(files[kind][part], files[kind]["labels"], classes)
           for stage, (kind, part) in STAGES.items()}
    for fusion in (f for f in files.values() if "sources" in f):
        out.update({row: accuracy(scores, fusion["labels"], classes) for row, scores in fusion_rows(fusion).items()})
    provenance = {kind: json.loads(str(f["provenance"])) for kind, f in files.items() if "provenance" in f}
    return {"stages": out, "config_digest": config_digest, "provenance": provenance}


def aggregate(per_split: list[dict]) -> dict:
    """The mean over splits of each row's figures, laid out like Table 3, with each split's top-1,
    the number of classes its mean class accuracy is over, and its classes without a test video."""
    stages = list(per_split[0]["stages"])
    for k, m in enumerate(per_split[1:], 2):
        if list(m["stages"]) != stages:
            raise InputError(f"metrics of the splits differ in rows: {stages} vs {list(m['stages'])} "
                             f"(input {k}); rebuild every split's metrics.json with the same config")
    table = {}
    for stage in stages:
        rows = [m["stages"][stage] for m in per_split]
        table[stage] = {key: float(np.mean([r[key] for r in rows]))
                        for key in ("top1", "top5", "mean_class_accuracy")}
        table[stage]["top1_per_split"] = [r["top1"] for r in rows]
        # an older metrics.json lacks these keys: its tested classes are per_class's, the others unrecorded (None)
        table[stage]["mean_class_accuracy_classes_per_split"] = [
            r.get("mean_class_accuracy_classes", len(r["per_class"])) for r in rows]
        table[stage]["classes_without_test_videos_per_split"] = [r.get("classes_without_test_videos") for r in rows]
    out = {"splits": len(per_split), "table3": table,
           "config_digests": sorted({m["config_digest"] for m in per_split})}
    smoke = [m["smoke"] for m in per_split if "smoke" in m]
    return {**out, "smoke": smoke[0]} if smoke else out


def write_board(folder: Path, stages: dict) -> None:
    """A split's test figures as a TensorBoard run of their own (the one before it replaced):
    top-1, top-5 and mean class accuracy (%) of each row of Table 3 as test/<figure>/<row>, and
    the rows as a table."""
    board = open_board(folder, afresh=True)
    for stage, row in stages.items():
        for figure in ("top1", "top5", "mean_class_accuracy"):
            board.add_scalar(f"test/{figure}/{stage}", row[figure], 0)
    lines = ["| stage | top-1 | top-5 | mean class acc. |", "| --- | --- | --- | --- |"]
    lines += [f"| {stage} | {r['top1']:.2f} | {r['top5']:.2f} | {r['mean_class_accuracy']:.2f} |"
              for stage, r in stages.items()]
    board.add_text("test/table3", "\n".join(lines), 0)
    board.close()


def smoke_mark(steps: int) -> dict:
    """What a smoke run's metrics.json says of itself: the figures are no result."""
    return {"steps_per_phase": steps, "note": "SMOKE RUN: a check of the workflow with a few steps and "
            "videos; these figures are not results"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet metrics", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="metrics.json of one split")
    s.add_argument("--scores", nargs="+", required=True,
                   help="two_stream.npz, st_resnet.npz, st_resnet_star.npz and any fusion's NPZ")
    s.add_argument("--classes", required=True, help="classes.csv (class names by label)")
    s.add_argument("--config-digest", required=True)
    s.add_argument("--smoke", type=int, default=0, help="steps per phase of a smoke run (marks the metrics)")
    s.add_argument("--tensorboard", help="folder of TensorBoard event files for the test figures")
    s.add_argument("--out", required=True)
    a = sub.add_parser("aggregate", help="the mean over splits")
    a.add_argument("--inputs", nargs="+", required=True)
    a.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "split":
        from .index import class_names, read_table

        classes = class_names(read_table(args.classes))
        result = split_metrics([Path(f) for f in args.scores], classes, args.config_digest)
        untested = {c for row in result["stages"].values() for c in row["classes_without_test_videos"]}
        if untested:
            log.warning("no test video of %d of %d classes (%s): per-class and mean class accuracy leave "
                        "them out", len(untested), len(classes), ", ".join(c for c in classes if c in untested))
        if args.smoke:
            result = {"smoke": smoke_mark(args.smoke), **result}
        if args.tensorboard:
            write_board(Path(args.tensorboard), result["stages"])
    else:
        result = aggregate([json.loads(Path(p).read_text()) for p in args.inputs])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    log.info("-> %s", args.out)


if __name__ == "__main__":
    run_stage("metrics", main)
