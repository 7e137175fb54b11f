# Config loading and validation, and the input functions the rules share. Every path comes from
# stresnet.paths; settings are split into those that shape results (rule params, tracked by
# Snakemake) and those that only set speed (Untracked: changing them reruns nothing).
import functools
import hashlib
import json
import os
import posixpath
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError

# the package lives beside this file (workflow/stresnet), found from this file rather than from the
# main Snakefile, which is another workflow's when this one is used as a module; rules call its
# command-line entries with it on the path. A module from a remote repository (github(...)) has
# no local copy of the package: it must be installed (README, "Use as a module").
PACKAGE_DIR = Path(str(workflow.current_basedir)).parent  # workflow/, where this file is on this disk
LOCAL_PACKAGE = (PACKAGE_DIR / "stresnet" / "cli.py").is_file()
if LOCAL_PACKAGE:
    sys.path.insert(0, str(PACKAGE_DIR))
try:
    import stresnet.config
    import stresnet.demo
except ImportError:
    raise WorkflowError("the stresnet package is not importable: install it where Snakemake runs "
                        "(pip install <a clone of this workflow>, or pip install git+<its repository>)") from None
from stresnet import paths
from stresnet.config import config_error, cross_field_errors, flow_method_settings, flow_shaping, split_speed
from stresnet.datasets import DatasetError, dataset_files, files_fingerprint
from stresnet.devices import device_pool
from stresnet.manifest import file_state, missing_stamp
from stresnet.provenance import code_digest
from stresnet.report_config import SAME_CONFIG, config_check

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
problem = config_error(config, SCHEMA)
if problem:
    raise WorkflowError(problem)
stresnet.config.fill_defaults(config, SCHEMA)
problem = next(iter(cross_field_errors(config)), None)
if problem:
    raise WorkflowError(problem)

DATASETS = config["datasets"]
TRAIN_PHASES = paths.PHASES
SMOKE = config["smoke"]  # a smoke run: N steps per phase, a few videos per split, under results/smoke
if SMOKE:
    paths.use_smoke_results()
PLANNING = workflow.exec_mode.name == "DEFAULT"  # the run's own process, not a job's
if PLANNING:  # what the run needs is there, or one line why, before any job
    USED, problems = stresnet.config.datasets_in_use(config, sys.argv[1:], paths.RESULTS)
    problems += [p for name in USED for p in stresnet.config.location_errors(name, DATASETS[name])]
    if problems:
        raise WorkflowError(problems[0])
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))}:${{{{PYTHONPATH:-}}}}; "
             if LOCAL_PACKAGE else "set -euo pipefail; ")  # braces doubled: Snakemake formats it


wildcard_constraints:
    dataset="|".join(DATASETS) or "NO_DATASET",
    shard=r"\d+",
    split=r"\d+",


class Untracked:
    """A rule param Snakemake does not record (only builtin values are), for settings that never
    change a result: workers, threads, micro-batch, checkpoint interval."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


# --- where results are: this disk, or the default storage provider (--default-storage-provider s3, fs)
# A job reads only its declared inputs, which Snakemake copies in; the planning process reads a
# few results itself (the index, manifests) through the storage provider, never by a local path.


def _stored(path):
    """The default storage provider's object of a results path; None when there is none."""
    settings = workflow.storage_settings
    if settings is None or settings.default_storage_provider is None:
        return None
    prefix, path = settings.default_storage_prefix, os.path.normpath(path)
    return workflow.storage_registry.default_storage_provider.object(posixpath.join(prefix, path) if prefix else path)


def result_exists(path):
    stored = _stored(path)
    return stored.exists() if stored is not None else os.path.exists(path)


def result_mtime(path):
    stored = _stored(path)
    if stored is None:
        return os.path.getmtime(path) if os.path.exists(path) else None
    return stored.mtime() if stored.exists() else None


