"""Config checking: one line naming the key and the cause, for any value the schema refuses,
and for settings that are valid alone but not together."""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
import string
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .paths import STAGES

STREAM_PHASES = ("motion", "appearance")
# settings that set how fast a result is reached, never what it is: not part of any identity
SPEED_KEYS = ("workers", "threads", "micro_batch", "gpus", "nodes", "checkpoint_every", "state_dir")


# videos a smoke run keeps per split: this many training and this many test videos
SMOKE_VIDEOS = 4


def smoke_settings(settings: dict[str, Any], steps: int) -> dict[str, Any]:
    """A phase's result-shaping settings in a smoke run: its first `steps` steps at its first
    learning rate, each of one micro-batch (the trainer sets the batch to it), marked as smoke."""
    return {**settings, "lr": [[settings["lr"][0][0], steps]], "smoke": steps}


def split_speed(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the settings that shape results, the speed settings) of a phase's settings."""
    return ({k: v for k, v in settings.items() if k not in SPEED_KEYS},
            {k: v for k, v in settings.items() if k in SPEED_KEYS})


# the flow settings of how fast: the job's threads; tvl1_torch's batch, device and compile
FLOW_SPEED_KEYS = ("threads", "batch", "device", "compile")


def flow_shaping(flow: dict[str, Any]) -> dict[str, Any]:
    """The flow settings that shape results: the section without its speed settings, in it and in
    each method's parameters."""
    return {k: flow_shaping(v) if isinstance(v, dict) else v for k, v in flow.items() if k not in FLOW_SPEED_KEYS}


