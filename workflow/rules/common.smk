# Config loading and validation, and the input functions the rules share.
import hashlib
import json
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# the package lives in workflow/; rules call its command-line entries with it on the path
PACKAGE_DIR = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_DIR))
from stresnet.config import config_error, cross_field_errors

SCHEMA = PACKAGE_DIR / "schemas" / "config.schema.yaml"
problem = config_error(config, SCHEMA)
if problem:
    raise WorkflowError(problem)
validate(config, str(SCHEMA))  # fills in the schema's defaults
problem = next(iter(cross_field_errors(config)), None)
if problem:
    raise WorkflowError(problem)

DATASETS = config["datasets"]
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))}:${{{{PYTHONPATH:-}}}}; ")  # formatted by Snakemake: braces doubled


wildcard_constraints:
    dataset="|".join(DATASETS) or "NO_DATASET",
    shard=r"\d+",
    split=r"\d+",


def dataset(name):
    """A dataset's config entry, with the demo's generated root and splits filled in."""
    entry = dict(DATASETS[name])
    if entry["format"] == "demo":
        entry.setdefault("root", f"results/{name}/raw/UCF101")
        entry.setdefault("splits", f"results/{name}/raw/ucfTrainTestlist")
    return entry


def setting(name, stage):
    """A stage's settings for one dataset: the global section, overridden by the dataset's own."""
    return {**config[stage], **DATASETS[name].get(stage, {})}


def dataset_source(wildcards):
    """What must exist before a dataset can be indexed: generated or downloaded videos."""
    entry = dataset(wildcards.dataset)
    if entry["format"] == "demo":
        return {"source": f"results/{wildcards.dataset}/raw"}
    if entry.get("url"):
        return {"source": f"results/{wildcards.dataset}/download"}
    return {}


def shards(name):
    """The frame shards of a dataset, known once its index (a checkpoint) is written."""
    index = checkpoints.index.get(dataset=name).output.index
    return sorted(pd.read_csv(index, usecols=["shard"], dtype=str)["shard"].unique())


def frame_reports(wildcards):
    return expand(
        "results/{dataset}/frames/{shard}.csv",
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def flow_shards(wildcards):
    return expand(
        "results/{dataset}/flow/{method}/{shard}.h5",
        dataset=wildcards.dataset,
        method=wildcards.method,
        shard=shards(wildcards.dataset),
    )


def train_setting(name, key):
    """A training setting shared by the phases (pretrained, gpus, ...), per dataset."""
    return {**config["train"], **DATASETS[name].get("train", {})}[key]


def phase_settings(name, phase):
    """One phase's settings (Table 2 by default) with the shared ones, per dataset."""
    shared = {k: train_setting(name, k) for k in ("seed", "momentum", "weight_decay", "workers", "checkpoint_every")}
    return {**shared, **config["train"][phase], **DATASETS[name].get("train", {}).get(phase, {})}


def launcher(name):
    """python, or torchrun with one process per GPU when a job asks for several (DDP)."""
    gpus = train_setting(name, "gpus")
    return f"torchrun --standalone --nproc_per_node {gpus}" if gpus > 1 else "python"


def train_data(wildcards):
    """What every training and evaluation job reads: the checked video table and the flow."""
    method = setting(wildcards.dataset, "flow")["method"]
    return {
        "videos": f"results/{wildcards.dataset}/videos.csv",
        "ready": f"results/{wildcards.dataset}/dataset_ready.json",
        "flow": f"results/{wildcards.dataset}/flow/{method}/done.json",
    }


def stream_init(phase):
    """Input function: the stream a phase starts from when its `init_from` names one."""

    def init(wildcards):
        source = phase_settings(wildcards.dataset, phase).get("init_from")
        if source is None:
            return {}
        if isinstance(source, str):
            return {"init": source}
        return {"init": f"results/{source['dataset']}/split{source['split']}/{phase}/model.pt"}

    return init


def init_flag(wildcards, input):
    """--init with the models a phase starts from (none: ImageNet or `pretrained`)."""
    models = [input[name] for name in ("init", "appearance", "motion", "st_resnet") if name in input.keys()]
    return "--init " + " ".join(map(shlex.quote, models)) if models else ""


def evaluated_models(wildcards):
    split = f"results/{wildcards.dataset}/split{wildcards.split}"
    if wildcards.kind == "two_stream":
        return [f"{split}/appearance/model.pt", f"{split}/motion/model.pt"]
    return [f"{split}/{wildcards.kind}/model.pt"]


def run_splits(name):
    return DATASETS[name].get("run_splits", [1, 2, 3])


def config_digest(name):
    """A digest of every setting that shapes a dataset's results."""
    relevant = {
        "dataset": DATASETS[name],
        **{stage: setting(name, stage) for stage in ("index", "frames", "flow", "evaluate")},
        **{phase: phase_settings(name, phase) for phase in TRAIN_PHASES},
        "pretrained": train_setting(name, "pretrained"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


TRAIN_PHASES = ("motion", "appearance", "st_resnet", "st_resnet_star")


def final_outputs():
    """The mean metrics over the splits run of every dataset named in `targets`."""
    return [f"results/{name}/metrics.json" for name in config["targets"]]
