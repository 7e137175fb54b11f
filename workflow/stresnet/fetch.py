"""Fetch an official dataset archive: resumable download, checksum, unpack.

Used when a dataset's config names a `url`; otherwise `root` points at an existing copy.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class FetchError(Exception):
    pass


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60) -> Path:
    """Download url to dest, resuming a `.part` file left by an interrupted run."""
    dest = Path(dest)
    if dest.is_file() and (not sha256 or sha256sum(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and getattr(response, "status", 200) == 206
            if have and not resumed:
                log.warning("%s: the server ignores ranges; downloading from the start", url)
                have = 0
            total = int(response.headers.get("Content-Length") or 0) + have
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total or None, initial=have, unit="B", unit_scale=True, desc=dest.name
            ) as bar:
                while block := response.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
    except OSError as e:
        raise FetchError(f"download of {url} failed ({e}); rerun to resume from "
                         f"{part.stat().st_size if part.exists() else 0} bytes") from e
    if sha256 and (got := sha256sum(part)) != sha256:
        part.unlink()
        raise FetchError(f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); "
                         "the partial file was removed")
    part.replace(dest)
    return dest


def unpack(archive: str | Path, dest: str | Path) -> None:
    """Unpack zip and tar archives with the standard library, rar with an unrar/7z/bsdtar found
    on PATH (UCF101 and HMDB51 are distributed as rar)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix.lower() != ".rar":
        shutil.unpack_archive(archive, dest)
        return
    for tool, args in (("unrar", ["x", "-o+", "-y"]), ("7z", ["x", "-y", f"-o{dest}"]),
                       ("bsdtar", ["-xf"])):
        if exe := shutil.which(tool):
            cmd = [exe, *args, str(archive)] + ([str(dest) + "/"] if tool == "unrar" else [])
            cwd = dest if tool == "bsdtar" else None
            subprocess.run(cmd, check=True, cwd=cwd)
            return
    raise FetchError(f"{archive}: unpacking rar needs unrar, 7z or bsdtar on PATH "
                     "(e.g. `conda install -c conda-forge unrar`), or unpack it yourself and "
                     "point the dataset's root at the result")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet fetch", description=__doc__)
    p.add_argument("--url", action="append", required=True, help="archive URL (repeatable)")
    p.add_argument("--sha256", action="append", default=[], help="checksum of each URL, in order")
    p.add_argument("--out", required=True, help="folder to unpack into")
    p.add_argument("--keep-archives", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    checksums = args.sha256 + [None] * (len(args.url) - len(args.sha256))
    try:
        for url, checksum in zip(args.url, checksums):
            archive = download(url, out / "archives" / Path(url.split("?")[0]).name, checksum)
            unpack(archive, out)
            if not args.keep_archives:
                archive.unlink()
    except FetchError as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
