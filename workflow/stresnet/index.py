"""Index stage: the dataset's video table with shard assignment, and after frame extraction the
final `videos.csv` / `bad_videos.csv` and the gate that stops the workflow on bad videos."""

from __future__ import annotations

import argparse
import hashlib
import logging

from pathlib import Path

import pandas as pd

from .datasets import FORMATS, DatasetError, load_table
from .errors import SettingError, run_stage
from .manifest import write_manifest
from .store import ShardError, shard_attrs

log = logging.getLogger(__name__)
REPORT_COLUMNS = ["path", "n_frames", "expected_frames", "fps", "width", "height", "status", "message"]

def write_csv_atomic(table: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)

def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by this package, with split and shard columns kept as text."""
    return pd.read_csv(path, dtype={"shard": str, "message": str}, keep_default_na=False)

def assign_shards(videos: pd.Series, shard_size: int) -> list[str]:
    """Each video's shard, from a hash of its path: about shard_size videos per shard, and adding
    or removing a video changes no other video's shard (unless the shard count changes)."""
    if shard_size < 1:
        raise SettingError(f"shard_size {shard_size}: must be at least 1")
    n = max(1, round(len(videos) / shard_size))
    return [f"{int(hashlib.sha1(p.encode()).hexdigest()[:12], 16) % n:05d}" for p in videos]

def build_index(fmt: str, root: str | Path, splits: str | Path | None, shard_size: int,
                **options) -> pd.DataFrame:
    """The dataset's videos, each assigned to a shard (`assign_shards`)."""
    table = load_table(fmt, root, splits, **options)
    table["shard"] = assign_shards(table["path"], shard_size)
    return table

def smoke_subset(table: pd.DataFrame, per_set: int) -> pd.DataFrame:
    """The videos of a smoke run: in each split, `per_set` training and `per_set` test videos of
    as many classes as possible, chosen by a hash of their paths (stable when videos come or go).
    A video keeps its membership only in the splits it was chosen for."""
    rank = table["path"].map(lambda p: hashlib.sha1(p.encode()).hexdigest())
    table = table.copy()
    for split in [c for c in table.columns if c.startswith("split")]:
        chosen = []
        for subset in ("train", "test"):
            members = table[table[split] == subset].assign(rank=rank).sort_values("rank")
            # one video per class first (in hash order), then the rest
            chosen += list(pd.concat([members.drop_duplicates("class"), members]).index.drop_duplicates()[:per_set])
        table.loc[~table.index.isin(chosen), split] = ""
    used = (table[[c for c in table.columns if c.startswith("split")]] != "").any(axis=1)
    return table[used].reset_index(drop=True)


def class_table(table: pd.DataFrame) -> pd.DataFrame:
    """classes.csv of a video table: label and class name of every class, labels 0..K-1."""
    classes = table[["label", "class"]].drop_duplicates().sort_values("label").reset_index(drop=True)
    if classes["label"].duplicated().any() or classes["label"].tolist() != list(range(len(classes))):
        raise ValueError(f"labels are not one per class, 0..{len(classes) - 1}: {classes.head().to_dict('records')}")
    return classes


def class_names(classes: pd.DataFrame) -> list[str]:
    """Class names by label, from classes.csv (any table with label and class columns)."""
    return list(classes.sort_values("label").drop_duplicates("label")["class"])


def merge_reports(index: pd.DataFrame, reports: list[pd.DataFrame]) -> pd.DataFrame:
    """videos.csv: the index joined with what frame extraction found for every video."""
    found = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=REPORT_COLUMNS)
    table = index.merge(found[REPORT_COLUMNS], on="path", how="left", validate="one_to_one")
    missing = table["status"].isna()
    if missing.any():
        raise ValueError(f"no extraction report for {missing.sum()} videos, e.g. "
                         f"{table.loc[missing, 'path'].iloc[0]}")
    return table

def frames_manifest(out: str | Path, videos_csv: str | Path, classes_csv: str | Path, shards: list[str | Path],
                    summary: dict) -> dict:
    """The frame stage's manifest (dataset_ready.json): videos.csv, classes.csv and every frame
    shard with their fingerprints, and the frame settings, which every shard must share."""
    settings: dict = {}
    for path in shards:
        attrs = shard_attrs(path)
        for name in ("short_side", "jpeg_quality"):
            if settings.setdefault(name, attrs[name]) != attrs[name]:
                raise ShardError(f"{path}: {name}={attrs[name]!r}, other frame shards have {settings[name]!r}; "
                                 "delete the shards and rerun snakemake")
    files = {"videos": videos_csv, "classes": classes_csv, **{Path(s).stem: s for s in shards}}
    return write_manifest(out, "frames", settings, files, summary=summary)

