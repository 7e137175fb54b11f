"""Training on a tiny prepared dataset: loss goes down, a killed run resumes to the same end,
two DDP processes follow one process's loss curve, and fully convolutional evaluation."""

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from conftest import prepare
from stresnet.data import ClipDataset, VideoStore, WholeVideoDataset, open_videos
from stresnet.evaluate import evaluate, load_model
from stresnet.models import load_checkpoint
from stresnet.predict import predict
from stresnet.provenance import changes
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

PHASE = {"batch": 4, "bn_batch": 2, "lr": [[0.01, 6]], "chunks": 1, "stride": [1, 1], "size": 32, "seed": 0,
         "momentum": 0.9, "weight_decay": 5e-4, "crop": "multiscale_corners",
         "lr_factors": {"weights": 1, "biases": 2, "bn_scales": 2, "bn_shifts": 1},
         "decay_factors": {"weights": 1, "biases": 0, "bn_scales": 0, "bn_shifts": 0}}
SPEED = {"workers": 0, "micro_batch": 2, "checkpoint_every": 2}


def train_cmd(results, out, phase="motion", settings=PHASE, init=(), speed=SPEED):
    return [sys.executable, "-m", "stresnet", "train", "--phase", phase, "--split", "1",
            "--frames-manifest", str(results / "dataset_ready.json"),
            "--flow-manifest", str(results / "flow/dis/manifest.json"),
            "--pretrained", "none", "--config", json.dumps(settings), "--speed", json.dumps(speed),
            "--out-dir", str(out), "--threads", "1", *(["--init", *map(str, init)] if init else [])]


def store_of(results, videos):
    _, frames, flow = open_videos(results / "dataset_ready.json", results / "flow/dis/manifest.json")
    return VideoStore(videos, frames, flow)


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train_here(cmd):
    """A training command run in this test process, as run() runs it in a new one, without the new
    process's 5 s of imports (these tests train dozens of times); what the stage logged is
    .stderr. A command a test kills, or whose exit status or own output it checks, runs in its own,
    and so does one with loader workers: they would be forked from this process, whose other
    threads (pytest-xdist's) may hold a lock at that moment, which the fork then waits on forever."""
    from stresnet.train import main

    assert cmd[1:4] == ["-m", "stresnet", "train"], cmd
    assert json.loads(cmd[cmd.index("--speed") + 1]).get("workers") == 0, "loader workers: run() it"
    text, root, threads = io.StringIO(), logging.getLogger(), torch.get_num_threads()
    handler, level = logging.StreamHandler(text), root.level
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))  # the stage's own format
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        main(cmd[4:])
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)  # the stage sets its --threads
    return SimpleNamespace(stderr=text.getvalue(), returncode=0)


def curves(out):
    return pd.read_csv(out / "curves.csv")


def board(out) -> EventAccumulator:
    """Every event a phase's TensorBoard folder holds, none dropped as out of order."""
    events = EventAccumulator(str(out / "tensorboard"), purge_orphaned_data=False)
    events.Reload()
    return events


def hparams(events: EventAccumulator) -> dict:
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in values.items()}


def states_equal(a, b):
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_datasets_read_only_whole_flow_stacks(prepared):
    """12-frame videos (11 fields): only frames 5 and 6 have fields t-5 ... t+4, in training and testing."""
    videos = pd.read_csv(prepared / "videos.csv", dtype={"shard": str})
    store = store_of(prepared, videos)
    centres = []
    read = store.flow_stack
    store.flow_stack = lambda i, t, length=10: centres.append(t) or read(i, t, length)
    clips = ClipDataset(store, "jitter_borders", chunks=3, size=32, short_side=32)
    for spec in [(v, seed, stride) for v in range(len(store)) for seed in range(3) for stride in (1, 3)]:
        assert clips[spec]["flow"].shape == (3, 20, 32, 32)
    assert WholeVideoDataset(store, chunks=25)[0]["flow"].shape[:3] == (2, 25, 20)
    assert set(centres) == {5, 6}


