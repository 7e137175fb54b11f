"""Run a command on GPUs of its own: `stresnet devices --gpus N -- <command>`.

Snakemake counts the `gpu` resource of the jobs it runs at once but does not say which device
each may use. This launcher takes N devices from a pool (`--pool`, else $STRESNET_GPU_POOL, else
every device `nvidia-smi` lists), holding an exclusive lock on each for the command's lifetime,
and runs the command with CUDA_VISIBLE_DEVICES set to them. `--gpus 0` hides every device, so the
command runs on the CPU. Under SLURM (SLURM_JOB_ID set) the allocation already chose the devices:
they are kept as SLURM set them.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

log = logging.getLogger(__name__)


def device_pool(pool: str | None = None) -> list[str]:
    """The devices jobs may share out: --pool, $STRESNET_GPU_POOL, or what nvidia-smi lists."""
    pool = pool if pool is not None else os.environ.get("STRESNET_GPU_POOL")
    if pool is not None:
        return [d for d in pool.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                            capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def acquire(count: int, pool: list[str], lock_dir: Path, stack: ExitStack, timeout: float = 600) -> list[str]:
    """Lock `count` devices of `pool` (waiting up to `timeout` s for them); the locks live in `stack`."""
    if count > len(pool):
        raise RuntimeError(f"{count} GPU(s) asked for, the pool has {len(pool)} ({','.join(pool) or 'none'}); "
                           "set train.gpus lower or STRESNET_GPU_POOL")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        taken = []
        with ExitStack() as attempt:
            for device in pool:
                handle = attempt.enter_context(open(lock_dir / f"gpu{device}.lock", "a"))
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                taken.append(device)
                if len(taken) == count:
                    stack.push(attempt.pop_all())
                    return taken
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} free GPU(s) among {','.join(pool)} after {timeout:.0f} s")
        time.sleep(1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet devices", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, required=True, help="devices the command uses (0: the CPU)")
    p.add_argument("--pool", help="comma-separated device ids to share out (default: $STRESNET_GPU_POOL or all)")
    p.add_argument("--lock-dir", default=os.environ.get("STRESNET_GPU_LOCKS",
                                                        str(Path(tempfile.gettempdir()) / f"stresnet-gpus-{os.getuid()}")))
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.exit("stresnet devices: no command given; usage: stresnet devices --gpus N -- <command>")
    env = dict(os.environ)
    with ExitStack() as stack:
        if args.gpus == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif not ("SLURM_JOB_ID" in env and "CUDA_VISIBLE_DEVICES" in env):
            try:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(acquire(args.gpus, device_pool(args.pool),
                                                               Path(args.lock_dir), stack))
            except RuntimeError as e:
                sys.exit(f"stresnet devices: {e}")
        log.info("CUDA_VISIBLE_DEVICES=%r for: %s", env.get("CUDA_VISIBLE_DEVICES"), " ".join(command[:4]))
        sys.exit(subprocess.call(command, env=env))


if __name__ == "__main__":
    main()