def result_copy(path):
    """A local copy of a results file (the file itself without storage), or None when it is not there."""
    stored = _stored(path)
    if stored is None:
        return Path(path) if os.path.exists(path) else None
    if not stored.exists():
        return None
    local = Path(stored.local_path())
    if not local.exists() or local.stat().st_mtime < stored.mtime():
        local.parent.mkdir(parents=True, exist_ok=True)
        stored.retrieve_object()
    return local


def result_text(path):
    local = result_copy(path)
    return local.read_text() if local is not None else None


def result_state(path):
    """file_state of a results file, where it is."""
    local = result_copy(path)
    return file_state(local) if local is not None else "missing"


def stamp(manifest):
    """The manifest's missing-files stamp (manifest.missing_stamp), kept on this disk."""
    path = missing_stamp(manifest, result_exists, result_text, result_mtime)
    _seen(path)
    return local(path)


def _seen(path):
    """Tell Snakemake's planning cache that a file made while planning exists: it lists each folder
    once (its inventory) and would otherwise call a stamp made after that missing. The stamps of the
    datasets in use are made before planning (below); this covers any other."""
    exists = getattr(getattr(workflow, "iocache", None), "exists_local", None)
    if isinstance(exists, dict):
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            exists[str(Path(*parts[:i]))] = True


def dataset(name):
    """A dataset's config entry, with the demo's generated root and splits filled in."""
    entry = dict(DATASETS[name])
    if entry["format"] == "demo":
        entry.setdefault("root", f"{paths.raw_dir(name)}/UCF101")
        entry.setdefault("splits", f"{paths.raw_dir(name)}/ucfTrainTestlist")
    return entry


def setting(name, stage):
    """A stage's settings for one dataset: the global section, overridden by the dataset's own."""
    return {**config[stage], **DATASETS[name].get(stage, {})}


def flow_method(name):
    return setting(name, "flow")["method"]


def flow_params(name, method):
    """A flow method's parameters, as the JSON argument of the flow stage: they shape the result."""
    return shlex.quote(json.dumps(flow_method_settings(setting(name, "flow"), method)[0], sort_keys=True))


def flow_speed(name, method):
    """A flow method's speed settings (tvl1_torch: batch, device, compile): passed, never recorded."""
    return Untracked(shlex.quote(json.dumps(flow_method_settings(setting(name, "flow"), method)[1], sort_keys=True)))


@functools.cache
def gpus_listed():
    return bool(device_pool())


def flow_gpus(name, method):
    """GPUs a flow job asks for: one for tvl1_torch on cuda, or on auto where this machine lists
    GPUs (nvidia-smi or STRESNET_GPU_POOL); none for OpenCV's methods."""
    if method != "tvl1_torch":
        return 0
    device = flow_method_settings(setting(name, "flow"), method)[1]["device"]
    return int(device == "cuda" or (device == "auto" and gpus_listed()))


def demo_files(name):
    """The files that a demo dataset's rule (demo_videos_<name>) makes, split files first, then the videos."""
    entry, raw = DATASETS[name]["demo"], paths.raw_dir(name)
    return ([f"{raw}/ucfTrainTestlist/{f}" for f in stresnet.demo.SPLIT_FILES]
            + [f"{raw}/UCF101/{v}" for v in stresnet.demo.video_names(entry["groups"], entry["clips_per_group"])])


def dataset_source(wildcards):
    """What the index reads: the generated videos and split files, the downloaded folder, or the
    split files of a dataset on this disk (its videos are seen through `videos_fingerprint`)."""
    name = wildcards.dataset
    entry = dataset(name)
    if entry["format"] == "demo":
        return {"demo": demo_files(name)}
    if entry.get("url"):
        return {"source": paths.download_dir(name)}
    return {"split_files": [local(f) for f in dataset_listing(name)[1]]}


