"""Unpacking downloaded archives without trusting them: zip and tar with the standard library,
rar with an unrar, bsdtar or 7z found on PATH.

Every member must land inside the destination. An absolute name, a `..`, a link leading out of
the tree, a member written through or over a link, or a special file refuses the whole archive
before anything of it is written. The unpacked bytes and members are counted against limits
twice: from what the archive declares before unpacking, and from what is written while it is
written, so that a header that lies is caught too. An archive is unpacked into a staging
folder inside the destination and moved into place once whole; a refused one leaves nothing.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from .errors import InputError

# Kinetics-700 (~650,000 videos, hundreds of GB in many tar.gz parts) with room; UCF101 is
# 6.5 GB and 13,320 videos, HMDB51 2 GB and 6,766
DEFAULT_MAX_GB = 2000.0
DEFAULT_MAX_MEMBERS = 1_000_000
BYTES_SETTING = "fetch.max_unpacked_gb (--max-unpacked-gb)"
MEMBERS_SETTING = "fetch.max_members (--max-members)"
LINKS = ("symlink", "hardlink")
# Python's own checks of tar members (PEP 706) where this Python has them; ours run in any case
TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
POLL_S = 1.0
CHUNK = 1 << 20
RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")


class FetchError(InputError):
    """A download or an archive that cannot be used: one line naming the URL or the archive."""


@dataclass(frozen=True)
class Member:
    """One entry of an archive as its listing declares it."""

    name: str
    kind: str  # file, dir, symlink, hardlink, or other (device, fifo: refused)
    size: int = 0
    link: str | None = ""  # a link's target; None where the archive keeps it as data (zip)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = int(DEFAULT_MAX_GB * 1e9)
    max_members: int = DEFAULT_MAX_MEMBERS


class Tally:
    """Bytes and members unpacked so far by one fetch, held against its limits."""

    def __init__(self, limits: Limits = Limits(), nbytes: int = 0, members: int = 0):
        self.limits, self.nbytes, self.members = limits, nbytes, members

    def copy(self) -> Tally:
        return Tally(self.limits, self.nbytes, self.members)

    def check(self, archive: Path, nbytes: int, members: int, when: str) -> None:
        """Refuse the archive if `nbytes` and `members` more pass a limit; `when` says how they
        were counted."""
        if self.nbytes + nbytes > self.limits.max_bytes:
            raise FetchError(
                f"{archive}: unpacks to more than {self.limits.max_bytes / 1e9:g} GB ({when}); "
                f"raise {BYTES_SETTING} if the archive is trusted")
        if self.members + members > self.limits.max_members:
            raise FetchError(
                f"{archive}: unpacks to more than {self.limits.max_members} members ({when}); "
                f"raise {MEMBERS_SETTING} if the archive is trusted")

    def add(self, archive: Path, nbytes: int, members: int, when: str) -> None:
        self.check(archive, nbytes, members, when)
        self.nbytes, self.members = self.nbytes + nbytes, self.members + members


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None


def _parts(name: str) -> tuple[str, ...]:
    """A member name as path components ('.' and empty ones dropped, '..' kept)."""
    return PurePosixPath(name).parts


def _link_problem(member: Member, links: set[tuple[str, ...]], files: set[tuple[str, ...]]) -> str | None:
    """Why a link member cannot be unpacked, or None."""
    if member.link is None:
        return "a symbolic link (links in zip archives are refused)"
    if not member.link:
        return "a link whose target the archive's listing does not show"
    if _is_absolute(member.link):
        return f"a link to the absolute path {member.link!r}"
    target = _parts(member.link)
    if member.kind == "hardlink":
        if ".." in target or target not in files:
            return f"a hard link to {member.link!r}, which is not a file earlier in the archive"
        return None
    at = list(_parts(member.name)[:-1])  # a symbolic link's target is relative to its folder
    for i, part in enumerate(target):
        if part == "..":
            if not at:
                return f"a link to {member.link!r}, outside the archive's folder"
            at.pop()
        else:
            at.append(part)
            if tuple(at) in links and i < len(target) - 1:
                return f"a link to {member.link!r}, through the link {'/'.join(at)!r}"
    return None


def _problem(member: Member, links: set[tuple[str, ...]], files: set[tuple[str, ...]],
             earlier_links: set[tuple[str, ...]]) -> str | None:
    """Why a member cannot be unpacked inside the destination, or None."""
    parts = _parts(member.name)
    if _is_absolute(member.name):
        return "an absolute path"
    if ".." in parts:
        return "a '..' in its path"
    if not parts and member.kind != "dir":
        return "no name"
    if member.kind not in ("file", "dir", *LINKS):
        return "a special file (device, fifo or socket)"
    for i in range(1, len(parts)):
        if parts[:i] in links:
            return f"written through the link {'/'.join(parts[:i])!r}"
    if parts in earlier_links:
        return f"written over the link {member.name!r} before it"
    return _link_problem(member, links, files) if member.kind in LINKS else None


def refused(archive: Path, member: str, problem: str, written: bool = False) -> FetchError:
    done = "what it wrote was removed" if written else "nothing of it unpacked"
    return FetchError(f"{archive}: member {member!r}: {problem}; the archive is refused whole ({done}): "
                      "check the dataset's url")


def check_members(members: Iterable[Member], archive: Path, tally: Tally) -> None:
    """Refuse the archive, naming the first member that would not land inside the destination,
    or whose declared size passes a limit."""
    members = list(members)
    links = {_parts(m.name) for m in members if m.kind in LINKS}
    files: set[tuple[str, ...]] = set()
    earlier_links: set[tuple[str, ...]] = set()
    declared = tally.copy()
    for member in members:
        if problem := _problem(member, links, files, earlier_links):
            raise refused(archive, member.name, problem)
        declared.add(archive, member.size if member.kind == "file" else 0, 1,
                     f"as declared, reached at member {member.name!r}; nothing of it was unpacked")
        if member.kind == "file":
            files.add(_parts(member.name))
        elif member.kind in LINKS:
            earlier_links.add(_parts(member.name))


def _tar_member(info: tarfile.TarInfo) -> Member:
    kind = ("file" if info.isreg() else "dir" if info.isdir() else "symlink" if info.issym()
            else "hardlink" if info.islnk() else "other")
    return Member(info.name, kind, info.size, info.linkname)


def _zip_member(info: zipfile.ZipInfo) -> Member:
    mode = info.external_attr >> 16  # the Unix mode, where the archiver stored one
    if stat.S_ISLNK(mode):
        return Member(info.filename, "symlink", info.file_size, None)
    if info.is_dir():
        return Member(info.filename, "dir")
    kind = "file" if stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR) else "other"
    return Member(info.filename, kind, info.file_size)


def _written(path: Path) -> int:
    """Bytes a member wrote: a regular file's size (links and folders: 0)."""
    st = os.lstat(path)
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _unpack_tar(archive: Path, staging: Path, tally: Tally) -> None:
    with tarfile.open(archive) as tar:
        infos = tar.getmembers()
        check_members(map(_tar_member, infos), archive, tally)
        for info in infos:
            tar.extract(info, staging, **TAR_FILTER)
            tally.add(archive, _written(staging.joinpath(*_parts(info.name))), 1,
                      f"while writing, at member {info.name!r}")


