"""Fetch a dataset's official archives: resumable download, checksum, safe unpacking.

Used when a dataset's config names a `url`; otherwise `root` points at an existing copy.
A download's bytes so far are kept in `<archive>.part` under --partial-dir, which lies outside
--out (Snakemake removes a failed job's outputs), and the next run resumes it with a Range
request. A body shorter than the length the server announced is an interrupted download, never
a complete one. Unpacking: `stresnet.archives`.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .archives import DEFAULT_MAX_GB, DEFAULT_MAX_MEMBERS, FetchError, Limits, Tally, unpack
from .errors import SettingError, run_stage
from .progress import Progress

__all__ = ["FetchError", "download", "fetch", "unpack"]

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, full length) of a `Content-Range: bytes a-b/n` (or `bytes */n`) header."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _receive(url: str, part: Path, have: int, timeout: float) -> int | None:
    """Write url's body into part, from byte `have` on where the server resumes; returns the full
    length the server announced (None when it announced none)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:
            raise
        total = _content_range(e.headers.get("Content-Range"))[1]
        if total == have:  # complete already: a run stopped between the last byte and the rename
            return total
        part.unlink()
        raise FetchError(f"{url}: the server cannot resume from byte {have} (its file has {total} bytes); "
                         "the partial file was deleted: rerun to download it from the start") from e
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start is None:  # no Content-Range: taken as the rest that was asked for
                start, total = have, have + int(length) if length else None
            if start != have:
                part.unlink()
                raise FetchError(f"{url}: asked to resume from byte {have}, the server sent from byte "
                                 f"{start}; the partial file was deleted: rerun to download it from the start")
        else:
            if have:
                log.warning("%s: the server ignores ranges; downloading from the start", url)
            have, total = 0, int(length) if length else None
        blocks = iter(lambda: response.read(CHUNK), b"")
        left = -(-(total - have) // CHUNK) if total is not None else None
        with open(part, "ab" if have else "wb") as out:
            for block in Progress(blocks, desc=part.name, total=left, unit="MiB"):
                out.write(block)
    return total


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60) -> Path:
    """Download url to dest, resuming the `<dest>.part` file an interrupted run left; a body
    shorter than announced keeps the partial file and raises."""
    dest = Path(dest)
    if dest.is_file():
        if not sha256 or sha256sum(dest) == sha256:
            return dest
        log.warning("%s: its SHA-256 is not %s; downloading it again", dest, sha256)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    try:
        total = _receive(url, part, have, timeout)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: the server answered {e.code} {e.reason}; check the dataset's url") from e
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out
        kept = part.stat().st_size if part.exists() else 0
        raise FetchError(f"{url}: download failed ({e}); rerun to resume from {kept} bytes "
                         f"(kept in {part})") from e
    got = part.stat().st_size
    if total is not None and got != total:
        if got > total:
            part.unlink()
            raise FetchError(f"{url}: received {got} bytes, more than the {total} announced; the file "
                             "was deleted: rerun to download it again")
        raise FetchError(f"{url}: download interrupted at {got} of {total} bytes (the connection "
                         f"closed early); rerun to resume: the bytes are kept in {part}")
    if sha256 and (digest := sha256sum(part)) != sha256:
        part.unlink()
        raise FetchError(f"{url}: checksum mismatch of the complete download of {got} bytes (sha256 "
                         f"{digest}, expected {sha256}); the file was deleted: check the url and sha256")
    part.replace(dest)
    return dest


def archive_name(url: str) -> str:
    name = Path(urlsplit(url).path).name
    if not name:
        raise SettingError(f"{url}: the URL names no file; give the archive's own URL")
    return name


def fetch(urls: list[str], checksums: list[str | None], out: Path, partial_dir: Path, limits: Limits,
          keep_archives: bool = False) -> None:
    """Download each archive into partial_dir, check it and unpack it into out."""
    tally = Tally(limits)
    for url, checksum in zip(urls, checksums):
        archive = download(url, partial_dir / archive_name(url), checksum)
        unpack(archive, out, tally)
        if not keep_archives:
            archive.unlink()
    if partial_dir.is_dir() and not any(partial_dir.iterdir()):
        partial_dir.rmdir()


def _positive(kind: type) -> type:
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet fetch", description=__doc__)
    p.add_argument("--url", action="append", required=True, help="archive URL (repeatable)")
    p.add_argument("--sha256", action="append", default=[], help="checksum of each URL, in order")
    p.add_argument("--out", required=True, help="folder to unpack into")
    p.add_argument("--partial-dir", help="folder of the archives being downloaded (`.part` files) and "
                   "downloaded, outside --out so that a failed run's bytes survive (default: <out>.partial)")
    p.add_argument("--max-unpacked-gb", type=_positive(float), default=DEFAULT_MAX_GB,
                   help="refuse archives that unpack to more GB than this, all together (config fetch.max_unpacked_gb)")
    p.add_argument("--max-members", type=_positive(int), default=DEFAULT_MAX_MEMBERS,
                   help="refuse archives of more members (files, links, folders) than this, all together "
                   "(config fetch.max_members)")
    p.add_argument("--keep-archives", action="store_true", help="keep the archives in --partial-dir once unpacked")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if len(args.sha256) > len(args.url):
        raise SettingError(f"--sha256: {len(args.sha256)} checksums for {len(args.url)} URLs; give one per URL, in order")
    out = Path(args.out)
    partial_dir = Path(args.partial_dir) if args.partial_dir else out.with_name(out.name + ".partial")
    limits = Limits(int(args.max_unpacked_gb * 1e9), args.max_members)
    fetch(args.url, args.sha256 + [None] * (len(args.url) - len(args.sha256)), out, partial_dir, limits,
          args.keep_archives)


if __name__ == "__main__":
    run_stage("fetch", main)
