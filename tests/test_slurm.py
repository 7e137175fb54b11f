"""The SLURM profile with today's executor plugin, against stand-in SLURM commands that run each
job on this machine (tests/fake_slurm.py): the session's finished run (conftest.finished_run) is
made on them, and every sbatch call asks for what its job uses; then external scores, two GPUs
and two nodes on a copy of it."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import snakemake_server
from conftest import REPO, copy_run, finished_run_slurm
from test_profiles import with_optional_slots
from test_workflow import FINISHED, TINY_TRAIN, job_counts, snakemake

pytestmark = pytest.mark.slow
TOOLS = ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "srun", "sacctmgr", "sshare")
# Snakemake's options for the stand-in SLURM: its queries answer at once, so no long waits
SLURM_OPTIONS = ("--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "1")


def fake_slurm(tmp_path: Path) -> dict[str, str]:
    """A bin folder of stand-in SLURM commands and the environment that puts it first on PATH."""
    bin_dir, state = tmp_path / "slurm-bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / 'fake_slurm.py'} {tool} \"$@\"\n")
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "FAKE_SLURM_DIR": str(state),
            "HOME": str(tmp_path), "USER": "tester", **snakemake_server.job_server()}


def site_profile(tmp_path: Path) -> Path:
    """profiles/slurm with the site's values set, as a user does once."""
    profile = tmp_path / "profile"
    shutil.copytree(REPO / "profiles" / "slurm", profile)
    text = (profile / "config.yaml").read_text()
    text = (text.replace("CHANGE_ME_account", "acct").replace("CHANGE_ME_cpu_partition", "cpu")
            .replace("CHANGE_ME_gpu_partition", "gpu"))
    (profile / "config.yaml").write_text(text)
    return profile


def sbatch_calls(env: dict[str, str]) -> list[dict]:
    calls = Path(env["FAKE_SLURM_DIR"]) / "sbatch.jsonl"
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def rule_of(call: dict) -> str:
    """The rule of a job, from the comment the plugin gives it (rule_<name>[_wildcards_...])."""
    args = call["args"]
    comment = args[args.index("--comment") + 1] if "--comment" in args else ""
    match = re.match(r"^rule_(.+?)(?:_wildcards_.*)?$", comment)
    return match[1] if match else ""


