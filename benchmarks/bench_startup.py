"""Start-up of each Table 2 phase on a UCF101-sized table: seconds from process start to the
first micro-batch of step 1, and peak memory, at Table 2's iterations and at 10 times as many.

The stage's own code path runs (`train.Trainer`: manifests, video table, model, micro-batch
choice, sample plan, DataLoader with config.yaml's workers) in a fresh process per figure. The
table has 13,320 training videos; its rows cycle over the videos that `bench_rehearsal.py`
prepared (real frame and flow shards at short side 256, TV-L1), whose models the later phases
start from. Run bench_rehearsal.py --workdir DIR first.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from common import write_section

REPO = Path(__file__).resolve().parent.parent
N_VIDEOS, N_CLASSES = 13320, 101
PHASES = ("motion", "appearance", "st_resnet", "st_resnet_star")
INIT = {"st_resnet": ("appearance", "motion"), "st_resnet_star": ("st_resnet",)}


def ucf101_sized(prepared: Path, out: Path) -> tuple[Path, Path]:
    """Frames and flow manifests over a 13,320-row training table cycling over the prepared videos."""
    import pandas as pd

    from stresnet.flow import write_flow_manifest
    from stresnet.index import class_table, frames_manifest, read_table

    frames = json.loads((prepared / "dataset_ready.json").read_text())
    flow_doc = json.loads((prepared / "flow/tvl1/manifest.json").read_text())
    base = read_table(prepared / "videos.csv")
    base = base[base["status"] == "ok"].reset_index(drop=True)
    table = pd.concat([base] * (N_VIDEOS // len(base) + 1), ignore_index=True).head(N_VIDEOS)
    table["label"] = table.index % N_CLASSES
    table["class"] = [f"Class{label + 1:03d}" for label in table["label"]]
    table["split1"] = "train"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "videos.csv", index=False)
    shards = [str(prepared.parent.parent.parent / f["path"]) for name, f in frames["files"].items()
              if name not in ("videos", "classes")]
    class_table(table).to_csv(out / "classes.csv", index=False)
    frames_manifest(out / "dataset_ready.json", out / "videos.csv", out / "classes.csv", shards, {})
    flows = [str(prepared.parent.parent.parent / f["path"]) for f in flow_doc["files"].values()]
    write_flow_manifest(out / "flow.json", flows, out / "dataset_ready.json")
    return out / "dataset_ready.json", out / "flow.json"


def one(phase: str, multiple: int, frames: str, flow: str, split_dir: str) -> dict:
    """In this fresh process: the Trainer up to its first micro-batch."""
    from stresnet.runtime import setup_process
    from stresnet.train import Trainer, build_parser

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    train = config["train"]
    cfg = {**{k: train[k] for k in ("seed", "momentum", "weight_decay", "lr_factors", "decay_factors")}, **train[phase]}
    speed = {"workers": train["workers"], "micro_batch": cfg.pop("micro_batch"), "checkpoint_every": 10**9}
    cfg["lr"] = [[lr, n * multiple] for lr, n in cfg["lr"]]
    init = [f"{split_dir}/{p}/model.pt" for p in INIT.get(phase, ())]
    with tempfile.TemporaryDirectory() as out:
        args = build_parser().parse_args(["--phase", phase, "--split", "1", "--frames-manifest", frames,
                                          "--flow-manifest", flow, "--config", json.dumps(cfg), "--pretrained",
                                          "none", "--out-dir", out, "--threads", str(train["threads"]),
                                          *(["--init", *init] if init else [])])
        setup_process(args.threads)
        trainer = Trainer(args, cfg, speed)
        batch = next(iter(trainer._loader()))
        seconds = time.time() - psutil.Process().create_time()
        main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        trainer.lock.release()
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "main_mb": main, "worker_mb": worker, "clips": len(batch["label"]),
            "steps": trainer.iterations, "micro_batch": trainer.speed["micro_batch"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", required=True, help="bench_rehearsal.py's --workdir")
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    if a.one:
        phase, multiple, frames, flow, split_dir = a.one
        print(json.dumps(one(phase, int(multiple), frames, flow, split_dir)))
        return
    prepared = Path(a.workdir) / "results/smoke/ucf101"
    frames, flow = ucf101_sized(prepared, Path(a.workdir) / "startup")
    rows = []
    for phase in PHASES:
        for multiple in (1, 10):
            out = subprocess.run([sys.executable, __file__, "--workdir", a.workdir, "--one", phase, str(multiple),
                                  str(frames), str(flow), str(prepared / "split1")],
                                 capture_output=True, text=True, cwd=a.workdir)
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((phase, multiple, r))
            print(phase, multiple, r, flush=True)
    lines = ["| phase | schedule | steps | micro-batch | seconds to the first batch | peak memory, main process (MB) "
             "| peak memory, a loader worker (MB) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {phase} | {m}x Table 2 | {r['steps']:,} | {r['micro_batch']} | {r['seconds']:.1f} | {r['main_mb']:.0f} "
              f"| {r['worker_mb']:.0f} |" for phase, m, r in rows]
    body = (f"A training table of {N_VIDEOS:,} videos (rows cycling over the rehearsal's prepared videos: frame and "
            "TV-L1 flow shards at short side 256), config.yaml's Table 2 settings and loader workers, "
            "`pretrained: none`, CPU. Seconds from process start (interpreter and imports included) to the first "
            "micro-batch in hand; peak RSS of the process and of its largest loader worker.\n\n" + "\n".join(lines))
    print(body)
    if not a.no_write:
        write_section("Start-up of each phase at 1x and 10x Table 2's schedule", body)


if __name__ == "__main__":
    main()