def _unpack_zip(archive: Path, staging: Path, tally: Tally) -> None:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        check_members(map(_zip_member, infos), archive, tally)
        for info in infos:
            tally.add(archive, _written(Path(z.extract(info, staging))), 1,
                      f"while writing, at member {info.filename!r}")


def unpack(archive: str | Path, dest: str | Path, tally: Tally | None = None) -> Tally:
    """Unpack a zip, tar (any compression) or rar archive into dest, refusing it whole if a member
    would land outside dest or the unpacked size passes `tally`'s limits; returns the tally."""
    archive, dest = Path(archive), Path(dest)
    tally = tally or Tally()
    with open(archive, "rb") as f:
        is_rar = f.read(8).startswith(RAR_MAGIC) or archive.suffix.lower() == ".rar"
    if is_rar:
        unpacker = _unpack_with_tool
    elif zipfile.is_zipfile(archive):
        unpacker = _unpack_zip
    elif tarfile.is_tarfile(archive):
        unpacker = _unpack_tar
    else:
        raise FetchError(f"{archive}: not a zip, tar or rar archive; check the dataset's url")
    staging = dest / f".unpack.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            unpacker(archive, staging, tally)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
            raise FetchError(f"{archive}: damaged archive ({e}); delete it and fetch it again") from e
        _merge(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tally


def _merge(src: Path, dst: Path) -> None:
    """Move src's entries into dst, merging folders; never descends into a link of dst."""
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False) and target.is_dir() and not target.is_symlink():
            _merge(Path(entry.path), target)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.is_symlink() or target.exists():
            target.unlink()
        os.replace(entry.path, target)
    src.rmdir()


# rar: a tool lists the members (checked as above), then unpacks into the staging folder, which
# is walked while it writes and once it is done