def dataset_root(wildcards, input):
    """The dataset's folder as the job sees it: the user's folder, or where the job's copy of the
    generated or downloaded files lies (a storage provider copies them elsewhere)."""
    entry = dataset(wildcards.dataset)
    if entry["format"] == "demo":
        first = Path(str(input.demo[len(stresnet.demo.SPLIT_FILES)]))  # <raw>/UCF101/<Class>/<video>
        return Untracked(shlex.quote(str(first.parent.parent)))
    if entry.get("url"):  # root and splits point inside the download folder
        inside = Path(entry["root"]).relative_to(paths.download_dir(wildcards.dataset))
        return Untracked(shlex.quote(str(Path(str(input.source)) / inside)))
    return shlex.quote(entry["root"])


def dataset_splits(wildcards, input):
    """--splits of the index, as the job sees the split folder (see dataset_root)."""
    entry = dataset(wildcards.dataset)
    if entry["format"] == "demo":
        return Untracked(f"--splits {shlex.quote(str(Path(str(input.demo[0])).parent))}")
    if not entry.get("splits"):
        return ""
    if entry.get("url"):
        inside = Path(entry["splits"]).relative_to(paths.download_dir(wildcards.dataset))
        return Untracked(f"--splits {shlex.quote(str(Path(str(input.source)) / inside))}")
    return f"--splits {shlex.quote(entry['splits'])}"


_LISTINGS = {}


def dataset_listing(name):
    """(video files, split files) of a dataset on disk, listed once per run of Snakemake."""
    if name not in _LISTINGS:
        entry = dataset(name)
        allow_missing = entry["format"] == "folder" and entry.get("skip_bad_videos", False)
        try:
            _LISTINGS[name] = dataset_files(entry["format"], entry["root"], entry.get("splits"), allow_missing)
        except DatasetError as e:
            raise WorkflowError(f"datasets.{name}: {e}") from None
    return _LISTINGS[name]


def videos_fingerprint(wildcards):
    """The index's param that changes when a video appears or goes; empty for generated or
    downloaded videos, whose folder is the index's input."""
    entry = dataset(wildcards.dataset)
    if entry["format"] == "demo" or entry.get("url"):
        return ""
    return files_fingerprint(dataset_listing(wildcards.dataset)[0])


_INDEX_TABLES = {}


def index_table(name):
    """shard -> its videos, from the dataset's index, known once its index job (a checkpoint) is done;
    read (from storage, where it is there) once per version of the file, not once per job that asks
    (300,000 videos: 3,000 frame jobs)."""
    index = checkpoints.index.get(dataset=name).output.index
    local_index = result_copy(paths.index_csv(name)) or Path(str(index))
    stat = local_index.stat()
    key = (str(local_index), stat.st_mtime_ns, stat.st_size)
    if key not in _INDEX_TABLES:
        table = pd.read_csv(local_index, usecols=["path", "shard"], dtype=str, keep_default_na=False)
        _INDEX_TABLES[key] = {shard: list(group) for shard, group in table.groupby("shard")["path"]}
    return _INDEX_TABLES[key]


def shards(name):
    return sorted(index_table(name))


def shard_members(wildcards):
    """The videos of one shard, by their paths under the root: the frame job's identity."""
    return index_table(wildcards.dataset).get(wildcards.shard, [])


def shard_videos(wildcards):
    """The video files of one shard, its frame job's inputs: a job copies in only its own videos,
    and touching one reruns its shard only. A downloaded dataset's are inside its folder."""
    entry = dataset(wildcards.dataset)
    if entry.get("url"):
        return [paths.download_dir(wildcards.dataset)]
    if entry["format"] == "demo":
        return [f"{paths.raw_dir(wildcards.dataset)}/UCF101/{path}" for path in shard_members(wildcards)]
    return [local(str(Path(entry["root"]) / path)) for path in shard_members(wildcards)]


