"""Config checking: one line naming the key and the cause, for any value the schema refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml


def config_error(config: dict[str, Any], schema_file: str | Path) -> str | None:
    """The most relevant schema violation of `config` as one line, or None when it is valid."""
    schema = yaml.safe_load(Path(schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"config key {key}: {error.message}"
