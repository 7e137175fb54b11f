"""Archive download (resume, checksum, responses cut short) against servers on the loopback, and
unpacking of archives made here: hostile members, size limits, rar through an external tool."""

import hashlib
import http.server
import io
import os
import stat
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from stresnet.archives import Limits, Tally
from stresnet.fetch import FetchError, download, unpack


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payload` at any path, honouring `Range: bytes=N-`; counts bytes sent."""

    payload = b""
    sent = 0

    def do_GET(self):
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        type(self).sent += len(body)  # before the body: the client may return as soon as it has it
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("UCF-101/Archery/v_Archery_g01_c01.avi", b"x" * 50_000)
        z.writestr("ucfTrainTestlist/classInd.txt", "1 Archery\r\n")
    RangeHandler.payload, RangeHandler.sent = archive.read_bytes(), 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/UCF101.zip", hashlib.sha256(RangeHandler.payload).hexdigest()
    httpd.shutdown()


def test_download_resumes_a_partial_file(server, tmp_path):
    url, sha = server
    dest = tmp_path / "dl" / "UCF101.zip"
    dest.parent.mkdir()
    half = len(RangeHandler.payload) // 2
    (dest.parent / "UCF101.zip.part").write_bytes(RangeHandler.payload[:half])
    download(url, dest, sha)
    assert dest.read_bytes() == RangeHandler.payload
    assert RangeHandler.sent == len(RangeHandler.payload) - half  # only the rest was sent
    unpack(dest, tmp_path / "out")
    assert (tmp_path / "out/ucfTrainTestlist/classInd.txt").read_bytes() == b"1 Archery\r\n"
    assert (tmp_path / "out/UCF-101/Archery/v_Archery_g01_c01.avi").stat().st_size == 50_000


def test_checksum_mismatch_is_an_error(server, tmp_path):
    url, _ = server
    with pytest.raises(FetchError, match="checksum mismatch"):
        download(url, tmp_path / "a.zip", "0" * 64)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_unreachable_url_says_how_to_resume(tmp_path):
    with pytest.raises(FetchError, match="rerun to resume"):
        download("http://127.0.0.1:9/none.zip", tmp_path / "a.zip", timeout=2)


def test_rar_without_a_tool_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "UCF101.rar").write_bytes(b"Rar!")
    with pytest.raises(FetchError, match="unrar, 7z or bsdtar"):
        unpack(tmp_path / "UCF101.rar", tmp_path / "out")


# --- responses cut short -------------------------------------------------------------------


class CutHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payload`: a request without Range is announced the whole length but sent only its
    first half before the connection closes; a Range request gets the rest. Records each Range."""

    payload = b""
    ranges: list = []

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        size = len(self.payload)
        if rng is None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(self.payload[: size // 2])
            return  # HTTP/1.0: the connection closes here
        start = int(rng.removeprefix("bytes=").removesuffix("-"))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        self.wfile.write(self.payload[start:])

    def log_message(self, *args):
        pass


def one_video_tar() -> bytes:
    """A tar of one 100-byte file: 512 (header) + 512 (data) + 1024 (end), padded to a 10240 record."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("videos/Archery/v_Archery_g01_c01.avi")
        info.size = 100
        tar.addfile(info, io.BytesIO(b"x" * 100))
    return buffer.getvalue()


@pytest.fixture
def cut_server():
    CutHandler.payload, CutHandler.ranges = one_video_tar(), []
    assert len(CutHandler.payload) == 10240
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data/videos.tar"
    httpd.shutdown()


