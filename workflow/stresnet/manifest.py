"""Stage manifests: the one file a data stage ends in. It lists the files the stage wrote, the
settings that made them and a content fingerprint (SHA-256) of each; the next stage takes the
manifest, not a folder, and checks what it uses against it.

A manifest's own SHA-256 therefore stands for everything under it: a training checkpoint
records the fingerprints of the manifests it was trained from and is resumed only on the same.

Files are listed by their path relative to the manifest's own folder, so that a manifest means
the same wherever its files are: in results/, in a job's copy of them from object storage, in
another node's scratch folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import InputError

VERSION = 2  # 2: paths relative to the manifest's folder


class ManifestError(InputError):
    """A manifest that is missing, of another stage, or whose files changed since it was written."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | Path, folder: Path) -> dict[str, Any]:
    """A listed file: its path relative to `folder` (the manifest's), size and SHA-256."""
    path = Path(path)
    return {"path": os.path.relpath(path, folder), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def write_manifest(path: str | Path, stage: str, settings: Mapping[str, Any], files: Mapping[str, str | Path],
                   inputs: Mapping[str, str | Path] | None = None, **extra: Any) -> dict[str, Any]:
    """Write the manifest of `stage` atomically: `files` by name, the manifests it was made from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"stage": stage, "version": VERSION, "settings": dict(settings),
           "files": {name: file_entry(f, path.parent) for name, f in files.items()},
           "inputs": {name: file_entry(f, path.parent) for name, f in (inputs or {}).items()}, **extra}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return doc


def listed_files(path: str | Path, text: str) -> list[str]:
    """The files a manifest (its `text`, read from `path`) lists, as paths beside it (empty when
    it is not a manifest of this version)."""
    try:
        doc = json.loads(text)
        if doc.get("version") != VERSION:
            return []
        return [os.path.normpath(Path(path).parent / entry["path"]) for entry in doc["files"].values()]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def listed_missing(path: str | Path, exists: Callable[[str], bool] = os.path.exists,
                   read: Callable[[str], str | None] | None = None) -> list[str]:
    """The files the manifest at `path` lists that are gone (none when there is no manifest).
    `exists` and `read` see the files where they are: the local disk, or object storage."""
    text = (read or _read_local)(str(path))
    return sorted(f for f in listed_files(path, text) if not exists(f)) if text is not None else []


def _read_local(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def missing_stamp(path: str | Path, exists: Callable[[str], bool] = os.path.exists,
                  read: Callable[[str], str | None] | None = None, mtime: Callable[[str], float | None] | None = None
                  ) -> str:
    """The stamp of the manifest at `path`: a small input of the manifest's rule, rewritten (so
    newer than the manifest, with other content) when a file the manifest lists is gone. Snakemake
    then reruns the manifest's rule, and first rebuilds the missing file, which it would not do for a
    missing intermediate file whose consumers are up to date. Nothing is recorded that would
    rerun the rule again once the file is back (as a param would be). Returns the stamp's path."""
    manifest = Path(path)
    stamp = manifest.with_name(f".{manifest.name}.missing")  # always on the local disk
    missing = listed_missing(manifest, exists, read)
    manifest_time = (mtime or _mtime_local)(str(manifest))
    flagged = stamp.exists() and manifest_time is not None and stamp.stat().st_mtime > manifest_time
    if not stamp.exists() or (missing and not flagged):
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"missing": missing, "seen": time.time()}) + "\n")
        if not missing:  # a new stamp with nothing missing triggers nothing
            os.utime(stamp, (0, 0))
    return str(stamp)


def _mtime_local(path: str) -> float | None:
    return os.path.getmtime(path) if os.path.exists(path) else None


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
        """The file listed as `name` (beside the manifest), refused if it is gone or its size
        changed since."""
        if name not in self.doc["files"]:
            raise ManifestError(f"{self.path}: lists no file {name!r}")
        entry = self.doc["files"][name]
        path = self.path.parent / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise ManifestError(f"{path}: changed since {self.path} listed it; rerun snakemake to rebuild both")
        return path

    def identity(self) -> dict[str, Any]:
        """What a result made from this manifest records of it: its content, not where it lies
        (a job's copy of it may lie elsewhere on each node)."""
        return {"sha256": self.sha256, "settings": self.settings}

    def input_sha256(self, name: str) -> str:
        """The SHA-256 of a manifest this one was made from."""
        return self.doc["inputs"][name]["sha256"]