def shard_root(wildcards, input):
    """--root of a frame job: where its videos are as it sees them (see dataset_root)."""
    entry = dataset(wildcards.dataset)
    if entry.get("url"):  # the job's copy of the download folder
        inside = Path(entry["root"]).relative_to(paths.download_dir(wildcards.dataset))
        return Untracked(shlex.quote(str(Path(str(input.videos[0])) / inside)))
    if entry["format"] == "demo":
        first, member = Path(str(input.videos[0])), Path(shard_members(wildcards)[0])
        return Untracked(shlex.quote(str(first.parents[len(member.parts) - 1])))  # first = root / member
    return shlex.quote(entry["root"])


def frame_shards(wildcards):
    return [paths.frame_shard(wildcards.dataset, s) for s in shards(wildcards.dataset)]


def frame_reports(wildcards):
    return [paths.frame_report(wildcards.dataset, s) for s in shards(wildcards.dataset)]


def flow_shards(wildcards):
    return [paths.flow_shard(wildcards.dataset, wildcards.method, s) for s in shards(wildcards.dataset)]


def train_setting(name, key):
    return stresnet.config.train_setting(config, name, key)


def phase_settings(name, phase):
    return stresnet.config.phase_settings(config, name, phase)


def shaping_settings(name, phase):
    settings = split_speed(phase_settings(name, phase))[0]
    return stresnet.config.smoke_settings(settings, SMOKE) if SMOKE else settings


def shaping(name, phase):
    """The phase's settings that shape its result, as the JSON argument of the train stage."""
    return shlex.quote(json.dumps(shaping_settings(name, phase), sort_keys=True))


def speed(name, phase):
    """The phase's speed settings: passed, never recorded."""
    return Untracked(shlex.quote(json.dumps(split_speed(phase_settings(name, phase))[1], sort_keys=True)))


def launcher(name, phase):
    """How a training job starts: on devices of its own (`stresnet devices`) with python, or with
    torchrun and one process per GPU (DDP); over several SLURM nodes, one srun task per GPU.

    Several nodes: the job is an `mpi` job for the SLURM executor, so its jobstep runs this
    command in the batch script (no `srun -n1` step around it that a nested srun would have to
    share), and srun starts nodes x GPUs tasks with their CPUs and each node's GPUs; each task's
    rank and device come from SLURM (SLURM_PROCID, SLURM_LOCALID), the rendezvous is env:// on the
    first node of the step."""
    gpus, nodes = train_setting(name, "gpus"), train_setting(name, "nodes")
    if nodes > 1:
        per_node = max(1, gpus)
        cpus = config["train"]["threads"] + phase_settings(name, phase)["workers"]
        return Untracked(  # each task finds the first node and the port itself (train.ranks_from_slurm)
            f"srun --nodes={nodes} --ntasks={nodes * per_node} --ntasks-per-node={per_node} --cpus-per-task={cpus}"
            + (f" --gpus-per-node={gpus}" if gpus else "")
            + " --kill-on-bad-exit=1 env STRESNET_DDP=slurm python")
    devices = f"python -m stresnet devices --gpus {gpus} --"
    return Untracked(f"{devices} torchrun --standalone --nproc_per_node {gpus}" if gpus > 1 else f"{devices} python")


def evaluation_launcher(name):
    """Evaluation runs on one node and at most one GPU, whatever the training jobs use."""
    return Untracked(f"python -m stresnet devices --gpus {min(1, train_setting(name, 'gpus'))} -- python")


def job_resources(name, gpus, workers, nodes):
    """What a training or evaluation job asks for: its GPUs, CPUs for its threads and loader
    workers (per GPU on a GPU job), memory growing with each retry, and its nodes. A job of
    several nodes asks SLURM for one task per GPU (`mpi`, `tasks` and --ntasks-per-node), the
    GPUs of each node (--gpus-per-node: `gpu` would be a count for the whole job) and CPUs per
    task."""
    cpus = config["train"]["threads"] + workers  # per process, one process per GPU
    if nodes > 1:
        per_node = max(1, gpus)
        extra = f"--ntasks-per-node={per_node}" + (f" --gpus-per-node={gpus}" if gpus else "")
        return {"gpu": 0, "cpus_per_gpu": 0, "cpus_per_task": cpus, "nodes": nodes, "mpi": "srun",
                "tasks": nodes * per_node, "slurm_extra": extra}
    # None: no such resource (the SLURM jobstep runs a job with an `mpi` resource without its srun)
    return {"gpu": gpus, "cpus_per_gpu": cpus if gpus else 0, "cpus_per_task": 0 if gpus else cpus,
            "nodes": 1, "mpi": None, "tasks": None, "slurm_extra": None}


