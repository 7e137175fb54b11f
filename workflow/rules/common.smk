# Config loading and validation, and the input functions the rules share.
import shlex
from pathlib import Path

import sys

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# the package lives in workflow/; rules call its command-line entries with it on the path
PACKAGE_DIR = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_DIR))
from stresnet.config import config_error

SCHEMA = PACKAGE_DIR / "schemas" / "config.schema.yaml"
problem = config_error(config, SCHEMA)
if problem:
    raise WorkflowError(problem)
validate(config, str(SCHEMA))  # fills in the schema's defaults

DATASETS = config["datasets"]
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))}:${{{{PYTHONPATH:-}}}}; ")  # formatted by Snakemake: braces doubled


wildcard_constraints:
    dataset="|".join(DATASETS) or "NO_DATASET",
    shard=r"\d+",


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


def final_outputs():
    """The last outputs that exist for every dataset named in `targets`."""
    return [f"results/{name}/dataset_ready.json" for name in config["targets"]]
