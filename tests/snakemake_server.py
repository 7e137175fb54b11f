"""`python -m snakemake ARGS` for the tests, without each run's 2 s of imports: a process that has
imported Snakemake and its plugins once forks for every run; the fork runs Snakemake's own
command line (`snakemake.cli.main`) with the run's arguments, working folder, environment and
output, as a new process would, and ends with its exit status. Two kinds, one of each per test
process, ended with it:

- run(): the tests' own runs (tests/test_workflow.py, snakemake), over the server's stdin;
- job_server(): the stand-in SLURM's job steps (tests/fake_slurm.py), over a Unix socket that
  also carries the job's stdin, stdout and stderr, several jobs at once.

The suite starts Snakemake well over a hundred times. The runs a test makes as a user types them (the
README's commands, a consumer workflow's) still start a new process."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# imported once, before any fork; never the workflow's own package (a test may run a copy of it)
WARM = ["snakemake.dag", "snakemake.jobs", "snakemake.profiles", "snakemake.storage", "snakemake.report.html_reporter",
        "snakemake.executors.local", "snakemake_executor_plugin_slurm", "snakemake_executor_plugin_slurm_jobstep",
        "snakemake_storage_plugin_fs", "snakemake_storage_plugin_s3", "smart_open", "docutils", "jinja2", "sysrsync",
        "dpath", "jsonschema", "yte", "yaml", "numpy", "pandas", "PIL.Image", "ffmpeg"]
SOCKET_ENV = "TESTS_SNAKEMAKE_SOCKET"  # where job_server() listens, for the stand-in SLURM

_servers: dict[str, subprocess.Popen] = {}
_socket: str | None = None
_lock = threading.Lock()


def _start(*args: str) -> subprocess.Popen:
    # its stdin open for as long as this process lives: the server ends when it closes
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """What subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
    capture_output=True, text=True) returns."""
    with _lock, tempfile.TemporaryDirectory() as tmp:
        server = _servers.get("stdin")
        if server is None or server.poll() is not None:
            server = _servers["stdin"] = _start()
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        request = {"args": list(args), "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        reply = server.stdout.readline()
        if not reply:
            raise RuntimeError(f"the Snakemake server stopped (exit status {server.wait()})")
        return subprocess.CompletedProcess([sys.executable, "-m", "snakemake", *args],
                                           json.loads(reply)["returncode"], out.read_text(), err.read_text())


def job_server() -> dict[str, str]:
    """The environment entry that sends the stand-in SLURM's Snakemake job steps to this test
    process's socket server (started on the first call)."""
    global _socket
    with _lock:
        server = _servers.get("socket")
        if server is None or server.poll() is not None:
            _socket = str(Path(tempfile.mkdtemp(prefix="smk")) / "socket")
            server = _servers["socket"] = _start("--socket", _socket)
            if server.stdout.readline().strip() != "listening":
                raise RuntimeError(f"the Snakemake job server did not start (exit status {server.wait()})")
    return {SOCKET_ENV: _socket}


def call(args: list[str]) -> int:
    """For the stand-in SLURM: `python -m snakemake ARGS` with this process's folder, environment,
    stdin, stdout and stderr, run by the job server; its exit status."""
    request = {"args": list(args), "cwd": os.getcwd(), "env": dict(os.environ)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(os.environ[SOCKET_ENV])
        socket.send_fds(connection, [b"."], [0, 1, 2])
        connection.sendall(json.dumps(request).encode() + b"\n")
        reply = connection.makefile().readline()
    if not reply:
        raise RuntimeError("the Snakemake job server stopped")
    return json.loads(reply)["returncode"]


def become_snakemake(request: dict, stdin: int, stdout: int, stderr: int) -> None:
    """In the fork: become `python -m snakemake ARGS` started in request's folder and environment."""
    from importlib.util import find_spec

    from snakemake.cli import main

    os.chdir(request["cwd"])
    for fd, source in ((0, stdin), (1, stdout), (2, stderr)):
        os.dup2(source, fd)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [find_spec("snakemake.__main__").origin, *request["args"]]  # as -m sets them
    sys.path[0] = os.getcwd()
    # SystemExit ends this process as it ends a new one: so nothing on the stack below this call
    # may catch it or hold a `finally` (that code would run in every fork)
    main(request["args"])


def run_forked(request: dict, stdin: int, stdout: int, stderr: int) -> int:
    pid = os.fork()
    if pid == 0:
        become_snakemake(request, stdin, stdout, stderr)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def warm() -> None:
    import importlib

    import snakemake.cli

    snakemake.cli.get_argument_parser()  # collects the installed plugins
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.freeze()  # out of the collector's way in every fork: neither walked nor copied by its passes


def serve_stdin() -> None:
    while line := sys.stdin.readline():
        request = json.loads(line)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        code = run_forked(request, null, out, err)
        for fd in (null, out, err):
            os.close(fd)
        sys.stdout.write(json.dumps({"returncode": code}) + "\n")
        sys.stdout.flush()


def serve_socket(path: str) -> None:
    """Each connection: the job's stdin, stdout and stderr, then its request; a fork runs it (here,
    not in a handler, so that its SystemExit ends it as it ends a process); the exit status back."""
    import selectors

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)  # readable only at its end: the test process ended
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    running: dict[int, socket.socket] = {}
    while True:
        ready = {key.fileobj for key, _ in events.select(timeout=0.2)}
        if sys.stdin in ready:
            break
        if listener in ready:
            connection, _ = listener.accept()
            _, fds, _, _ = socket.recv_fds(connection, 1, 3)
            request = json.loads(connection.makefile("rb").readline())
            pid = os.fork()
            if pid == 0:
                for other in (listener, events, connection, *running.values()):
                    other.close()
                become_snakemake(request, *fds)
            for fd in fds:
                os.close(fd)
            running[pid] = connection
        while running and (ended := os.waitpid(-1, os.WNOHANG))[0]:
            connection = running.pop(ended[0])
            connection.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(ended[1])}).encode() + b"\n")
            connection.close()
    os.unlink(path)  # not in a `finally`: see become_snakemake
    os.rmdir(os.path.dirname(path))


if __name__ == "__main__":
    warm()
    if sys.argv[1:2] == ["--socket"]:
        serve_socket(sys.argv[2])
    else:
        serve_stdin()
