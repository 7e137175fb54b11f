"""Training stage: one of the four phases of Table 2, resumable, on CPU, CUDA or several GPUs.

motion and appearance train a ResNet-50 stream each; st_resnet converts both into ST-ResNet
(temporal filters, motion -> appearance residuals); st_resnet_star adds temporal max pooling
and continues from st_resnet. Run under torchrun for DDP (one process per GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .batching import check_memory, cuda_fits, probe_batch, resolve_micro_batch, training_bytes
from .board import log_hparams, open_board
from .data import (ClipDataset, SampleSchedule, VideoStore, dataset_classes, network_inputs, open_videos,
                   quiet_worker, usable_frames)
from .errors import InputError, SettingError, run_stage
from .manifest import file_sha256
from .models import (appearance_stream, build_model, convert_sub_batch_norm, load_checkpoint,
                     load_weights, motion_stream, save_checkpoint, set_chunks, st_resnet, with_dropout)
from .progress import Progress
from .provenance import OutputLock, changes
from .runtime import autocast, setup_process

log = logging.getLogger(__name__)
PHASES = ("motion", "appearance", "st_resnet", "st_resnet_star")
INPUTS = {"motion": ("flow",), "appearance": ("rgb",), "st_resnet": ("rgb", "flow"),
          "st_resnet_star": ("rgb", "flow")}

# curves.csv; data_wait: the share of the step's time the host waited for the data loader
CURVE_COLUMNS = ["step", "lr", "loss", "accuracy", "samples_per_s", "data_wait"]
# TensorBoard's scalars of each step, as train/<name>
BOARD_SCALARS = ("loss", "accuracy", "lr", "samples_per_s", "data_wait", "step_seconds")


def lr_at(it: int, schedule: list[list[float]]) -> float:
    """Table 2's step schedule: [[lr, iterations], ...] -> learning rate of step `it`."""
    for lr, iterations in schedule:
        if it < iterations:
            return float(lr)
        it -= iterations
    return float(schedule[-1][0])

PARAM_KINDS = ("weights", "biases", "bn_scales", "bn_shifts")

def param_groups(model: nn.Module, lr_factors: dict[str, float], decay_factors: dict[str, float],
                 weight_decay: float) -> list[dict[str, Any]]:
    """SGD parameter groups by kind of parameter, each with its learning-rate factor (`lr_factor`,
    applied by set_lr) and weight decay (`weight_decay` times its factor), as the authors' setLrWd.m
    sets them: convolution and classifier weights, biases, BN scales (gamma), BN shifts (beta)."""
    params: dict[str, list[nn.Parameter]] = {kind: [] for kind in PARAM_KINDS}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, nn.BatchNorm2d):
                params["bn_scales" if name == "weight" else "bn_shifts"].append(param)
            else:
                params["biases" if name == "bias" else "weights"].append(param)
    return [{"params": ps, "kind": kind, "lr_factor": lr_factors[kind],
             "weight_decay": weight_decay * decay_factors[kind]} for kind, ps in params.items() if ps]

def sgd(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.SGD:
    """SGD with momentum (Sec. 3.4) over the parameter groups of `model`; set_lr sets each step's rates."""
    groups = param_groups(model, cfg["lr_factors"], cfg["decay_factors"], cfg["weight_decay"])
    return torch.optim.SGD(groups, lr=lr_at(0, cfg["lr"]), momentum=cfg["momentum"])

def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Each parameter group's learning rate: `lr` (Table 2's schedule, lr_at) times the group's factor."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_factor"]

def total_iterations(schedule: list[list[float]]) -> int:
    return int(sum(iterations for _, iterations in schedule))

def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