def fetch_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run([sys.executable, "-m", "stresnet", "fetch", *args], capture_output=True, text=True, env=env)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command (the log's INFO lines may come before it)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("stresnet fetch: ")]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
    return lines[0]


@pytest.mark.parametrize("with_sha256", [False, True])
def test_cut_download_fails_keeps_its_bytes_and_resumes(cut_server, tmp_path, with_sha256):
    out, partial = tmp_path / "ds" / "download", tmp_path / "ds" / "download.partial"
    checksum = ["--sha256", hashlib.sha256(CutHandler.payload).hexdigest()] if with_sha256 else []
    args = ["--url", cut_server, *checksum, "--out", str(out), "--partial-dir", str(partial)]

    line = error_line(fetch_cli(*args))
    assert "download interrupted at 5120 of 10240 bytes" in line and "rerun to resume" in line  # 10240 // 2
    assert (partial / "videos.tar.part").read_bytes() == CutHandler.payload[:5120]
    assert not (out / "videos").exists()

    result = fetch_cli(*args)
    assert result.returncode == 0, result.stderr
    assert CutHandler.ranges == [None, "bytes=5120-"]
    assert (out / "videos/Archery/v_Archery_g01_c01.avi").read_bytes() == b"x" * 100
    assert not partial.exists()  # the archive is deleted once unpacked


def test_cut_download_in_process_is_an_interruption_not_a_checksum_mismatch(cut_server, tmp_path):
    dest = tmp_path / "videos.tar"
    with pytest.raises(FetchError, match="interrupted at 5120 of 10240 bytes"):
        download(cut_server, dest, hashlib.sha256(CutHandler.payload).hexdigest())
    assert (tmp_path / "videos.tar.part").stat().st_size == 5120 and not dest.exists()


@pytest.mark.slow
def test_fetch_rule_resumes_a_cut_download_after_snakemake_removed_the_failed_output(cut_server, tmp_path):
    from test_workflow import snakemake, write_config

    write_config(tmp_path, {"web": {"format": "folder", "root": "results/web/download/videos", "url": [cut_server]}},
                 ["web"])
    first = snakemake(tmp_path, "results/web/download")
    assert first.returncode != 0
    log = (tmp_path / "results/web/logs/fetch.log").read_text()
    assert [line for line in log.splitlines() if line.startswith("stresnet fetch: ")] == [
        f"stresnet fetch: {cut_server}: download interrupted at 5120 of 10240 bytes (the connection closed "
        "early); rerun to resume: the bytes are kept in results/web/download.partial/videos.tar.part"]
    assert not (tmp_path / "results/web/download").exists()  # Snakemake removed the failed job's output
    assert (tmp_path / "results/web/download.partial/videos.tar.part").stat().st_size == 5120

    second = snakemake(tmp_path, "results/web/download")
    assert second.returncode == 0, second.stderr
    assert CutHandler.ranges == [None, "bytes=5120-"]
    video = tmp_path / "results/web/download/videos/Archery/v_Archery_g01_c01.avi"
    assert video.read_bytes() == b"x" * 100


# --- hostile archives ----------------------------------------------------------------------

TAR_TYPES = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}


def write_tar(path: Path, entries: list[tuple[str, str, str]], mode: str = "w") -> Path:
    """entries: (name, kind, text) with kind file (text: its content), dir, symlink, hardlink
    (text: the target) or fifo."""
    with tarfile.open(path, mode) as tar:
        for name, kind, text in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
            else:
                info.type, info.linkname = TAR_TYPES[kind], text
                tar.addfile(info)
    return path


