"""Archive download (resume, checksum) and unpacking, against a server on the loopback."""

import hashlib
import http.server
import threading
import zipfile

import pytest

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
        self.wfile.write(body)
        type(self).sent += len(body)

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