def train_job_resources(phase):
    """A phase's training job resources (job_resources), and memory growing with each retry."""

    def value(key):
        return lambda wc: job_resources(wc.dataset, train_setting(wc.dataset, "gpus"),
                                        phase_settings(wc.dataset, phase)["workers"],
                                        train_setting(wc.dataset, "nodes"))[key]

    keys = ("gpu", "cpus_per_gpu", "cpus_per_task", "nodes", "mpi", "tasks", "slurm_extra")
    return {**{key: value(key) for key in keys}, "mem_mb": lambda wc, attempt: 16000 * attempt}


def evaluate_resources(key):
    def value(wc):
        gpus = min(1, train_setting(wc.dataset, "gpus"))
        return job_resources(wc.dataset, gpus, setting(wc.dataset, "evaluate")["workers"], 1)[key]

    return value


def frames_input(wildcards):
    return {"frames": paths.frames_manifest(wildcards.dataset)}


def flow_input(wildcards):
    """The frames and the flow manifests: what phases that read flow, and evaluation, take."""
    return {**frames_input(wildcards), "flow": paths.flow_manifest(wildcards.dataset, flow_method(wildcards.dataset))}


def frames_listed(wildcards):
    """The files the frames manifest lists: a job reads only what it declares, so those that read
    a manifest declare its files too (a storage provider copies in nothing else). Ancient: what
    they hold reaches the job through the manifest's digests, so a shard rebuilt the same (its
    bytes in another order, say) reruns nothing after it."""
    name = wildcards.dataset
    return [ancient(f) for f in (paths.videos_csv(name), paths.classes_csv(name), *frame_shards(wildcards))]


def flow_listed(wildcards):
    """The files the frames and flow manifests list (see frames_listed)."""
    name, method = wildcards.dataset, flow_method(wildcards.dataset)
    return [*frames_listed(wildcards), *(ancient(paths.flow_shard(name, method, s)) for s in shards(name))]


def stream_init(phase):
    """Input function: what a stream phase starts from: a stream of the same kind trained
    elsewhere (`init_from`), or the backbone weights of `pretrained` (a file: ImageNet's, fetched
    once by rule imagenet_weights, or the user's)."""

    def init(wildcards):
        source = phase_settings(wildcards.dataset, phase).get("init_from")
        if isinstance(source, str):
            return {"init": source}
        if source is not None:
            return {"init": paths.model(source["dataset"], source["split"], phase)}
        pretrained = train_setting(wildcards.dataset, "pretrained")
        if pretrained == "none":
            return {}
        return {"weights": paths.imagenet_weights() if pretrained == "imagenet" else pretrained}

    return init


def state_flag(wildcards, phase):
    """--state-dir of a training job: `train.state_dir` (a folder all nodes see) for its checkpoint;
    untracked: where a run keeps its state changes no result."""
    folder = train_setting(wildcards.dataset, "state_dir")
    if not folder:
        return Untracked("")
    return Untracked("--state-dir " + shlex.quote(f"{folder}/{wildcards.dataset}/split{wildcards.split}/{phase}"))


def test_board(wildcards):
    """Where the metrics job writes the split's TensorBoard figures: beside the phases' own, so
    under `train.state_dir` where one is set; untracked, as state_flag."""
    folder = train_setting(wildcards.dataset, "state_dir")
    board = paths.test_board(wildcards.dataset, wildcards.split)
    if folder:
        board = f"{folder}/{wildcards.dataset}/split{wildcards.split}/tensorboard/test"
    return Untracked(shlex.quote(board))