def write_zip(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    """entries: (name, kind, text) with kind file or symlink (its target stored as data, as Info-ZIP does)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, kind, text in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = ((stat.S_IFLNK | 0o777) if kind == "symlink" else (stat.S_IFREG | 0o644)) << 16
            z.writestr(info, text)
    return path


# name: (archive kind, members, the member named in the error, the cause it gives, paths (under
# work/) the member would have written)
HOSTILE = {
    "absolute path": ("tar", [("ok.txt", "file", "fine"), ("{work}/abs.txt", "file", "planted")], "{work}/abs.txt",
                      "an absolute path", ["abs.txt"]),
    "dot-dot": ("tar", [("ok.txt", "file", "fine"), ("../../escaped.txt", "file", "planted")], "../../escaped.txt",
                "a '..' in its path", ["escaped.txt"]),
    "symlink out of the tree": ("tar", [("out", "symlink", "../../outside")], "out", "outside the archive's folder", []),
    "symlink then a file through it": ("tar", [("sub", "symlink", "../../outside"), ("sub/planted.txt", "file", "planted")],
                                       "sub", "outside the archive's folder", ["outside/planted.txt"]),
    "file through a link inside the tree": ("tar", [("inner", "dir", ""), ("d", "symlink", "inner"), ("d/f.txt", "file", "x")],
                                            "d/f.txt", "written through the link 'd'", []),
    # x/.. looks like the archive's folder but is its parent, x being that folder
    "link through a link": ("tar", [("x", "symlink", "."), ("y", "symlink", "x/..")], "y", "through the link 'x'", []),
    "hard link out, then a file of its name": ("tar", [("hl", "hardlink", "../../victim.txt"), ("hl", "file", "overwritten")],
                                               "hl", "not a file earlier in the archive", []),
    "absolute hard link, then a file of its name": ("tar", [("hl", "hardlink", "{work}/victim.txt"), ("hl", "file", "overwritten")],
                                                    "hl", "a link to the absolute path", []),
    "file over a hard link": ("tar", [("a.txt", "file", "mine"), ("hl", "hardlink", "a.txt"), ("hl", "file", "overwritten")],
                              "hl", "written over the link 'hl'", []),
    "symlink to /etc/passwd": ("tar", [("passwd", "symlink", "/etc/passwd")], "passwd",
                               "a link to the absolute path '/etc/passwd'", []),
    "fifo": ("tar", [("pipe", "fifo", "")], "pipe", "a special file", []),
    # refused however its target is found: zip keeps it as data, 7z's listing does not show it
    "zip symlink member": ("zip", [("ok.txt", "file", "fine"), ("passwd", "symlink", "/etc/passwd")], "passwd", "link", []),
    "zip dot-dot": ("zip", [("../../escaped.txt", "file", "planted")], "../../escaped.txt", "a '..' in its path",
                    ["escaped.txt"]),
    "zip absolute path": ("zip", [("{work}/abs.txt", "file", "planted")], "{work}/abs.txt", "an absolute path", ["abs.txt"]),
}


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under folder: a file's bytes, a link's target, 'dir' for a folder."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return out


@pytest.fixture
def workspace(tmp_path):
    """work/ with a victim file, an outside folder and a sibling dataset folder; the archives are
    unpacked into work/ds/download."""
    work = tmp_path / "work"
    (work / "outside").mkdir(parents=True)
    (work / "ds" / "frames").mkdir(parents=True)
    (work / "ds" / "frames" / "keep.h5").write_bytes(b"frames")
    (work / "victim.txt").write_text("precious")
    return work


def hostile_archive(case: str, work: Path, folder: Path, suffix: str | None = None) -> tuple[Path, str, str, list[Path]]:
    """The case's archive, how its error names the member, the cause it gives, the paths it must not write."""
    kind, entries, member, cause, targets = HOSTILE[case]
    entries = [(name.format(work=work), k, text.format(work=work)) for name, k, text in entries]
    folder.mkdir(exist_ok=True)
    path = folder / f"evil.{suffix or kind}"
    (write_tar if kind == "tar" else write_zip)(path, entries)
    return path, f"member {member.format(work=work)!r}: ", cause, [work / t for t in targets]


def assert_nothing_written(work: Path, before: dict, targets: list[Path]) -> None:
    out = work / "ds" / "download"
    assert not out.exists() or list(out.iterdir()) == []
    after = {k: v for k, v in snapshot(work).items() if not k.startswith(("ds/download", "src"))}
    assert after == before
    assert (work / "victim.txt").read_text() == "precious"
    for target in targets:
        assert not os.path.lexists(target)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_is_refused_naming_the_member(case, workspace):
    archive, member, cause, targets = hostile_archive(case, workspace, workspace / "src")
    before = {k: v for k, v in snapshot(workspace).items() if not k.startswith("src")}
    out = workspace / "ds" / "download"
    line = error_line(fetch_cli("--url", archive.as_uri(), "--out", str(out),
                                "--partial-dir", str(workspace / "ds" / "download.partial")))
    assert line.startswith(f"stresnet fetch: {workspace}/ds/download.partial/{archive.name}: {member}"), line
    assert cause in line and line.endswith("the archive is refused whole (nothing of it unpacked): check the dataset's url")
    assert_nothing_written(workspace, before, targets)


def restrict_path(monkeypatch, tmp_path: Path, tool: str) -> None:
    """PATH with this one archive tool on it."""
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} is not installed (Debian: libarchive-tools for bsdtar, p7zip-full for 7z)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / tool).symlink_to(exe)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("tool", ["bsdtar", "7z"])
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_rar_is_refused_from_the_tools_listing(case, tool, workspace, monkeypatch):
    # the tools tell formats by content: a tar or zip named .rar goes the way of rar archives
    restrict_path(monkeypatch, workspace.parent, tool)
    archive, member, cause, targets = hostile_archive(case, workspace, workspace / "src", suffix="rar")
    before = {k: v for k, v in snapshot(workspace).items() if not k.startswith("src")}
    with pytest.raises(FetchError) as refused:
        unpack(archive, workspace / "ds" / "download")
    assert str(refused.value).startswith(f"{archive}: {member}") and cause in str(refused.value), str(refused.value)
    assert_nothing_written(workspace, before, targets)


# --- archives that are fine ----------------------------------------------------------------

GOOD = [("./", "dir", ""), ("UCF-101/", "dir", ""), ("UCF-101/Archery/v_Archery_g01_c01.avi", "file", "video"),
        ("UCF-101/latest.avi", "symlink", "Archery/v_Archery_g01_c01.avi"),
        ("UCF-101/copy.avi", "hardlink", "UCF-101/Archery/v_Archery_g01_c01.avi"),
        ("ucfTrainTestlist/classInd.txt", "file", "1 Archery\r\n")]