def initial_model(phase: str, num_classes: int, pretrained: str, init: list[str],
                  flow: dict[str, Any] | None = None, dropout: float = 0.0) -> nn.Module:
    """The model a phase starts from: ImageNet streams, a stream trained on another dataset, or
    the previous phases' checkpoints. `flow` (the flow settings of this phase's data) must equal
    those a motion stream trained elsewhere saw. A stream gets `dropout` before its classifier."""
    if phase in ("motion", "appearance") and init:
        source = load_checkpoint(init[0], phase)
        seen = source.extra.get("info", {}).get("flow")
        if phase == "motion" and flow is not None and seen != flow:
            raise ValueError(f"{init[0]} was trained on flow made with {seen}, this data's flow is {flow}; "
                             "make both datasets' flow settings equal")
        return with_dropout(retarget_stream(source.model, num_classes), dropout)
    if phase == "motion":
        return with_dropout(motion_stream(num_classes, pretrained), dropout)
    if phase == "appearance":
        return with_dropout(appearance_stream(num_classes, pretrained), dropout)
    if phase == "st_resnet":
        appearance = load_checkpoint(init[0], "appearance").model
        motion = load_checkpoint(init[1], "motion").model
        return st_resnet(appearance, motion)
    previous = load_checkpoint(init[0], "st_resnet")
    model = build_model({**previous.meta, "kind": "st_resnet_star", "pool_window": 5, "pool_stride": 2})
    model.load_state_dict(previous.model.state_dict())  # max pooling adds no parameters
    return model

def retarget_stream(stream: nn.Module, num_classes: int) -> nn.Module:
    """A trained stream with a new classifier for `num_classes` classes (Sec. 4.1: "our HMDB51
    motion stream is initialized from the UCF101 model"); every other weight is kept."""
    stream.fc = nn.Linear(stream.fc.in_features, num_classes)
    return stream