def _bsdtar_members(exe: str, archive: Path) -> list[Member]:
    """bsdtar rewrites the archive as a tar stream, names and links untouched (-P)."""
    cmd = [exe, "-cf", "-", "--format=pax", "-P", f"@{archive}"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            members = [_tar_member(info) for info in tar]
        while proc.stdout.read(CHUNK):  # the end-of-archive padding: let it finish writing
            pass
    _tool_ok(proc.returncode, exe, archive)
    return members


def _blocks(text: str, sep: str) -> list[dict[str, str]]:
    """`key<sep>value` lines in blank-line separated blocks, as dicts."""
    blocks = []
    for chunk in re.split(r"\n\s*\n", text):
        fields = (line.split(sep, 1) for line in chunk.splitlines() if sep in line)
        blocks.append({key.strip(): value for key, value in fields})
    return blocks


def _7z_members(exe: str, archive: Path) -> list[Member]:
    """`7z l -slt`: one block of `key = value` lines per member, after a line of dashes."""
    out = _tool_output([exe, "l", "-slt", str(archive)], exe, archive)
    members = []
    _, _, entries = out.partition("\n----------\n")
    for block in _blocks(entries, " = "):
        if "Path" not in block:
            continue
        mode = block.get("Mode") or block.get("Attributes", "").split(" ")[-1]
        link = block.get("Symbolic Link") or block.get("Link")
        kind = ("dir" if block.get("Folder") == "+" else "symlink" if link or mode.startswith("l")
                else "hardlink" if block.get("Hard Link") else "other" if mode[:1] in ("b", "c", "p", "s")
                else "file")
        members.append(Member(block["Path"], kind, int(block.get("Size") or 0),
                              block.get("Hard Link") if kind == "hardlink" else link or ""))
    return members


UNRAR_KINDS = {"File": "file", "Directory": "dir", "Symbolic link": "symlink", "Hard link": "hardlink"}


def _unrar_members(exe: str, archive: Path) -> list[Member]:
    """`unrar lt`: one block of `Key: value` lines per member; a type it does not name is refused."""
    out = _tool_output([exe, "lt", "-c-", str(archive)], exe, archive)
    return [Member(b["Name"], UNRAR_KINDS.get(b.get("Type", ""), "other"), int(b.get("Size") or 0),
                   b.get("Target", "")) for b in _blocks(out, ": ") if "Name" in b]


# tool: (its listing, its unpacking command into a folder), in order of preference (Debian's 7z
# lists rar archives but lacks the codecs to unpack them)
TOOLS: dict[str, tuple[Callable[[str, Path], list[Member]], Callable[[str, Path, Path], list[str]]]] = {
    "unrar": (_unrar_members, lambda exe, a, d: [exe, "x", "-o+", "-y", "-idq", str(a), f"{d}/"]),
    "bsdtar": (_bsdtar_members, lambda exe, a, d: [exe, "-xf", str(a), "-C", str(d), "--no-same-owner"]),
    "7z": (_7z_members, lambda exe, a, d: [exe, "x", "-y", "-bd", f"-o{d}", str(a)]),
}


def _tool_output(cmd: list[str], exe: str, archive: Path) -> str:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, errors="surrogateescape")
    _tool_ok(proc.returncode, exe, archive)
    return proc.stdout


def _tool_ok(returncode: int | None, exe: str, archive: Path) -> None:
    if returncode:
        raise FetchError(f"{archive}: {Path(exe).name} failed (exit status {returncode}; its messages "
                         "are above); check the archive, or unpack it yourself and point the dataset's root at it")


def _walk(staging: Path, archive: Path, done: bool) -> tuple[int, int]:
    """(bytes, members) written into staging so far; refuses a link leading out of it, a special
    file, or (once the tool is `done`) a hard link shared with a file outside it."""
    nbytes, members, inodes = 0, 0, {}
    root = os.path.realpath(staging)
    for folder, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = os.path.join(folder, name)
            member = os.path.relpath(path, staging)
            st = os.lstat(path)
            members += 1
            if stat.S_ISLNK(st.st_mode):
                if os.path.commonpath([os.path.realpath(path), root]) != root:
                    raise refused(archive, member, f"a link to {os.readlink(path)!r}, outside the archive's folder",
                                  written=True)
            elif stat.S_ISREG(st.st_mode):
                nbytes += st.st_size
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, [st.st_nlink, member])[0] -= 1
            elif not stat.S_ISDIR(st.st_mode):
                raise refused(archive, member, "a special file", written=True)
    for left, member in inodes.values() if done else ():
        if left > 0:
            raise refused(archive, member, "a hard link to a file outside the archive's folder", written=True)
    return nbytes, members


def _unpack_with_tool(archive: Path, staging: Path, tally: Tally) -> None:
    for tool, (listing, command) in TOOLS.items():
        if exe := shutil.which(tool):
            break
    else:
        raise FetchError(f"{archive}: unpacking rar needs unrar, 7z or bsdtar on PATH (e.g. "
                         "`apt-get install libarchive-tools` or `conda install -c conda-forge unrar`), "
                         "or unpack it yourself and point the dataset's root at the result")
    check_members(listing(exe, archive), archive, tally)
    when = "while writing; more than its listing declared"
    with subprocess.Popen(command(exe, archive, staging), stdout=subprocess.DEVNULL) as proc:
        try:
            while True:
                try:
                    proc.wait(POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    tally.check(archive, *_walk(staging, archive, done=False), when)
        finally:
            if proc.poll() is None:
                proc.kill()
    _tool_ok(proc.returncode, exe, archive)
    tally.add(archive, *_walk(staging, archive, done=True), when)