def assert_good_tree(out: Path) -> None:
    assert (out / "UCF-101/Archery/v_Archery_g01_c01.avi").read_text() == "video"
    assert os.readlink(out / "UCF-101/latest.avi") == "Archery/v_Archery_g01_c01.avi"
    assert (out / "UCF-101/latest.avi").read_text() == "video"
    assert (out / "UCF-101/copy.avi").stat().st_ino == (out / "UCF-101/Archery/v_Archery_g01_c01.avi").stat().st_ino
    assert (out / "ucfTrainTestlist/classInd.txt").read_bytes() == b"1 Archery\r\n"
    assert sorted(p.name for p in out.iterdir()) == ["UCF-101", "ucfTrainTestlist"]  # no staging folder left


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_with_links_inside_its_tree_unpacks(mode, tmp_path):
    unpack(write_tar(tmp_path / "good.tar", GOOD, mode), tmp_path / "out")
    assert_good_tree(tmp_path / "out")


@pytest.mark.parametrize("tool", ["bsdtar", "7z"])
def test_rar_with_links_inside_its_tree_unpacks_through_the_tool(tool, tmp_path, monkeypatch):
    restrict_path(monkeypatch, tmp_path, tool)
    unpack(write_tar(tmp_path / "good.rar", GOOD), tmp_path / "out")
    assert_good_tree(tmp_path / "out")


# --- limits --------------------------------------------------------------------------------


def test_archive_declaring_more_than_the_limit_is_refused_before_writing(tmp_path):
    archive = tmp_path / "src" / "bomb.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 2_000_000
        tar.addfile(info, io.BytesIO(bytes(2_000_000)))
    assert archive.stat().st_size < 10_000  # 2 MB of zeros compress about 1000-fold
    out = tmp_path / "ds" / "download"
    line = error_line(fetch_cli("--url", archive.as_uri(), "--out", str(out), "--max-unpacked-gb", "0.001"))
    assert "unpacks to more than 0.001 GB (as declared, reached at member 'zeros.bin'" in line  # 2e6 > 1e6 bytes
    assert line.endswith("raise fetch.max_unpacked_gb (--max-unpacked-gb) if the archive is trusted")
    assert list(out.iterdir()) == []


def test_archive_of_more_members_than_the_limit_is_refused(tmp_path):
    archive = write_zip(tmp_path / "many.zip", [(f"f{i}.txt", "file", "x") for i in range(3)])
    out = tmp_path / "ds" / "download"
    line = error_line(fetch_cli("--url", archive.as_uri(), "--out", str(out), "--max-members", "2"))
    assert "unpacks to more than 2 members (as declared, reached at member 'f2.txt'" in line  # the third of 3
    assert "raise fetch.max_members (--max-members)" in line
    assert list(out.iterdir()) == []


def test_limits_hold_over_all_archives_of_a_fetch(tmp_path):
    first = write_tar(tmp_path / "part1.tar", [("videos/a.avi", "file", "a" * 600)])
    second = write_tar(tmp_path / "part2.tar", [("videos/b.avi", "file", "b" * 600)])
    tally = Tally(Limits(max_bytes=1000, max_members=10))
    unpack(first, tmp_path / "out", tally)
    assert (tally.nbytes, tally.members) == (600, 1)
    with pytest.raises(FetchError, match=r"part2.tar: unpacks to more than 1e-06 GB \(as declared"):  # 600 + 600 > 1000
        unpack(second, tmp_path / "out", tally)
    assert sorted(p.name for p in (tmp_path / "out/videos").iterdir()) == ["a.avi"]


FAKE_7Z = """#!{python}
# a 7z whose listing declares 10 bytes but whose unpacking writes 2,000,000, then waits and
# removes them again, so that only a count made while it runs sees them
import os, sys, time
if sys.argv[1] == "l":
    print("----------\\nPath = small.bin\\nFolder = -\\nSize = 10\\nMode = -rw-r--r--\\n")
else:
    out = next(a[2:] for a in sys.argv if a.startswith("-o"))
    with open(os.path.join(out, "small.bin"), "wb") as f:
        f.write(bytes(2_000_000))
    time.sleep(20)
    os.remove(os.path.join(out, "small.bin"))
"""


def test_tool_writing_more_than_its_listing_declared_is_stopped_while_writing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "7z").write_text(FAKE_7Z.format(python=sys.executable))
    (bin_dir / "7z").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "x.rar").write_bytes(b"Rar!\x1a\x07\x00")
    tally = Tally(Limits(max_bytes=1_000_000))
    with pytest.raises(FetchError, match=r"x.rar: unpacks to more than 0.001 GB \(while writing"):
        unpack(tmp_path / "x.rar", tmp_path / "out", tally)
    assert list((tmp_path / "out").iterdir()) == []