def flow_method_settings(flow: dict[str, Any], method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters, speed settings) of a flow method from the flow section."""
    settings = flow[method]
    return ({k: v for k, v in settings.items() if k not in FLOW_SPEED_KEYS},
            {k: v for k, v in settings.items() if k in FLOW_SPEED_KEYS})


@functools.cache
def load_schema(schema_file: str) -> dict[str, Any]:
    # libyaml's loader where PyYAML has it: 9 times faster than the pure-Python one Snakemake's
    # validate() reads it with, and every Snakemake start (each cluster job's too) reads the schema
    return yaml.load(Path(schema_file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def fill_defaults(config: dict[str, Any], schema_file: str | Path) -> None:
    """Set every default the schema gives that `config` leaves out, as snakemake.utils.validate
    does (the jsonschema recipe it uses), from the schema loaded once; `config` must be valid."""
    base = jsonschema.Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, schema):
        for name, sub in props.items():
            if "default" in sub:
                instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, schema)

    jsonschema.validators.extend(base, {"properties": set_defaults})(load_schema(str(schema_file))).validate(config)


def config_error(config: dict[str, Any], schema_file: str | Path) -> str | None:
    """The most relevant schema violation of `config` as one line naming the key the user wrote,
    the bad value and what is allowed; None when it is valid."""
    schema = load_schema(str(schema_file))
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config), key=_relevance)
    if error is None:
        return None
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    unexpected = re.findall(r"'([^']+)'", error.message.split("(")[-1]) if error.validator in (
        "additionalProperties", "unevaluatedProperties") else []
    if unexpected:
        name, names = unexpected[0], _property_names(schema)
        close = difflib.get_close_matches(name, sorted(names - {name}), n=1, cutoff=0.6)
        if name in names:
            hint = " (a key of another section); see workflow/schemas/config.schema.yaml"
        else:
            hint = f"; did you mean {close[0]!r}?" if close else "; see workflow/schemas/config.schema.yaml"
        return f"config key {'.'.join(filter(None, [key, name]))}: unknown key{hint}"
    if error.validator == "not":  # a key refused where it is otherwise allowed (init_from of clip phases)
        refused = error.validator_value.get("required", [])
        return f"config key {key}.{'.'.join(refused)}: not allowed here; {error.schema.get('description', 'remove it')}"
    if error.validator in ("oneOf", "anyOf"):
        allowed = " or ".join(_allowed(option) for option in error.validator_value)
        return f"config key {key}: {error.instance!r} is not {allowed}"
    return f"config key {key or '(top level)'}: {error.message}"


def _relevance(error: jsonschema.ValidationError) -> tuple:
    """best_match's order, with `unevaluatedProperties` last: a key whose value fails its own
    schema is also 'unevaluated', and the user must hear about the value, not the key."""
    return (error.validator != "unevaluatedProperties", *jsonschema.exceptions.relevance(error))


def _allowed(schema: dict[str, Any]) -> str:
    """One alternative of a oneOf in words: 'auto', 'an integer >= 1', ..."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    kind = {"integer": "an integer", "number": "a number", "string": "a string"}.get(schema.get("type"), "valid")
    bounds = [f"{op} {schema[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                 ("maximum", "<="), ("exclusiveMaximum", "<")) if k in schema]
    return " ".join([kind, *bounds])


def _property_names(schema: Any) -> set[str]:
    """Every key the schema names anywhere: the vocabulary of suggestions."""
    if isinstance(schema, dict):
        names = set(schema.get("properties", {})) if isinstance(schema.get("properties"), dict) else set()
        return names.union(*(_property_names(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_property_names(v) for v in schema))
    return set()


def train_setting(config: dict[str, Any], name: str, key: str) -> Any:
    """A training setting shared by the phases (pretrained, gpus, ...), for dataset `name`."""
    return {**config["train"], **config["datasets"][name].get("train", {})}[key]


def phase_settings(config: dict[str, Any], name: str, phase: str) -> dict[str, Any]:
    """One phase's settings for dataset `name`: Table 2's (config.yaml train.<phase>), the shared
    training settings, and the dataset's own overrides; `workers: auto` resolved for the phase."""
    keys = ("seed", "momentum", "weight_decay", "lr_factors", "decay_factors", "precision", "workers",
            "checkpoint_every")
    shared = {k: train_setting(config, name, k) for k in keys}
    settings = {**shared, **config["train"][phase], **config["datasets"][name].get("train", {}).get(phase, {})}
    return {**settings, "workers": loader_workers(settings["workers"], phase, train_setting(config, name, "gpus"))}


# clips/s one loader worker (one core) gives at short side 256 (benchmarks/bench_loader.py,
# docs/benchmarks.md); ST-ResNet*'s 11 chunks take 11/5 of ST-ResNet's work
WORKER_CLIPS_PER_S = {"motion": 125, "appearance": 600, "st_resnet": 21, "st_resnet_star": 9.5}
# what one GPU trains, in 224 x 224 images per second per stream: ResNet-50 with mixed precision on
# an A100 (NVIDIA's published training throughput, about 2,600); a clip is chunks x streams images
GPU_IMAGES_PER_S = 2600
IMAGES_PER_CLIP = {"motion": 1, "appearance": 1, "st_resnet": 10, "st_resnet_star": 22}
MAX_WORKERS_PER_GPU = 16  # what a GPU node's cores allow per GPU; beyond, the log's data-wait share says so
CPU_WORKERS = 2  # a CPU job: the model, not the loader, is the bottleneck


def loader_workers(setting: int | str, phase: str, gpus: int) -> int:
    """DataLoader workers per training process: the setting, or `auto`: on a GPU as many as keep up
    with the model (its clips/s over one worker's, at most MAX_WORKERS_PER_GPU), on the CPU 2."""
    if setting != "auto":
        return int(setting)
    if not gpus:
        return CPU_WORKERS
    needed = GPU_IMAGES_PER_S / IMAGES_PER_CLIP[phase] / WORKER_CLIPS_PER_S[phase]
    return min(MAX_WORKERS_PER_GPU, math.ceil(needed))


def available_splits(entry: dict[str, Any]) -> int:
    """How many splits a dataset has: 3 official ones, or a folder dataset's split<k>.csv files."""
    if entry["format"] != "folder":
        return 3
    splits = entry.get("splits")
    if not splits or not Path(splits).is_dir():
        return 1
    return max([int(m[1]) for p in Path(splits).iterdir() if (m := re.match(r"^split(\d+)\.csv$", p.name))], default=1)


def run_splits(entry: dict[str, Any]) -> list[int]:
    """The splits a dataset's metrics.json is the mean of: `run_splits`, else every split."""
    return entry.get("run_splits") or list(range(1, available_splits(entry) + 1))


def cross_field_errors(config: dict[str, Any]) -> list[str]:
    """Problems between settings of a schema-valid config, one line each."""
    datasets, problems = config["datasets"], []
    for name in config["targets"]:
        if name not in datasets:
            problems.append(f"config key targets: {name!r} is not a dataset declared under datasets "
                            f"(declared: {', '.join(datasets)})")
    for name, entry in datasets.items():
        n_splits = available_splits(entry)
        for k in entry.get("run_splits", []):
            if k > n_splits:
                problems.append(f"config key datasets.{name}.run_splits: split {k} does not exist; "
                                f"the dataset has {n_splits} split(s)")
        for phase in ("motion", "appearance", "st_resnet", "st_resnet_star"):
            settings = phase_settings(config, name, phase)
            where = f"config key datasets.{name}.train.{phase}" if phase in entry.get("train", {}) else f"config key train.{phase}"
            low, high = settings["stride"]
            if low > high:
                problems.append(f"{where}.stride: [{low}, {high}] is not a range [min, max]")
            if settings["micro_batch"] != "auto" and settings["micro_batch"] % settings["bn_batch"]:
                problems.append(f"{where}.micro_batch: {settings['micro_batch']} is not a multiple of bn_batch "
                                f"{settings['bn_batch']} (a micro-batch holds whole batch-norm groups)")
            if settings["bn_batch"] > settings["batch"]:
                problems.append(f"{where}.bn_batch: {settings['bn_batch']} exceeds the SGD batch {settings['batch']}")
        for phase in STREAM_PHASES:
            source = entry.get("train", {}).get(phase, {}).get("init_from")
            key = f"config key datasets.{name}.train.{phase}.init_from"
            if isinstance(source, dict):
                if source["dataset"] not in datasets:
                    problems.append(f"{key}.dataset: {source['dataset']!r} is not a dataset declared under "
                                    f"datasets (declared: {', '.join(datasets)}); declare it or remove {key}")
                elif source["dataset"] == name:
                    problems.append(f"{key}.dataset: a dataset cannot start from its own {phase} stream")
        problems += external_score_errors(name, entry)
    return list(dict.fromkeys(problems))  # a global setting is checked once per dataset


def external_score_errors(name: str, entry: dict[str, Any]) -> list[str]:
    """Names that would clash in metrics.json; paths that do not give each split run a file."""
    problems, seen = [], set()
    runs = run_splits(entry)
    for i, source in enumerate(entry.get("external_scores", [])):
        key = f"config key datasets.{name}.external_scores[{i}]"
        if source["name"] in STAGES or source["name"] in seen:
            problems.append(f"{key}.name: {source['name']!r} is already a row of metrics.json; choose another name")
        seen.add(source["name"])
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(source["path"]) if f is not None}
        except ValueError as e:
            problems.append(f"{key}.path: {e}; write {{split}} for the split number, {{{{ and }}}} for braces")
            continue
        if fields - {"split"}:
            problems.append(f"{key}.path: unknown placeholder {{{sorted(fields - {'split'})[0]}}}; "
                            f"only {{split}} (the split number) is filled in")
        elif "split" not in fields and len(runs) > 1:
            problems.append(f"{key}.path: one file for splits {runs}; put {{split}} in the path "
                            f"(each split has its own test videos)")
    return problems


# what a user may ask for under results/<dataset>/ (the rules' outputs), for the error of a target
# naming a dataset the config does not declare
TARGETS = ("metrics.json", "table3.html", "split<k>/metrics.json", "dataset_ready.json", "flow/<method>/manifest.json",
           "verified.json", "index_summary.json")


def datasets_in_use(config: dict[str, Any], argv: list[str], results: str) -> tuple[list[str], list[str]]:
    """(the datasets a run builds, problems): those the command line's targets under `results`
    name, else the config's `targets`, with the datasets their streams start from (init_from)."""
    names, problems = [], []
    for token in argv:
        if not token.startswith(results + "/"):
            continue
        name = token[len(results) + 1:].split("/")[0]
        if name in config["datasets"]:
            names.append(name)
        elif name == "smoke":
            problems.append(f"target {token}: results/smoke/ is a smoke run's; add --config smoke=N (N steps per "
                            f"phase) to make it")
        else:
            declared = ", ".join(config["datasets"])
            problems.append(f"target {token}: {name!r} is not a dataset declared under datasets (declared: "
                            f"{declared}); declare it in your config, or ask for results/<dataset>/ followed by "
                            f"one of {', '.join(TARGETS)}")
    todo, used = list(names or config["targets"]), []
    while todo:
        name = todo.pop()
        if name in used or name not in config["datasets"]:
            continue
        used.append(name)
        for phase in STREAM_PHASES:
            source = config["datasets"][name].get("train", {}).get(phase, {}).get("init_from")
            if isinstance(source, dict):
                todo.append(source["dataset"])
    return used, problems


def location_errors(name: str, entry: dict[str, Any]) -> list[str]:
    """A dataset's root and split folders that are not there (demo and downloaded datasets are
    made by the workflow itself)."""
    if entry["format"] == "demo" or entry.get("url"):
        return []
    problems = []
    if not Path(entry["root"]).is_dir():
        problems.append(f"config key datasets.{name}.root: {entry['root']} is not a folder; point it at the folder "
                        "of the dataset's class sub-folders of videos, or give url: to download the dataset")
    splits = entry.get("splits")
    if splits and not Path(splits).is_dir():
        problems.append(f"config key datasets.{name}.splits: {splits} is not a folder; point it at the folder of the "
                        f"dataset's split files ({SPLIT_FILES[entry['format']]})")
    return problems


SPLIT_FILES = {"ucf101": "ucfTrainTestlist: classInd.txt, trainlist0k.txt, testlist0k.txt",
               "hmdb51": "testTrainMulti_7030_splits: <class>_test_split<k>.txt",
               "folder": "split<k>.csv files, or Kinetics' train.csv and validate.csv"}