def kill_after_checkpoint(cmd, out):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoint.pt"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "no checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists()


def test_killed_run_resumes_to_the_same_end(prepared, tmp_path):
    """Speed settings (workers, checkpoint interval) are not part of a run's identity: it resumes."""
    train_here(train_cmd(prepared, tmp_path / "whole"))
    kill_after_checkpoint(train_cmd(prepared, tmp_path / "killed"), tmp_path / "killed")
    faster = {**SPEED, "workers": 1, "checkpoint_every": 3}
    resumed = run(train_cmd(prepared, tmp_path / "killed", speed=faster))
    assert "resuming motion from step" in resumed.stderr
    assert curves(tmp_path / "killed")["loss"].tolist() == curves(tmp_path / "whole")["loss"].tolist()
    # the killed run's events up to its checkpoint are kept (flushed there), the rest follow them
    assert {e.step for e in board(tmp_path / "killed").Scalars("train/loss")} == {1, 2, 3, 4, 5, 6}
    assert states_equal(tmp_path / "killed" / "model.pt", tmp_path / "whole" / "model.pt")
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()


def test_changed_frames_are_never_resumed(tmp_path):
    """A run killed, then its frames rebuilt at another size: the phase starts afresh, saying why."""
    results = prepare(tmp_path / "data", short_side=32)
    out = tmp_path / "motion"
    kill_after_checkpoint(train_cmd(results, out), out)
    prepare(tmp_path / "data", short_side=24)
    rerun = train_here(train_cmd(results, out))
    assert "resuming" not in rerun.stderr
    assert "changed since: flow; frames (short_side 32 -> 24); starting afresh" in rerun.stderr
    assert load_checkpoint(out / "model.pt").extra["info"]["short_side"] == 24
    # the killed run's events (steps 1 and 2, flushed at its checkpoint) went with it
    assert [e.step for e in board(out).Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_a_changed_setting_or_starting_model_is_never_resumed(prepared, tmp_path):
    """A checkpoint is resumed only by a run of the same identity: after a change of the learning
    rates, the seed, the BN group or the model the phase starts from, the phase starts afresh and
    the log names what changed; the model it writes is the changed run's own."""
    killed = tmp_path / "killed"
    kill_after_checkpoint(train_cmd(prepared, killed), killed)
    variants = [("lr", {**PHASE, "lr": [[0.02, 6]]}, (), "settings (lr)"),
                ("seed", {**PHASE, "seed": 1}, (), "settings (seed 0 -> 1)"),
                ("bn_batch", {**PHASE, "bn_batch": 4}, (), "settings (bn_batch 2 -> 4)"),
                ("init", PHASE, (tmp_path / "seed" / "model.pt",), "init")]
    for name, settings, init, change in variants:
        out = tmp_path / name
        shutil.copytree(killed, out)
        speed = {**SPEED, "micro_batch": max(SPEED["micro_batch"], settings["bn_batch"])}  # whole BN groups
        rerun = train_here(train_cmd(prepared, out, settings=settings, init=init, speed=speed))
        assert "resuming" not in rerun.stderr, name
        assert f"changed since: {change}; starting afresh" in rerun.stderr, (name, rerun.stderr[-2000:])
        made = json.loads(load_checkpoint(out / "model.pt").extra["identity"])
        assert made["settings"]["lr"] == settings["lr"] and made["settings"]["seed"] == settings["seed"], name
        assert made["settings"]["bn_batch"] == settings["bn_batch"] and len(made["init"]) == len(init), name
        assert len(curves(out)) == 6 and not (out / "checkpoint.pt").exists()
    # the same settings again do resume it
    resumed = train_here(train_cmd(prepared, killed))
    assert "resuming motion from step" in resumed.stderr


def test_every_train_option_reaches_the_script_through_torchrun():
    """torchrun (train.gpus > 1) reads the whole command line: an option of the stage that it takes
    for one of its own, or an abbreviation of one (--log of --log-dir), stops every multi-GPU job."""
    from stresnet.train import build_parser
    from torch.distributed.run import get_args_parser

    options = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert "--log-file" in options and "--state-dir" in options
    for option in options:
        parsed = get_args_parser().parse_args(["--standalone", "--nproc_per_node", "2", "-m", "stresnet", "train",
                                               option, "value"])
        assert parsed.training_script_args[-2:] == [option, "value"], option


def test_the_reason_names_each_changed_setting_and_input():
    old = {"phase": "motion", "settings": {"lr": [[0.01, 6]], "seed": 0, "bn_batch": 2},
           "frames": {"settings": {"short_side": 32}, "sha256": "a"}, "init": [{"sha256": "b"}]}
    new = {"phase": "motion", "settings": {"lr": [[0.02, 6]], "seed": 1, "bn_batch": 2},
           "frames": {"settings": {"short_side": 24}, "sha256": "c"}, "init": [{"sha256": "d"}]}
    assert changes(old, new) == ["frames (short_side 32 -> 24)", "init", "settings (lr, seed 0 -> 1)"]
    assert changes(old, old) == []


def test_srun_tasks_take_their_ranks_and_the_first_node_of_their_step(tmp_path, monkeypatch):
    """train.nodes > 1: each srun task's rank, world and local rank are SLURM's, the rendezvous the
    first host `scontrol show hostnames` lists for the step's nodes, the port one of the job."""
    from stresnet.train import ranks_from_slurm

    scontrol = tmp_path / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a17\\ngpu-a18\\n"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(name, "set")  # recorded, so that what ranks_from_slurm sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("STRESNET_DDP", "slurm")
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
           "SLURM_STEP_NODELIST": "gpu-a[17-18]"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ranks_from_slurm()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")] == [
        "3", "4", "1", "gpu-a17", str(20000 + 123456 % 20000)]