def pretrained_flag(wildcards, input):
    """--pretrained of a stream phase: the weights file its inputs hold, or none."""
    return shlex.quote(input.weights) if "weights" in input.keys() else "none"


def init_flag(wildcards, input):
    """--init with the models a phase starts from (none: ImageNet or `pretrained`)."""
    models = [input[name] for name in ("init", "appearance", "motion", "st_resnet") if name in input.keys()]
    return "--init " + " ".join(map(shlex.quote, models)) if models else ""


def flow_flag(wildcards, input):
    return f"--flow-manifest {input.flow}" if "flow" in input.keys() else ""


def evaluated_models(wildcards):
    if wildcards.kind == "two_stream":
        return [paths.model(wildcards.dataset, wildcards.split, p) for p in ("appearance", "motion")]
    return [paths.model(wildcards.dataset, wildcards.split, wildcards.kind)]


def run_splits(name):
    return stresnet.config.run_splits(DATASETS[name])


def external_files(wildcards):
    """The dataset's external score files of a split (`external_scores`), one per source."""
    sources = DATASETS[wildcards.dataset].get("external_scores", [])
    files = [source["path"].format(split=wildcards.split) for source in sources]
    # a file made by this workflow (export_scores) is a result, wherever results are; others are the user's
    return [f if f.startswith(f"{paths.BASE_RESULTS}/") else local(f) for f in files]


def source_flags(wildcards, input):
    """--source NAME FILE WEIGHT of each external score file."""
    sources = DATASETS[wildcards.dataset]["external_scores"]
    return " ".join(f"--source {shlex.quote(s['name'])} {shlex.quote(f)} {s['weight']}"
                    for s, f in zip(sources, input.external))


def metrics_scores(wildcards):
    """The scores a split's metrics come from: each evaluated model's, and the fusion's when
    the dataset has external scores."""
    own = [paths.scores(wildcards.dataset, wildcards.split, kind) for kind in paths.EVALUATED]
    if DATASETS[wildcards.dataset].get("external_scores"):
        own.append(paths.fused_scores(wildcards.dataset, wildcards.split))
    return own


def config_digest(name):
    """A digest of every setting that shapes a dataset's results."""
    sections = ("index", "frames", "flow", "train", "evaluate")  # each taken below, speed settings left out
    relevant = {
        "dataset": {k: v for k, v in DATASETS[name].items() if k not in sections},
        **{stage: setting(name, stage) for stage in ("index", "frames")},
        "flow": flow_shaping(setting(name, "flow")),
        "evaluate": {k: setting(name, "evaluate")[k] for k in ("chunks", "padding")},
        **{phase: shaping_settings(name, phase) for phase in TRAIN_PHASES},
        "pretrained": train_setting(name, "pretrained"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


WARNED_CONFIGS = set()


def report_labels(item, metrics_of):
    """The labels of a dataset's report item (evaluated by `snakemake --report` only): what it is,
    and whether the config the report is built with made it, from the metrics.json that
    `metrics_of(output)` names; a warning, also printed once, when another config made it."""

    def labels(wildcards, output):
        metrics = metrics_of(output)
        check = config_check(metrics, config_digest(wildcards.dataset))
        if check != SAME_CONFIG and metrics not in WARNED_CONFIGS:
            WARNED_CONFIGS.add(metrics)
            print(f"{metrics}: {check}", file=sys.stderr)
        return {"item": item, "config": check}

    return labels


def final_outputs():
    """The mean metrics over the splits run of every dataset named in `targets`."""
    return [paths.metrics(name) for name in config["targets"]]


if PLANNING:  # split files and videos of the datasets in use are read now (the index's listing)
    for name in USED:
        stamp(paths.frames_manifest(name))
        stamp(paths.flow_manifest(name, flow_method(name)))
        if DATASETS[name]["format"] != "demo" and not DATASETS[name].get("url"):
            dataset_listing(name)
