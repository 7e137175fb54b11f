"""Stage manifests: the one file a data stage ends in. It lists the files the stage wrote, the
settings that made them and a content fingerprint (SHA-256) of each; the next stage takes the
manifest, not a folder, and checks what it uses against it.

A manifest's own SHA-256 therefore stands for everything under it: a training checkpoint
records the fingerprints of the manifests it was trained from and is resumed only on the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from .errors import InputError

VERSION = 1


class ManifestError(InputError):
    """A manifest that is missing, of another stage, or whose files changed since it was written."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def write_manifest(path: str | Path, stage: str, settings: Mapping[str, Any], files: Mapping[str, str | Path],
                   inputs: Mapping[str, str | Path] | None = None, **extra: Any) -> dict[str, Any]:
    """Write the manifest of `stage` atomically: `files` by name, the manifests it was made from."""
    doc = {"stage": stage, "version": VERSION, "settings": dict(settings),
           "files": {name: file_entry(f) for name, f in files.items()},
           "inputs": {name: file_entry(f) for name, f in (inputs or {}).items()}, **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return doc


def listed_missing(path: str | Path) -> list[str]:
    """The files the manifest at `path` lists that are gone (none when there is no manifest)."""
    try:
        files = json.loads(Path(path).read_text())["files"].values()
        return sorted(entry["path"] for entry in files if not Path(entry["path"]).exists())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def missing_stamp(path: str | Path) -> str:
    """The stamp of the manifest at `path`: a small input of the manifest's rule, rewritten (so
    newer than the manifest, with other content) when a file the manifest lists is gone. Snakemake
    then reruns the manifest's rule, and first rebuilds the missing file, which it would not do for a
    missing intermediate file whose consumers are up to date. Nothing is recorded that would
    rerun the rule again once the file is back (as a param would be). Returns the stamp's path."""
    manifest = Path(path)
    stamp = manifest.with_name(f".{manifest.name}.missing")
    missing = listed_missing(manifest)
    flagged = stamp.exists() and manifest.exists() and stamp.stat().st_mtime > manifest.stat().st_mtime
    if not stamp.exists() or (missing and not flagged):
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"missing": missing, "seen": time.time()}) + "\n")
        if not missing:  # a new stamp with nothing missing triggers nothing
            os.utime(stamp, (0, 0))
    return str(stamp)


def file_state(path: str | Path) -> str:
    """A rule param that follows a file's content: its SHA-256, or "missing". A consumer that takes
    the file as an ancient input and this as a param reruns when the content changes, not when the
    file is only rewritten the same; "missing" makes it run, and so the file's producer."""
    return file_sha256(path) if Path(path).is_file() else "missing"


class Manifest:
    """A manifest as the next stage reads it."""

    def __init__(self, path: str | Path, stage: str):
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(f"{self.path}: no such manifest; build it with snakemake {self.path}")
        try:
            self.doc = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"{self.path}: not a manifest ({e}); delete it and rerun snakemake") from e
        if self.doc.get("stage") != stage or self.doc.get("version") != VERSION:
            raise ManifestError(f"{self.path}: a {self.doc.get('stage')!r} manifest of version "
                                f"{self.doc.get('version')}, not the {stage!r} manifest of version {VERSION} expected")
        self.sha256 = file_sha256(self.path)

    @property
    def settings(self) -> dict[str, Any]:
        return self.doc["settings"]

    def names(self) -> list[str]:
        return list(self.doc["files"])

    def file(self, name: str) -> Path:
        """The file listed as `name`, refused if it is gone or its size changed since."""
        if name not in self.doc["files"]:
            raise ManifestError(f"{self.path}: lists no file {name!r}")
        entry = self.doc["files"][name]
        path = Path(entry["path"])
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise ManifestError(f"{path}: changed since {self.path} listed it; rerun snakemake to rebuild both")
        return path

    def identity(self) -> dict[str, Any]:
        """What a result made from this manifest records of it."""
        return {"manifest": str(self.path), "sha256": self.sha256, "settings": self.settings}