def test_one_writer_per_output_folder(prepared, tmp_path):
    out = tmp_path / "motion"
    long = {**PHASE, "lr": [[0.01, 400]]}
    first = subprocess.Popen(train_cmd(prepared, out, settings=long), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / ".lock").exists() or (out / ".lock").read_text() != str(first.pid):
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # it keeps its lock, not the CPU the second one needs
        second = subprocess.run(train_cmd(prepared, out, settings=long), capture_output=True, text=True)
        assert second.returncode == 1
        assert f"another process (pid {first.pid}) is writing here" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".checkpoint.pt.{dead.pid}.tmp"
    stale.write_bytes(b"half a checkpoint")
    result = train_here(train_cmd(prepared, out))
    assert not stale.exists() and "removed temporary files of writers that are gone" in result.stderr
    assert (out / "model.pt").exists()


def test_two_ddp_processes_follow_one_process(prepared, tmp_path):
    settings = {**PHASE, "lr": [[0.01, 3]]}
    train_here(train_cmd(prepared, tmp_path / "one", settings=settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *train_cmd(prepared, tmp_path / "two", settings=settings)[1:]], env=env)
    one, two = curves(tmp_path / "one"), curves(tmp_path / "two")
    assert np.allclose(one["loss"], two["loss"], rtol=1e-3, atol=1e-4), (one["loss"], two["loss"])
    assert one["accuracy"].tolist() == two["accuracy"].tolist()