def test_demo_through_the_slurm_profile(finished_run, tmp_path):
    work = copy_run(finished_run, tmp_path / "work")
    assert json.loads((work / "results/demo/metrics.json").read_text())["splits"] == 1
    made = {"FAKE_SLURM_DIR": str(finished_run_slurm(finished_run) / "slurm-state")}  # the SLURM it was made on
    by_rule: dict[str, list[list[str]]] = {}
    for call in sbatch_calls(made):
        by_rule.setdefault(rule_of(call), []).append(call["args"])
    # trivial rules never become cluster jobs
    local = {"videos", "dataset_ready", "index_summary", "flow_manifest", "metrics", "plots", "aggregate", "all"}
    assert not local & set(by_rule)
    gpu_rules = {"train_motion", "train_appearance", "train_st_resnet", "train_st_resnet_star", "evaluate"}
    assert gpu_rules <= set(by_rule) and {"frames", "flow", "index"} <= set(by_rule)
    assert len(by_rule["frames"]) == len(by_rule["flow"]) == 3 and len(by_rule["evaluate"]) == 3
    for rule, calls_of_rule in by_rule.items():
        for args in calls_of_rule:
            line = " ".join(args)
            assert "-A acct" in line or "-A 'acct'" in line, line
            if rule in gpu_rules:
                assert "--gpus=1" in args and "-p gpu" in line.replace("'", ""), line
                assert "--cpus-per-gpu=2" in args, line  # train.threads + loader workers (0 here)
                assert "--mem 16000" in line, line
            else:
                assert not any(a.startswith("--gpus") for a in args) and "-p cpu" in line.replace("'", ""), line
        if rule == "flow":
            assert all("--cpus-per-task=8" in args for args in calls_of_rule)  # the profile's set-threads
            # inside the job Snakemake runs with the CPUs the allocation has (8 on a cluster node;
            # this machine's stand-in allocation is this machine)
            log = next((work / "results/demo/logs/flow/dis").glob("0*.log")).read_text()
            assert f"with {min(8, len(os.sched_getaffinity(0)))} threads" in log
        if rule == "frames":
            assert all("--cpus-per-task=1" in args and "--mem 2000" in " ".join(args) for args in calls_of_rule)

    # the rest on a copy, through stand-in SLURM commands of this test's own
    env = fake_slurm(tmp_path)
    profile = site_profile(tmp_path)
    fast = ("--profile", str(profile), *SLURM_OPTIONS)
    # Table 4 (right) with the README's example: the appearance stream's scores exported in the
    # external format, then fused with ST-ResNet*'s; the fusion worked out here by hand
    result = snakemake(work, *fast, "--configfile", "config.yaml", str(REPO / "examples" / "demo_external.yaml"),
                       env=env, cores=None)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["export_scores"] == 1 and counts["fuse"] == 1 and "train_motion" not in counts, counts
    assert sbatch_calls(env) == []  # both run where Snakemake runs (localrules)
    split = work / "results/demo/split1"
    star, two = np.load(split / "scores/st_resnet_star.npz"), np.load(split / "scores/two_stream.npz")
    assert (star["paths"] == two["paths"]).all()
    unit = [m / np.sqrt((m.astype(np.float64) ** 2).sum(1, keepdims=True)) for m in (star["fused"], two["appearance"])]
    fused = np.load(split / "scores/st_resnet_star_external.npz")["fused"]
    assert np.allclose(fused, (unit[0] + unit[1]) / 2, atol=1e-6)
    stages = json.loads((split / "metrics.json").read_text())["stages"]
    assert stages["appearance_export"]["top1"] == stages["appearance"]["top1"]
    hits = (fused.argmax(1) == star["labels"]).mean()
    assert stages["st_resnet_star+appearance_export"]["top1"] == pytest.approx(100 * hits)

    # two GPUs per training job: sbatch asks for both and the job runs one process per GPU; with the
    # profile's optional slots uncommented, which reach sbatch under the plugin's own names (the
    # GPU jobs' own qos and constraint, every job's reservation)
    slots = tmp_path / "slots"
    shutil.copytree(profile, slots)
    (slots / "config.yaml").write_text(with_optional_slots((slots / "config.yaml").read_text()))
    two = {**FINISHED, "train": {**TINY_TRAIN, "gpus": 2}}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({"datasets": {"demo": two}}))
    n_before = len(sbatch_calls(env))
    result = snakemake(work, "--profile", str(slots), *fast[2:], "--configfile", "config.yaml", str(tmp_path / "two.yaml"),
                       "--forcerun", "train_motion", "--until", "train_motion", env=env, cores=None)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert job_counts(result.stdout + result.stderr) == {"train_motion": 1}
    new = sbatch_calls(env)[n_before:]
    assert len(new) == 1 and "--gpus=2" in new[0]["args"]
    line = " ".join(new[0]["args"]).replace("'", "")
    for flag in ("--qos=gpu", "-C a100", "--reservation=my_reservation"):
        assert flag in line, line

    # two nodes of two GPUs: SLURM gives each node 2 GPUs and one task per GPU, each rank its own
    # device (its local rank); evaluation stays on one node and one GPU
    nodes = {**FINISHED, "train": {**TINY_TRAIN, "gpus": 2, "nodes": 2,
                               "motion": {**TINY_TRAIN["motion"], "batch": 8}}}  # 4 micro-batches, 1 per rank
    (tmp_path / "nodes.yaml").write_text(yaml.safe_dump({"datasets": {"demo": nodes}}))
    n_before = len(sbatch_calls(env))
    # the target first: --forcerun takes every word after it
    result = snakemake(work, "results/demo/split1/scores/two_stream.npz", *fast, "--configfile", "config.yaml",
                       str(tmp_path / "nodes.yaml"), "--forcerun", "train_motion", "evaluate", env=env, cores=None)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    new = {rule_of(c): c["args"] for c in sbatch_calls(env)[n_before:]}
    train = " ".join(new["train_motion"])
    for flag in ("--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=2"):
        assert flag in train, train
    assert "--gpus=" not in train and "--ntasks-per-gpu" not in train, train  # a count for the whole job
    evaluate = " ".join(new["evaluate"])
    assert "--nodes=1" in evaluate and "--gpus=1" in evaluate and "--ntasks=4" not in evaluate, evaluate
    launches = [json.loads(line) for line in (Path(env["FAKE_SLURM_DIR"]) / "srun.jsonl").read_text().splitlines()]
    ranks = [c for c in launches if "--ntasks=4" in c["args"]]
    assert len(ranks) == 1
    assert {"--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=2", "--gpus-per-node=2"} <= set(ranks[0]["args"])
    log = (work / "results/demo/logs/split1/train_motion.log").read_text()
    placed = re.findall(r"rank (\d) of 4 \(local rank (\d)\) on cpu, rendezvous (\S+)", log)
    assert sorted((rank, local) for rank, local, _ in placed) == [("0", "0"), ("1", "1"), ("2", "0"), ("3", "1")], log[-3000:]
    # every task found the first node of its step and the port of its job (the jobstep drops the
    # job's node list from the batch shell, so the tasks, which srun gives it again, read it)
    job = next(c["job"] for c in sbatch_calls(env)[n_before:] if rule_of(c) == "train_motion")
    assert {where for *_, where in placed} == {f"localhost:{20000 + job % 20000}"}, log[-3000:]