def check_ready(videos: pd.DataFrame, skip_bad: bool) -> dict:
    """Refuse a dataset with bad videos unless they are to be skipped; returns a summary."""
    bad = videos[videos["status"] != "ok"]
    if len(bad) and not skip_bad:
        lines = "\n".join(f"  {r.path}: {r.status}: {r.message}" for r in bad.head(20).itertuples())
        raise DatasetError(
            f"{len(bad)} of {len(videos)} videos cannot be used:\n{lines}\n"
            "Fix or remove them, or set `skip_bad_videos: true` in the dataset's config to "
            "train without them."
        )
    return {"videos": int(len(videos)), "good": int(len(videos) - len(bad)),
            "skipped": int(len(bad)), "classes": int(videos["label"].nunique())}

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet index", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="list the videos and their splits, assign shards")
    b.add_argument("--format", required=True, choices=FORMATS)
    b.add_argument("--root", required=True, help="folder of the videos")
    b.add_argument("--splits", help="folder of the split files")
    b.add_argument("--shard-size", type=int, default=100)
    b.add_argument("--test-fraction", type=float, default=0.3, help="folder format without splits")
    b.add_argument("--seed", type=int, default=0, help="folder format without splits")
    b.add_argument("--allow-missing", action="store_true",
                   help="folder format with Kinetics annotations: leave out listed videos that are absent")
    b.add_argument("--smoke-videos", type=int, default=0,
                   help="a smoke run: keep this many training and test videos per split (all videos are checked)")
    b.add_argument("--out", required=True, help="index CSV to write")
    b.add_argument("--classes-out", required=True, help="classes.csv to write (every class: label, class)")
    m = sub.add_parser("merge", help="join the extraction reports into videos.csv")
    m.add_argument("--index", required=True)
    m.add_argument("--reports", nargs="*", default=[])
    m.add_argument("--out", required=True, help="videos.csv")
    m.add_argument("--bad", required=True, help="bad_videos.csv")
    c = sub.add_parser("check", help="fail if bad videos are not to be skipped, else write the frames manifest")
    c.add_argument("--videos", required=True)
    c.add_argument("--classes", required=True, help="classes.csv")
    c.add_argument("--shards", nargs="*", default=[], help="every frame shard of the dataset")
    c.add_argument("--skip-bad", action="store_true")
    c.add_argument("--out", required=True, help="the frames manifest, written when the dataset is usable")
    return p

def run(args: argparse.Namespace) -> None:
    if args.command == "build":
        options = ({"test_fraction": args.test_fraction, "seed": args.seed, "allow_missing": args.allow_missing}
                   if args.format == "folder" else {})
        table = build_index(args.format, args.root, args.splits, args.shard_size, **options)
        write_csv_atomic(class_table(table), args.classes_out)
        if args.smoke_videos:
            listed = len(table)
            table = smoke_subset(table, args.smoke_videos)
            table["shard"] = assign_shards(table["path"], args.shard_size)
            log.info("smoke run: %d of the %d videos, %d training and %d test videos per split",
                     len(table), listed, args.smoke_videos, args.smoke_videos)
        write_csv_atomic(table, args.out)
        log.info("%d videos of %d classes in %d shards -> %s", len(table),
                 table["label"].nunique(), table["shard"].nunique(), args.out)
    elif args.command == "merge":
        videos = merge_reports(read_table(args.index), [read_table(r) for r in args.reports])
        write_csv_atomic(videos[videos["status"] != "ok"], args.bad)
        write_csv_atomic(videos, args.out)
        log.info("%d videos, %d bad -> %s", len(videos), (videos["status"] != "ok").sum(), args.out)
    else:
        summary = check_ready(read_table(args.videos), args.skip_bad)
        frames_manifest(args.out, args.videos, args.classes, args.shards, summary)

def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    run(args)

if __name__ == "__main__":
    run_stage("index", main)
