"""The GPU check: every CUDA-only path of the pipeline run once on a real GPU, in a few minutes,
with the figures that say whether it keeps the GPU busy. One command:

    python benchmarks/gpu_check.py                 # on a machine with a GPU: writes gpu_check.json
    python benchmarks/gpu_check.py --dry-run       # anywhere: the same code on the CPU, tiny sizes

Sections (each runs even when another fails; its error is kept in the JSON):
- tvl1: TV-L1 in torch at batches 64, 256 and 512: pairs/s, first-batch (compile) time, memory
  per pair, busy share, end-point difference against the CPU solver (bench_tvl1_torch).
- probe: `micro_batch: auto`'s probe for each phase of Table 2: the size it chooses, its time,
  and whether the model's weights and BN statistics are unchanged after it.
- model_steps: 3 training steps per phase on synthetic inputs at Table 2's batch, with Table 2's
  BN groups and with one group per pass: clips/s and the share of wall time in GPU kernels.
- trainer: 3 steps of the real training loop (loader included) per phase on a prepared demo
  dataset: clips/s, the share of step time waiting for data, host synchronisations per step.
- loader_workers: workers per GPU each phase needs, from the model's clips/s and the clips/s one
  loader worker gives (measured on the CPU, docs/benchmarks.md).
- evaluate: ms per test video (25 chunks, both flips, both streams) in bf16 and fp32, and how far
  their scores differ.
Recompilations (TORCH_LOGS=recompiles) and host synchronisations
(torch.cuda.set_sync_debug_mode("warn")) are counted in each section.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))

from common import kernel_share  # noqa: E402
from stresnet.batching import cuda_fits, probe_batch, resolve_micro_batch  # noqa: E402
from stresnet.config import phase_settings  # noqa: E402
from stresnet.evaluate import inference_model, video_scores  # noqa: E402
from stresnet.models import (appearance_stream, convert_sub_batch_norm, motion_stream, st_resnet,  # noqa: E402
                             st_resnet_star)
from stresnet.runtime import autocast, setup_process  # noqa: E402
from stresnet.train import INPUTS, PHASES, Trainer, clip_loss, sgd  # noqa: E402

# clips/s one loader worker gives at short side 256 (benchmarks/bench_loader.py, docs/benchmarks.md)
WORKER_CLIPS_PER_S = {"motion": 125, "appearance": 600, "st_resnet": 21, "st_resnet_star": 10}


class Counters(logging.Handler):
    """Recompilations seen in torch._dynamo's log and synchronising CUDA calls warned about."""

    def __init__(self) -> None:
        super().__init__()
        self.recompiles = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Recompiling" in record.getMessage() or "recompil" in record.getMessage().lower():
            self.recompiles += 1


@contextlib.contextmanager
def counted(device: torch.device):
    """{'recompiles': n, 'syncs': n} of what runs inside."""
    out = {"recompiles": 0, "syncs": 0}
    handler = Counters()
    dynamo = logging.getLogger("torch._dynamo")
    dynamo.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield out
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
            dynamo.removeHandler(handler)
    out["recompiles"] = handler.recompiles
    out["syncs"] = sum("synchroniz" in str(w.message) for w in caught)


