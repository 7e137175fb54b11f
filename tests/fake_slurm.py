"""Stand-in SLURM commands for tests: `python fake_slurm.py <tool> <args>`, with tool one of
sbatch, squeue, sacct, scontrol, sinfo, srun, sacctmgr, sshare. Each job runs at once on this
machine; every sbatch call is recorded in $FAKE_SLURM_DIR/sbatch.jsonl, and job states are
answered as SLURM does for the executor plugin's queries (sacct and squeue wait for a job to end).
A job step that is Snakemake (the plugin's) runs in the test process's job server, where one is
given (tests/snakemake_server.py)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import snakemake_server

STATE = Path(os.environ["FAKE_SLURM_DIR"])


def next_id() -> int:
    with open(STATE / "counter", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        value = int(f.read() or 1000) + 1
        f.seek(0)
        f.truncate()
        f.write(str(value))
    return value


def option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def sbatch(args: list[str]) -> None:
    job = next_id()
    wrap = option(args, "--wrap")
    script = wrap if wrap is not None else sys.stdin.read()
    name = option(args, "--job-name", "-J") or "job"
    log = (option(args, "--output", "-o") or f"slurm-{job}.out").replace("%j", str(job))
    workdir = option(args, "-D", "--chdir") or os.getcwd()
    with open(STATE / "sbatch.jsonl", "a") as f:
        f.write(json.dumps({"job": job, "args": args, "name": name}) + "\n")
    (STATE / "jobs").mkdir(exist_ok=True)
    (STATE / "jobs" / f"{job}").write_text(f"{name}|RUNNING")
    Path(workdir, log).parent.mkdir(parents=True, exist_ok=True)
    cpus = option(args, "--cpus-per-task") or option(args, "--cpus-per-gpu") or "1"
    env = {**os.environ, "SLURM_JOB_ID": str(job), "SLURM_JOBID": str(job), "SLURM_CPUS_PER_TASK": cpus,
           "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "1", "SLURM_NTASKS": "1"}
    if any(a.startswith("--gpus") for a in args):
        env["CUDA_VISIBLE_DEVICES"] = ""  # the devices SLURM would give; this machine has none
    runner = (f"{quote(sys.executable)} {quote(__file__)} job {quote(script)}; code=$?; "
              f"if [ $code -eq 0 ]; then s=COMPLETED; else s=FAILED; fi; "
              f"echo {quote(name)}\\|$s > {quote(str(STATE / f'{job}.state'))}; "  # a whole line at once
              f"mv {quote(str(STATE / f'{job}.state'))} {quote(str(STATE / 'jobs' / str(job)))}")
    with open(Path(workdir, log), "ab") as out:
        subprocess.Popen(["bash", "-c", runner], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    print(job)


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# the plugin waits 10 s longer before each status query that finds no job ended (up to 180 s), so
# a test of one job at a time would mostly sleep: the stand-in query waits instead, until a job
# ends that no query has reported yet, or a job still runs after WAIT_S (then reports it RUNNING)
WAIT_S = 25


def states(args: list[str]) -> None:
    name = option(args, "--name")
    reported = STATE / "reported"
    reported.mkdir(exist_ok=True)
    deadline = time.monotonic() + WAIT_S
    while True:
        jobs = {}
        for path in sorted((STATE / "jobs").glob("*")) if (STATE / "jobs").exists() else []:
            job_name, state = path.read_text().strip().split("|")
            if name is None or job_name == name:
                jobs[path.name] = state
        ended = [job for job, state in jobs.items() if state != "RUNNING" and not (reported / job).exists()]
        if ended or "RUNNING" not in jobs.values() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for job in ended:
        (reported / job).touch()
    for job, state in jobs.items():
        print(f"{job}|{state}")


SRUN_VALUE_OPTIONS = ("-n", "-N", "-c", "-J", "--jobid", "--ntasks", "--nodes", "--cpus-per-task", "--gpus")


def srun(args: list[str]) -> None:
    """Run the command as srun would: once, or as --ntasks tasks laid out --ntasks-per-node per
    (stand-in) node, each with SLURM's task variables; every call is recorded in srun.jsonl."""
    options, i = {}, 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, value = args[i].partition("=")
        if not eq and name in SRUN_VALUE_OPTIONS:
            value, i = args[i + 1], i + 1
        options[name] = value
        i += 1
    command = args[i:]
    with open(STATE / "srun.jsonl", "a") as f:
        f.write(json.dumps({"args": args, "env": {k: v for k, v in os.environ.items() if k.startswith("MASTER_")}}) + "\n")
    if command == ["sh", "-s"]:
        sys.exit(subprocess.call(["sh", "-s"], stdin=sys.stdin))
    command = command if len(command) > 1 else ["bash", "-c", command[0]]
    tasks = int(options.get("--ntasks") or options.get("-n") or 1)
    if tasks == 1:
        sys.exit(call(command))
    per_node = int(options.get("--ntasks-per-node") or tasks)
    # as slurmstepd does: each task gets the step's node list again (the jobstep dropped the job's)
    procs = [subprocess.Popen(command, env={**os.environ, "SLURM_PROCID": str(k), "SLURM_LOCALID": str(k % per_node),
                                            "SLURM_NODEID": str(k // per_node), "SLURM_NTASKS": str(tasks),
                                            "SLURM_STEP_NODELIST": "localhost", "SLURM_JOB_NODELIST": "localhost"})
             for k in range(tasks)]
    sys.exit(max(p.wait() for p in procs))


def call(command: list[str]) -> int:
    """Run a command; Snakemake in the job server, where the test process started one."""
    if command[:3] == [sys.executable, "-m", "snakemake"] and snakemake_server.SOCKET_ENV in os.environ:
        return snakemake_server.call(command[3:])
    return subprocess.call(command)


def job(script: str) -> None:
    """Run a job's script as `bash -c` does: a script of one command and no shell syntax (the
    plugin's, Snakemake) by call(), any other by bash."""
    if not re.search(r"[\n;&|<>$`(){}*?\[\]~#!\\\"]", script.replace("'", "")):
        sys.exit(call(shlex.split(script)))
    os.execvp("bash", ["bash", "-c", script])


def main() -> None:
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "sbatch":
        sbatch(args)
    elif tool in ("sacct", "squeue"):
        states(args)
    elif tool == "scontrol":
        if args[:2] == ["show", "config"]:
            print("MinJobAge               = 300 sec")
        elif args[:2] == ["show", "hostnames"]:  # a comma-separated list, one name a line (no ranges)
            if len(args) < 3 or not args[2]:
                sys.exit("scontrol: error: no hostlist given")
            print("\n".join(args[2].split(",")))
    elif tool == "sinfo":
        print("PARTITION\n" + "\n".join(re.findall(r"[\w-]+", os.environ.get("FAKE_SLURM_PARTITIONS", "cpu gpu"))))
    elif tool in ("sacctmgr", "sshare"):
        print(os.environ.get("FAKE_SLURM_ACCOUNTS", "acct"))
    elif tool == "srun":
        srun(args)
    elif tool == "job":
        job(args[0])
    else:
        sys.exit(f"fake_slurm: unknown tool {tool}")


if __name__ == "__main__":
    main()