def clip_loss(model: nn.Module, phase: str, batch: dict[str, torch.Tensor], chunks: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of a micro-batch, averaged over its clips; and the hits of the summed scores.

    Sec. 3.4 (ST-ResNet: "a single loss for each of the 5 inputs and both streams"): one softmax
    cross-entropy per stream and time position, summed over positions and streams (as the
    authors' code does, which divides by the number of videos only).
    """
    labels = batch["label"]
    if phase in ("motion", "appearance"):
        x = batch["flow" if phase == "motion" else "rgb"].flatten(0, 1)
        set_chunks(model, chunks)
        logits = model(x).unflatten(0, (-1, chunks))
        streams = [logits]
    else:
        streams = list(model(batch["rgb"].flatten(0, 1), batch["flow"].flatten(0, 1), chunks))
    positions = streams[0].shape[1]
    target = labels[:, None].expand(-1, positions).flatten()
    streams = [s.to(torch.promote_types(s.dtype, torch.float32)) for s in streams]  # bf16 under autocast
    loss = sum(F.cross_entropy(s.flatten(0, 1), target, reduction="sum") for s in streams) / len(labels)
    hits = (sum(streams).mean(1).argmax(1) == labels).sum()  # a tensor: no wait for the device here
    return loss, hits

def ranks_from_slurm() -> None:
    """DDP's rank variables from SLURM's, for processes started one per GPU by srun over several
    nodes (STRESNET_DDP=slurm; torchrun sets them itself on one node); the rendezvous on the first
    node of the step. Read here, in the task: the batch script's shell does not have the node
    list (Snakemake's SLURM jobstep drops SLURM_JOB_NODELIST before running a job's command),
    while srun gives every task SLURM_STEP_NODELIST and SLURM_JOB_NODELIST again."""
    if os.environ.get("STRESNET_DDP") != "slurm":
        return
    for ours, slurm in (("RANK", "SLURM_PROCID"), ("WORLD_SIZE", "SLURM_NTASKS"), ("LOCAL_RANK", "SLURM_LOCALID")):
        os.environ[ours] = os.environ[slurm]
    if not os.environ.get("MASTER_ADDR"):
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ["SLURM_JOB_NODELIST"]
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        os.environ["MASTER_ADDR"] = hosts.stdout.split()[0]
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000))


def job_device(setting: str) -> torch.device:
    """This process's device: cuda:LOCAL_RANK (one GPU per torchrun process, made current so that
    the loader's pin-memory thread and NCCL use it, not GPU 0), or the CPU."""
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    torch.cuda.set_device(device)
    return device


def data_warnings(phase: str, cfg: dict[str, Any], n_frames: np.ndarray, short_side: int) -> list[str]:
    """One line for each setting of a phase that the training videos (their frame counts) make
    wasteful: crops upscaled, or clips longer than any video."""
    key, out = f"train.{phase}", []
    if cfg["size"] > short_side:
        out.append(f"{key}.size {cfg['size']} exceeds the frames' short side {short_side}: every crop is upscaled "
                   "(the paper crops 224 from frames of short side 256)")
    usable = max(len(usable_frames(int(n), stacks="flow" in INPUTS[phase])) for n in n_frames)
    span = (cfg["chunks"] - 1) * cfg["stride"][0] + 1
    if span > usable:
        out.append(f"{key}: {cfg['chunks']} chunks at stride >= {cfg['stride'][0]} span {span} frames, the longest "
                   f"training video has {usable} usable frames: strides are reduced and frames repeat "
                   "(lower chunks or stride)")
    return out


class Diverged(InputError):
    """A non-finite loss: the phase stops at once and writes no model."""


def file_identity(path: str) -> dict[str, Any]:
    """What a run records of a file it starts from: its content (a job's copy of it may lie elsewhere)."""
    return {"sha256": file_sha256(path)}

class Trainer:
    """The training loop of one phase (after nanoGPT's train.py).

    `cfg` holds the settings that shape the result (Table 2's batch, BN group, learning rates,
    chunks, strides, crop, seed, SGD), `speed` those that only set how fast it is reached
    (workers, micro_batch, checkpoint_every). The identity of a run is cfg, the phase and split,
    the manifests of its data and the fingerprints of the models it starts from; a checkpoint of
    another identity is never resumed.
    """

    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any], speed: dict[str, Any]):
        self.args, self.cfg, self.speed, self.phase = args, cfg, speed, args.phase
        self.out = Path(args.out_dir)
        ranks_from_slurm()
        self.device = job_device(args.device)
        self.ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.ddp:  # the backend follows the job's device, not what the host happens to have
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    device_id=self.device if self.device.type == "cuda" else None)
        self.rank = dist.get_rank() if self.ddp else 0
        self.world = dist.get_world_size() if self.ddp else 1
        if self.ddp:
            log.info("rank %d of %d (local rank %s) on %s, rendezvous %s:%s", self.rank, self.world,
                     os.environ.get("LOCAL_RANK"), self.device, os.environ.get("MASTER_ADDR"),
                     os.environ.get("MASTER_PORT"))
        self.main = self.rank == 0
        # checkpoint.pt, the lock and TensorBoard's files: beside the outputs, or in --state-dir, a
        # folder every node sees, so that a job retried elsewhere (node-local scratch) resumes
        self.state = Path(args.state_dir) if getattr(args, "state_dir", None) else self.out
        self.lock = OutputLock(self.state) if self.main else None
        if self.lock and self.lock.removed:
            log.info("removed temporary files of writers that are gone: %s", [p.name for p in self.lock.removed])
        torch.manual_seed(cfg["seed"])

        wants = INPUTS[self.phase]
        videos, frames, flow = open_videos(args.frames_manifest, args.flow_manifest if "flow" in wants else None)
        train = videos[(videos[f"split{args.split}"] == "train") & (videos["status"] == "ok")]
        if train.empty:
            raise SettingError(f"{frames.path}: no usable training videos in split {args.split}; check run_splits")
        classes = dataset_classes(frames)  # every class, also those none of these videos has
        self.num_classes = len(classes)
        store = VideoStore(train, frames, flow)
        short_side = frames.settings["short_side"]
        # what predict needs to prepare a new video as this data was prepared
        self.info = {"classes": list(classes), "short_side": short_side,
                     "jpeg_quality": frames.settings["jpeg_quality"],
                     "flow": {k: flow.settings[k] for k in ("method", "params", "bound", "jpeg_quality")} if flow else None}
        pretrained = args.pretrained if args.pretrained in ("imagenet", "none") or args.init else file_identity(args.pretrained)
        self.identity = {"phase": self.phase, "split": args.split, "settings": cfg, "frames": frames.identity(),
                         "flow": flow.identity() if flow else None, "pretrained": pretrained,
                         "init": [file_identity(path) for path in args.init]}
        self.dataset = ClipDataset(store, cfg["crop"], cfg["chunks"], cfg["size"], short_side,
                                   rgb="rgb" in wants, flow="flow" in wants)
        self.iterations = total_iterations(cfg["lr"])

        model = initial_model(self.phase, self.num_classes, args.pretrained, args.init, self.info["flow"],
                              cfg.get("dropout", 0.0))  # stream phases only
        convert_sub_batch_norm(model, cfg["bn_batch"])  # Sec. 3.3: BN over groups of bn_batch clips
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.autocast = autocast(self.device, cfg.get("precision", "bf16"))
        self.autocast_dtype = getattr(self.autocast, "fast_dtype", None)
        self.speed = {**speed, "micro_batch": self._micro_batch(speed["micro_batch"])}
        self._check_settings(train["n_frames"].to_numpy(), short_side, fits_probed=speed["micro_batch"] == "auto")
        if cfg.get("smoke"):  # a smoke run: each step is one micro-batch per process
            self.cfg = cfg = {**cfg, "batch": self.speed["micro_batch"] * self.world}
            self.identity["settings"] = cfg
        self.schedule = SampleSchedule(len(train), cfg["batch"], cfg["bn_batch"], self.speed["micro_batch"],
                                       cfg["seed"], tuple(cfg["stride"]))
        if self.schedule.accumulation % self.world:
            raise SettingError(f"micro_batch {self.speed['micro_batch']}: {self.schedule.accumulation} micro-batches "
                               f"per step cannot be shared by {self.world} processes; use micro_batch: auto")
        self.optimizer = sgd(self.model, cfg)
        self.net = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
                    if self.ddp else self.model)
        self.state_file = self.state / "checkpoint.pt"
        self.curves: list[dict[str, float]] = []
        self.start = self._resume()

    def _micro_batch(self, setting: int | str) -> int:
        """The micro-batch of this job (`auto`: probed on CUDA, the measured fastest on the CPU),
        the same in every process."""
        cfg, fits = self.cfg, None
        if setting == "auto" and self.device.type == "cuda":

            def loss_of(batch):
                with self.autocast:
                    return clip_loss(self.model, self.phase, batch, cfg["chunks"])[0]

            fits = cuda_fits(self.model, loss_of, lambda m: probe_batch(self.phase, m, cfg["chunks"], cfg["size"],
                                                                      self.device), self.device)
        micro, why = resolve_micro_batch(setting, self.phase, cfg["batch"], cfg["bn_batch"], self.world,
                                         self.device, fits)
        if self.ddp:  # each process probed its own device: all take the smallest
            agreed = torch.tensor(micro, device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            micro = int(agreed)
        self.micro_reason = (f"micro_batch: {micro} clips per pass ({why}), {-(-micro // cfg['bn_batch'])} BN "
                             f"group(s) of {cfg['bn_batch']} each")
        return micro

    def _check_settings(self, n_frames: np.ndarray, short_side: int, fits_probed: bool) -> None:
        """Settings that make no sense for this data, before the first step: a warning where they
        would only waste work, a refusal where the job would run out of memory."""
        cfg, key = self.cfg, f"train.{self.phase}"
        for line in data_warnings(self.phase, cfg, n_frames, short_side):
            log.warning("%s", line)
        if not (fits_probed and self.device.type == "cuda"):  # else the probe measured it
            need = training_bytes(len(INPUTS[self.phase]), self.speed["micro_batch"], cfg["chunks"], cfg["size"],
                                  half=self.autocast_dtype is not None)
            check_memory(need, f"{key}: a pass of {self.speed['micro_batch']} clips x {cfg['chunks']} chunks at "
                         f"{cfg['size']} px", f"lower {key}.size (224 in the paper) or micro_batch (at least "
                         f"bn_batch, {cfg['bn_batch']})", self.device)

    def _resume(self) -> int:
        """The step to start from: after the last checkpoint of a run of the same identity."""
        if not self.state_file.exists():
            return 0
        try:
            extra = load_weights(self.model, self.state_file)
        except (ValueError, FileNotFoundError) as e:
            log.warning("ignoring %s: %s", self.state_file, e)
            return 0
        saved = json.loads(extra.get("identity", "{}"))
        if saved != self.identity:
            log.warning("%s was made from other inputs, changed since: %s; starting afresh",
                        self.state_file, "; ".join(changes(saved, self.identity)))
            return 0
        self.optimizer.load_state_dict(extra["optimizer"])
        torch.set_rng_state(extra["rng"])
        self.curves = list(extra["curves"])
        log.info("resuming %s from step %d", self.phase, extra["iteration"])
        return int(extra["iteration"])

    def settings_digest(self) -> str:
        return digest(self.identity)

    def _checkpoint(self, it: int) -> None:
        if self.main:
            save_checkpoint(self.state_file, self.model, {
                "iteration": it, "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
                "curves": self.curves, "identity": json.dumps(self.identity), "lr_schedule": self.cfg["lr"]})
            self._write_curves()
        if self.ddp:
            dist.barrier()

    def _log_start(self) -> None:
        """The log's head: device, settings and inputs, so a log says what made its result."""
        if not self.main:
            return
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        log.info("phase %s, split %s: %d training videos of %d classes, %d steps from step %d",
                 self.phase, self.args.split, len(self.dataset), self.num_classes, self.iterations, self.start)
        log.info("device: %s x %d process(es), %d torch threads", device, self.world, torch.get_num_threads())
        if self.cfg.get("smoke"):
            log.warning("SMOKE RUN: %d step(s) of one micro-batch each; this model is not a result", self.iterations)
        log.info("settings: %s", json.dumps(self.cfg, sort_keys=True))
        log.info("speed: %s", json.dumps(self.speed, sort_keys=True))
        log.info(self.micro_reason)
        for name, path in (("frames", self.args.frames_manifest), ("flow", self.args.flow_manifest)):
            if self.identity[name]:
                log.info("%s: %s (sha256 %s)", name, path, self.identity[name]["sha256"][:16])
        for path, model in zip(self.args.init, self.identity["init"]):
            log.info("starts from: %s (sha256 %s)", path, model["sha256"][:16])

    def _own_log(self) -> str:
        """What this process wrote to its job's log (--log, appended to by each attempt): a model
        made by a process whose Snakemake was killed still says how it was made."""
        if not getattr(self.args, "log", None) or not Path(self.args.log).is_file():
            return ""
        with open(self.args.log, "rb") as f:
            f.seek(getattr(self.args, "log_offset", 0))
            return f.read().decode(errors="replace")

    def _board(self):
        """TensorBoard event files in <state>/tensorboard, one run per phase (main process only):
        those of an earlier run dropped when the phase starts afresh, kept when it resumes; the
        phase's settings as hparams."""
        if not self.main:
            return None
        board = open_board(self.state / "tensorboard", afresh=self.start == 0)
        if self.start == 0:
            log_hparams(board, {"phase": self.phase, "split": self.args.split, **self.cfg,
                                "micro_batch": self.speed["micro_batch"], "processes": self.world},
                        [f"train/{name}" for name in BOARD_SCALARS])
        return board

    def _write_curves(self) -> None:
        with open(self.out / "curves.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(self.curves)

    def _loader(self) -> DataLoader:
        batches = self.schedule.loader_batches(self.start, self.iterations, self.world, self.rank)
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=self.speed["workers"],
                          worker_init_fn=quiet_worker, pin_memory=self.device.type == "cuda")

    def fit(self) -> None:
        cfg, chunks = self.cfg, self.cfg["chunks"]
        micro_per_rank = self.schedule.accumulation // self.world
        batches = iter(self._loader())
        bar = Progress(range(self.start, self.iterations), self.phase, total=self.iterations, unit="step",
                       initial=self.start, enabled=self.main)
        self._log_start()
        board = self._board()
        began, waited_total = time.perf_counter(), 0.0
        self.net.train()
        for it in bar:
            tic = time.perf_counter()
            lr = lr_at(it, cfg["lr"])
            set_lr(self.optimizer, lr)
            totals = torch.zeros(2, device=self.device)  # summed loss, hits: read once per step
            waited = 0.0
            for m in range(micro_per_rank):
                asked = time.perf_counter()
                batch = network_inputs(next(batches), self.device)
                waited += time.perf_counter() - asked  # the host waiting for the loader
                sync = self.net.no_sync() if self.ddp and m < micro_per_rank - 1 else contextlib.nullcontext()
                with sync, self.autocast:
                    loss, h = clip_loss(self.net, self.phase, batch, chunks)
                # the mean over the SGD batch; DDP averages over processes, hence the world size
                (loss * len(batch["label"]) * self.world / cfg["batch"]).backward()
                totals += torch.stack([loss.detach() * len(batch["label"]), h.to(totals.dtype)])
            waited_total += waited
            if self.ddp:
                dist.all_reduce(totals)
            loss_sum, hits = totals.tolist()  # the step's one wait for the device
            if not math.isfinite(loss_sum):
                raise Diverged(f"train.{self.phase}.lr: the loss is {loss_sum / cfg['batch']} at step {it + 1} "
                               f"(learning rate {lr:g}); the phase stopped and wrote no model.pt; lower the "
                               "learning rate (or check the data) and rerun")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tic
            row = {"step": it + 1, "lr": lr, "loss": loss_sum / cfg["batch"], "accuracy": hits / cfg["batch"],
                   "samples_per_s": cfg["batch"] / seconds, "data_wait": waited / seconds}
            self.curves.append(row)
            bar.postfix(loss=row["loss"], accuracy=row["accuracy"], lr=row["lr"], samples_s=row["samples_per_s"],
                        data_wait=row["data_wait"])
            if board is not None:  # tags without the phase: the phases' runs overlay
                values = {**row, "step_seconds": seconds}
                for name in BOARD_SCALARS:
                    board.add_scalar(f"train/{name}", values[name], it + 1)
            if (it + 1) % self.speed["checkpoint_every"] == 0 and it + 1 < self.iterations:
                if board is not None:  # a resumed phase's curves then start at step 1
                    board.flush()
                self._checkpoint(it + 1)
        if board is not None:
            board.close()
        if self.main:
            self._write_curves()
            last = self.curves[-1] if self.curves else {}
            elapsed = time.perf_counter() - began
            log.info("done: %s, steps %d-%d of %d in %.0f s (%.0f%% of it waiting for data); last step loss %.4g, "
                     "accuracy %.3f -> %s", self.phase, self.start + 1, self.iterations, self.iterations, elapsed,
                     100 * waited_total / max(elapsed, 1e-9), last.get("loss", float("nan")),
                     last.get("accuracy", float("nan")), self.out / "model.pt")
            save_checkpoint(self.out / "model.pt", self.model, {
                "phase": self.phase, "iterations": self.iterations, "settings": self.settings_digest(),
                "identity": json.dumps(self.identity), "config": json.dumps(self.cfg), "info": self.info,
                "log": self._own_log()})
            self.state_file.unlink(missing_ok=True)
            self.lock.release()
        if self.ddp:
            dist.barrier()
            dist.destroy_process_group()

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet train", description=__doc__)
    p.add_argument("--phase", required=True, choices=PHASES)
    p.add_argument("--frames-manifest", required=True, help="the dataset's frames manifest (dataset_ready.json)")
    p.add_argument("--flow-manifest", help="its flow manifest (phases that read flow)")
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--config", required=True, type=json.loads,
                   help="the phase's result-shaping settings as JSON (see config.yaml train:)")
    p.add_argument("--speed", default="{}", type=json.loads,
                   help="speed settings as JSON: workers, micro_batch (a number or auto, the default), checkpoint_every")
    p.add_argument("--pretrained", default="imagenet", help="imagenet | none | path (stream phases)")
    p.add_argument("--init", nargs="*", default=[],
                   help="st_resnet: appearance and motion model.pt; st_resnet_star: st_resnet model.pt; "
                        "motion or appearance: a stream of the same kind trained elsewhere (replaces --pretrained)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--state-dir", help="checkpoint.pt, its lock and TensorBoard's files (default: beside the outputs); "
                                       "a folder every node sees, for jobs retried on another node")
    # not --log: torchrun reads every option of the command line, and takes --log for an
    # abbreviation of its own --log-dir (an error that stops every multi-GPU job)
    p.add_argument("--log-file", dest="log", help="the job's log file, appended to: its part from this process is kept in model.pt")
    return p

def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.log_offset = Path(args.log).stat().st_size if args.log and Path(args.log).is_file() else 0
    log.info("stresnet train, pid %d: %s", os.getpid(), " ".join(argv if argv is not None else sys.argv[1:]))
    setup_process(args.threads)
    speed = {"workers": 2, "micro_batch": "auto", "checkpoint_every": 500, **args.speed}
    Trainer(args, args.config, speed).fit()

if __name__ == "__main__":
    run_stage("train", main)