def test_all_phases_then_evaluation_and_predict(finished_run):
    """The four phases of a finished workflow run (conftest.py, finished_run): each phase's log,
    curves and TensorBoard run; evaluation in this process gives the scores of the run's evaluate
    job; predict on a raw test video gives their 5 highest. Not marked slow: the run takes about
    as long as the four trainings this test made itself before it shared one."""
    out = finished_run / "results" / "demo"
    split = out / "split1"
    log = (out / "logs" / "split1" / "train_motion.log").read_text()
    head = [line for line in log.splitlines() if "stresnet.train" in line]
    assert head[0].startswith("INFO stresnet.train: stresnet train, pid ") and "--phase motion" in head[0]
    assert "phase motion, split 1" in head[1] and "device: cpu" in head[2] and head[3].startswith("INFO stresnet.train: settings: {")
    assert "frames:" in log and "flow:" in log and "done: motion, steps 1-2 of 2" in log and "\r" not in log
    for phase in ("motion", "appearance", "st_resnet", "st_resnet_star"):
        assert len(curves(split / phase)) == (2 if phase in ("motion", "appearance") else 1)  # TINY_TRAIN's lr
        events = board(split / phase)
        # the same tags in every phase's run: TensorBoard pointed at the split overlays the phases
        assert set(events.Tags()["scalars"]) == {"train/loss", "train/accuracy", "train/lr", "train/samples_per_s",
                                                 "train/data_wait", "train/step_seconds"}
        for name in ("loss", "accuracy", "lr", "samples_per_s"):
            logged = [e.value for e in events.Scalars(f"train/{name}")]
            assert np.allclose(logged, curves(split / phase)[name], rtol=1e-6), (phase, name)
        assert [e.step for e in events.Scalars("train/step_seconds")] == curves(split / phase)["step"].tolist()
    # the phase's settings (TINY_TRAIN's over config.yaml's motion phase) as hparams, lists as JSON
    # text and nested keys joined by '.'
    assert hparams(board(split / "motion")) == {
        "phase": "motion", "split": 1, "batch": 4, "bn_batch": 2, "lr": "[[0.01, 2]]", "chunks": 1,
        "stride": "[1, 1]", "size": 32, "seed": 0, "momentum": 0.9, "weight_decay": 5e-4, "dropout": 0.8,
        "precision": "bf16", "crop": "multiscale_corners", "lr_factors.weights": 1, "lr_factors.biases": 2,
        "lr_factors.bn_scales": 2, "lr_factors.bn_shifts": 1, "decay_factors.weights": 1, "decay_factors.biases": 0,
        "decay_factors.bn_scales": 0, "decay_factors.bn_shifts": 0, "micro_batch": 2, "processes": 1}
    star = load_checkpoint(split / "st_resnet_star/model.pt", "st_resnet_star")
    assert star.extra["info"]["classes"][0] == "DiskGrowing"  # the folders' names, sorted

    videos = pd.read_csv(out / "videos.csv", dtype={"shard": str})
    test = videos[videos["split1"] == "test"]
    _, frames, flow = open_videos(out / "dataset_ready.json", out / "flow/dis/manifest.json")
    scores = evaluate(load_model("st_resnet_star", [split / "st_resnet_star/model.pt"]), VideoStore(test, frames, flow),
                      chunks=5, workers=0, device=torch.device("cpu"))  # the run's evaluate.chunks
    assert scores["appearance"].shape == scores["motion"].shape == (len(test), 7)
    assert np.allclose(scores["fused"], (scores["appearance"] + scores["motion"]) / 2)
    job = np.load(split / "scores" / "st_resnet_star.npz")
    assert list(job["paths"]) == list(test["path"])
    for part in ("appearance", "motion", "fused"):  # the CPU computes in fp32 whatever the precision
        assert np.allclose(scores[part], job[part], rtol=1e-4, atol=1e-5), part

    # predict prepares a raw video as the pipeline did: a test video's top 5 are its evaluated
    # scores' 5 highest, in order, with their softmax over all classes (worked out here)
    video = test["path"].iloc[0]
    top = predict(finished_run / "raw" / "UCF101" / video, split, top=5, chunks=5)  # the run's evaluate.chunks
    fused = job["fused"][0].astype(np.float64)
    softmax = np.exp(fused - fused.max()) / np.exp(fused - fused.max()).sum()
    order = np.argsort(-fused)[:5]
    assert [name for name, _ in top] == [star.extra["info"]["classes"][i] for i in order]
    assert np.allclose([p for _, p in top], softmax[order], atol=1e-4)
