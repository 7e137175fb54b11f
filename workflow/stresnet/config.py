"""Config checking: one line naming the key and the cause, for any value the schema refuses,
and for settings that are valid alone but not together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

STREAM_PHASES = ("motion", "appearance")


def config_error(config: dict[str, Any], schema_file: str | Path) -> str | None:
    """The most relevant schema violation of `config` as one line, or None when it is valid."""
    schema = yaml.safe_load(Path(schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"config key {key}: {error.message}"


def cross_field_errors(config: dict[str, Any]) -> list[str]:
    """Problems between settings of a schema-valid config, one line each."""
    datasets, problems = config["datasets"], []
    for name, entry in datasets.items():
        for phase in STREAM_PHASES:
            source = entry.get("train", {}).get(phase, {}).get("init_from")
            key = f"config key datasets.{name}.train.{phase}.init_from"
            if isinstance(source, dict):
                if source["dataset"] not in datasets:
                    problems.append(f"{key}.dataset: {source['dataset']!r} is not a dataset declared under "
                                    f"datasets (declared: {', '.join(datasets)}); declare it or remove {key}")
                elif source["dataset"] == name:
                    problems.append(f"{key}.dataset: a dataset cannot start from its own {phase} stream")
    return problems