def section(name: str, results: dict, run, *args) -> None:
    """Run one section, keeping its figures or its error; never stop the check."""
    began = time.perf_counter()
    try:
        results[name] = run(*args)
    except Exception as e:  # noqa: BLE001 - a failing section is a finding, not the end of the check
        results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    results[name + "_seconds"] = round(time.perf_counter() - began, 1)
    print(f"{name}: {json.dumps(results[name], default=str)[:600]}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phase_model(phase: str, classes: int) -> torch.nn.Module:
    """A phase's model as training builds it (no ImageNet weights: the check must run offline)."""
    if phase == "motion":
        return motion_stream(classes, "none")
    if phase == "appearance":
        return appearance_stream(classes, "none")
    build = st_resnet if phase == "st_resnet" else st_resnet_star
    return build(appearance_stream(classes, "none"), motion_stream(classes, "none"))


def settings(dry: bool) -> dict[str, dict]:
    """Each phase's Table 2 settings (config.yaml), or tiny ones for a dry run."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["check"] = {"format": "demo"}
    out = {phase: phase_settings(config, "check", phase) for phase in PHASES}
    if dry:
        for phase, cfg in out.items():
            clips = phase in ("st_resnet", "st_resnet_star")
            cfg.update(batch=4, bn_batch=2, size=32, chunks={"st_resnet": 3, "st_resnet_star": 5}.get(phase, 1),
                       stride=[1, 2] if clips else [1, 1], lr=[[1e-4, 1]])
    return out


def tvl1(device: torch.device, dry: bool) -> dict:
    import bench_tvl1_torch as bench
    from stresnet.tvl1_torch import Solver

    if dry:  # the solver's code on two small textured pairs, a few iterations
        rng = np.random.default_rng(0)
        i0 = torch.from_numpy(rng.uniform(0, 255, (2, 32, 40)).astype(np.float32))
        with counted(device) as counts:
            flow = Solver({"scales_number": 2, "warpings_number": 1, "outer_iterations": 2}, device, False)(
                i0, torch.roll(i0, 1, dims=2))
        return {"flow_shape": list(flow.shape), **counts}
    clips = bench.clip_frames(REPO / "tests" / "fixtures" / "videos", 9)
    pairs = [(a, b) for frames in clips.values() if frames[0].shape[:2] == (256, 341)
             for a, b in zip(bench.grey(frames), bench.grey(frames)[1:])]
    with counted(device) as counts:
        figures = bench.cuda_figures(pairs, [64, 256, 512])
    return {**figures, **counts}


def probe(device: torch.device, phases: dict[str, dict], classes: int) -> dict:
    out = {}
    for phase, cfg in phases.items():
        model = phase_model(phase, classes)
        convert_sub_batch_norm(model, cfg["bn_batch"])
        model = model.to(device, memory_format=torch.channels_last).train()
        before = {k: v.clone() for k, v in model.state_dict().items()}

        def loss_of(batch, model=model, phase=phase, cfg=cfg):
            with autocast(device, cfg["precision"]):
                return clip_loss(model, phase, batch, cfg["chunks"])[0]

        make = lambda m, phase=phase, cfg=cfg: probe_batch(phase, m, cfg["chunks"], cfg["size"], device)  # noqa: E731
        began = time.perf_counter()
        with counted(device) as counts:
            if device.type == "cuda":
                micro, why = resolve_micro_batch("auto", phase, cfg["batch"], cfg["bn_batch"], 1, device,
                                                 cuda_fits(model, loss_of, make, device))
            else:  # the probe's passes on the CPU: one BN group, the check that the weights stay
                loss_of(make(cfg["bn_batch"])).backward()
                model.zero_grad(set_to_none=True)
                model.load_state_dict(before)
                micro, why = resolve_micro_batch("auto", phase, cfg["batch"], cfg["bn_batch"], 1, device)
        after = model.state_dict()
        out[phase] = {"micro_batch": micro, "why": why, "seconds": round(time.perf_counter() - began, 2),
                      "weights_unchanged": all(torch.equal(before[k], after[k]) for k in before), **counts}
        del model, before, after
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def model_steps(device: torch.device, phases: dict[str, dict], micro: dict, classes: int, steps: int = 3) -> dict:
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for phase, cfg in phases.items():
        size = micro.get(phase, {}).get("micro_batch") or cfg["bn_batch"]
        out[phase] = {}
        for variant, bn in (("table2_bn_groups", cfg["bn_batch"]), ("one_group_per_pass", size)):
            if variant == "one_group_per_pass" and bn == cfg["bn_batch"]:  # the same passes again (the CPU's 2)
                out[phase][variant] = {**out[phase]["table2_bn_groups"], "same_as": "table2_bn_groups"}
                continue
            model = phase_model(phase, classes)
            convert_sub_batch_norm(model, bn)
            model = model.to(device, memory_format=torch.channels_last).train()
            optimizer = sgd(model, cfg)
            passes = math.ceil(cfg["batch"] / size)
            batch = {k: v.normal_() if v.is_floating_point() else v
                     for k, v in probe_batch(phase, size, cfg["chunks"], cfg["size"], device).items()}

            def step():
                for _ in range(passes):
                    with autocast(device, cfg["precision"]):
                        loss = clip_loss(model, phase, batch, cfg["chunks"])[0]
                    loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step()  # warm-up: cuDNN's algorithm search, allocations
            synchronize(device)
            with counted(device) as counts:
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                with profile(activities=activities) as trace:
                    began = time.perf_counter()
                    for _ in range(steps):
                        step()
                    synchronize(device)
                    wall = time.perf_counter() - began
            # a CPU trace has no kernels to count, and reading its events takes 1.5 s a trace (12 s of
            # the dry run in the test suite)
            share = kernel_share(trace, wall) if device.type == "cuda" else None
            out[phase][variant] = {"bn_batch": bn, "micro_batch": size, "passes_per_step": passes,
                                   "clips_per_s": round(steps * passes * size / wall, 2),
                                   "kernel_share": share, "syncs_per_step": counts["syncs"] / steps,
                                   "recompiles": counts["recompiles"]}
            del model, optimizer, batch
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def trainer(device: torch.device, phases: dict[str, dict], data: Path, workdir: Path, steps: int = 3) -> dict:
    """3 steps of the real loop per phase, each phase starting from the previous phases' models."""
    out, models = {}, {}
    for phase, cfg in phases.items():
        init = {"st_resnet": [models.get("appearance"), models.get("motion")],
                "st_resnet_star": [models.get("st_resnet")]}.get(phase, [])
        args = SimpleNamespace(phase=phase, split=1, frames_manifest=str(data / "dataset_ready.json"),
                               flow_manifest=str(data / "flow/dis/manifest.json"), pretrained="none",
                               init=[str(p) for p in init], out_dir=str(workdir / phase), device="auto", log=None)
        shaping = {k: v for k, v in cfg.items() if k not in ("workers", "checkpoint_every", "micro_batch", "gpus",
                                                              "nodes", "threads")}
        shaping["lr"] = [[cfg["lr"][0][0], steps]]
        speed = {"workers": 8 if device.type == "cuda" else 0, "micro_batch": "auto", "checkpoint_every": 10 ** 6}
        with counted(device) as counts:
            run = Trainer(args, shaping, speed)
            run.fit()
        curves = run.curves
        out[phase] = {"micro_batch": run.speed["micro_batch"], "steps": len(curves),
                      "clips_per_s_last_step": round(curves[-1]["samples_per_s"], 2),
                      "data_wait_share_last_step": round(curves[-1]["data_wait"], 3),
                      "syncs_per_step": counts["syncs"] / max(1, len(curves)), "recompiles": counts["recompiles"]}
        models[phase] = workdir / phase / "model.pt"
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def loader_workers(steps: dict) -> dict:
    """Workers per GPU each phase needs so that the loader keeps up with the model."""
    out = {}
    for phase, variants in steps.items():
        rate = variants.get("table2_bn_groups", {}).get("clips_per_s")
        if rate:
            out[phase] = {"model_clips_per_s": rate, "worker_clips_per_s": WORKER_CLIPS_PER_S[phase],
                          "workers_needed": math.ceil(rate / WORKER_CLIPS_PER_S[phase])}
    return out


def evaluate(device: torch.device, classes: int, dry: bool) -> dict:
    chunks, (h, w) = (5, (32, 43)) if dry else (25, (256, 341))
    model = inference_model(st_resnet_star(appearance_stream(classes, "none"), motion_stream(classes, "none")), device)
    g = torch.Generator().manual_seed(0)
    item = {"rgb": torch.randint(0, 256, (2, chunks, 3, h, w), generator=g, dtype=torch.uint8),
            "flow": torch.randint(96, 160, (2, chunks, 20, h, w), generator=g, dtype=torch.uint8)}
    out, scores = {}, {}
    for precision in ("bf16", "fp32"):
        video_scores(model, item, device, precision)  # warm-up
        with counted(device) as counts:
            began = time.perf_counter()
            for _ in range(3):
                scores[precision] = video_scores(model, item, device, precision)
            out[f"ms_per_video_{precision}"] = round(1000 * (time.perf_counter() - began) / 3, 1)
        out[f"syncs_per_video_{precision}"] = counts["syncs"] / 3
    (a16, m16), (a32, m32) = scores["bf16"], scores["fp32"]
    fused16, fused32 = (a16 + m16) / 2, (a32 + m32) / 2
    out["max_abs_score_difference"] = float(np.abs(fused16 - fused32).max())
    out["score_range_fp32"] = float(fused32.max() - fused32.min())
    out["same_top1"] = bool(fused16.argmax() == fused32.argmax())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes: checks that the code runs")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--classes", type=int, default=101)
    p.add_argument("--workdir", help="folder for the prepared data and models (default: a temporary one)")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cpu" if a.dry_run or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not a.dry_run:
        sys.exit("gpu_check: torch sees no CUDA device; run it on a GPU machine, or with --dry-run")
    setup_process(1 if a.dry_run else 0)
    torch._logging.set_logs(recompiles=True)
    classes = 7 if a.dry_run else a.classes
    phases = settings(a.dry_run)
    results: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "dry_run": a.dry_run,
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "cuda": torch.version.cuda}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir or tmp)
        section("tvl1", results, tvl1, device, a.dry_run)
        section("probe", results, probe, device, phases, classes)
        steps = 1 if a.dry_run else 3
        section("model_steps", results, model_steps, device, phases, results.get("probe", {}), classes, steps)
        results["loader_workers"] = loader_workers(results.get("model_steps", {}))
        section("evaluate", results, evaluate, device, classes, a.dry_run)
        from stresnet.prepared import prepare_demo

        size = {"short_side": 32, "n_frames": 12, "width": 64, "height": 48} if a.dry_run else \
            {"short_side": 256, "n_frames": 40, "width": 341, "height": 256}
        section("trainer", results, lambda: trainer(device, phases, prepare_demo(work / "data", **size), work / "train",
                                                     steps))
    results["seconds"] = round(time.perf_counter() - began, 1)
    Path(a.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    print(f"gpu_check: {results['seconds']} s, {len(failed)} section(s) failed {failed} -> {a.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
