"""Verify stage: check a dataset's stored data, and model files, byte for byte.

Every file a manifest lists against the SHA-256 it recorded; every frame and flow image of
every shard against its CRC-32; every model file against the digest of its weights. Lists
every damaged item, one line each, with the command that rebuilds it; exits 1 if any. Use it
on a copy moved between machines: `stresnet verify --manifests results/ucf101/dataset_ready.json
results/ucf101/flow/tvl1/manifest.json --models results/ucf101/split1/*/model.pt`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import InputError, run_stage
from .manifest import Manifest, file_sha256
from .store import damaged_items


def verify_manifest(path: str | Path) -> tuple[int, list[str]]:
    """(files checked, damaged items) of everything the manifest at `path` lists."""
    doc = json.loads(Path(path).read_text())
    manifest = Manifest(path, doc.get("stage", ""))
    problems = []
    for name, entry in manifest.doc["files"].items():
        file = manifest.path.parent / entry["path"]
        rebuild = f"rebuild it: snakemake --force {file}, then snakemake"
        if not file.is_file():
            problems.append(f"{file}: missing ({manifest.path} lists it); {rebuild}")
            continue
        if file.suffix == ".h5":
            problems += damaged_items(file)
        if file_sha256(file) != entry["sha256"]:
            problems.append(f"{file}: its SHA-256 differs from the one {manifest.path} recorded; {rebuild}")
    return len(manifest.doc["files"]), list(dict.fromkeys(problems))


def verify_model(path: str | Path) -> list[str]:
    # torch: 5 s of imports that a check of the data alone never needs
    from .models.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except InputError as e:
        return [str(e)]
    return []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifests", nargs="*", default=[], help="frames and flow manifests")
    p.add_argument("--models", nargs="*", default=[], help="model.pt or checkpoint.pt files")
    p.add_argument("--out", help="JSON summary to write when nothing is damaged")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    problems, files = [], 0
    for path in args.manifests:
        try:
            checked, found = verify_manifest(path)
        except (InputError, OSError, ValueError) as e:
            checked, found = 0, [f"{path}: cannot be read as a manifest ({e})"]
        files += checked
        problems += found
    for path in args.models:
        problems += verify_model(path)
    for line in problems:
        print(f"stresnet verify: {line}")
    summary = {"manifests": args.manifests, "files": files, "models": args.models, "damaged": len(problems)}
    print(f"stresnet verify: {files} files and {len(args.models)} models checked, {len(problems)} damaged")
    if problems:
        sys.exit(1)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage("verify", main)
