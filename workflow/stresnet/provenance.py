"""What a result is a function of, and who may write it.

- `code_digest`: the source of a stage's module and of every package module it imports; the
  rules pass it as a param, so editing a stage reruns that stage and what follows, nothing before.
- `changes`: which parts of two identities differ, in words, for the log of a refused resume.
- `OutputLock`: one writer per output folder; temporary files carry their writer's pid and are
  removed once that process is gone.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from .errors import InputError

PACKAGE = Path(__file__).parent


def _module_file(name: str) -> Path:
    """stresnet.models.streams -> .../models/streams.py (or the package's __init__.py)."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


# cached: the Snakefile asks for 22 digests over the same few modules, and every Snakemake
# process (each cluster job step too) parses the Snakefile; the sources do not change meanwhile
@functools.cache
def _source(name: str) -> str:
    return _module_file(name).read_text()


# a relative import, its names in parentheses over several lines or on one line; found by a
# regular expression rather than by parsing the module (ast: 0.25 s of every Snakemake start); one
# that is not code (in a docstring) adds a module to the digest, never leaves one out
RELATIVE_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.+)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.MULTILINE)


@functools.cache
def _imports(name: str) -> frozenset[str]:
    """The package modules that module `name` imports (relative imports only)."""
    package = name if _module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for dots, module, names in RELATIVE_IMPORT.findall(_source(name)):
        base = package.rsplit(".", len(dots) - 1)[0] if len(dots) > 1 else package
        target = f"{base}.{module}" if module else base
        found.add(target)
        for word in re.findall(r"\w+", names):  # `from . import folder` names a module
            if _module_file(f"{target}.{word}").exists():
                found.add(f"{target}.{word}")
    return frozenset(m for m in found if _module_file(m).exists())


def code_digest(stage: str) -> str:
    """SHA-256 (16 hex digits) of the sources of stresnet.<stage> and of what it imports."""
    todo, seen = [f"stresnet.{stage}"], {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = _source(name)
        todo.extend(_imports(name))
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\n{seen[name]}\n".encode())
    return digest.hexdigest()[:16]


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys whose values differ, with the settings that changed where both are dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            named = key == "settings" or "settings" in a or "settings" in b  # settings: name the ones that changed
            inner = changes(a.get("settings", a), b.get("settings", b)) if named else []
            detail = [c for c in inner if c != "sha256"]
            out.append(f"{key} ({', '.join(detail)})" if detail else key)
        else:
            out.append(f"{key} {a!r} -> {b!r}" if not isinstance(a, (dict, list)) else key)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def tmp_name(path: Path) -> Path:
    """The temporary name of `path` while this process writes it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class OutputLocked(InputError):
    """Another live process holds the output folder."""


class OutputLock:
    """An exclusive lock on an output folder, held while the process lives (flock on `.lock`,
    released by the kernel even when the process is killed). Taking it removes temporary files
    left by writers that are gone."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise OutputLocked(f"{self.folder}: another process (pid {holder}) is writing here; wait for it "
                               f"to end or stop it (kill {holder}), then rerun") from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        self.removed = self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> list[Path]:
        removed = []
        for tmp in self.folder.glob(".*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
